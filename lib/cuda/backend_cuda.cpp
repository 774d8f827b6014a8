// The CUDA backend of ssm/backend_ops.hpp: each entry calls the op's launcher
// (lib/cuda/*.cpp) on the backend's stream, with tf32 tensor-core products
// (CudaMath::tf32). S4D has no CUDA version: its entries are null.
// Attention runs a straightforward kernel (kernels/attention.cu).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda_check.cuh"
#include "device_array.hpp"
#include "ssm/backend_ops.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_attention.hpp"
#include "ssm/cuda_losses.hpp"
#include "ssm/cuda_ops.hpp"
#include "ssm/cuda_selective_scan.hpp"
#include "ssm/cuda_ssd.hpp"

namespace ssm::ops {
namespace {

constexpr CudaCheck check_cuda{"cuda backend"};

struct Context {
  cudaStream_t stream = nullptr;  // the default stream
  cublasHandle_t blas = nullptr;
  CudaMath math = CudaMath::tf32;
  ParamTable decay_table;         // the table decay_mult was built for
  DeviceArray<float> decay_mult;  // (total)  per element, -1 in the gaps

  explicit Context(CudaMath m) : math(m) {
    require(cublasCreate(&blas) == CUBLAS_STATUS_SUCCESS, "cuda backend: cublasCreate failed");
    cublasSetStream(blas, stream);
    cublasSetMathMode(blas, math == CudaMath::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH);
  }
  ~Context() {
    if (blas) cublasDestroy(blas);
  }
  const float* decay_for(const ParamTable& t) {
    if (!(decay_table == t) || decay_mult.capacity() < t.total()) {
      const std::vector<float> mult = t.update_multipliers();  // (total)
      check_cuda(cudaMemcpy(decay_mult.grow(t.total()), mult.data(), sizeof(float) * t.total(), cudaMemcpyHostToDevice),
                 "upload of the decay multipliers");
      decay_table = t;
    }
    return decay_mult.data();
  }
  DeviceArray<unsigned char> ssd_ws;  // the SSD workspace, kept between calls (one stream: reuse is ordered)
  SsdCudaConfig ssd(size_t need) {
    SsdCudaConfig c;
    c.math = math;
    c.workspace = ssd_ws.grow(need);
    c.workspace_bytes = ssd_ws.capacity();
    return c;
  }
};

Context& ctx_of(void* c) { return *static_cast<Context*>(c); }

// The entries (make_ops_table takes them by name); S4D has none.
struct Cuda {
  static float* alloc(void*, size_t n) {
    float* p = nullptr;
    check_cuda(cudaMalloc(reinterpret_cast<void**>(&p), (n > 0 ? n : 1) * sizeof(float)),
               "cudaMalloc of " + std::to_string(n) + " floats");
    return p;
  }
  static void release(void*, float* p) { cudaFree(p); }
  static void upload(void* c, float* dst, const float* src, size_t n) {
    if (n) check_cuda(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, ctx_of(c).stream), "upload");
  }
  static void download(void* c, float* dst, const float* src, size_t n) {
    if (n)
      check_cuda(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, ctx_of(c).stream), "download");
    check_cuda(cudaStreamSynchronize(ctx_of(c).stream), "waiting for the download");
  }

  static void copy_cols(void* c, const CopyCols<float>& a) {
    copy_cols_cuda(a.dst, a.ld_dst, a.c0_dst, a.src, a.ld_src, a.c0_src, a.R, a.w, ctx_of(c).stream);
  }
  static void add_into(void* c, const AddInto<float>& a) { add_into_cuda(a.dst, a.src, a.n, ctx_of(c).stream); }
  static void linear_forward(void* c, const LinearFwd<float>& a) {
    linear_forward_cuda(ctx_of(c).blas, a.y, a.x, a.W, a.bias, a.R, a.I, a.O, ctx_of(c).stream);
  }
  static void linear_backward(void* c, const LinearBwd<float>& a) {
    linear_backward_cuda(ctx_of(c).blas, a.dx, a.dW, a.dbias, a.dy, a.x, a.W, a.R, a.I, a.O, ctx_of(c).stream);
  }
  static void rmsnorm_forward(void* c, const RmsNormFwd<float>& a) {
    if (a.z) {
      gated_rmsnorm_forward_cuda(a.y, a.rstd, a.x, a.z, a.weight, a.R, a.C, a.G, static_cast<float>(a.eps),
                                 ctx_of(c).stream);
    } else {
      require(a.G == 1, "cuda rmsnorm_forward: the plain RMSNorm has G = 1, got " + std::to_string(a.G));
      rmsnorm_forward_cuda(a.y, a.rstd, a.x, a.weight, a.R, a.C, static_cast<float>(a.eps), ctx_of(c).stream);
    }
  }
  static void rmsnorm_backward(void* c, const RmsNormBwd<float>& a) {
    if (a.z)
      gated_rmsnorm_backward_cuda(a.dx, a.dz, a.dweight, a.dy, a.rstd, a.x, a.z, a.weight, a.R, a.C, a.G,
                                  ctx_of(c).stream);
    else
      rmsnorm_backward_cuda(a.dx, a.dweight, a.dy, a.rstd, a.x, a.weight, a.R, a.C, ctx_of(c).stream);
  }
  static void silu_forward(void* c, const SiluFwd<float>& a) { silu_forward_cuda(a.y, a.x, a.n, ctx_of(c).stream); }
  static void silu_backward(void* c, const SiluBwd<float>& a) {
    silu_backward_cuda(a.dx, a.dy, a.x, a.n, ctx_of(c).stream);
  }
  static void gate_forward(void* c, const GateFwd<float>& a) {
    sigmoid_gate_forward_cuda(a.y, a.x, a.g, a.n, ctx_of(c).stream);
  }
  static void gate_backward(void* c, const GateBwd<float>& a) {
    sigmoid_gate_backward_cuda(a.dx, a.dg, a.dy, a.x, a.g, a.n, ctx_of(c).stream);
  }
  static void log_power_forward(void* c, const LogPowerFwd<float>& a) {
    log_power_forward_cuda(a.y, a.x, a.n, a.eps, ctx_of(c).stream);
  }
  static void log_power_backward(void* c, const LogPowerBwd<float>& a) {
    log_power_backward_cuda(a.dx, a.dy, a.x, a.n, a.eps, ctx_of(c).stream);
  }
  static void unfold_forward(void* c, const UnfoldFwd<float>& a) {
    unfold_forward_cuda(a.y, a.next_tail, a.x, a.tail, a.dims.B, a.dims.T, a.dims.C, a.dims.W, ctx_of(c).stream);
  }
  static void unfold_backward(void* c, const UnfoldBwd<float>& a) {
    unfold_backward_cuda(a.dx, a.dy, a.dims.B, a.dims.T, a.dims.C, a.dims.W, ctx_of(c).stream);
  }
  static void attention_forward(void* c, const AttnFwd<float>& a) {
    attention_forward_cuda(a.y, a.lse, a.final_state, a.qkv, a.initial_state, a.d, ctx_of(c).stream);
  }
  static void attention_backward(void* c, const AttnBwd<float>& a) {
    const AttnFwd<float>& i = a.in;
    attention_backward_cuda(a.dqkv, a.dinitial_state, a.dy, a.dfinal_state, a.lse, i.qkv, i.initial_state, i.d,
                            ctx_of(c).stream);
  }
  static void conv1d_forward(void* c, const Conv1dFwd<float>& a) {
    conv1d_forward_cuda(a.y, a.final_tail, a.x, a.weight, a.bias, a.initial_tail, a.d, ctx_of(c).stream);
  }
  static void conv1d_backward(void* c, const Conv1dBwd<float>& a) {
    conv1d_backward_cuda(a.dx, a.dweight, a.dbias, a.dinitial_tail, a.dy, a.dfinal_tail, a.x, a.weight, a.initial_tail,
                         a.d, ctx_of(c).stream);
  }
  static void ssd_forward(void* c, const SsdFwd<float>& a) {
    ssd_chunked_forward_cuda(a.y, a.final_state, a.x, a.dt_raw, a.A_log, a.Bm, a.Cm, a.D, a.dt_bias, a.initial_state,
                             a.d, a.Q, ctx_of(c).stream, ctx_of(c).ssd(ssd_chunked_forward_cuda_workspace(a.d, a.Q)));
  }
  static void ssd_backward(void* c, const SsdBwd<float>& a) {
    const SsdFwd<float>& i = a.in;
    ssd_chunked_backward_cuda(a.dx, a.ddt_raw, a.dA_log, a.dBm, a.dCm, a.dD, a.ddt_bias, a.dinitial_state, a.dy,
                              a.dfinal_state, i.x, i.dt_raw, i.A_log, i.Bm, i.Cm, i.D, i.dt_bias, i.initial_state, i.d,
                              i.Q, ctx_of(c).stream, ctx_of(c).ssd(ssd_chunked_backward_cuda_workspace(i.d, i.Q)));
  }
  static void scan_forward(void* c, const ScanFwd<float>& a) {
    selective_scan_forward_cuda(a.y, a.final_state, a.x, a.dt_raw, a.A_log, a.Bm, a.Cm, a.D, a.dt_bias, a.z,
                                a.initial_state, a.d, ctx_of(c).stream);
  }
  static void scan_backward(void* c, const ScanBwd<float>& a) {
    const ScanFwd<float>& i = a.in;
    selective_scan_backward_cuda(a.dx, a.ddt_raw, a.dA_log, a.dBm, a.dCm, a.dD, a.ddt_bias, a.dz, a.dinitial_state,
                                 a.dy, a.dfinal_state, i.x, i.dt_raw, i.A_log, i.Bm, i.Cm, i.D, i.dt_bias, i.z,
                                 i.initial_state, i.d, ctx_of(c).stream);
  }
  static void loss_forward(void* c, const LossFwd<float>& a) {
    cudaStream_t s = ctx_of(c).stream;
    *a.loss = by_loss_kind(
        a.kind, [&] { return l1_loss_forward_cuda(a.pred, a.target, a.d, s); },
        [&] { return l2_loss_forward_cuda(a.pred, a.target, a.d, s); },
        [&] { return si_sdr_loss_forward_cuda(a.pred, a.target, a.d, a.eps, s); });
  }
  static void loss_backward(void* c, const LossBwd<float>& a) {
    const LossFwd<float>& i = a.in;
    cudaStream_t s = ctx_of(c).stream;
    by_loss_kind(
        i.kind, [&] { l1_loss_backward_cuda(a.dpred, a.dloss, i.pred, i.target, i.d, s); },
        [&] { l2_loss_backward_cuda(a.dpred, a.dloss, i.pred, i.target, i.d, s); },
        [&] { si_sdr_loss_backward_cuda(a.dpred, a.dloss, i.pred, i.target, i.d, i.eps, s); });
  }
  static void adamw_step(void* c, const AdamwStep<float>& a) {
    require(a.table != nullptr, "cuda adamw_step: table must not be null");
    adamw_update_cuda(a.params, a.m, a.v, a.grads, ctx_of(c).decay_for(*a.table), a.table->total(), a.step, a.lr,
                      a.config, 1.0f, ctx_of(c).stream);
  }
};

}  // namespace

namespace {

// One context and table per math mode and GPU, made on first use on the
// GPU that is current for the calling thread (cudaSetDevice): a cuBLAS
// handle belongs to the device it was made on.
constexpr int kMaxDevices = 64;

template <CudaMath math>
const OpsTable<float>* table_of(const char* name, std::string* why) {
  if (!cuda_available()) {
    if (why) *why = "no usable GPU: " + cuda_device_description();
    return nullptr;
  }
  int device = 0;
  check_cuda(cudaGetDevice(&device), "current device");
  require(device >= 0 && device < kMaxDevices, "cuda backend: device " + std::to_string(device) + " is beyond " +
                                                   std::to_string(kMaxDevices - 1));
  struct PerDevice {
    std::unique_ptr<Context> context;
    OpsTable<float> table{};
  };
  static std::mutex made;
  static PerDevice per_device[kMaxDevices];
  const std::lock_guard<std::mutex> lock(made);
  PerDevice& d = per_device[device];
  if (!d.context) {
    d.context = std::make_unique<Context>(math);
    d.table = make_ops_table<float, Cuda>(name, d.context.get());
  }
  return &d.table;
}

}  // namespace

const OpsTable<float>* cuda(std::string* why) { return table_of<CudaMath::tf32>("cuda", why); }
const OpsTable<float>* cuda_fp32(std::string* why) { return table_of<CudaMath::fp32>("cuda_fp32", why); }

}  // namespace ssm::ops
