// Whole-model forward and backward on the GPU, step for step the structure of
// lib/model/model_graph.cpp: the same ops in the same order on device
// buffers, so the CPU graph is its reference.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "../model/layer_offsets.hpp"
#include "device_array.hpp"
#include "ssm/cuda_model.hpp"
#include "ssm/cuda_ops.hpp"
#include "ssm/cuda_selective_scan.hpp"
#include "ssm/cuda_ssd.hpp"

namespace ssm {

namespace {

using Buf = DeviceArray<float>;

// Activations one layer saves for its backward; R = B * T rows.
struct LayerActsCuda {
  Buf u;       // (R, D) layer input (residual stream)
  Buf rstd;    // (R)
  Buf un;      // (R, D) normalised input
  Buf z;       // (R, E) gate
  Buf cin;     // (R, Cc) conv input
  Buf cpre;    // (R, Cc) conv output before SiLU
  Buf x;       // (R, E) SSM input
  Buf Bm, Cm;  // (R, G*N)
  Buf dt_raw;  // (R, H) Mamba-2, (R, E) Mamba-1
  Buf y;       // (R, E) SSM output
  Buf rstd2;   // (R, G) gated norm (Mamba-2)
  Buf yn;      // (R, E) gated norm output (Mamba-2)
  Buf dt_low;  // (R, rank) Mamba-1
};

}  // namespace

struct ModelGraphCuda::Impl {
  ModelConfig cfg;
  cudaStream_t stream;
  CudaMath math;
  cublasHandle_t blas = nullptr;
  size_t enc_w, enc_b, norm_f, head_w, head_b;
  std::vector<LayerOffsets> off;
  std::vector<LayerActsCuda> acts;
  Buf h_last, rstd_f, hn;  // (R, D), (R), (R, D)
  Buf in_saved;            // (R, frame * in_channels)
  Buf wide;                // (R, F) in_proj output / its gradient
  Buf act;                 // (R, Cc) SiLU(conv) / its gradient
  // Backward scratch, reused by every layer.
  Buf dh, dh_prev, dhn, dun;           // (R, D)
  Buf dyn, dy, dz, dx, dx2, ddt;       // (R, E)
  Buf dBm, dCm;                        // (R, G*N)
  Buf dpre, dcin;                      // (R, Cc)
  Buf ddt_low, dxdbl;                  // Mamba-1: (R, rank), (R, rank + 2N)
  DeviceArray<unsigned char> ssd_ws;   // SSD workspace
  int B = 0, T = 0, Q = 0;

  Impl(const ModelConfig& c, const ParamTable& t, cudaStream_t s, CudaMath m) : cfg(c), stream(s), math(m) {
    enc_w = t.offset("encoder.weight");
    enc_b = t.offset("encoder.bias");
    norm_f = t.offset("norm_f.weight");
    head_w = t.offset("head.weight");
    head_b = t.offset("head.bias");
    off = model_layer_offsets(cfg, t);
    acts.resize(cfg.n_layers);
    require(cublasCreate(&blas) == CUBLAS_STATUS_SUCCESS, "model graph cuda: cublasCreate failed");
    cublasSetStream(blas, stream);
    cublasSetMathMode(blas, math == CudaMath::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH);
  }

  SsdCudaConfig ssd_config() {
    SsdCudaConfig sc;
    sc.workspace = ssd_ws.data();
    sc.workspace_bytes = ssd_ws.capacity();
    sc.math = math;
    return sc;
  }
  ~Impl() {
    if (blas) cublasDestroy(blas);
  }

  size_t rows() const { return static_cast<size_t>(B) * T; }
  int Ri() const { return static_cast<int>(rows()); }
  SsdDims ssd_dims() const { return SsdDims{B, T, cfg.heads(), cfg.head_dim, cfg.n_groups, cfg.d_state}; }

  void forward(float* out, const float* in, const float* P, int B_, int T_, int chunk) {
    require(B_ >= 1 && T_ >= 1, "model forward (cuda): batch and time must be >= 1");
    require(static_cast<size_t>(B_) * T_ <= static_cast<size_t>(INT32_MAX) / 4,
            "model forward (cuda): batch * time too large");
    require(T_ % cfg.frame == 0, "model forward (cuda): " + std::to_string(T_) +
                                     " samples are not a whole number of " + std::to_string(cfg.frame) +
                                     "-sample frames");
    B = B_;
    T = T_ / cfg.frame;  // time steps; (B, T_, C) samples are (B, T, frame * C) in memory
    Q = chunk > 0 ? chunk : cfg.chunk;
    const size_t R = rows();
    const int D = cfg.d_model;
    if (cfg.block == BlockKind::Mamba2) {
      const SsdDims d = ssd_dims();
      ssd_cuda_check_dims(d, Q);
      ssd_ws.grow(std::max(ssd_chunked_forward_cuda_workspace(d, Q), ssd_chunked_backward_cuda_workspace(d, Q)));
    }
    cuda_check(cudaMemcpyAsync(in_saved.grow(R * cfg.step_in()), in, sizeof(float) * R * cfg.step_in(),
                               cudaMemcpyDeviceToDevice, stream),
               "model forward (cuda): copy of the input");
    linear_forward_cuda(blas, acts[0].u.grow(R * D), in, P + enc_w, P + enc_b, Ri(), cfg.step_in(), D, stream);
    for (int l = 0; l < cfg.n_layers; ++l) {
      float* u_next = l + 1 < cfg.n_layers ? acts[l + 1].u.grow(R * D) : h_last.grow(R * D);
      if (cfg.block == BlockKind::Mamba2)
        mamba2_forward(acts[l], off[l], P, u_next);
      else
        mamba1_forward(acts[l], off[l], P, u_next);
    }
    rmsnorm_forward_cuda(hn.grow(R * D), rstd_f.grow(R), h_last.data(), P + norm_f, Ri(), D,
                         static_cast<float>(cfg.norm_eps), stream);
    linear_forward_cuda(blas, out, hn.data(), P + head_w, P + head_b, Ri(), D, cfg.step_out(), stream);
  }

  void mamba2_forward(LayerActsCuda& a, const LayerOffsets& o, const float* P, float* u_next) {
    const size_t R = rows();
    const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), G = cfg.n_groups, N = cfg.d_state;
    const int Cc = cfg.conv_channels(), K = cfg.d_conv;
    const int F = 2 * E + 2 * G * N + H;  // in_proj outputs: [z | xBC | dt_raw]
    const float eps = static_cast<float>(cfg.norm_eps);
    rmsnorm_forward_cuda(a.un.grow(R * D), a.rstd.grow(R), a.u.data(), P + o.norm, Ri(), D, eps, stream);
    linear_forward_cuda(blas, wide.grow(R * F), a.un.data(), P + o.in_proj, nullptr, Ri(), D, F, stream);
    copy_cols_cuda(a.z.grow(R * E), E, 0, wide.data(), F, 0, R, E, stream);
    copy_cols_cuda(a.cin.grow(R * Cc), Cc, 0, wide.data(), F, E, R, Cc, stream);
    copy_cols_cuda(a.dt_raw.grow(R * H), H, 0, wide.data(), F, E + Cc, R, H, stream);
    conv1d_forward_cuda(a.cpre.grow(R * Cc), nullptr, a.cin.data(), P + o.conv_w, P + o.conv_b, nullptr,
                        Conv1dDims{B, T, Cc, K}, stream);
    silu_forward_cuda(act.grow(R * Cc), a.cpre.data(), static_cast<long>(R * Cc), stream);
    copy_cols_cuda(a.x.grow(R * E), E, 0, act.data(), Cc, 0, R, E, stream);
    copy_cols_cuda(a.Bm.grow(R * G * N), G * N, 0, act.data(), Cc, E, R, G * N, stream);
    copy_cols_cuda(a.Cm.grow(R * G * N), G * N, 0, act.data(), Cc, E + G * N, R, G * N, stream);
    ssd_chunked_forward_cuda(a.y.grow(R * E), nullptr, a.x.data(), a.dt_raw.data(), P + o.A_log, a.Bm.data(),
                             a.Cm.data(), P + o.D, P + o.dt_bias, nullptr, ssd_dims(), Q, stream, ssd_config());
    gated_rmsnorm_forward_cuda(a.yn.grow(R * E), a.rstd2.grow(R * G), a.y.data(), a.z.data(), P + o.mixer_norm,
                               Ri(), E, G, eps, stream);
    linear_forward_cuda(blas, u_next, a.yn.data(), P + o.out_proj, nullptr, Ri(), E, D, stream);
    add_into_cuda(u_next, a.u.data(), static_cast<long>(R * D), stream);
  }

  void mamba1_forward(LayerActsCuda& a, const LayerOffsets& o, const float* P, float* u_next) {
    const size_t R = rows();
    const int D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, Rk = cfg.rank();
    const int Fx = Rk + 2 * N;  // x_proj outputs: [dt_low | B | C]
    rmsnorm_forward_cuda(a.un.grow(R * D), a.rstd.grow(R), a.u.data(), P + o.norm, Ri(), D,
                         static_cast<float>(cfg.norm_eps), stream);
    linear_forward_cuda(blas, wide.grow(R * 2 * E), a.un.data(), P + o.in_proj, nullptr, Ri(), D, 2 * E, stream);
    copy_cols_cuda(a.cin.grow(R * E), E, 0, wide.data(), 2 * E, 0, R, E, stream);
    copy_cols_cuda(a.z.grow(R * E), E, 0, wide.data(), 2 * E, E, R, E, stream);
    conv1d_forward_cuda(a.cpre.grow(R * E), nullptr, a.cin.data(), P + o.conv_w, P + o.conv_b, nullptr,
                        Conv1dDims{B, T, E, K}, stream);
    silu_forward_cuda(a.x.grow(R * E), a.cpre.data(), static_cast<long>(R * E), stream);
    linear_forward_cuda(blas, act.grow(R * Fx), a.x.data(), P + o.x_proj, nullptr, Ri(), E, Fx, stream);
    copy_cols_cuda(a.dt_low.grow(R * Rk), Rk, 0, act.data(), Fx, 0, R, Rk, stream);
    copy_cols_cuda(a.Bm.grow(R * N), N, 0, act.data(), Fx, Rk, R, N, stream);
    copy_cols_cuda(a.Cm.grow(R * N), N, 0, act.data(), Fx, Rk + N, R, N, stream);
    linear_forward_cuda(blas, a.dt_raw.grow(R * E), a.dt_low.data(), P + o.dt_proj, nullptr, Ri(), Rk, E, stream);
    selective_scan_forward_cuda(a.y.grow(R * E), nullptr, a.x.data(), a.dt_raw.data(), P + o.A_log, a.Bm.data(),
                                a.Cm.data(), P + o.D, P + o.dt_bias, a.z.data(), nullptr, ScanDims{B, T, E, 1, N},
                                stream);
    linear_forward_cuda(blas, u_next, a.y.data(), P + o.out_proj, nullptr, Ri(), E, D, stream);
    add_into_cuda(u_next, a.u.data(), static_cast<long>(R * D), stream);
  }

  void backward(float* dP, float* din, const float* dout, const float* P) {
    require(B > 0, "model backward (cuda): no forward to differentiate");
    const size_t R = rows();
    const int D = cfg.d_model;
    dh.grow(R * D);
    dh_prev.grow(R * D);
    linear_backward_cuda(blas, dhn.grow(R * D), dP + head_w, dP + head_b, dout, hn.data(), P + head_w, Ri(), D,
                         cfg.step_out(), stream);
    rmsnorm_backward_cuda(dh.data(), dP + norm_f, dhn.data(), rstd_f.data(), h_last.data(), P + norm_f, Ri(), D,
                          stream);
    for (int l = cfg.n_layers - 1; l >= 0; --l) {
      if (cfg.block == BlockKind::Mamba2)
        mamba2_backward(dh_prev.data(), acts[l], off[l], P, dP, dh.data());
      else
        mamba1_backward(dh_prev.data(), acts[l], off[l], P, dP, dh.data());
      std::swap(dh, dh_prev);
    }
    linear_backward_cuda(blas, din, dP + enc_w, dP + enc_b, dh.data(), in_saved.data(), P + enc_w, Ri(),
                         cfg.step_in(), D, stream);
  }

  void mamba2_backward(float* du, LayerActsCuda& a, const LayerOffsets& o, const float* P, float* dP,
                       const float* du_next) {
    const size_t R = rows();
    const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), G = cfg.n_groups, N = cfg.d_state;
    const int Cc = cfg.conv_channels(), K = cfg.d_conv;
    const int F = 2 * E + 2 * G * N + H;
    linear_backward_cuda(blas, dyn.grow(R * E), dP + o.out_proj, nullptr, du_next, a.yn.data(), P + o.out_proj, Ri(),
                         E, D, stream);
    gated_rmsnorm_backward_cuda(dy.grow(R * E), dz.grow(R * E), dP + o.mixer_norm, dyn.data(), a.rstd2.data(),
                                a.y.data(), a.z.data(), P + o.mixer_norm, Ri(), E, G, stream);
    ssd_chunked_backward_cuda(dx.grow(R * E), ddt.grow(R * H), dP + o.A_log, dBm.grow(R * G * N),
                              dCm.grow(R * G * N), dP + o.D, dP + o.dt_bias, nullptr, dy.data(), nullptr, a.x.data(),
                              a.dt_raw.data(), P + o.A_log, a.Bm.data(), a.Cm.data(), P + o.D, P + o.dt_bias,
                              nullptr, ssd_dims(), Q, stream, ssd_config());
    float* dact = act.grow(R * Cc);  // (R, Cc) gradient of SiLU(conv)
    copy_cols_cuda(dact, Cc, 0, dx.data(), E, 0, R, E, stream);
    copy_cols_cuda(dact, Cc, E, dBm.data(), G * N, 0, R, G * N, stream);
    copy_cols_cuda(dact, Cc, E + G * N, dCm.data(), G * N, 0, R, G * N, stream);
    silu_backward_cuda(dpre.grow(R * Cc), dact, a.cpre.data(), static_cast<long>(R * Cc), stream);
    conv1d_backward_cuda(dcin.grow(R * Cc), dP + o.conv_w, dP + o.conv_b, nullptr, dpre.data(), nullptr,
                         a.cin.data(), P + o.conv_w, nullptr, Conv1dDims{B, T, Cc, K}, stream);
    float* dproj = wide.grow(R * F);  // (R, F)
    copy_cols_cuda(dproj, F, 0, dz.data(), E, 0, R, E, stream);
    copy_cols_cuda(dproj, F, E, dcin.data(), Cc, 0, R, Cc, stream);
    copy_cols_cuda(dproj, F, E + Cc, ddt.data(), H, 0, R, H, stream);
    linear_backward_cuda(blas, dun.grow(R * D), dP + o.in_proj, nullptr, dproj, a.un.data(), P + o.in_proj, Ri(), D,
                         F, stream);
    rmsnorm_backward_cuda(du, dP + o.norm, dun.data(), a.rstd.data(), a.u.data(), P + o.norm, Ri(), D, stream);
    add_into_cuda(du, du_next, static_cast<long>(R * D), stream);
  }

  void mamba1_backward(float* du, LayerActsCuda& a, const LayerOffsets& o, const float* P, float* dP,
                       const float* du_next) {
    const size_t R = rows();
    const int D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, Rk = cfg.rank();
    const int Fx = Rk + 2 * N;
    linear_backward_cuda(blas, dy.grow(R * E), dP + o.out_proj, nullptr, du_next, a.y.data(), P + o.out_proj, Ri(), E,
                         D, stream);
    selective_scan_backward_cuda(dx.grow(R * E), ddt.grow(R * E), dP + o.A_log, dBm.grow(R * N), dCm.grow(R * N),
                                 dP + o.D, dP + o.dt_bias, dz.grow(R * E), nullptr, dy.data(), nullptr, a.x.data(),
                                 a.dt_raw.data(), P + o.A_log, a.Bm.data(), a.Cm.data(), P + o.D, P + o.dt_bias,
                                 a.z.data(), nullptr, ScanDims{B, T, E, 1, N}, stream);
    linear_backward_cuda(blas, ddt_low.grow(R * Rk), dP + o.dt_proj, nullptr, ddt.data(), a.dt_low.data(),
                         P + o.dt_proj, Ri(), Rk, E, stream);
    float* dx_dbl = dxdbl.grow(R * Fx);  // (R, Fx)
    copy_cols_cuda(dx_dbl, Fx, 0, ddt_low.data(), Rk, 0, R, Rk, stream);
    copy_cols_cuda(dx_dbl, Fx, Rk, dBm.data(), N, 0, R, N, stream);
    copy_cols_cuda(dx_dbl, Fx, Rk + N, dCm.data(), N, 0, R, N, stream);
    linear_backward_cuda(blas, dx2.grow(R * E), dP + o.x_proj, nullptr, dx_dbl, a.x.data(), P + o.x_proj, Ri(), E, Fx,
                         stream);
    add_into_cuda(dx.data(), dx2.data(), static_cast<long>(R * E), stream);
    silu_backward_cuda(dpre.grow(R * E), dx.data(), a.cpre.data(), static_cast<long>(R * E), stream);
    conv1d_backward_cuda(dcin.grow(R * E), dP + o.conv_w, dP + o.conv_b, nullptr, dpre.data(), nullptr, a.cin.data(),
                         P + o.conv_w, nullptr, Conv1dDims{B, T, E, K}, stream);
    float* dxz = wide.grow(R * 2 * E);  // (R, 2E)
    copy_cols_cuda(dxz, 2 * E, 0, dcin.data(), E, 0, R, E, stream);
    copy_cols_cuda(dxz, 2 * E, E, dz.data(), E, 0, R, E, stream);
    linear_backward_cuda(blas, dun.grow(R * D), dP + o.in_proj, nullptr, dxz, a.un.data(), P + o.in_proj, Ri(), D,
                         2 * E, stream);
    rmsnorm_backward_cuda(du, dP + o.norm, dun.data(), a.rstd.data(), a.u.data(), P + o.norm, Ri(), D, stream);
    add_into_cuda(du, du_next, static_cast<long>(R * D), stream);
  }
};

ModelGraphCuda::ModelGraphCuda(const ModelConfig& cfg, const ParamTable& table, cudaStream_t stream, CudaMath math)
    : impl_(std::make_unique<Impl>(cfg, table, stream, math)) {}
ModelGraphCuda::~ModelGraphCuda() = default;

void ModelGraphCuda::forward(float* out, const float* in, const float* params, int B, int T, int chunk) {
  impl_->forward(out, in, params, B, T, chunk);
}

void ModelGraphCuda::backward(float* dparams, float* din, const float* dout, const float* params) {
  impl_->backward(dparams, din, dout, params);
}

}  // namespace ssm
