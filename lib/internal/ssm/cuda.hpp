// The CUDA backend as a whole: is it built, is there a GPU. Every function
// here exists in every build. The backend is a module loaded on first use
// (libssm_cuda.so, next to the library or the program; the environment
// variable SSM_CUDA_MODULE names another file): a program that never asks for
// the GPU does not load the CUDA libraries. Without the module (a build
// without CUDA, the file missing, a CUDA library it needs missing) or without
// a usable GPU, cuda_available() is false, cuda_device_description() says
// why, and the CUDA ops throw ssm::Error saying so.
#pragma once
#include <string>

namespace ssm {

// True when the CUDA module loads and at least one GPU answers. A failing
// cudaGetDeviceCount (no driver: error 35 on CPU-only machines) is "no GPU",
// and the error is cleared.
bool cuda_available();

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" for the current device, or the
// reason there is none ("built without CUDA", "CUDA module libssm_cuda.so not
// found: ...", "no CUDA device: ...").
std::string cuda_device_description();

// `ssm bench kernels` (apps/ssm/bench_kernels.cpp): times the CUDA kernels at
// the reference shapes of docs/KERNELS.md and prints the table. It runs in
// the module, which drives the CUDA runtime itself.
struct CudaKernelBench {
  int repeats = 20;
  int warmup = 3;
  std::string math = "tf32";  // tf32 or fp32 (3xTF32)
  std::string shape = "all";  // all, big, audio, step; scan, scan-audio, scan-audio32, scan-mamba
  int Q = 64;                 // chunk length (1..64)
};
void cuda_bench_kernels(const CudaKernelBench& options);

}  // namespace ssm
