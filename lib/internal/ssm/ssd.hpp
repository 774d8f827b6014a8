// SSD: the Mamba-2 selective state-space model with a scalar decay per head
// (DESIGN.md §1). Three ways to compute the same function:
//   ssd_reference_*  the sequential recurrence, plain loops (the test reference)
//   ssd_chunked_*    the chunked algorithm (matmuls inside a chunk of Q steps,
//                    a short scan across chunks); any Q >= 1, any T
//   ssd_step         one time step for streaming, O(1) state
//
//   dt[t,h] = softplus(dt_raw[t,h] + dt_bias[h])
//   a[t,h]  = exp(dt[t,h] * A[h]),  A[h] = -exp(A_log[h])
//   S[t,h]  = a[t,h] * S[t-1,h] + dt[t,h] * outer(x[t,h], B[t,g])     S: (P, N)
//   y[t,h]  = S[t,h] @ C[t,g] + D[h] * x[t,h]                          g = h / (H / G)
//
// Backward: activation gradients (dx, ddt_raw, dB, dC, dinitial_state) are
// assigned (=); parameter gradients (dA_log, dD, ddt_bias) accumulate (+=).
// Null final_state / initial_state / dfinal_state / dinitial_state mean
// "not wanted" / zeros. Every entry point throws ssm::Error on bad dims, a
// chunk length Q < 1 or a null required buffer.
//
// The chunked functions run OpenMP tasks over (batch, group, slice of the
// group's heads) and keep BLAS single-threaded while they run (the caller's
// BLAS thread count is restored on return). ssd_step uses no threads.
#pragma once
#include "ssm/common.hpp"

namespace ssm {

struct SsdDims {
  int B;  // batch
  int T;  // time steps
  int H;  // heads
  int P;  // head dim
  int G;  // groups of B and C (H % G == 0)
  int N;  // state size
};

// The arguments of one SSD forward / backward as one struct: the ops table
// (ssm/backend_ops.hpp) and the CUDA kernels take them in this form.
template <typename Real>
struct SsdFwd {
  Real* y;                    // (B, T, H, P)
  Real* final_state;          // (B, H, P, N) or null
  const Real* x;              // (B, T, H, P)
  const Real* dt_raw;         // (B, T, H)
  const Real* A_log;          // (H)
  const Real* Bm;             // (B, T, G, N)
  const Real* Cm;             // (B, T, G, N)
  const Real* D;              // (H)
  const Real* dt_bias;        // (H)
  const Real* initial_state;  // (B, H, P, N) or null
  SsdDims d;
  int Q;
};
template <typename Real>
struct SsdBwd {
  Real* dx;                   // (B, T, H, P)          =
  Real* ddt_raw;              // (B, T, H)             =
  Real* dA_log;               // (H)                   +=
  Real* dBm;                  // (B, T, G, N)          =
  Real* dCm;                  // (B, T, G, N)          =
  Real* dD;                   // (H)                   +=
  Real* ddt_bias;             // (H)                   +=
  Real* dinitial_state;       // (B, H, P, N) or null  =
  const Real* dy;             // (B, T, H, P)
  const Real* dfinal_state;   // (B, H, P, N) or null
  SsdFwd<Real> in;            // the forward's inputs (its outputs unused)
};

// Throws ssm::Error naming the bad field unless every size is >= 1 and H % G == 0.
void ssd_check_dims(const SsdDims& d);

template <typename Real>
void ssd_reference_forward(Real* y,                    // (B, T, H, P)
                           Real* final_state,          // (B, H, P, N) or null
                           const Real* x,              // (B, T, H, P)
                           const Real* dt_raw,         // (B, T, H) before dt_bias and softplus
                           const Real* A_log,          // (H)
                           const Real* Bm,             // (B, T, G, N)
                           const Real* Cm,             // (B, T, G, N)
                           const Real* D,              // (H)
                           const Real* dt_bias,        // (H)
                           const Real* initial_state,  // (B, H, P, N) or null
                           const SsdDims& d);

// Gradients of the sequential recurrence (plain loops; keeps all T states, so
// meant for tests and small shapes). Same argument order and (=)/(+=)
// conventions as ssd_chunked_backward.
template <typename Real>
void ssd_reference_backward(Real* dx,                   // (B, T, H, P)      =
                            Real* ddt_raw,              // (B, T, H)         =
                            Real* dA_log,               // (H)               +=
                            Real* dBm,                  // (B, T, G, N)      =
                            Real* dCm,                  // (B, T, G, N)      =
                            Real* dD,                   // (H)               +=
                            Real* ddt_bias,             // (H)               +=
                            Real* dinitial_state,       // (B, H, P, N) or null  =
                            const Real* dy,             // (B, T, H, P)
                            const Real* dfinal_state,   // (B, H, P, N) or null
                            const Real* x, const Real* dt_raw, const Real* A_log, const Real* Bm,
                            const Real* Cm, const Real* D, const Real* dt_bias,
                            const Real* initial_state,  // (B, H, P, N) or null
                            const SsdDims& d);

template <typename Real>
void ssd_chunked_forward(Real* y,                    // (B, T, H, P)
                         Real* final_state,          // (B, H, P, N) or null
                         const Real* x,              // (B, T, H, P)
                         const Real* dt_raw,         // (B, T, H)
                         const Real* A_log,          // (H)
                         const Real* Bm,             // (B, T, G, N)
                         const Real* Cm,             // (B, T, G, N)
                         const Real* D,              // (H)
                         const Real* dt_bias,        // (H)
                         const Real* initial_state,  // (B, H, P, N) or null
                         const SsdDims& d, int Q);

// Gradients of the chunked forward; recomputes what it needs from the inputs.
template <typename Real>
void ssd_chunked_backward(Real* dx,                   // (B, T, H, P)      =
                          Real* ddt_raw,              // (B, T, H)         =
                          Real* dA_log,               // (H)               +=
                          Real* dBm,                  // (B, T, G, N)      =
                          Real* dCm,                  // (B, T, G, N)      =
                          Real* dD,                   // (H)               +=
                          Real* ddt_bias,             // (H)               +=
                          Real* dinitial_state,       // (B, H, P, N) or null  =
                          const Real* dy,             // (B, T, H, P)
                          const Real* dfinal_state,   // (B, H, P, N) or null
                          const Real* x, const Real* dt_raw, const Real* A_log, const Real* Bm,
                          const Real* Cm, const Real* D, const Real* dt_bias,
                          const Real* initial_state,  // (B, H, P, N) or null
                          const SsdDims& d, int Q);

// One step for B independent streams; d.T is ignored. state is read and
// updated in place.
template <typename Real>
void ssd_step(Real* y,             // (B, H, P)
              Real* state,         // (B, H, P, N)  in/out
              const Real* x,       // (B, H, P)
              const Real* dt_raw,  // (B, H)
              const Real* A_log,   // (H)
              const Real* Bm,      // (B, G, N)
              const Real* Cm,      // (B, G, N)
              const Real* D,       // (H)
              const Real* dt_bias, // (H)
              const SsdDims& d);

}  // namespace ssm
