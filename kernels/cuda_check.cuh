// The one CUDA error check of the library, the kernels and the benchmarks.
// A failed call or launch throws ssm::Error "<what>: <CUDA's reason>" and
// clears CUDA's last error, so the next check does not report it again.
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <string_view>

#include "ssm/common.hpp"

namespace ssm {

[[noreturn]] inline void cuda_fail(cudaError_t e, std::string_view what) {
  cudaGetLastError();
  fail(std::string(what) + ": " + cudaGetErrorString(e));
}

inline void cuda_check(cudaError_t e, std::string_view what) {
  if (e != cudaSuccess) cuda_fail(e, what);
}

// The check of one unit, its messages prefixed with the unit's name:
//   constexpr CudaCheck check_cuda{"ssd cuda"};  check_cuda(cudaMalloc(...), "the workspace");
struct CudaCheck {
  const char* unit;
  void operator()(cudaError_t e, std::string_view what) const {
    if (e != cudaSuccess) cuda_fail(e, std::string(unit) + ": " + std::string(what));
  }
};

// After a kernel launch: "<unit>: launch of <kernel> failed: <reason>".
inline void cuda_check_launch(std::string_view unit, std::string_view kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) cuda_fail(e, std::string(unit) + ": launch of " + std::string(kernel) + " failed");
}

}  // namespace ssm
