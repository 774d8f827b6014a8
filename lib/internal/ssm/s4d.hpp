// S4D: the linear time-invariant diagonal state-space layer (DESIGN.md §1,
// "LTI layer"). H independent channels, each with N complex modes:
//
//   dt[h]      = exp(log_dt[h])
//   A[h,n]     = -exp(A_re_log[h,n]) + i * A_im[h,n]        (Re A < 0: stable)
//   Abar[h,n]  = exp(dt[h] * A[h,n])                         (ZOH)
//   Bbar[h,n]  = (Abar[h,n] - 1) / A[h,n]                    (B = 1, folded into C)
//   s[t,h,n]   = Abar[h,n] * s[t-1,h,n] + Bbar[h,n] * x[t,h]  (complex state)
//   y[t,h]     = Re(sum_n C[h,n] * s[t,h,n]) + D[h] * x[t,h]
//
// The N modes are all stored and the real part of their sum is taken; no
// conjugate partners are implied (a real system of state size 2N whose
// conjugate pairs carry C/2 gives the same output). Complex buffers are
// interleaved (re, im) in a trailing axis of 2, as torch.view_as_real.
//
// Unrolling the recurrence from a zero state gives the convolution kernel
//   kernel[h,k] = Re(sum_n C[h,n] * Bbar[h,n] * Abar[h,n]^k),   k < T
// and y = causal_conv(kernel, x) + D x, so the layer trains as a long
// convolution (FFT, s4d_conv_*) and runs as a recurrence (s4d_step,
// s4d_recurrent_forward), both computing the same function.
//
// Precision: the kernel, its gradient and the discretised recurrence
// coefficients are computed in fp64 for both instantiations, because Abar is
// raised to powers in the thousands and an fp32 pole would drift by more than
// the 1e-5 tolerance over long memories. Recurrent state is stored in Real.
//
// Backward: activation gradients (dx) are assigned (=); parameter gradients
// (dlog_dt, dA_re_log, dA_im, dC, dD) accumulate (+=).
// Null final_state / initial_state mean "not wanted" / zeros (a bare nullptr
// works: those arguments do not take part in deducing Real).
#pragma once
#include <cstdint>
#include <type_traits>

#include "ssm/common.hpp"

namespace ssm {

struct S4dDims {
  int B;  // batch
  int T;  // time steps (kernel length)
  int H;  // channels
  int N;  // complex modes per channel
};

// Throws ssm::Error naming the bad field unless every size is >= 1.
void s4d_check_dims(const S4dDims& d);

// S4D-Lin: A[h,n] = -0.5 + i*pi*n.  S4D-Real: A[h,n] = -(n + 1).
// Both: log_dt ~ U[log dt_min, log dt_max], C complex standard normal
// (re and im each of variance 1/2), D ~ N(0, 1); seeded, deterministic.
// d.B and d.T are ignored.
template <typename Real>
void s4d_init_lin(Real* log_dt,    // (H)
                  Real* A_re_log,  // (H, N)
                  Real* A_im,      // (H, N)
                  Real* C,         // (H, N, 2)
                  Real* D,         // (H)
                  const S4dDims& d, uint64_t seed, double dt_min = 1e-3, double dt_max = 1e-1);

template <typename Real>
void s4d_init_real(Real* log_dt,    // (H)
                   Real* A_re_log,  // (H, N)
                   Real* A_im,      // (H, N)
                   Real* C,         // (H, N, 2)
                   Real* D,         // (H)
                   const S4dDims& d, uint64_t seed, double dt_min = 1e-3, double dt_max = 1e-1);

// kernel[h,k] for k < d.T; d.B is ignored. OpenMP over channels.
template <typename Real>
void s4d_kernel_forward(Real* kernel,          // (H, T)
                        const Real* log_dt,    // (H)
                        const Real* A_re_log,  // (H, N)
                        const Real* A_im,      // (H, N)
                        const Real* C,         // (H, N, 2)
                        const S4dDims& d);

// Parameter gradients of sum(dkernel * kernel), accumulated (+=).
template <typename Real>
void s4d_kernel_backward(Real* dlog_dt,          // (H)        +=
                         Real* dA_re_log,        // (H, N)     +=
                         Real* dA_im,            // (H, N)     +=
                         Real* dC,               // (H, N, 2)  +=
                         const Real* dkernel,    // (H, T)
                         const Real* log_dt,     // (H)
                         const Real* A_re_log,   // (H, N)
                         const Real* A_im,       // (H, N)
                         const Real* C,          // (H, N, 2)
                         const S4dDims& d);

// Convolution mode from a zero state: y = causal_conv(kernel, x) + D x by FFT.
// kernel is saved for the backward. final_state, if wanted, is the state the
// recurrence would hold after the last step, so a stream can continue from a
// sequence processed in this mode (it is not differentiated).
template <typename Real>
void s4d_conv_forward(Real* y,               // (B, T, H)
                      std::type_identity_t<Real>* final_state,  // (B, H, N, 2) or null
                      Real* kernel,          // (H, T)  saved
                      const Real* x,         // (B, T, H)
                      const Real* log_dt,    // (H)
                      const Real* A_re_log,  // (H, N)
                      const Real* A_im,      // (H, N)
                      const Real* C,         // (H, N, 2)
                      const Real* D,         // (H)
                      const S4dDims& d);

template <typename Real>
void s4d_conv_backward(Real* dx,              // (B, T, H)  =
                       Real* dlog_dt,         // (H)        +=
                       Real* dA_re_log,       // (H, N)     +=
                       Real* dA_im,           // (H, N)     +=
                       Real* dC,              // (H, N, 2)  +=
                       Real* dD,              // (H)        +=
                       const Real* dy,        // (B, T, H)
                       const Real* kernel,    // (H, T)  from s4d_conv_forward
                       const Real* x,         // (B, T, H)
                       const Real* log_dt,    // (H)
                       const Real* A_re_log,  // (H, N)
                       const Real* A_im,      // (H, N)
                       const Real* C,         // (H, N, 2)
                       const Real* D,         // (H)
                       const S4dDims& d);

// The recurrence coefficients (fp64, see above); d.B and d.T are ignored.
// Compute once per parameter update, then step many samples.
template <typename Real>
void s4d_discretize(double* Abar,          // (H, N, 2)
                    double* Bbar,          // (H, N, 2)
                    const Real* log_dt,    // (H)
                    const Real* A_re_log,  // (H, N)
                    const Real* A_im,      // (H, N)
                    const S4dDims& d);

// One time step for B independent streams; d.T is ignored. state is read and
// updated in place. Allocates nothing (real-time safe).
template <typename Real>
void s4d_step(Real* y,             // (B, H)
              Real* state,         // (B, H, N, 2)  in/out
              const Real* x,       // (B, H)
              const double* Abar,  // (H, N, 2)  from s4d_discretize
              const double* Bbar,  // (H, N, 2)
              const Real* C,       // (H, N, 2)
              const Real* D,       // (H)
              const S4dDims& d);

// The recurrence over a whole sequence, step by step (the reference for the
// convolution mode). Identical, sample for sample, to calling s4d_step T
// times, so streams may be cut into blocks of any size.
template <typename Real>
void s4d_recurrent_forward(Real* y,                    // (B, T, H)
                           std::type_identity_t<Real>* final_state,  // (B, H, N, 2) or null
                           const Real* x,              // (B, T, H)
                           const Real* log_dt,         // (H)
                           const Real* A_re_log,       // (H, N)
                           const Real* A_im,           // (H, N)
                           const Real* C,              // (H, N, 2)
                           const Real* D,              // (H)
                           const std::type_identity_t<Real>* initial_state,  // (B, H, N, 2) or null
                           const S4dDims& d);

}  // namespace ssm
