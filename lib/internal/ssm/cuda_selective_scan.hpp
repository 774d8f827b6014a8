// Selective scan (Mamba-1, S6) forward and backward on the GPU: the same
// functions as selective_scan_blocked_forward / selective_scan_backward in
// ssm/selective_scan.hpp (DESIGN.md §1), on device pointers, fp32 in and out.
//
// Every pointer is device memory, laid out exactly as in ssm/selective_scan.hpp,
// with the same optional (null) arguments: z (no gate), final_state,
// initial_state (zeros), dfinal_state (zeros), dz, dinitial_state (not
// wanted). final_state may be the same buffer as initial_state. There is no
// block length Q: the kernels scan in spans of 32 steps of their own. The work
// is enqueued on `stream` (null: the default stream) and nothing synchronises;
// errors in the arguments or in a launch throw ssm::Error.
//
// Limits of the kernels: N <= 64, B <= 65535; any T >= 1, any E, any G with
// E % G == 0. Defined in the CUDA module only (libssm_cuda.so, lib/cuda/module.hpp),
// which the GPU tests link; the rest of the library reaches it through ops::cuda.
//
// Backward: activation gradients (dx, ddt_raw, dBm, dCm, dz, dinitial_state)
// are assigned (=); parameter gradients (dA_log, dD, ddt_bias) accumulate (+=).
// No atomics: every gradient is the same bits from run to run.
#pragma once
#include <cstddef>

#include "ssm/selective_scan.hpp"

// The CUDA runtime's stream type, declared without its headers.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace ssm {

// Throws ssm::Error naming the field unless the sizes suit the kernels (above).
void selective_scan_cuda_check_dims(const ScanDims& d);

// Device scratch the backward needs: about 2 * B * ceil(T / 32) * N * E floats
// (the state and its gradient at every span boundary). The forward needs none.
size_t selective_scan_backward_cuda_workspace(const ScanDims& d);

void selective_scan_forward_cuda(float* y,                    // (B, T, E)
                                 float* final_state,          // (B, E, N) or null
                                 const float* x,              // (B, T, E)
                                 const float* dt_raw,         // (B, T, E) before dt_bias and softplus
                                 const float* A_log,          // (E, N)
                                 const float* Bm,             // (B, T, G, N)
                                 const float* Cm,             // (B, T, G, N)
                                 const float* D,              // (E)
                                 const float* dt_bias,        // (E)
                                 const float* z,              // (B, T, E) or null
                                 const float* initial_state,  // (B, E, N) or null
                                 const ScanDims& d, cudaStream_t stream = nullptr);

// Allocates its workspace on `stream` (cudaMallocAsync / cudaFreeAsync).
void selective_scan_backward_cuda(float* dx,                  // (B, T, E)              =
                                  float* ddt_raw,             // (B, T, E)              =
                                  float* dA_log,              // (E, N)                 +=
                                  float* dBm,                 // (B, T, G, N)           =
                                  float* dCm,                 // (B, T, G, N)           =
                                  float* dD,                  // (E)                    +=
                                  float* ddt_bias,            // (E)                    +=
                                  float* dz,                  // (B, T, E) or null      =
                                  float* dinitial_state,      // (B, E, N) or null      =
                                  const float* dy,            // (B, T, E)
                                  const float* dfinal_state,  // (B, E, N) or null
                                  const float* x, const float* dt_raw, const float* A_log, const float* Bm,
                                  const float* Cm, const float* D, const float* dt_bias,
                                  const float* z,              // (B, T, E) or null
                                  const float* initial_state,  // (B, E, N) or null
                                  const ScanDims& d, cudaStream_t stream = nullptr);

// The same with the caller's workspace: at least
// selective_scan_backward_cuda_workspace(d) bytes of device memory, used by one
// call at a time.
void selective_scan_backward_cuda(float* dx, float* ddt_raw, float* dA_log, float* dBm, float* dCm, float* dD,
                                  float* ddt_bias, float* dz, float* dinitial_state, const float* dy,
                                  const float* dfinal_state, const float* x, const float* dt_raw, const float* A_log,
                                  const float* Bm, const float* Cm, const float* D, const float* dt_bias,
                                  const float* z, const float* initial_state, const ScanDims& d, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream = nullptr);

}  // namespace ssm
