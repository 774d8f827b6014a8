// Launchers of the SSD CUDA kernels (ssm/cuda_ssd.hpp): argument checks,
// workspace, then kernels/ssd.cu does the work.
#include "ssd.cuh"

#include "cuda_check.cuh"

#include <cuda_runtime_api.h>

#include <string>

#include "ssm/common.hpp"
#include "ssm/cuda_ssd.hpp"

namespace ssm {
namespace {

constexpr CudaCheck check_cuda{"ssd cuda"};

// Workspace for one call: the caller's, or one allocated on the stream.
class Workspace {
 public:
  Workspace(size_t need, const SsdCudaConfig& cfg, cudaStream_t stream, const char* fn) : stream_(stream) {
    if (cfg.workspace) {
      require(cfg.workspace_bytes >= need, std::string(fn) + ": workspace_bytes " +
                                               std::to_string(cfg.workspace_bytes) + " < the " + std::to_string(need) +
                                               " bytes needed");
      ptr_ = cfg.workspace;
    } else {
      check_cuda(cudaMallocAsync(&ptr_, need, stream), "cudaMallocAsync of the workspace");
      owned_ = true;
    }
  }
  ~Workspace() {
    if (owned_) cudaFreeAsync(ptr_, stream_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  bool owned_ = false;
  cudaStream_t stream_;
};

void require_ptr(const void* p, const char* name) {
  require(p != nullptr, std::string("ssd cuda: ") + name + " must not be null");
}

}  // namespace

void ssd_cuda_check_dims(const SsdDims& d, int Q) {
  auto positive = [](int v, const char* name) {
    require(v >= 1, std::string("ssd cuda: SsdDims.") + name + " must be >= 1, got " + std::to_string(v));
  };
  positive(d.B, "B");
  positive(d.T, "T");
  positive(d.H, "H");
  positive(d.P, "P");
  positive(d.G, "G");
  positive(d.N, "N");
  require(d.H % d.G == 0,
          "ssd cuda: SsdDims.H (" + std::to_string(d.H) + ") must be a multiple of G (" + std::to_string(d.G) + ")");
  require(d.P <= kernels::kSsdMaxP,
          "ssd cuda: SsdDims.P = " + std::to_string(d.P) + " is above the kernels' limit of 64");
  require(d.N <= kernels::kSsdMaxN,
          "ssd cuda: SsdDims.N = " + std::to_string(d.N) + " is above the kernels' limit of 128");
  require(Q >= 1 && Q <= kernels::kSsdMaxQ, "ssd cuda: chunk length Q = " + std::to_string(Q) + " must be in [1, 64]");
  require(d.B <= 65535 && d.G <= 65535, "ssd cuda: B and G must be <= 65535");
}

size_t ssd_chunked_forward_cuda_workspace(const SsdDims& d, int Q) {
  ssd_cuda_check_dims(d, Q);
  return kernels::ssd_fwd_workspace_bytes(d, Q);
}

size_t ssd_chunked_backward_cuda_workspace(const SsdDims& d, int Q) {
  ssd_cuda_check_dims(d, Q);
  return kernels::ssd_bwd_workspace_bytes(d, Q);
}

void ssd_chunked_forward_cuda(float* y, float* final_state, const float* x, const float* dt_raw, const float* A_log,
                              const float* Bm, const float* Cm, const float* D, const float* dt_bias,
                              const float* initial_state, const SsdDims& d, int Q, cudaStream_t stream,
                              const SsdCudaConfig& cfg) {
  ssd_cuda_check_dims(d, Q);
  require_ptr(y, "y");
  require_ptr(x, "x");
  require_ptr(dt_raw, "dt_raw");
  require_ptr(A_log, "A_log");
  require_ptr(Bm, "Bm");
  require_ptr(Cm, "Cm");
  require_ptr(D, "D");
  require_ptr(dt_bias, "dt_bias");
  Workspace ws(kernels::ssd_fwd_workspace_bytes(d, Q), cfg, stream, "ssd_chunked_forward_cuda");
  const kernels::SsdFwdArgs a{{y, final_state, x, dt_raw, A_log, Bm, Cm, D, dt_bias, initial_state, d, Q},
                              cfg.math == CudaMath::fp32};
  kernels::ssd_fwd_launch(a, ws.get(), stream);
}

void ssd_chunked_backward_cuda(float* dx, float* ddt_raw, float* dA_log, float* dBm, float* dCm, float* dD,
                               float* ddt_bias, float* dinitial_state, const float* dy, const float* dfinal_state,
                               const float* x, const float* dt_raw, const float* A_log, const float* Bm,
                               const float* Cm, const float* D, const float* dt_bias, const float* initial_state,
                               const SsdDims& d, int Q, cudaStream_t stream, const SsdCudaConfig& cfg) {
  ssd_cuda_check_dims(d, Q);
  require_ptr(dx, "dx");
  require_ptr(ddt_raw, "ddt_raw");
  require_ptr(dA_log, "dA_log");
  require_ptr(dBm, "dBm");
  require_ptr(dCm, "dCm");
  require_ptr(dD, "dD");
  require_ptr(ddt_bias, "ddt_bias");
  require_ptr(dy, "dy");
  require_ptr(x, "x");
  require_ptr(dt_raw, "dt_raw");
  require_ptr(A_log, "A_log");
  require_ptr(Bm, "Bm");
  require_ptr(Cm, "Cm");
  require_ptr(D, "D");
  require_ptr(dt_bias, "dt_bias");
  Workspace ws(kernels::ssd_bwd_workspace_bytes(d, Q), cfg, stream, "ssd_chunked_backward_cuda");
  // tf32: the chunk kernel's products that feed the dt / A_log gradient sums
  // (C B^T, dy x^T, ddtx, dC_inter, dB_state) run as 3xTF32; in plain tf32,
  // dA_log and ddt_bias missed 1e-3 (up to 2.4e-3) on small shapes (docs/KERNELS.md).
  const bool fp32 = cfg.math == CudaMath::fp32;
  const kernels::SsdBwdArgs a{
      {dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dinitial_state, dy, dfinal_state,
       {nullptr, nullptr, x, dt_raw, A_log, Bm, Cm, D, dt_bias, initial_state, d, Q}},
      fp32,
      fp32 ? 15 : 7};
  kernels::ssd_bwd_launch(a, ws.get(), stream);
}

}  // namespace ssm
