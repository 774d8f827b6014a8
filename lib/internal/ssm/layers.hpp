// Building blocks of the Mamba block (DESIGN.md §1): RMSNorm, the gated
// RMSNorm of Mamba-2, SiLU, softplus and the linear projection.
// Activations are (R, ·) rows: R is any flattening of the leading axes,
// e.g. R = B*T for (B, T, D) activations.
//
// Backward: activation gradients (dx, dz) are assigned (=); parameter
// gradients (dweight, dW, dbias) accumulate (+=).
// Row reductions accumulate in fp64 for both instantiations.
#pragma once
#include <type_traits>

#include "ssm/common.hpp"

namespace ssm {

// rstd[r] = 1 / sqrt(mean_c x[r,c]^2 + eps);  y[r,c] = x[r,c] * rstd[r] * weight[c]
template <typename Real>
void rmsnorm_forward(Real* y,             // (R, C)
                     Real* rstd,          // (R)  saved
                     const Real* x,       // (R, C)
                     const Real* weight,  // (C)
                     int R, int C, double eps);

template <typename Real>
void rmsnorm_backward(Real* dx,            // (R, C)  =
                      Real* dweight,       // (C)     +=
                      const Real* dy,      // (R, C)
                      const Real* rstd,    // (R)     from rmsnorm_forward
                      const Real* x,       // (R, C)
                      const Real* weight,  // (C)
                      int R, int C);

// Mamba-2's RMSNormGated (norm_before_gate = False): the gate is applied
// first, then each of the G contiguous column groups of width C/G is
// normalised on its own (mamba_ssm's group_size = C/G; G = 1 normalises the
// whole row):
//   g = x * silu(z);  y[r,c] = g[r,c] * rstd[r, c / (C/G)] * weight[c]
template <typename Real>
void gated_rmsnorm_forward(Real* y,             // (R, C)
                           Real* rstd,          // (R, G)  saved
                           const Real* x,       // (R, C)
                           const Real* z,       // (R, C)  gate
                           const Real* weight,  // (C)
                           int R, int C, int G, double eps);

template <typename Real>
void gated_rmsnorm_backward(Real* dx,            // (R, C)  =
                            Real* dz,            // (R, C)  =
                            Real* dweight,       // (C)     +=
                            const Real* dy,      // (R, C)
                            const Real* rstd,    // (R, G)  from gated_rmsnorm_forward
                            const Real* x,       // (R, C)
                            const Real* z,       // (R, C)
                            const Real* weight,  // (C)
                            int R, int C, int G);

// y = x * sigmoid(x), elementwise over n values. y may alias x.
template <typename Real>
void silu_forward(Real* y,        // (n)
                  const Real* x,  // (n)
                  long n);

template <typename Real>
void silu_backward(Real* dx,        // (n)  =
                   const Real* dy,  // (n)
                   const Real* x,   // (n)
                   long n);

// y = x * sigmoid(g), elementwise over n values: a gate in (0, 1) on x,
// such as a mask on a filterbank's bins. y may alias x.
template <typename Real>
void sigmoid_gate_forward(Real* y,        // (n)
                          const Real* x,  // (n)
                          const Real* g,  // (n)
                          long n);

template <typename Real>
void sigmoid_gate_backward(Real* dx,        // (n)  =  (or null)
                           Real* dg,        // (n)  =
                           const Real* dy,  // (n)
                           const Real* x,   // (n)
                           const Real* g,   // (n)
                           long n);

// y[i] = log(x[2i]^2 + x[2i+1]^2 + eps) over n pairs: the log power of
// bins that come in (cosine, sine) pairs, the features of a filterbank
// whose level changes by decades.
template <typename Real>
void log_power_forward(Real* y,        // (n)
                       const Real* x,  // (2n)
                       long n, double eps);

template <typename Real>
void log_power_backward(Real* dx,        // (2n)  =
                        const Real* dy,  // (n)
                        const Real* x,   // (2n)
                        long n, double eps);

// The last W frames of C values at each of T steps, oldest first: y[b, t,
// j] = x[b, t - (W - 1 - j)]. Steps before the first come from `tail` (the
// W - 1 frames before t = 0, oldest first; zeros when null), and
// `next_tail` (nullable) gets the W - 1 frames before t = T. The backward
// folds dy back onto dx (the tail's share is dropped: it starts from zeros).
template <typename Real>
void unfold_forward(Real* y,            // (B, T, W, C)
                    Real* next_tail,    // (B, W - 1, C) or null
                    const Real* x,      // (B, T, C)
                    const Real* tail,   // (B, W - 1, C) or null
                    int B, int T, int C, int W);

template <typename Real>
void unfold_backward(Real* dx,        // (B, T, C)  =
                     const Real* dy,  // (B, T, W, C)
                     int B, int T, int C, int W);

// y = log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)): no overflow for
// large x, no loss of the tail for very negative x. y may alias x.
template <typename Real>
void softplus_forward(Real* y,        // (n)
                      const Real* x,  // (n)
                      long n);

// dx = dy * sigmoid(x)
template <typename Real>
void softplus_backward(Real* dx,        // (n)  =
                       const Real* dy,  // (n)
                       const Real* x,   // (n)
                       long n);

// y = x @ W^T + bias, W in PyTorch nn.Linear layout (out features, in
// features); bias may be null (no bias). Uses the BLAS. Nullable arguments
// take no part in deducing Real, so a bare nullptr works.
template <typename Real>
void linear_forward(Real* y,           // (R, O)
                    const Real* x,     // (R, I)
                    const Real* W,     // (O, I)
                    const std::type_identity_t<Real>* bias,  // (O) or null
                    int R, int I, int O);

// dx = dy @ W (skipped when dx is null: e.g. the model input);
// dW += dy^T @ x (skipped when dW is null: a fixed weight);
// dbias += sum_r dy[r, :] (skipped when dbias is null).
template <typename Real>
void linear_backward(std::type_identity_t<Real>* dx,     // (R, I) or null  =
                     Real* dW,                            // (O, I)          +=
                     std::type_identity_t<Real>* dbias,  // (O) or null     +=
                     const Real* dy,   // (R, O)
                     const Real* x,    // (R, I)
                     const Real* W,    // (O, I)
                     int R, int I, int O);

}  // namespace ssm
