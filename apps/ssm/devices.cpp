// `ssm devices`: the audio devices `ssm denoise --live` can use, by host API,
// with the index and name that --input-device / --output-device accept.
#include <cstdio>

#include "commands.hpp"
#include "ssm/common.hpp"
#ifdef SSM_WITH_PORTAUDIO
#include "ssm/streams/portaudio.hpp"
#endif

namespace ssm::cli {

void add_devices_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("devices", "List the audio devices (and host APIs) for ssm denoise --live");
  static std::string host_api;
  static bool verbose = false;
  cmd->add_option("--host-api", host_api, "only this host API (name or part of it: alsa, jack, pulse)");
  cmd->add_flag("--verbose", verbose, "let the host APIs print their own diagnostics while probing");
  cmd->callback([] {
#ifdef SSM_WITH_PORTAUDIO
    PortAudioSystem pa(verbose);
    std::string api;  // the full name, "" = every host API
    if (!host_api.empty()) {
      try {
        api = pa.host_api(host_api);
      } catch (const Error& e) {
        usage_error(std::string("--host-api: ") + e.what());
      }
    }
    std::printf("host APIs:");
    for (const auto& h : pa.host_apis()) std::printf(" [%s]", h.c_str());
    std::printf("\n%5s  %-12s %-40s %5s %5s %8s\n", "index", "host API", "name", "in", "out", "rate");
    int shown = 0;
    for (const auto& d : pa.devices()) {
      if (!api.empty() && d.host_api != api) continue;
      std::printf("%5d  %-12s %-40s %5d %5d %8.0f%s%s\n", d.index, d.host_api.c_str(), d.name.c_str(),
                  d.max_input_channels, d.max_output_channels, d.default_rate, d.default_input ? "  default in" : "",
                  d.default_output ? "  default out" : "");
      ++shown;
    }
    if (shown == 0) std::printf("(no devices)\n");
#else
    not_available("devices", "this build has no PortAudio (configure with SSM_PORTAUDIO=ON)");
#endif
  });
}

}  // namespace ssm::cli
