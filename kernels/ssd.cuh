// Host-side entry points of the SSD (Mamba-2) CUDA kernels in kernels/ssd.cu.
// Called only by the launchers in lib/cuda/ssd.cpp, which check the arguments
// and provide the workspace; the public API is ssm/cuda_ssd.hpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "ssm/ssd.hpp"

namespace ssm::kernels {

struct SsdFwdArgs {
  float* y;                    // (B, T, H, P)
  float* final_state;          // (B, H, P, N) or null
  const float* x;              // (B, T, H, P)
  const float* dt_raw;         // (B, T, H)
  const float* A_log;          // (H)
  const float* Bm;             // (B, T, G, N)
  const float* Cm;             // (B, T, G, N)
  const float* D;              // (H)
  const float* dt_bias;        // (H)
  const float* initial_state;  // (B, H, P, N) or null
  SsdDims d;
  int Q;       // chunk length, 1..64
  bool split;  // 3xTF32 products (about fp32 accuracy) instead of plain tf32
};

struct SsdBwdArgs {
  float* dx;                  // (B, T, H, P)  =
  float* ddt_raw;             // (B, T, H)     =
  float* dA_log;              // (H)           +=
  float* dBm;                 // (B, T, G, N)  =
  float* dCm;                 // (B, T, G, N)  =
  float* dD;                  // (H)           +=
  float* ddt_bias;            // (H)           +=
  float* dinitial_state;      // (B, H, P, N) or null  =
  const float* dy;            // (B, T, H, P)
  const float* dfinal_state;  // (B, H, P, N) or null
  const float* x;
  const float* dt_raw;
  const float* A_log;
  const float* Bm;
  const float* Cm;
  const float* D;
  const float* dt_bias;
  const float* initial_state;  // (B, H, P, N) or null
  SsdDims d;
  int Q;
  bool split;      // 3xTF32 products everywhere
  int split_mask;  // else 3xTF32 only in these products of the chunk kernel: 1 C B^T and dy x^T,
                   // 2 ddtx, 4 dC_inter and dB_state, 8 the final dB / dC
};

// Largest P and N the kernels take (padded tiles of 64 x 128).
constexpr int kSsdMaxP = 64;
constexpr int kSsdMaxN = 128;
constexpr int kSsdMaxQ = 64;

// Workspace bytes the launches below need (256-byte aligned pieces).
size_t ssd_fwd_workspace_bytes(const SsdDims& d, int Q);
size_t ssd_bwd_workspace_bytes(const SsdDims& d, int Q);

// Enqueue the kernels on `stream`; throw ssm::Error on a launch error.
void ssd_fwd_launch(const SsdFwdArgs& a, void* workspace, cudaStream_t stream);
void ssd_bwd_launch(const SsdBwdArgs& a, void* workspace, cudaStream_t stream);

}  // namespace ssm::kernels
