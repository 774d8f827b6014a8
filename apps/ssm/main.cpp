#include <cstdio>
#include <exception>

#include "commands.hpp"
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
  app.set_version_flag("--version", "ssm 0.1.0");
  app.get_formatter()->column_width(36);
  app.option_defaults()->always_capture_default();
  ssm::cli::add_info_command(app);
  ssm::cli::add_train_command(app);
  ssm::cli::add_denoise_command(app);
  ssm::cli::add_detect_command(app);
  ssm::cli::add_eval_command(app);
  ssm::cli::add_bench_command(app);
  ssm::cli::add_modes_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ssm::Error& e) {
    std::fprintf(stderr, "ssm: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ssm: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
