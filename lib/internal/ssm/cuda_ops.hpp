// The Mamba block's other ops on the GPU: the same functions as
// ssm/layers.hpp, ssm/conv1d.hpp and ssm/optim.hpp, on device pointers, fp32.
//
// Every pointer is device memory, laid out as in the CPU headers. Work is
// enqueued on `stream` (null: the default stream); nothing synchronises
// unless it returns a host value. Bad sizes and failed launches throw
// ssm::Error naming what was wrong. Gradient conventions follow the CPU ops:
// activation gradients are assigned (=), parameter gradients accumulate (+=).
// The parameter-gradient sums run in a fixed order: the same bits every run.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ssm/conv1d.hpp"
#include "ssm/optim.hpp"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
struct cublasContext;
typedef struct cublasContext* cublasHandle_t;

namespace ssm {

// ---- row norms (row reductions in fp32 with a tree; rstd saved for backward)
void rmsnorm_forward_cuda(float* y,             // (R, C)
                          float* rstd,          // (R)  saved
                          const float* x,       // (R, C)
                          const float* weight,  // (C)
                          int R, int C, float eps, cudaStream_t stream = nullptr);

void rmsnorm_backward_cuda(float* dx,            // (R, C)  =
                           float* dweight,       // (C)     +=
                           const float* dy,      // (R, C)
                           const float* rstd,    // (R)
                           const float* x,       // (R, C)
                           const float* weight,  // (C)
                           int R, int C, cudaStream_t stream = nullptr);

// Mamba-2's gated RMSNorm (norm_before_gate = False), G groups of C/G columns.
void gated_rmsnorm_forward_cuda(float* y,             // (R, C)
                                float* rstd,          // (R, G)  saved
                                const float* x,       // (R, C)
                                const float* z,       // (R, C)  gate
                                const float* weight,  // (C)
                                int R, int C, int G, float eps, cudaStream_t stream = nullptr);

void gated_rmsnorm_backward_cuda(float* dx,            // (R, C)  =
                                 float* dz,            // (R, C)  =
                                 float* dweight,       // (C)     +=
                                 const float* dy,      // (R, C)
                                 const float* rstd,    // (R, G)
                                 const float* x,       // (R, C)
                                 const float* z,       // (R, C)
                                 const float* weight,  // (C)
                                 int R, int C, int G, cudaStream_t stream = nullptr);

// ---- elementwise
void silu_forward_cuda(float* y, const float* x, long n, cudaStream_t stream = nullptr);  // y may alias x
void silu_backward_cuda(float* dx, const float* dy, const float* x, long n, cudaStream_t stream = nullptr);
// y = x * sigmoid(g) (ssm/layers.hpp's sigmoid_gate); dx may be null.
void sigmoid_gate_forward_cuda(float* y, const float* x, const float* g, long n, cudaStream_t stream = nullptr);
void sigmoid_gate_backward_cuda(float* dx, float* dg, const float* dy, const float* x, const float* g, long n,
                                cudaStream_t stream = nullptr);
// ssm/layers.hpp's log_power (n pairs in, n values out) and unfold.
void log_power_forward_cuda(float* y, const float* x, long n, double eps, cudaStream_t stream = nullptr);
void log_power_backward_cuda(float* dx, const float* dy, const float* x, long n, double eps,
                             cudaStream_t stream = nullptr);
void unfold_forward_cuda(float* y, float* next_tail, const float* x, const float* tail, int B, int T, int C, int W,
                         cudaStream_t stream = nullptr);
void unfold_backward_cuda(float* dx, const float* dy, int B, int T, int C, int W, cudaStream_t stream = nullptr);
// dst[i] += src[i]
void add_into_cuda(float* dst, const float* src, long n, cudaStream_t stream = nullptr);

// Columns [c0_src, c0_src + w) of a (R, ld_src) matrix to columns
// [c0_dst, c0_dst + w) of a (R, ld_dst) one (a strided 2-D copy).
void copy_cols_cuda(float* dst, int ld_dst, int c0_dst, const float* src, int ld_src, int c0_src, size_t R, int w,
                    cudaStream_t stream = nullptr);

// ---- causal depthwise conv1d, as ssm/conv1d.hpp. The backward takes K <= 16.
// final_tail may alias initial_tail.
void conv1d_forward_cuda(float* y,                   // (B, T, C)
                         float* final_tail,          // (B, K-1, C) or null
                         const float* x,             // (B, T, C)
                         const float* weight,        // (C, K)
                         const float* bias,          // (C) or null
                         const float* initial_tail,  // (B, K-1, C) or null
                         const Conv1dDims& d, cudaStream_t stream = nullptr);

void conv1d_backward_cuda(float* dx,                  // (B, T, C)            =
                          float* dweight,             // (C, K)               +=
                          float* dbias,               // (C) or null          +=
                          float* dinitial_tail,       // (B, K-1, C) or null  =
                          const float* dy,            // (B, T, C)
                          const float* dfinal_tail,   // (B, K-1, C) or null
                          const float* x,             // (B, T, C)
                          const float* weight,        // (C, K)
                          const float* initial_tail,  // (B, K-1, C) or null
                          const Conv1dDims& d, cudaStream_t stream = nullptr);

// ---- linear layers through cuBLAS (TF32 tensor cores, fp32 accumulation).
// y = x @ W^T + bias, W (O, I) as nn.Linear; bias may be null.
void linear_forward_cuda(cublasHandle_t blas, float* y,  // (R, O)
                         const float* x,                 // (R, I)
                         const float* W,                 // (O, I)
                         const float* bias,              // (O) or null
                         int R, int I, int O, cudaStream_t stream = nullptr);

// dx = dy @ W, dW += dy^T @ x, dbias += column sums of dy; each skipped when null.
void linear_backward_cuda(cublasHandle_t blas, float* dx,  // (R, I) or null  =
                          float* dW,                       // (O, I) or null  +=
                          float* dbias,                    // (O) or null     +=
                          const float* dy,                 // (R, O)
                          const float* x,                  // (R, I)
                          const float* W,                  // (O, I)
                          int R, int I, int O, cudaStream_t stream = nullptr);

// ---- optimisation over the flat blocks
// sum of squares of grads, accumulated in fp64, written to *out_sq (device).
void sum_squares_cuda(double* out_sq, const float* grads, size_t n, cudaStream_t stream = nullptr);

// One AdamW update (as adamw_update in ssm/optim.hpp) of every element whose
// decay_mult >= 0; decay_mult < 0 marks what stays as it is (ParamTable::update_multipliers).
// The gradients are multiplied by grad_scale first (global-norm clipping).
void adamw_update_cuda(float* params,            // (n)  in/out
                       float* m,                 // (n)  in/out
                       float* v,                 // (n)  in/out
                       const float* grads,       // (n)
                       const float* decay_mult,  // (n)  per element: the tensor's weight_decay_mult, or -1
                       size_t n, int64_t step, double lr, const AdamWConfig& c, float grad_scale,
                       cudaStream_t stream = nullptr);

}  // namespace ssm
