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
void add_bench_stream(CLI::App& bench);

// For subcommands whose capability is not built yet: say so plainly, exit 2.
[[noreturn]] void not_available(const std::string& what, const std::string& why);

}  // namespace ssm::cli
