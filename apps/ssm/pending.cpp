// Subcommands whose capability has not landed yet. Each one parses its
// arguments like the finished command will and then says plainly that it is
// not available, rather than pretending.
#include "commands.hpp"

namespace ssm::cli {

void add_detect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("detect", "Streaming anomaly detection server (Graphite over TCP)");
  cmd->callback([] { not_available("detect", "the anomaly detection server is not built yet"); });
}

void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Evaluate a model (denoising metrics, NAB)");
  cmd->callback([] { not_available("eval", "evaluation is not built yet"); });
}

}  // namespace ssm::cli
