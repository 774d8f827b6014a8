// Launchers of the selective scan CUDA kernels (ssm/cuda_selective_scan.hpp):
// argument checks, workspace, then kernels/selective_scan.cu does the work.
#include "selective_scan.cuh"

#include "cuda_check.cuh"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <string>

#include "ssm/common.hpp"
#include "ssm/cuda_selective_scan.hpp"

namespace ssm {
namespace {

constexpr CudaCheck check_cuda{"selective scan cuda"};

void require_ptr(const void* p, const char* fn, const char* name) {
  require(p != nullptr, std::string(fn) + ": " + name + " must not be null");
}

void require_inputs(const char* fn, const float* x, const float* dt_raw, const float* A_log, const float* Bm,
                    const float* Cm, const float* D, const float* dt_bias) {
  require_ptr(x, fn, "x");
  require_ptr(dt_raw, fn, "dt_raw");
  require_ptr(A_log, fn, "A_log");
  require_ptr(Bm, fn, "Bm");
  require_ptr(Cm, fn, "Cm");
  require_ptr(D, fn, "D");
  require_ptr(dt_bias, fn, "dt_bias");
}

kernels::ScanBwdArgs bwd_args(float* dx, float* ddt_raw, float* dA_log, float* dBm, float* dCm, float* dD,
                              float* ddt_bias, float* dz, float* dinitial_state, const float* dy,
                              const float* dfinal_state, const float* x, const float* dt_raw, const float* A_log,
                              const float* Bm, const float* Cm, const float* D, const float* dt_bias, const float* z,
                              const float* initial_state, const ScanDims& d) {
  const char* fn = "selective_scan_backward_cuda";
  selective_scan_cuda_check_dims(d);
  require_ptr(dx, fn, "dx");
  require_ptr(ddt_raw, fn, "ddt_raw");
  require_ptr(dA_log, fn, "dA_log");
  require_ptr(dBm, fn, "dBm");
  require_ptr(dCm, fn, "dCm");
  require_ptr(dD, fn, "dD");
  require_ptr(ddt_bias, fn, "ddt_bias");
  require_ptr(dy, fn, "dy");
  require_inputs(fn, x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  return kernels::ScanBwdArgs{dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dz, dinitial_state, dy, dfinal_state,
                              {nullptr, nullptr, x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, initial_state, d, 0}};
}

}  // namespace

void selective_scan_cuda_check_dims(const ScanDims& d) {
  selective_scan_check_dims(d);
  require(d.N <= kernels::kScanMaxN, "selective scan cuda: ScanDims.N = " + std::to_string(d.N) +
                                         " is above the kernels' limit of " + std::to_string(kernels::kScanMaxN));
  require(d.B <= 65535, "selective scan cuda: ScanDims.B = " + std::to_string(d.B) + " is above the limit of 65535");
  // launch grids: spans x max(groups, channel tiles of 128) blocks, N * E columns
  const long long nspan = (static_cast<long long>(d.T) + kernels::kScanSpan - 1) / kernels::kScanSpan;
  const long long per_span = std::max<long long>(d.G, (d.E + 127) / 128);
  require(nspan * per_span <= INT_MAX && static_cast<long long>(d.N) * d.E <= INT_MAX,
          "selective scan cuda: T = " + std::to_string(d.T) + " with E = " + std::to_string(d.E) +
              ", G = " + std::to_string(d.G) + ", N = " + std::to_string(d.N) + " is more than one launch covers");
}

size_t selective_scan_backward_cuda_workspace(const ScanDims& d) {
  selective_scan_cuda_check_dims(d);
  return kernels::scan_bwd_workspace_bytes(d);
}

void selective_scan_forward_cuda(float* y, float* final_state, const float* x, const float* dt_raw, const float* A_log,
                                 const float* Bm, const float* Cm, const float* D, const float* dt_bias, const float* z,
                                 const float* initial_state, const ScanDims& d, cudaStream_t stream) {
  const char* fn = "selective_scan_forward_cuda";
  selective_scan_cuda_check_dims(d);
  require_ptr(y, fn, "y");
  require_inputs(fn, x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  kernels::scan_fwd_launch(
      kernels::ScanFwdArgs{y, final_state, x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, initial_state, d, 0}, stream);
}

void selective_scan_backward_cuda(float* dx, float* ddt_raw, float* dA_log, float* dBm, float* dCm, float* dD,
                                  float* ddt_bias, float* dz, float* dinitial_state, const float* dy,
                                  const float* dfinal_state, const float* x, const float* dt_raw, const float* A_log,
                                  const float* Bm, const float* Cm, const float* D, const float* dt_bias,
                                  const float* z, const float* initial_state, const ScanDims& d, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream) {
  const kernels::ScanBwdArgs a = bwd_args(dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dz, dinitial_state, dy,
                                          dfinal_state, x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, initial_state, d);
  const size_t need = kernels::scan_bwd_workspace_bytes(d);
  require_ptr(workspace, "selective_scan_backward_cuda", "workspace");
  require(workspace_bytes >= need, "selective_scan_backward_cuda: workspace_bytes " + std::to_string(workspace_bytes) +
                                       " < the " + std::to_string(need) + " bytes needed");
  kernels::scan_bwd_launch(a, workspace, stream);
}

void selective_scan_backward_cuda(float* dx, float* ddt_raw, float* dA_log, float* dBm, float* dCm, float* dD,
                                  float* ddt_bias, float* dz, float* dinitial_state, const float* dy,
                                  const float* dfinal_state, const float* x, const float* dt_raw, const float* A_log,
                                  const float* Bm, const float* Cm, const float* D, const float* dt_bias,
                                  const float* z, const float* initial_state, const ScanDims& d, cudaStream_t stream) {
  const kernels::ScanBwdArgs a = bwd_args(dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dz, dinitial_state, dy,
                                          dfinal_state, x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, initial_state, d);
  void* ws = nullptr;
  check_cuda(cudaMallocAsync(&ws, kernels::scan_bwd_workspace_bytes(d), stream), "cudaMallocAsync of the workspace");
  try {
    kernels::scan_bwd_launch(a, ws, stream);
  } catch (...) {
    cudaFreeAsync(ws, stream);
    throw;
  }
  check_cuda(cudaFreeAsync(ws, stream), "cudaFreeAsync of the workspace");
}

}  // namespace ssm
