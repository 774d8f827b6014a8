// Host-side entry points of the selective scan (Mamba-1, S6) CUDA kernels in
// kernels/selective_scan.cu. Called only by the launchers in
// lib/cuda/selective_scan.cpp, which check the arguments and provide the
// workspace; the public API is ssm/cuda_selective_scan.hpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "ssm/selective_scan.hpp"

namespace ssm::kernels {

// The op's arguments (ssm/selective_scan.hpp); the kernels ignore its Q.
using ScanFwdArgs = ScanFwd<float>;
using ScanBwdArgs = ScanBwd<float>;

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
