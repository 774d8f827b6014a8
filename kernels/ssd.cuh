// Host-side entry points of the SSD (Mamba-2) CUDA kernels in kernels/ssd.cu.
// Called only by the launchers in lib/cuda/ssd.cpp, which check the arguments
// and provide the workspace; the public API is ssm/cuda_ssd.hpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "ssm/ssd.hpp"

namespace ssm::kernels {

// The op's arguments (ssm/ssd.hpp) and the precision of the products.
struct SsdFwdArgs : SsdFwd<float> {
  bool split;  // 3xTF32 products (about fp32 accuracy) instead of plain tf32
};

struct SsdBwdArgs : SsdBwd<float> {
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
