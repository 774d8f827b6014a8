#include <cstdio>
#include <exception>
#include <string>

#include "commands.hpp"
#include "ssm/c_api.h"
#include "ssm/common.hpp"

namespace ssm::cli {

[[noreturn]] void not_available(const std::string& what, const std::string& why) {
  std::fprintf(stderr, "ssm %s: not available in this version: %s\n", what.c_str(), why.c_str());
  std::exit(2);
}

}  // namespace ssm::cli

int main(int argc, char** argv) {
  CLI::App app{"ssm: selective state-space models for audio and time series"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ssm ") + ssm_version());
  app.get_formatter()->column_width(36);
  app.option_defaults()->always_capture_default();
  ssm::cli::add_info_command(app);
  ssm::cli::add_train_command(app);
  ssm::cli::add_denoise_command(app);
  ssm::cli::add_detect_command(app);
  ssm::cli::add_eval_command(app);
  ssm::cli::add_bench_command(app);
  ssm::cli::add_modes_command(app);
  // CLI11 reports an unknown first word only as "a subcommand is required";
  // name it and the choices instead.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string choices;
    for (const auto* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == argv[1];
      choices += (choices.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "ssm: unknown command '%s' (commands: %s; see ssm --help)\n", argv[1], choices.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const ssm::Error& e) {
    std::fprintf(stderr, "ssm: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ssm: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
