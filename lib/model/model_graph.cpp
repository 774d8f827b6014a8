// Whole-sequence forward and backward of a model (the chunked mode), and the
// streaming wrapper built on it.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ssm/conv1d.hpp"
#include "ssm/layers.hpp"
#include "ssm/model.hpp"
#include "ssm/selective_scan.hpp"
#include "ssm/ssd.hpp"
#include "layer_offsets.hpp"

namespace ssm {

namespace {

// Copies columns [c0, c0 + w) of a (R, ld) matrix into a dense (R, w) one, or back.
template <typename Real>
void gather_cols(Real* dst, const Real* src, size_t R, int ld, int c0, int w) {
  for (size_t r = 0; r < R; ++r) std::memcpy(dst + r * w, src + r * ld + c0, sizeof(Real) * w);
}
template <typename Real>
void scatter_cols(Real* dst, const Real* src, size_t R, int ld, int c0, int w) {
  for (size_t r = 0; r < R; ++r) std::memcpy(dst + r * ld + c0, src + r * w, sizeof(Real) * w);
}

template <typename Real>
void add_into(Real* dst, const Real* src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace


// Activations one layer saves for its backward; R = B * T rows.
template <typename Real>
struct LayerActs {
  std::vector<Real> u;       // (R, D) layer input (residual stream)
  std::vector<Real> rstd;    // (R)
  std::vector<Real> un;      // (R, D) normalised input
  std::vector<Real> z;       // (R, E) gate
  std::vector<Real> cin;     // (R, Cc) conv input
  std::vector<Real> cpre;    // (R, Cc) conv output before SiLU
  std::vector<Real> x;       // (R, E) SSM input
  std::vector<Real> Bm, Cm;  // (R, G*N)
  std::vector<Real> dt_raw;  // (R, H) Mamba-2, (R, E) Mamba-1
  std::vector<Real> y;       // (R, E) SSM output
  std::vector<Real> rstd2;   // (R, G) gated norm (Mamba-2)
  std::vector<Real> yn;      // (R, E) gated norm output (Mamba-2)
  std::vector<Real> dt_low;  // (R, rank) Mamba-1
};

template <typename Real>
struct ModelGraph<Real>::Impl {
  ModelConfig cfg;
  size_t enc_w, enc_b, norm_f, head_w, head_b;
  std::vector<LayerOffsets> off;
  std::vector<LayerActs<Real>> acts;
  std::vector<Real> h_last, rstd_f, hn;  // (R, D), (R), (R, D)
  std::vector<Real> in_saved;             // (R, frame * in_channels)
  std::vector<Real> scratch_a, scratch_b, scratch_c, scratch_d;
  int B = 0, T = 0, Q = 0;
  bool had_state = false;

  static void grow(std::vector<Real>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }

  size_t layer_state(int) const {
    return static_cast<size_t>(cfg.d_conv - 1) * cfg.conv_channels() + static_cast<size_t>(cfg.inner()) * cfg.d_state;
  }

  void forward(Real* out, const Real* in, const Real* P, int B_, int T_, const Real* state, Real* next_state,
               int chunk);
  void backward(Real* dP, Real* din, const Real* dout, const Real* P);
  void mamba2_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* u_next, const Real* st,
                      Real* next_st);
  void mamba1_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* u_next, const Real* st,
                      Real* next_st);
  void mamba2_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* dP,
                       const Real* du_next);
  void mamba1_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* dP,
                       const Real* du_next);
};

template <typename Real>
ModelGraph<Real>::ModelGraph(const ModelConfig& cfg, const ParamTable& t) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.cfg = cfg;
  m.enc_w = t.offset("encoder.weight");
  m.enc_b = t.offset("encoder.bias");
  m.norm_f = t.offset("norm_f.weight");
  m.head_w = t.offset("head.weight");
  m.head_b = t.offset("head.bias");
  m.off = model_layer_offsets(cfg, t);
  m.acts.resize(cfg.n_layers);
}

template <typename Real>
ModelGraph<Real>::~ModelGraph() = default;
template <typename Real>
ModelGraph<Real>::ModelGraph(ModelGraph&&) noexcept = default;
template <typename Real>
ModelGraph<Real>& ModelGraph<Real>::operator=(ModelGraph&&) noexcept = default;

template <typename Real>
void ModelGraph<Real>::forward(Real* out, const Real* in, const Real* params, int B, int T, const Real* state,
                               Real* next_state, int chunk) {
  impl_->forward(out, in, params, B, T, state, next_state, chunk);
}

template <typename Real>
void ModelGraph<Real>::backward(Real* dparams, Real* din, const Real* dout, const Real* params) {
  impl_->backward(dparams, din, dout, params);
}

template <typename Real>
void ModelGraph<Real>::Impl::forward(Real* out, const Real* in, const Real* P, int B_, int T_, const Real* state,
                                     Real* next_state, int chunk) {
  require(B_ >= 1 && T_ >= 1, "model forward: batch and time must be >= 1");
  require(T_ % cfg.frame == 0, "model forward: " + std::to_string(T_) + " samples are not a whole number of " +
                                   std::to_string(cfg.frame) + "-sample frames");
  B = B_;
  T = T_ / cfg.frame;  // time steps; (B, T_, C) samples are (B, T, frame * C) in memory
  Q = chunk > 0 ? chunk : cfg.chunk;
  had_state = state != nullptr;
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model;
  in_saved.assign(in, in + R * cfg.step_in());
  // Encoder into the first layer's input.
  LayerActs<Real>& a0 = acts[0];
  grow(a0.u, R * D);
  linear_forward(a0.u.data(), in, P + enc_w, P + enc_b, static_cast<int>(R), cfg.step_in(), D);
  // State layout: per layer, a (B, K-1, Cc) conv tail then a (B, E, N) SSM state.
  const size_t tail_n = static_cast<size_t>(B) * (cfg.d_conv - 1) * cfg.conv_channels();
  const size_t layer_n = tail_n + static_cast<size_t>(B) * cfg.inner() * cfg.d_state;
  for (int l = 0; l < cfg.n_layers; ++l) {
    Real* u_next;
    if (l + 1 < cfg.n_layers) {
      grow(acts[l + 1].u, R * D);
      u_next = acts[l + 1].u.data();
    } else {
      grow(h_last, R * D);
      u_next = h_last.data();
    }
    const Real* st = state ? state + l * layer_n : nullptr;
    Real* nst = next_state ? next_state + l * layer_n : nullptr;
    if (cfg.block == BlockKind::Mamba2)
      mamba2_forward(acts[l], off[l], P, u_next, st, nst);
    else
      mamba1_forward(acts[l], off[l], P, u_next, st, nst);
  }
  grow(rstd_f, R);
  grow(hn, R * D);
  rmsnorm_forward(hn.data(), rstd_f.data(), h_last.data(), P + norm_f, static_cast<int>(R), D,
                  cfg.norm_eps);
  linear_forward(out, hn.data(), P + head_w, P + head_b, static_cast<int>(R), D, cfg.step_out());
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba2_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* u_next,
                                            const Real* st, Real* nst) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), G = cfg.n_groups, N = cfg.d_state;
  const int Cc = cfg.conv_channels(), K = cfg.d_conv;
  const int F = 2 * E + 2 * G * N + H;  // in_proj outputs: [z | xBC | dt_raw]
  const size_t tail_n = static_cast<size_t>(B) * (K - 1) * Cc;
  grow(a.rstd, R);
  grow(a.un, R * D);
  rmsnorm_forward(a.un.data(), a.rstd.data(), a.u.data(), P + o.norm, static_cast<int>(R), D,
                  cfg.norm_eps);
  grow(scratch_a, R * F);  // (R, F)
  linear_forward(scratch_a.data(), a.un.data(), P + o.in_proj, static_cast<const Real*>(nullptr),
                 static_cast<int>(R), D, F);
  grow(a.z, R * E);
  grow(a.cin, R * Cc);
  grow(a.dt_raw, R * H);
  gather_cols(a.z.data(), scratch_a.data(), R, F, 0, E);
  gather_cols(a.cin.data(), scratch_a.data(), R, F, E, Cc);
  gather_cols(a.dt_raw.data(), scratch_a.data(), R, F, E + Cc, H);
  grow(a.cpre, R * Cc);
  conv1d_forward(a.cpre.data(), nst, a.cin.data(), P + o.conv_w, P + o.conv_b, st, Conv1dDims{B, T, Cc, K});
  grow(scratch_b, R * Cc);  // (R, Cc) SiLU(conv)
  silu_forward(scratch_b.data(), a.cpre.data(), static_cast<long>(R * Cc));
  grow(a.x, R * E);
  grow(a.Bm, R * G * N);
  grow(a.Cm, R * G * N);
  gather_cols(a.x.data(), scratch_b.data(), R, Cc, 0, E);
  gather_cols(a.Bm.data(), scratch_b.data(), R, Cc, E, G * N);
  gather_cols(a.Cm.data(), scratch_b.data(), R, Cc, E + G * N, G * N);
  grow(a.y, R * E);
  ssd_chunked_forward(a.y.data(), nst ? nst + tail_n : nullptr, a.x.data(), a.dt_raw.data(), P + o.A_log,
                      a.Bm.data(), a.Cm.data(), P + o.D, P + o.dt_bias, st ? st + tail_n : nullptr,
                      SsdDims{B, T, H, cfg.head_dim, G, N}, Q);
  grow(a.rstd2, R * G);
  grow(a.yn, R * E);
  // Normalised per group of E / G channels, as mamba_ssm's gated RMSNorm.
  gated_rmsnorm_forward(a.yn.data(), a.rstd2.data(), a.y.data(), a.z.data(), P + o.mixer_norm,
                        static_cast<int>(R), E, G, cfg.norm_eps);
  linear_forward(u_next, a.yn.data(), P + o.out_proj, static_cast<const Real*>(nullptr), static_cast<int>(R), E,
                 D);
  add_into(u_next, a.u.data(), R * D);
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba1_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* u_next,
                                            const Real* st, Real* nst) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, Rk = cfg.rank();
  const size_t tail_n = static_cast<size_t>(B) * (K - 1) * E;
  grow(a.rstd, R);
  grow(a.un, R * D);
  rmsnorm_forward(a.un.data(), a.rstd.data(), a.u.data(), P + o.norm, static_cast<int>(R), D,
                  cfg.norm_eps);
  grow(scratch_a, R * 2 * E);  // (R, 2E): [x | z]
  linear_forward(scratch_a.data(), a.un.data(), P + o.in_proj, static_cast<const Real*>(nullptr),
                 static_cast<int>(R), D, 2 * E);
  grow(a.cin, R * E);
  grow(a.z, R * E);
  gather_cols(a.cin.data(), scratch_a.data(), R, 2 * E, 0, E);
  gather_cols(a.z.data(), scratch_a.data(), R, 2 * E, E, E);
  grow(a.cpre, R * E);
  conv1d_forward(a.cpre.data(), nst, a.cin.data(), P + o.conv_w, P + o.conv_b, st, Conv1dDims{B, T, E, K});
  grow(a.x, R * E);
  silu_forward(a.x.data(), a.cpre.data(), static_cast<long>(R * E));
  const int Fx = Rk + 2 * N;  // x_proj outputs: [dt_low | B | C]
  grow(scratch_b, R * Fx);
  linear_forward(scratch_b.data(), a.x.data(), P + o.x_proj, static_cast<const Real*>(nullptr),
                 static_cast<int>(R), E, Fx);
  grow(a.dt_low, R * Rk);
  grow(a.Bm, R * N);
  grow(a.Cm, R * N);
  gather_cols(a.dt_low.data(), scratch_b.data(), R, Fx, 0, Rk);
  gather_cols(a.Bm.data(), scratch_b.data(), R, Fx, Rk, N);
  gather_cols(a.Cm.data(), scratch_b.data(), R, Fx, Rk + N, N);
  grow(a.dt_raw, R * E);
  linear_forward(a.dt_raw.data(), a.dt_low.data(), P + o.dt_proj, static_cast<const Real*>(nullptr),
                 static_cast<int>(R), Rk, E);
  grow(a.y, R * E);
  selective_scan_blocked_forward(a.y.data(), nst ? nst + tail_n : nullptr, a.x.data(), a.dt_raw.data(),
                                 P + o.A_log, a.Bm.data(), a.Cm.data(), P + o.D, P + o.dt_bias, a.z.data(),
                                 st ? st + tail_n : nullptr, ScanDims{B, T, E, 1, N}, Q);
  linear_forward(u_next, a.y.data(), P + o.out_proj, static_cast<const Real*>(nullptr), static_cast<int>(R), E,
                 D);
  add_into(u_next, a.u.data(), R * D);
}

template <typename Real>
void ModelGraph<Real>::Impl::backward(Real* dP, Real* din, const Real* dout, const Real* P) {
  require(B > 0, "model backward: no forward to differentiate");
  require(!had_state, "model backward: the forward must start from zero state");
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model;
  std::vector<Real> dh(R * D), dh_prev(R * D), dhn(R * D);  // (R, D)
  linear_backward(dhn.data(), dP + head_w, dP + head_b, dout, hn.data(), P + head_w, static_cast<int>(R), D,
                  cfg.step_out());
  rmsnorm_backward(dh.data(), dP + norm_f, dhn.data(), rstd_f.data(), h_last.data(), P + norm_f,
                   static_cast<int>(R), D);
  for (int l = cfg.n_layers - 1; l >= 0; --l) {
    if (cfg.block == BlockKind::Mamba2)
      mamba2_backward(dh_prev.data(), acts[l], off[l], P, dP, dh.data());
    else
      mamba1_backward(dh_prev.data(), acts[l], off[l], P, dP, dh.data());
    std::swap(dh, dh_prev);
  }
  std::vector<Real> din_local;
  Real* din_ptr = din;
  if (!din_ptr) {
    din_local.resize(R * cfg.step_in());
    din_ptr = din_local.data();
  }
  linear_backward(din_ptr, dP + enc_w, dP + enc_b, dh.data(), in_saved.data(), P + enc_w, static_cast<int>(R),
                  cfg.step_in(), D);
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba2_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P,
                                             Real* dP, const Real* du_next) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), G = cfg.n_groups, N = cfg.d_state;
  const int Cc = cfg.conv_channels(), K = cfg.d_conv;
  const int F = 2 * E + 2 * G * N + H;
  std::vector<Real> dyn(R * E), dy(R * E), dz(R * E);  // (R, E)
  linear_backward(dyn.data(), dP + o.out_proj, static_cast<Real*>(nullptr), du_next, a.yn.data(), P + o.out_proj,
                  static_cast<int>(R), E, D);
  gated_rmsnorm_backward(dy.data(), dz.data(), dP + o.mixer_norm, dyn.data(), a.rstd2.data(), a.y.data(),
                         a.z.data(), P + o.mixer_norm, static_cast<int>(R), E, G);
  std::vector<Real> dx(R * E), ddt(R * H), dB(R * G * N), dC(R * G * N);
  ssd_chunked_backward(dx.data(), ddt.data(), dP + o.A_log, dB.data(), dC.data(), dP + o.D, dP + o.dt_bias,
                       static_cast<Real*>(nullptr), dy.data(), static_cast<const Real*>(nullptr), a.x.data(),
                       a.dt_raw.data(), P + o.A_log, a.Bm.data(), a.Cm.data(), P + o.D, P + o.dt_bias,
                       static_cast<const Real*>(nullptr), SsdDims{B, T, H, cfg.head_dim, G, N}, Q);
  std::vector<Real> dact(R * Cc), dpre(R * Cc), dcin(R * Cc);  // (R, Cc)
  scatter_cols(dact.data(), dx.data(), R, Cc, 0, E);
  scatter_cols(dact.data(), dB.data(), R, Cc, E, G * N);
  scatter_cols(dact.data(), dC.data(), R, Cc, E + G * N, G * N);
  silu_backward(dpre.data(), dact.data(), a.cpre.data(), static_cast<long>(R * Cc));
  conv1d_backward(dcin.data(), dP + o.conv_w, dP + o.conv_b, static_cast<Real*>(nullptr), dpre.data(),
                  static_cast<const Real*>(nullptr), a.cin.data(), P + o.conv_w, static_cast<const Real*>(nullptr),
                  Conv1dDims{B, T, Cc, K});
  std::vector<Real> dproj(R * F);  // (R, F)
  scatter_cols(dproj.data(), dz.data(), R, F, 0, E);
  scatter_cols(dproj.data(), dcin.data(), R, F, E, Cc);
  scatter_cols(dproj.data(), ddt.data(), R, F, E + Cc, H);
  std::vector<Real> dun(R * D);  // (R, D)
  linear_backward(dun.data(), dP + o.in_proj, static_cast<Real*>(nullptr), dproj.data(), a.un.data(),
                  P + o.in_proj, static_cast<int>(R), D, F);
  rmsnorm_backward(du, dP + o.norm, dun.data(), a.rstd.data(), a.u.data(), P + o.norm, static_cast<int>(R), D);
  add_into(du, du_next, R * D);
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba1_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P,
                                             Real* dP, const Real* du_next) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, Rk = cfg.rank();
  const int Fx = Rk + 2 * N;
  std::vector<Real> dy(R * E), dx(R * E), ddt(R * E), dz(R * E), dB(R * N), dC(R * N);
  linear_backward(dy.data(), dP + o.out_proj, static_cast<Real*>(nullptr), du_next, a.y.data(), P + o.out_proj,
                  static_cast<int>(R), E, D);
  selective_scan_backward(dx.data(), ddt.data(), dP + o.A_log, dB.data(), dC.data(), dP + o.D, dP + o.dt_bias,
                          dz.data(), static_cast<Real*>(nullptr), dy.data(), static_cast<const Real*>(nullptr),
                          a.x.data(), a.dt_raw.data(), P + o.A_log, a.Bm.data(), a.Cm.data(), P + o.D,
                          P + o.dt_bias, a.z.data(), static_cast<const Real*>(nullptr), ScanDims{B, T, E, 1, N}, Q);
  std::vector<Real> ddt_low(R * Rk), dxdbl(R * Fx), dx2(R * E);
  linear_backward(ddt_low.data(), dP + o.dt_proj, static_cast<Real*>(nullptr), ddt.data(), a.dt_low.data(),
                  P + o.dt_proj, static_cast<int>(R), Rk, E);
  scatter_cols(dxdbl.data(), ddt_low.data(), R, Fx, 0, Rk);
  scatter_cols(dxdbl.data(), dB.data(), R, Fx, Rk, N);
  scatter_cols(dxdbl.data(), dC.data(), R, Fx, Rk + N, N);
  linear_backward(dx2.data(), dP + o.x_proj, static_cast<Real*>(nullptr), dxdbl.data(), a.x.data(), P + o.x_proj,
                  static_cast<int>(R), E, Fx);
  add_into(dx.data(), dx2.data(), R * E);
  std::vector<Real> dpre(R * E), dcin(R * E);
  silu_backward(dpre.data(), dx.data(), a.cpre.data(), static_cast<long>(R * E));
  conv1d_backward(dcin.data(), dP + o.conv_w, dP + o.conv_b, static_cast<Real*>(nullptr), dpre.data(),
                  static_cast<const Real*>(nullptr), a.cin.data(), P + o.conv_w, static_cast<const Real*>(nullptr),
                  Conv1dDims{B, T, E, K});
  std::vector<Real> dxz(R * 2 * E), dun(R * D);
  scatter_cols(dxz.data(), dcin.data(), R, 2 * E, 0, E);
  scatter_cols(dxz.data(), dz.data(), R, 2 * E, E, E);
  linear_backward(dun.data(), dP + o.in_proj, static_cast<Real*>(nullptr), dxz.data(), a.un.data(), P + o.in_proj,
                  static_cast<int>(R), D, 2 * E);
  rmsnorm_backward(du, dP + o.norm, dun.data(), a.rstd.data(), a.u.data(), P + o.norm, static_cast<int>(R), D);
  add_into(du, du_next, R * D);
}

template class ModelGraph<float>;
template class ModelGraph<double>;

}  // namespace ssm
