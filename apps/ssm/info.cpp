// `ssm info MODEL`: what a model is and what it costs to run.
#include <sndfile.h>

#include <cstdio>
#include <filesystem>

#include "commands.hpp"
#include "ssm/common.hpp"
#include "ssm/model.hpp"

namespace ssm::cli {

namespace {

// A path that is neither weights nor a config: say what it is instead of
// letting the safetensors reader complain about its header.
void check_is_model(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".safetensors" || ext == ".json") return;
  require(std::filesystem::exists(path), "'" + path + "' does not exist");
  SF_INFO info{};
  if (SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info)) {
    sf_close(f);
    char what[160];
    std::snprintf(what, sizeof what, "a sound file (%d Hz, %d channel%s, %.2f s)", info.samplerate, info.channels,
                  info.channels == 1 ? "" : "s", info.samplerate > 0 ? double(info.frames) / info.samplerate : 0.0);
    usage_error("'" + path + "' is " + what +
                ", not a model: ssm info describes model weights (.safetensors) or a model config (.json)");
  }
  usage_error("'" + path + "' is not a model: ssm info describes model weights (.safetensors) or a model config (.json)");
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a model's config, parameter count, state per stream and cost");
  static std::string path;
  cmd->add_option("model", path, "model weights (.safetensors) or a model config (.json)")->required();
  cmd->callback([] {
    check_is_model(path);
    const bool is_json = path.size() >= 5 && path.substr(path.size() - 5) == ".json";
    Model model = is_json ? Model(ModelConfig::from_file(path)) : Model::load(path);
    const ModelConfig& c = model.config();
    std::printf("model: %s%s\n", path.c_str(), is_json ? " (config only, untrained)" : "");
    std::printf("config:\n%s\n", c.to_json_text().c_str());
    std::printf("parameters:        %zu (%.1f KB as float32)\n", model.num_params(), model.num_params() * 4 / 1024.0);
    const size_t state = model_state_size(c);
    std::printf("state per stream:  %zu floats (%.1f KB)\n", state, state * 4 / 1024.0);
    const double flops = model_flops_per_step(c) / c.frame;
    std::printf("cost per sample:   %.0f FLOPs (%.1f MFLOP/s at %d Hz)\n", flops, flops * c.sample_rate / 1e6,
                c.sample_rate);
    std::printf("samples per step:  %d\n", c.frame);
    std::printf("latency:           %d samples (%.2f ms): lookahead %d + frame wait %d\n", c.latency(),
                1e3 * c.latency() / c.sample_rate, c.lookahead, c.frame - 1);
  });
}

}  // namespace ssm::cli
