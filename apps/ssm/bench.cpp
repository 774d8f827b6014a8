#include "commands.hpp"

namespace ssm::cli {

void add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (results belong in docs/BENCHMARKS.md)");
  bench->require_subcommand(1);
  add_bench_core(*bench);
  add_bench_kernels(*bench);
  add_bench_detect(*bench);
  add_bench_nats(*bench);
  add_bench_stream(*bench);
  add_bench_train(*bench);
}

}  // namespace ssm::cli
