// Launchers of the attention kernels (ssm/cuda_attention.hpp): the sizes and
// pointers, then the rings' counters, checked on the host before
// kernels/attention.cu runs.
#include <cuda_runtime_api.h>

#include <climits>
#include <string>
#include <vector>

#include "attention.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda_attention.hpp"

namespace ssm {
namespace {

constexpr CudaCheck check_cuda{"attention cuda"};

void check(const char* fn, const AttnDims& d) {
  attention_check_dims(d);
  const long long rows = static_cast<long long>(d.B) * (d.T + d.W) * d.H;
  require(rows < INT_MAX / 2 && static_cast<long long>(d.H) * d.P * d.W < (1LL << 30),
          std::string(fn) + ": sizes are beyond what the kernel supports");
}

// Each stream's (head, count), copied from the device and checked as the CPU op checks them.
void check_counters(const char* fn, const float* state, const AttnDims& d, cudaStream_t stream) {
  if (!state) return;
  const size_t SS = attention_state_size(d.H, d.P, d.W), at = SS - 2;
  std::vector<float> c(2 * static_cast<size_t>(d.B));  // (B, 2)
  check_cuda(cudaMemcpy2DAsync(c.data(), 2 * sizeof(float), state + at, SS * sizeof(float), 2 * sizeof(float), d.B,
                               cudaMemcpyDeviceToHost, stream),
             std::string(fn) + ": copy of the rings' counters");
  check_cuda(cudaStreamSynchronize(stream), std::string(fn) + ": waiting for the rings' counters");
  std::vector<float> one(SS, 0.0f);
  for (int b = 0; b < d.B; ++b) {
    one[at] = c[2 * b];
    one[at + 1] = c[2 * b + 1];
    attention_check_state(one.data(), AttnDims{1, 1, d.H, d.P, d.W});
  }
}

}  // namespace

void attention_forward_cuda(float* y, float* lse, float* final_state, const float* qkv, const float* initial_state,
                            const AttnDims& d, cudaStream_t stream) {
  const char* fn = "attention_forward_cuda";
  check(fn, d);
  require(y && lse && qkv, std::string(fn) + ": y, lse and qkv must not be null");
  check_counters(fn, initial_state, d, stream);
  kernels::attention_forward_launch(y, lse, final_state, qkv, initial_state, d, stream);
}

void attention_backward_cuda(float* dqkv, float* dinitial_state, const float* dy, const float* dfinal_state,
                             const float* lse, const float* qkv, const float* initial_state, const AttnDims& d,
                             cudaStream_t stream) {
  const char* fn = "attention_backward_cuda";
  check(fn, d);
  require(dqkv && dy && lse && qkv, std::string(fn) + ": dqkv, dy, lse and qkv must not be null");
  check_counters(fn, initial_state, d, stream);
  kernels::attention_backward_launch(dqkv, dinitial_state, dy, dfinal_state, lse, qkv, initial_state, d, stream);
}

}  // namespace ssm
