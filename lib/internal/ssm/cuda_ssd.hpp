// SSD (Mamba-2) chunked forward and backward on the GPU: the same functions as
// ssm/ssd.hpp (DESIGN.md §1), on device pointers, fp32 in and out.
//
// Every pointer is device memory, laid out exactly as in ssm/ssd.hpp. The work
// is enqueued on `stream` (null: the default stream) and nothing synchronises;
// errors in the arguments or in a launch throw ssm::Error.
//
// Limits of the kernels: 1 <= Q <= 64, P <= 64, N <= 128 (sizes in between are
// padded: P to 32 or 64, N to 32, 64 or 128); any T >= 1, any B, H, G with
// H % G == 0.
//
// Products run on the tensor cores. CudaMath::tf32 rounds their operands to
// tf32 (about 3e-4 relative error, like PyTorch's allow_tf32 and Triton's
// default for fp32 dot); CudaMath::fp32 splits each operand into two tf32
// parts (3xTF32, close to fp32 accuracy, about 2x slower). Accumulation and all
// element-wise math are fp32 in both.
//
// Backward: activation gradients (dx, ddt_raw, dBm, dCm, dinitial_state) are
// assigned (=); parameter gradients (dA_log, dD, ddt_bias) accumulate (+=, by
// atomics, so their last bits may differ from run to run).
#pragma once
#include <cstddef>

#include "ssm/ssd.hpp"

// The CUDA runtime's stream type, declared without its headers.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace ssm {

enum class CudaMath { tf32, fp32 };

struct SsdCudaConfig {
  // Scratch of at least ssd_chunked_*_cuda_workspace() bytes on the device,
  // used by one call at a time. Null: the call allocates (cudaMallocAsync) and
  // frees (cudaFreeAsync) its own on `stream`.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  CudaMath math = CudaMath::tf32;
};

// Throws ssm::Error naming the field unless the sizes suit the kernels (above).
void ssd_cuda_check_dims(const SsdDims& d, int Q);

size_t ssd_chunked_forward_cuda_workspace(const SsdDims& d, int Q);
size_t ssd_chunked_backward_cuda_workspace(const SsdDims& d, int Q);

void ssd_chunked_forward_cuda(float* y,                    // (B, T, H, P)
                              float* final_state,          // (B, H, P, N) or null
                              const float* x,              // (B, T, H, P)
                              const float* dt_raw,         // (B, T, H)
                              const float* A_log,          // (H)
                              const float* Bm,             // (B, T, G, N)
                              const float* Cm,             // (B, T, G, N)
                              const float* D,              // (H)
                              const float* dt_bias,        // (H)
                              const float* initial_state,  // (B, H, P, N) or null
                              const SsdDims& d, int Q, cudaStream_t stream = nullptr, const SsdCudaConfig& cfg = {});

void ssd_chunked_backward_cuda(float* dx,                  // (B, T, H, P)      =
                               float* ddt_raw,             // (B, T, H)         =
                               float* dA_log,              // (H)               +=
                               float* dBm,                 // (B, T, G, N)      =
                               float* dCm,                 // (B, T, G, N)      =
                               float* dD,                  // (H)               +=
                               float* ddt_bias,            // (H)               +=
                               float* dinitial_state,      // (B, H, P, N) or null  =
                               const float* dy,            // (B, T, H, P)
                               const float* dfinal_state,  // (B, H, P, N) or null
                               const float* x, const float* dt_raw, const float* A_log, const float* Bm,
                               const float* Cm, const float* D, const float* dt_bias,
                               const float* initial_state,  // (B, H, P, N) or null
                               const SsdDims& d, int Q, cudaStream_t stream = nullptr, const SsdCudaConfig& cfg = {});

}  // namespace ssm
