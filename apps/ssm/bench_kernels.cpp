// `ssm bench kernels`: times the CUDA kernels at the reference shapes of
// docs/KERNELS.md (SSD, the batched model step, the Mamba-1 scan). The
// benchmark itself runs in the CUDA module (lib/cuda/bench_kernels.cpp);
// without it, or without a GPU, it says why and fails.
#include <memory>

#include "commands.hpp"
#include "ssm/cuda.hpp"

namespace ssm::cli {

void add_bench_kernels(CLI::App& bench) {
  auto opts = std::make_shared<CudaKernelBench>();
  auto* cmd = bench.add_subcommand("kernels", "Time the CUDA SSD kernels (forward, backward) at reference shapes");
  cmd->add_option("--repeats", opts->repeats, "timed repeats (median reported)");
  cmd->add_option("--warmup", opts->warmup, "untimed warm-up calls");
  cmd->add_option("--math", opts->math, "tf32 or fp32 (3xTF32)");
  cmd->add_option("--shape", opts->shape,
                  "all, big, audio or step (batched recurrent model step); scan, scan-audio, scan-audio32 or "
                  "scan-mamba (Mamba-1 selective scan)");
  cmd->add_option("-Q,--chunk", opts->Q, "chunk length (1..64)");
  cmd->callback([opts] { cuda_bench_kernels(*opts); });
}

}  // namespace ssm::cli
