// Selective scan: the Mamba-1 selective state-space model (S6) with a diagonal
// decay per channel and state (DESIGN.md §1). Three ways to compute the same
// function:
//   selective_scan_reference_*  the sequential recurrence, plain loops (the test reference)
//   selective_scan_blocked_*    the chunked-mode counterpart: time split into blocks of
//                               Q steps, the state carried from block to block,
//                               parallel over (batch, channel tiles); any Q >= 1, any T
//   selective_scan_step         one time step for streaming, O(1) state
//
//   dt[t,e]   = softplus(dt_raw[t,e] + dt_bias[e])
//   a[t,e,n]  = exp(dt[t,e] * A[e,n]),  A[e,n] = -exp(A_log[e,n])
//   S[t,e,n]  = a[t,e,n] * S[t-1,e,n] + dt[t,e] * B[t,g,n] * x[t,e]      S: (E, N)
//   y[t,e]    = (sum_n S[t,e,n] * C[t,g,n] + D[e] * x[t,e]) * silu(z[t,e])
//                                                         g = e / (E / G)
// Without z the gate is 1.
//
// Backward: activation gradients (dx, ddt_raw, dBm, dCm, dz, dinitial_state)
// are assigned (=); parameter gradients (dA_log, dD, ddt_bias) accumulate (+=).
// Null z / final_state / initial_state / dfinal_state / dz / dinitial_state
// mean "no gate" / "not wanted" / zeros. final_state may be the same buffer as
// initial_state (streaming carries the state in place).
#pragma once
#include "ssm/common.hpp"

namespace ssm {

struct ScanDims {
  int B;  // batch
  int T;  // time steps
  int E;  // channels (inner width)
  int G;  // groups of B and C (E % G == 0)
  int N;  // state size
};

// The arguments of one scan forward / backward as one struct: the ops table
// (ssm/backend_ops.hpp) and the CUDA kernels take them in this form.
template <typename Real>
struct ScanFwd {
  Real* y;                    // (B, T, E)
  Real* final_state;          // (B, E, N) or null
  const Real* x;              // (B, T, E)
  const Real* dt_raw;         // (B, T, E)
  const Real* A_log;          // (E, N)
  const Real* Bm;             // (B, T, G, N)
  const Real* Cm;             // (B, T, G, N)
  const Real* D;              // (E)
  const Real* dt_bias;        // (E)
  const Real* z;              // (B, T, E) or null
  const Real* initial_state;  // (B, E, N) or null
  ScanDims d;
  int Q;  // the CPU's block length; the CUDA kernels choose their own
};
template <typename Real>
struct ScanBwd {
  Real* dx;                   // (B, T, E)             =
  Real* ddt_raw;              // (B, T, E)             =
  Real* dA_log;               // (E, N)                +=
  Real* dBm;                  // (B, T, G, N)          =
  Real* dCm;                  // (B, T, G, N)          =
  Real* dD;                   // (E)                   +=
  Real* ddt_bias;             // (E)                   +=
  Real* dz;                   // (B, T, E) or null     =
  Real* dinitial_state;       // (B, E, N) or null     =
  const Real* dy;             // (B, T, E)
  const Real* dfinal_state;   // (B, E, N) or null
  ScanFwd<Real> in;           // the forward's inputs (its outputs unused)
};

// Throws ssm::Error naming the bad field unless every size is >= 1 and E % G == 0.
void selective_scan_check_dims(const ScanDims& d);

template <typename Real>
void selective_scan_reference_forward(Real* y,                    // (B, T, E)
                                      Real* final_state,          // (B, E, N) or null
                                      const Real* x,              // (B, T, E)
                                      const Real* dt_raw,         // (B, T, E) before dt_bias and softplus
                                      const Real* A_log,          // (E, N)
                                      const Real* Bm,             // (B, T, G, N)
                                      const Real* Cm,             // (B, T, G, N)
                                      const Real* D,              // (E)
                                      const Real* dt_bias,        // (E)
                                      const Real* z,              // (B, T, E) or null
                                      const Real* initial_state,  // (B, E, N) or null
                                      const ScanDims& d);

template <typename Real>
void selective_scan_blocked_forward(Real* y,                    // (B, T, E)
                                    Real* final_state,          // (B, E, N) or null
                                    const Real* x,              // (B, T, E)
                                    const Real* dt_raw,         // (B, T, E)
                                    const Real* A_log,          // (E, N)
                                    const Real* Bm,             // (B, T, G, N)
                                    const Real* Cm,             // (B, T, G, N)
                                    const Real* D,              // (E)
                                    const Real* dt_bias,        // (E)
                                    const Real* z,              // (B, T, E) or null
                                    const Real* initial_state,  // (B, E, N) or null
                                    const ScanDims& d, int Q);

// Gradients of the forward; recomputes what it needs from the inputs. Keeps
// the state only at block boundaries (O(B * T/Q * E * N) scratch) and
// recomputes it inside a block, so long sequences never hold (T, E, N).
template <typename Real>
void selective_scan_backward(Real* dx,                   // (B, T, E)              =
                             Real* ddt_raw,              // (B, T, E)              =
                             Real* dA_log,               // (E, N)                 +=
                             Real* dBm,                  // (B, T, G, N)           =
                             Real* dCm,                  // (B, T, G, N)           =
                             Real* dD,                   // (E)                    +=
                             Real* ddt_bias,             // (E)                    +=
                             Real* dz,                   // (B, T, E) or null      =
                             Real* dinitial_state,       // (B, E, N) or null      =
                             const Real* dy,             // (B, T, E)
                             const Real* dfinal_state,   // (B, E, N) or null
                             const Real* x, const Real* dt_raw, const Real* A_log, const Real* Bm,
                             const Real* Cm, const Real* D, const Real* dt_bias,
                             const Real* z,              // (B, T, E) or null
                             const Real* initial_state,  // (B, E, N) or null
                             const ScanDims& d, int Q);

// One step for B independent streams; d.T is ignored. state is read and
// updated in place. Never allocates (real-time path).
template <typename Real>
void selective_scan_step(Real* y,              // (B, E)
                         Real* state,          // (B, E, N)  in/out
                         const Real* x,        // (B, E)
                         const Real* dt_raw,   // (B, E)
                         const Real* A_log,    // (E, N)
                         const Real* Bm,       // (B, G, N)
                         const Real* Cm,       // (B, G, N)
                         const Real* D,        // (E)
                         const Real* dt_bias,  // (E)
                         const Real* z,        // (B, E) or null
                         const ScanDims& d);

}  // namespace ssm
