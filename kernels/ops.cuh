// Host-side entry points of the Mamba block's other kernels: kernels/layers.cu
// (norms, element-wise ops, column copies, conv1d, column sums) and
// kernels/optim.cu (sum of squares, AdamW). Called only by the launchers in
// lib/cuda/ (ops.cpp, linear.cpp), which check the arguments; the public API
// is ssm/cuda_ops.hpp. Sizes reaching here are trusted: every count >= 1.
//
// Every launch is enqueued on `stream` and throws ssm::Error when it fails.
// Parameter-gradient sums over rows are deterministic: per-part partial sums
// in a fixed row partition (a function of the sizes only), then a fixed-order
// sum of the parts, in scratch memory allocated on the stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda_check.cuh"
#include "ssm/common.hpp"
#include "ssm/conv1d.hpp"

namespace ssm::kernels {

// Threads of the block-wide reductions below (a power of two).
constexpr int kReduceThreads = 256;

// Widest conv1d the backward takes: its parameter-gradient pass holds a sum
// per tap in registers.
constexpr int kConv1dMaxK = 16;

inline void check_op_launch(const char* what) { cuda_check_launch("cuda ops", what); }

// Device scratch for one call: allocated on the stream (cudaMallocAsync) and
// freed there (cudaFreeAsync), so it is released after the kernels that use it.
class StreamScratch {
 public:
  StreamScratch(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    const cudaError_t e = cudaMallocAsync(&ptr_, bytes, stream);
    if (e != cudaSuccess) {
      ptr_ = nullptr;
      cuda_fail(e, std::string("cuda ops: ") + what + ": cudaMallocAsync of " + std::to_string(bytes) +
                       " bytes of scratch failed");
    }
  }
  ~StreamScratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

#ifdef __CUDACC__
// Sum of v over the block's kReduceThreads threads, as a fixed tree (the same
// bits every run); every thread must call it. The result is valid in thread 0.
__device__ __forceinline__ double block_sum(double v, double* shared /* (kReduceThreads) */) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  return shared[0];
}
#endif

// ---- kernels/layers.cu

// RMSNorm of each of the G column groups (width C/G) of every row; z null:
// plain, else the input is x * silu(z) (Mamba-2's gated norm).
void norm_forward_launch(float* y,             // (R, C)
                         float* rstd,          // (R, G)
                         const float* x,       // (R, C)
                         const float* z,       // (R, C) or null
                         const float* weight,  // (C)
                         int R, int C, int G, float eps, cudaStream_t stream);

void norm_backward_launch(float* dx,            // (R, C)  =
                          float* dz,            // (R, C)  =, null when z is null
                          float* dweight,       // (C)     +=
                          const float* dy,      // (R, C)
                          const float* rstd,    // (R, G)
                          const float* x,       // (R, C)
                          const float* z,       // (R, C) or null
                          const float* weight,  // (C)
                          int R, int C, int G, cudaStream_t stream);

void silu_forward_launch(float* y, const float* x, int64_t n, cudaStream_t stream);  // y may alias x
void silu_backward_launch(float* dx, const float* dy, const float* x, int64_t n, cudaStream_t stream);
void log_power_forward_launch(float* y, const float* x, int64_t n, float eps, cudaStream_t stream);
void log_power_backward_launch(float* dx, const float* dy, const float* x, int64_t n, float eps, cudaStream_t stream);
void unfold_forward_launch(float* y, float* next_tail, const float* x, const float* tail, int B, int T, int C, int W,
                           cudaStream_t stream);
void unfold_backward_launch(float* dx, const float* dy, int B, int T, int C, int W, cudaStream_t stream);
void sigmoid_gate_forward_launch(float* y, const float* x, const float* g, int64_t n, cudaStream_t stream);
void sigmoid_gate_backward_launch(float* dx, float* dg, const float* dy, const float* x, const float* g, int64_t n,
                                  cudaStream_t stream);  // dx may be null
void add_into_launch(float* dst, const float* src, int64_t n, cudaStream_t stream);  // dst += src

// dst[r, c] = src[r, c] for c < w; both pointers already at their first column.
void copy_cols_launch(float* dst, int ld_dst, const float* src, int ld_src, int64_t R, int w, cudaStream_t stream);

// y[r, o] += bias[o]
void add_bias_rows_launch(float* y,           // (R, O)
                          const float* bias,  // (O)
                          int64_t R, int O, cudaStream_t stream);

// out[c] += sum_r m[r, c]
void col_sum_add_launch(float* out,      // (C)  +=
                        const float* m,  // (R, C)
                        int64_t R, int C, cudaStream_t stream);

void conv1d_forward_launch(float* y,                   // (B, T, C)
                           float* final_tail,          // (B, K-1, C) or null; may alias initial_tail
                           const float* x,             // (B, T, C)
                           const float* weight,        // (C, K)
                           const float* bias,          // (C) or null
                           const float* initial_tail,  // (B, K-1, C) or null
                           const Conv1dDims& d, cudaStream_t stream);

void conv1d_backward_launch(float* dx,                  // (B, T, C)            =
                            float* dweight,             // (C, K)               +=
                            float* dbias,               // (C) or null          +=
                            float* dinitial_tail,       // (B, K-1, C) or null  =
                            const float* dy,            // (B, T, C)
                            const float* dfinal_tail,   // (B, K-1, C) or null
                            const float* x,             // (B, T, C)
                            const float* weight,        // (C, K)
                            const float* initial_tail,  // (B, K-1, C) or null
                            const Conv1dDims& d, cudaStream_t stream);

// ---- kernels/optim.cu

// *out = sum_i g[i]^2 in fp64; n may be 0.
void sum_squares_launch(double* out, const float* g, size_t n, cudaStream_t stream);

// Scalars of one AdamW step, prepared on the host as adamw_update does.
struct AdamWStep {
  float beta1, one_m_beta1;  // beta1, 1 - beta1
  float beta2, one_m_beta2;  // beta2, 1 - beta2
  float step_size;           // lr / (1 - beta1^t)
  float inv_bias2_sqrt;      // 1 / sqrt(1 - beta2^t)
  float eps;
  float grad_scale;
  double lr_wd;  // lr * weight_decay; the decay 1 - lr_wd * mult is formed in fp64 as on the CPU
};

void adamw_launch(float* params,            // (n)  in/out
                  float* m,                 // (n)  in/out
                  float* v,                 // (n)  in/out
                  const float* grads,       // (n)
                  const float* decay_mult,  // (n)  < 0 in gaps: untouched
                  size_t n, const AdamWStep& s, cudaStream_t stream);

}  // namespace ssm::kernels
