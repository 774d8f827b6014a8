// Host-side entry points of the selective scan (Mamba-1, S6) CUDA kernels in
// kernels/selective_scan.cu. Called only by the launchers in
// lib/cuda/selective_scan.cpp, which check the arguments and provide the
// workspace; the public API is ssm/cuda_selective_scan.hpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "ssm/selective_scan.hpp"

namespace ssm::kernels {

struct ScanFwdArgs {
  float* y;                    // (B, T, E)
  float* final_state;          // (B, E, N) or null; may be initial_state
  const float* x;              // (B, T, E)
  const float* dt_raw;         // (B, T, E)
  const float* A_log;          // (E, N)
  const float* Bm;             // (B, T, G, N)
  const float* Cm;             // (B, T, G, N)
  const float* D;              // (E)
  const float* dt_bias;        // (E)
  const float* z;              // (B, T, E) or null
  const float* initial_state;  // (B, E, N) or null
  ScanDims d;
};

struct ScanBwdArgs {
  float* dx;                   // (B, T, E)      =
  float* ddt_raw;              // (B, T, E)      =
  float* dA_log;               // (E, N)         +=
  float* dBm;                  // (B, T, G, N)   =
  float* dCm;                  // (B, T, G, N)   =
  float* dD;                   // (E)            +=
  float* ddt_bias;             // (E)            +=
  float* dz;                   // (B, T, E) or null  =
  float* dinitial_state;       // (B, E, N) or null  =
  const float* dy;             // (B, T, E)
  const float* dfinal_state;   // (B, E, N) or null
  const float* x;              // (B, T, E)
  const float* dt_raw;         // (B, T, E)
  const float* A_log;          // (E, N)
  const float* Bm;             // (B, T, G, N)
  const float* Cm;             // (B, T, G, N)
  const float* D;              // (E)
  const float* dt_bias;        // (E)
  const float* z;              // (B, T, E) or null
  const float* initial_state;  // (B, E, N) or null
  ScanDims d;
};

// Largest N the kernels take, and the time steps one warp scans at once (the
// span: the backward keeps states at span boundaries).
constexpr int kScanMaxN = 64;
constexpr int kScanSpan = 32;

// Workspace bytes the backward needs (256-byte aligned pieces); the forward needs none.
size_t scan_bwd_workspace_bytes(const ScanDims& d);

// Enqueue the kernels on `stream`; throw ssm::Error on a launch error.
void scan_fwd_launch(const ScanFwdArgs& a, cudaStream_t stream);
void scan_bwd_launch(const ScanBwdArgs& a, void* workspace, cudaStream_t stream);

}  // namespace ssm::kernels
