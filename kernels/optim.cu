// Optimisation over the flat parameter blocks on CUDA: the sum of squares of
// the gradients (for global-norm clipping) and the fused AdamW update. The
// CPU versions (lib/train/optim.cpp) are the reference.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ops.cuh"

namespace ssm::kernels {
namespace {

// Blocks of the sum of squares: a function of n only, so the fp64 sum has the
// same bits on every run and every GPU.
constexpr int kSquaresMaxBlocks = 1024;
constexpr int kSquaresPerThread = 8;  // at least, before the block count grows
constexpr int kAdamThreads = 256;

// Squares of floats are exact in fp64; only the order of the sums rounds.
__global__ void __launch_bounds__(kReduceThreads) sum_squares_partial_kernel(double* partials,  // (gridDim.x)
                                                                             const float* g, size_t n) {
  __shared__ double shared[kReduceThreads];
  double acc = 0.0;
  for (size_t i = size_t(blockIdx.x) * kReduceThreads + threadIdx.x; i < n; i += size_t(gridDim.x) * kReduceThreads) {
    const double v = g[i];
    acc += v * v;
  }
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(kReduceThreads)
    sum_squares_finish_kernel(double* out, const double* partials,  // (parts)
                              int parts) {
  __shared__ double shared[kReduceThreads];
  double acc = 0.0;
  for (int p = threadIdx.x; p < parts; p += kReduceThreads) acc += partials[p];
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) *out = acc;
}

// Per element, as adamw_update (ssm/optim.hpp): decoupled decay, moments, step.
__global__ void __launch_bounds__(kAdamThreads) adamw_kernel(float* params, float* m, float* v, const float* grads,
                                                             const float* decay_mult, size_t n, AdamWStep s) {
  for (size_t i = size_t(blockIdx.x) * kAdamThreads + threadIdx.x; i < n; i += size_t(gridDim.x) * kAdamThreads) {
    const float mult = decay_mult[i];
    if (mult < 0.0f) continue;  // alignment gap or untrainable tensor
    const float decay = static_cast<float>(1.0 - s.lr_wd * static_cast<double>(mult));
    const float gi = grads[i] * s.grad_scale;
    const float mi = s.beta1 * m[i] + s.one_m_beta1 * gi;
    const float vi = s.beta2 * v[i] + s.one_m_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] * decay - s.step_size * mi / (sqrtf(vi) * s.inv_bias2_sqrt + s.eps);
  }
}

}  // namespace

void sum_squares_launch(double* out, const float* g, size_t n, cudaStream_t stream) {
  const size_t per_block = size_t(kReduceThreads) * kSquaresPerThread;
  const int parts = static_cast<int>(std::clamp<size_t>((n + per_block - 1) / per_block, 1, kSquaresMaxBlocks));
  StreamScratch partials(sizeof(double) * parts, stream, "sum_squares");
  sum_squares_partial_kernel<<<parts, kReduceThreads, 0, stream>>>(partials.as<double>(), g, n);
  check_op_launch("sum_squares partial sums");
  sum_squares_finish_kernel<<<1, kReduceThreads, 0, stream>>>(out, partials.as<double>(), parts);
  check_op_launch("sum_squares total");
}

void adamw_launch(float* params, float* m, float* v, const float* grads, const float* decay_mult, size_t n,
                  const AdamWStep& s, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>((n + kAdamThreads - 1) / kAdamThreads, 1u << 20));
  adamw_kernel<<<blocks, kAdamThreads, 0, stream>>>(params, m, v, grads, decay_mult, n, s);
  check_op_launch("adamw update");
}

}  // namespace ssm::kernels
