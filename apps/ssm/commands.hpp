// Each subcommand of the ssm CLI lives in its own file and registers itself
// on the root CLI11 app; main() only dispatches and turns errors into exit codes.
#pragma once
#include <CLI/CLI.hpp>

namespace ssm::cli {

void add_info_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_denoise_command(CLI::App& app);
void add_detect_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_modes_command(CLI::App& app);

// `ssm train --config CONFIG` with no other option; its exit code.
int train_from_config(const std::string& config);

// `ssm bench <what>`: each benchmark adds its own sub-subcommand.
void add_bench_core(CLI::App& bench);
void add_bench_kernels(CLI::App& bench);
void add_bench_train(CLI::App& bench);
void add_bench_detect(CLI::App& bench);
void add_bench_nats(CLI::App& bench);  // detection through NATS JetStream (SSM_WITH_NATS)
void add_bench_stream(CLI::App& bench);

// For subcommands whose capability is not built yet: say so plainly, exit 2.
[[noreturn]] void not_available(const std::string& what, const std::string& why);

// A command line that parsed but does not make sense (a value out of range,
// a missing input): reported like CLI11's own errors, exit status 2.
[[noreturn]] inline void usage_error(const std::string& what) { throw CLI::ValidationError(what, 2); }
inline void require_usage(bool ok, const std::string& what) {
  if (!ok) usage_error(what);
}

}  // namespace ssm::cli
