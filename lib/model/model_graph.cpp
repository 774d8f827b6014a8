// Whole-sequence forward and backward of a model (the chunked mode), written
// once over the ops of a backend (ssm/backend_ops.hpp).
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "ssm/backend_ops.hpp"
#include "ssm/model.hpp"
#include "layer_offsets.hpp"

namespace ssm {

namespace {

// A buffer of the backend, grown on demand (the contents are not kept when it grows).
template <typename Real>
class Buf {
 public:
  explicit Buf(const ops::OpsTable<Real>* be = nullptr) : be_(be) {}
  ~Buf() {
    if (p_) be_->release(be_->ctx, p_);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept : be_(o.be_), p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Buf& operator=(Buf&& o) noexcept {
    std::swap(be_, o.be_);
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  Real* grow(size_t n) {
    if (n > n_) {
      if (p_) be_->release(be_->ctx, p_);
      p_ = nullptr;
      n_ = 0;
      p_ = be_->alloc(be_->ctx, n);
      n_ = n;
    }
    return p_;
  }
  Real* data() const { return p_; }

 private:
  const ops::OpsTable<Real>* be_;
  Real* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace

// Activations one layer saves for its backward; R = B * T rows.
template <typename Real>
struct LayerActs {
  explicit LayerActs(const ops::OpsTable<Real>* be)
      : u(be), rstd(be), un(be), z(be), cin(be), cpre(be), x(be), Bm(be), Cm(be), dt_raw(be), y(be), rstd2(be),
        yn(be), dt_low(be), qkv(be), lse(be) {}
  Buf<Real> u;       // (R, D) layer input (residual stream)
  Buf<Real> rstd;    // (R)
  Buf<Real> un;      // (R, D) normalised input
  Buf<Real> z;       // (R, E) gate
  Buf<Real> cin;     // (R, Cc) conv input
  Buf<Real> cpre;    // (R, Cc) conv output before SiLU
  Buf<Real> x;       // (R, E) SSM input
  Buf<Real> Bm, Cm;  // (R, G*N)
  Buf<Real> dt_raw;  // (R, H) Mamba-2, (R, E) Mamba-1
  Buf<Real> y;       // (R, E) SSM output
  Buf<Real> rstd2;   // (R, G) gated norm (Mamba-2)
  Buf<Real> yn;      // (R, E) gated norm output (Mamba-2)
  Buf<Real> dt_low;  // (R, rank) Mamba-1
  Buf<Real> qkv;     // (R, 3 * Ha * Pa) attention: [q | k | v]; y is (R, Ha * Pa) there
  Buf<Real> lse;     // (R, Ha) attention: each row's log-sum-exp
};

// Gradient buffers of the backward, reused from call to call.
template <typename Real>
struct BackwardScratch {
  explicit BackwardScratch(const ops::OpsTable<Real>* be)
      : dh(be), dh_prev(be), dhn(be), din(be), e1(be), e2(be), e3(be), e4(be), dt(be), bc1(be), bc2(be), c1(be),
        c2(be), c3(be), proj(be), dun(be), low(be), dbins(be), dfeat(be), dpow(be), dwin(be), dband(be) {}
  Buf<Real> dh, dh_prev, dhn, din;  // (R, D), (R, D), (R, D), (R, step_in)
  Buf<Real> e1, e2, e3, e4;         // (R, E) each
  Buf<Real> dt;                     // (R, H) Mamba-2, (R, E) Mamba-1
  Buf<Real> bc1, bc2;               // (R, G*N)
  Buf<Real> c1, c2, c3;             // (R, Cc)
  Buf<Real> proj;                   // (R, F) Mamba-2, (R, rank + 2N) then (R, 2E) Mamba-1
  Buf<Real> dun;                    // (R, D)
  Buf<Real> low;                    // (R, rank)
  Buf<Real> dbins;                  // (R, K) masking head
  Buf<Real> dfeat;                  // (R, K / 2) log-power features
  Buf<Real> dpow;                   // (R, K) the features' share of dbins
  Buf<Real> dwin;                   // (R, analysis_in) the analysis window
  Buf<Real> dband;                  // (R, mask_bands) band logits
};

template <typename Real>
struct ModelGraph<Real>::Impl {
  explicit Impl(const ops::OpsTable<Real>& be)
      : ops(be), h_last(&be), rstd_f(&be), hn(&be), in_saved(&be), win_saved(&be), feat(&be), band_logit(&be),
        mask_logit(&be), bins(&be), masked(&be), scratch_a(&be), scratch_b(&be), g(&be) {}
  const ops::OpsTable<Real>& ops;
  ModelConfig cfg;
  size_t enc_w, enc_b, norm_f, head_w, head_b;
  size_t ana_w = 0, syn_w = 0;  // masking head (cfg.masking())
  size_t band_x = 0;            // masking head with bands: the fixed band-to-bin matrix
  std::vector<LayerOffsets> off;
  std::vector<LayerActs<Real>> acts;
  Buf<Real> h_last, rstd_f, hn;  // (R, D), (R), (R, D)
  Buf<Real> in_saved;            // (R, frame * in_channels)
  Buf<Real> win_saved;           // (R, analysis_in) the analysis window (analysis_frames > 1)
  Buf<Real> feat;                // (R, K / 2) log-power features (log_power_input)
  Buf<Real> band_logit;          // (R, mask_bands) the head's output (mask_bands > 0)
  Buf<Real> mask_logit, bins, masked;  // (R, K) each: head output, analysis of the input, bins after the mask
  Buf<Real> scratch_a, scratch_b;
  BackwardScratch<Real> g;
  int B = 0, T = 0, Q = 0;
  bool had_state = false;

  // The ops, each with its args struct.
  void* ctx() const { return ops.ctx; }
  void linear(Real* y, const Real* x, const Real* W, const Real* bias, size_t R, int I, int O) const {
    ops.linear_forward(ctx(), {y, x, W, bias, static_cast<int>(R), I, O});
  }
  void linear_bwd(Real* dx, Real* dW, Real* dbias, const Real* dy, const Real* x, const Real* W, size_t R, int I,
                  int O) const {
    ops.linear_backward(ctx(), {dx, dW, dbias, dy, x, W, static_cast<int>(R), I, O});
  }
  void cols(Real* dst, int ld_dst, int c0_dst, const Real* src, int ld_src, int c0_src, size_t R, int w) const {
    ops.copy_cols(ctx(), {dst, ld_dst, c0_dst, src, ld_src, c0_src, R, w});
  }
  // Columns [c0, c0 + w) of a (R, ld) matrix into a dense (R, w) one, and back.
  void gather(Real* dst, const Real* src, size_t R, int ld, int c0, int w) const { cols(dst, w, 0, src, ld, c0, R, w); }
  void scatter(Real* dst, const Real* src, size_t R, int ld, int c0, int w) const { cols(dst, ld, c0, src, w, 0, R, w); }
  void add(Real* dst, const Real* src, size_t n) const { ops.add_into(ctx(), {dst, src, static_cast<long>(n)}); }
  // Where a filterbank tensor's gradient goes: nowhere when it is fixed.
  Real* filterbank_grad(Real* dP, size_t offset) const { return cfg.fixed_filterbank ? nullptr : dP + offset; }

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
  void attention_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* u_next, const Real* st,
                         Real* next_st);
  void attention_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* dP,
                          const Real* du_next);
  AttnDims attn_dims() const {
    return {B, T, cfg.attention_heads, cfg.attn_head_dim(), cfg.attention_window};
  }
};

template <typename Real>
ModelGraph<Real>::ModelGraph(const ModelConfig& cfg, const ParamTable& t) : ModelGraph(cfg, t, ops::cpu<Real>()) {}

template <typename Real>
ModelGraph<Real>::ModelGraph(const ModelConfig& cfg, const ParamTable& t, const ops::OpsTable<Real>& backend)
    : impl_(std::make_unique<Impl>(backend)) {
  Impl& m = *impl_;
  m.cfg = cfg;
  m.enc_w = t.offset("encoder.weight");
  m.enc_b = t.offset("encoder.bias");
  m.norm_f = t.offset("norm_f.weight");
  m.head_w = t.offset("head.weight");
  m.head_b = t.offset("head.bias");
  if (cfg.masking()) {
    m.ana_w = t.offset("analysis.weight");
    m.syn_w = t.offset("synthesis.weight");
    if (cfg.mask_bands > 0) m.band_x = t.offset("band_expand.weight");
  }
  m.off = model_layer_offsets(cfg, t);
  for (int l = 0; l < cfg.layers(); ++l) m.acts.emplace_back(&backend);
  // A backend without the op fails here, naming it: never a silent fallback.
  if (cfg.hybrid() && !backend.attention_forward)
    fail(std::string("model graph: backend '") + backend.name +
         "' has no attention_forward op, which the model's attention layers (attention_every " +
         std::to_string(cfg.attention_every) + ") need");
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
  const int D = cfg.d_model, Ci = cfg.step_in();
  gather(in_saved.grow(R * Ci), in, R, Ci, 0, Ci);
  // State layout: per layer, a (B, K-1, Cc) conv tail then a (B, E, N) SSM
  // state, or an attention layer's (B, attention_state_size) rings; after
  // the layers, the analysis's (B, W - 1, Ci) earlier frames.
  std::vector<size_t> layer_at(cfg.layers() + 1, 0);  // (L + 1) where each layer's state starts
  for (int l = 0; l < cfg.layers(); ++l) layer_at[l + 1] = layer_at[l] + B * model_layer_state_size(cfg, l);
  const Real* enc_in = in_saved.data();  // (R, encoder_in)
  if (cfg.masking()) {
    // The analysis of the last W frames; the mask applies to these bins.
    const int K = cfg.mask_bins, W = cfg.analysis_frames;
    const Real* win = in_saved.data();  // (R, W * Ci)
    if (W > 1) {
      const size_t at = layer_at[cfg.layers()];
      ops.unfold_forward(ctx(), {win_saved.grow(R * cfg.analysis_in()), next_state ? next_state + at : nullptr,
                                 in_saved.data(), state ? state + at : nullptr, ops::UnfoldDims{B, T, Ci, W}});
      win = win_saved.data();
    }
    linear(bins.grow(R * K), win, P + ana_w, nullptr, R, cfg.analysis_in(), K);
    if (cfg.log_power_input) {
      ops.log_power_forward(ctx(), {feat.grow(R * (K / 2)), bins.data(), static_cast<long>(R * (K / 2)),
                                    ModelConfig::kLogPowerEps});
      enc_in = feat.data();
    }
  }
  // Encoder into the first layer's input.
  linear(acts[0].u.grow(R * D), enc_in, P + enc_w, P + enc_b, R, cfg.encoder_in(), D);
  for (int l = 0; l < cfg.layers(); ++l) {
    Real* u_next = l + 1 < cfg.layers() ? acts[l + 1].u.grow(R * D) : h_last.grow(R * D);
    const Real* st = state ? state + layer_at[l] : nullptr;
    Real* nst = next_state ? next_state + layer_at[l] : nullptr;
    if (off[l].attention)
      attention_forward(acts[l], off[l], P, u_next, st, nst);
    else if (cfg.block == BlockKind::Mamba2)
      mamba2_forward(acts[l], off[l], P, u_next, st, nst);
    else
      mamba1_forward(acts[l], off[l], P, u_next, st, nst);
  }
  ops.rmsnorm_forward(ctx(), {hn.grow(R * D), rstd_f.grow(R), h_last.data(), nullptr, P + norm_f,
                              static_cast<int>(R), D, 1, cfg.norm_eps});
  if (!cfg.masking()) return linear(out, hn.data(), P + head_w, P + head_b, R, D, cfg.step_out());
  const int K = cfg.mask_bins, Bd = cfg.mask_bands;
  if (Bd > 0) {
    linear(band_logit.grow(R * Bd), hn.data(), P + head_w, P + head_b, R, D, Bd);
    linear(mask_logit.grow(R * K), band_logit.data(), P + band_x, nullptr, R, Bd, K);
  } else {
    linear(mask_logit.grow(R * K), hn.data(), P + head_w, P + head_b, R, D, K);
  }
  ops.gate_forward(ctx(), {masked.grow(R * K), bins.data(), mask_logit.data(), static_cast<long>(R * K)});
  linear(out, masked.data(), P + syn_w, nullptr, R, K, cfg.step_out());
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba2_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* u_next,
                                            const Real* st, Real* nst) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), G = cfg.n_groups, N = cfg.d_state;
  const int Cc = cfg.conv_channels(), K = cfg.d_conv;
  const int F = 2 * E + 2 * G * N + H;  // in_proj outputs: [z | xBC | dt_raw]
  const size_t tail_n = static_cast<size_t>(B) * (K - 1) * Cc;
  ops.rmsnorm_forward(ctx(), {a.un.grow(R * D), a.rstd.grow(R), a.u.data(), nullptr, P + o.norm,
                              static_cast<int>(R), D, 1, cfg.norm_eps});
  Real* proj = scratch_a.grow(R * F);  // (R, F)
  linear(proj, a.un.data(), P + o.in_proj, nullptr, R, D, F);
  gather(a.z.grow(R * E), proj, R, F, 0, E);
  gather(a.cin.grow(R * Cc), proj, R, F, E, Cc);
  gather(a.dt_raw.grow(R * H), proj, R, F, E + Cc, H);
  ops.conv1d_forward(ctx(), {a.cpre.grow(R * Cc), nst, a.cin.data(), P + o.conv_w, P + o.conv_b, st,
                             Conv1dDims{B, T, Cc, K}});
  Real* act = scratch_b.grow(R * Cc);  // (R, Cc) SiLU(conv)
  ops.silu_forward(ctx(), {act, a.cpre.data(), static_cast<long>(R * Cc)});
  gather(a.x.grow(R * E), act, R, Cc, 0, E);
  gather(a.Bm.grow(R * G * N), act, R, Cc, E, G * N);
  gather(a.Cm.grow(R * G * N), act, R, Cc, E + G * N, G * N);
  ops.ssd_forward(ctx(), {a.y.grow(R * E), nst ? nst + tail_n : nullptr, a.x.data(), a.dt_raw.data(), P + o.A_log,
                          a.Bm.data(), a.Cm.data(), P + o.D, P + o.dt_bias, st ? st + tail_n : nullptr,
                          SsdDims{B, T, H, cfg.head_dim, G, N}, Q});
  // Normalised per group of E / G channels, as mamba_ssm's gated RMSNorm.
  ops.rmsnorm_forward(ctx(), {a.yn.grow(R * E), a.rstd2.grow(R * G), a.y.data(), a.z.data(), P + o.mixer_norm,
                              static_cast<int>(R), E, G, cfg.norm_eps});
  linear(u_next, a.yn.data(), P + o.out_proj, nullptr, R, E, D);
  add(u_next, a.u.data(), R * D);
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba1_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P, Real* u_next,
                                            const Real* st, Real* nst) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, Rk = cfg.rank();
  const size_t tail_n = static_cast<size_t>(B) * (K - 1) * E;
  ops.rmsnorm_forward(ctx(), {a.un.grow(R * D), a.rstd.grow(R), a.u.data(), nullptr, P + o.norm,
                              static_cast<int>(R), D, 1, cfg.norm_eps});
  Real* xz = scratch_a.grow(R * 2 * E);  // (R, 2E): [x | z]
  linear(xz, a.un.data(), P + o.in_proj, nullptr, R, D, 2 * E);
  gather(a.cin.grow(R * E), xz, R, 2 * E, 0, E);
  gather(a.z.grow(R * E), xz, R, 2 * E, E, E);
  ops.conv1d_forward(ctx(), {a.cpre.grow(R * E), nst, a.cin.data(), P + o.conv_w, P + o.conv_b, st,
                             Conv1dDims{B, T, E, K}});
  ops.silu_forward(ctx(), {a.x.grow(R * E), a.cpre.data(), static_cast<long>(R * E)});
  const int Fx = Rk + 2 * N;  // x_proj outputs: [dt_low | B | C]
  Real* xdbl = scratch_b.grow(R * Fx);
  linear(xdbl, a.x.data(), P + o.x_proj, nullptr, R, E, Fx);
  gather(a.dt_low.grow(R * Rk), xdbl, R, Fx, 0, Rk);
  gather(a.Bm.grow(R * N), xdbl, R, Fx, Rk, N);
  gather(a.Cm.grow(R * N), xdbl, R, Fx, Rk + N, N);
  linear(a.dt_raw.grow(R * E), a.dt_low.data(), P + o.dt_proj, nullptr, R, Rk, E);
  ops.scan_forward(ctx(), {a.y.grow(R * E), nst ? nst + tail_n : nullptr, a.x.data(), a.dt_raw.data(), P + o.A_log,
                           a.Bm.data(), a.Cm.data(), P + o.D, P + o.dt_bias, a.z.data(), st ? st + tail_n : nullptr,
                           ScanDims{B, T, E, 1, N}, Q});
  linear(u_next, a.y.data(), P + o.out_proj, nullptr, R, E, D);
  add(u_next, a.u.data(), R * D);
}

template <typename Real>
void ModelGraph<Real>::Impl::backward(Real* dP, Real* din, const Real* dout, const Real* P) {
  require(B > 0, "model backward: no forward to differentiate");
  require(!had_state, "model backward: the forward must start from zero state");
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model;
  Real* dh = g.dh.grow(R * D);  // (R, D)
  Real* dh_prev = g.dh_prev.grow(R * D);
  Real* dhn = g.dhn.grow(R * D);
  Real* dbins = nullptr;  // (R, K) masking head: the gradient reaching the analysis
  if (!cfg.masking()) {
    linear_bwd(dhn, dP + head_w, dP + head_b, dout, hn.data(), P + head_w, R, D, cfg.step_out());
  } else {
    const int K = cfg.mask_bins, Bd = cfg.mask_bands;
    const long RK = static_cast<long>(R * K);
    Real* dmasked = scratch_a.grow(R * K);  // (R, K)
    Real* dlogit = scratch_b.grow(R * K);   // (R, K)
    dbins = g.dbins.grow(R * K);
    linear_bwd(dmasked, filterbank_grad(dP, syn_w), nullptr, dout, masked.data(), P + syn_w, R, K, cfg.step_out());
    ops.gate_backward(ctx(), {dbins, dlogit, dmasked, bins.data(), mask_logit.data(), RK});
    if (Bd > 0) {
      Real* dband = g.dband.grow(R * Bd);  // (R, Bd)
      linear_bwd(dband, nullptr, nullptr, dlogit, band_logit.data(), P + band_x, R, Bd, K);
      linear_bwd(dhn, dP + head_w, dP + head_b, dband, hn.data(), P + head_w, R, D, Bd);
    } else {
      linear_bwd(dhn, dP + head_w, dP + head_b, dlogit, hn.data(), P + head_w, R, D, K);
    }
  }
  ops.rmsnorm_backward(ctx(), {dh, nullptr, dP + norm_f, dhn, rstd_f.data(), h_last.data(), nullptr, P + norm_f,
                               static_cast<int>(R), D, 1});
  require(!cfg.hybrid() || ops.attention_backward,
          std::string("model backward: backend '") + ops.name +
              "' has no attention_backward op, which the model's attention layers need");
  for (int l = cfg.layers() - 1; l >= 0; --l) {
    if (off[l].attention)
      attention_backward(dh_prev, acts[l], off[l], P, dP, dh);
    else if (cfg.block == BlockKind::Mamba2)
      mamba2_backward(dh_prev, acts[l], off[l], P, dP, dh);
    else
      mamba1_backward(dh_prev, acts[l], off[l], P, dP, dh);
    std::swap(dh, dh_prev);
  }
  const int Ci = cfg.step_in();
  bool din_set = false;  // din holds the encoder's share
  if (!cfg.log_power_input) {
    linear_bwd(din, dP + enc_w, dP + enc_b, dh, in_saved.data(), P + enc_w, R, Ci, D);
    din_set = din != nullptr;
  } else {
    // The encoder read the bins' log power: its gradient joins the mask's in dbins.
    const int K = cfg.mask_bins;
    Real* dfeat = g.dfeat.grow(R * (K / 2));  // (R, K / 2)
    linear_bwd(dfeat, dP + enc_w, dP + enc_b, dh, feat.data(), P + enc_w, R, K / 2, D);
    Real* dpow = g.dpow.grow(R * K);  // (R, K)
    ops.log_power_backward(ctx(), {dpow, dfeat, bins.data(), static_cast<long>(R * (K / 2)),
                                   ModelConfig::kLogPowerEps});
    add(dbins, dpow, R * K);
  }
  if (dbins) {
    // The analysis sees the input too: its weight's gradient, and its share of din.
    const int W = cfg.analysis_frames, I = cfg.analysis_in();
    Real* din_ana = din ? (din_set ? g.din.grow(R * Ci) : din) : nullptr;  // (R, Ci)
    if (W == 1) {
      linear_bwd(din_ana, filterbank_grad(dP, ana_w), nullptr, dbins, in_saved.data(), P + ana_w, R, I, cfg.mask_bins);
    } else {
      Real* dwin = din ? g.dwin.grow(R * I) : nullptr;  // (R, W * Ci)
      linear_bwd(dwin, filterbank_grad(dP, ana_w), nullptr, dbins, win_saved.data(), P + ana_w, R, I, cfg.mask_bins);
      if (din) ops.unfold_backward(ctx(), {din_ana, dwin, ops::UnfoldDims{B, T, Ci, W}});
    }
    if (din_set) add(din, din_ana, R * Ci);
  }
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba2_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P,
                                             Real* dP, const Real* du_next) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), G = cfg.n_groups, N = cfg.d_state;
  const int Cc = cfg.conv_channels(), K = cfg.d_conv;
  const int F = 2 * E + 2 * G * N + H;
  Real* dyn = g.e1.grow(R * E);  // (R, E)
  Real* dy = g.e2.grow(R * E);
  Real* dz = g.e3.grow(R * E);
  linear_bwd(dyn, dP + o.out_proj, nullptr, du_next, a.yn.data(), P + o.out_proj, R, E, D);
  ops.rmsnorm_backward(ctx(), {dy, dz, dP + o.mixer_norm, dyn, a.rstd2.data(), a.y.data(), a.z.data(),
                               P + o.mixer_norm, static_cast<int>(R), E, G});
  Real* dx = g.e4.grow(R * E);
  Real* ddt = g.dt.grow(R * H);
  Real* dB = g.bc1.grow(R * G * N);
  Real* dC = g.bc2.grow(R * G * N);
  const SsdFwd<Real> fwd{nullptr, nullptr, a.x.data(), a.dt_raw.data(), P + o.A_log, a.Bm.data(), a.Cm.data(),
                         P + o.D, P + o.dt_bias, nullptr, SsdDims{B, T, H, cfg.head_dim, G, N}, Q};
  ops.ssd_backward(ctx(), {dx, ddt, dP + o.A_log, dB, dC, dP + o.D, dP + o.dt_bias, nullptr, dy, nullptr, fwd});
  Real* dact = g.c1.grow(R * Cc);  // (R, Cc)
  Real* dpre = g.c2.grow(R * Cc);
  Real* dcin = g.c3.grow(R * Cc);
  scatter(dact, dx, R, Cc, 0, E);
  scatter(dact, dB, R, Cc, E, G * N);
  scatter(dact, dC, R, Cc, E + G * N, G * N);
  ops.silu_backward(ctx(), {dpre, dact, a.cpre.data(), static_cast<long>(R * Cc)});
  ops.conv1d_backward(ctx(), {dcin, dP + o.conv_w, dP + o.conv_b, nullptr, dpre, nullptr, a.cin.data(), P + o.conv_w,
                              nullptr, Conv1dDims{B, T, Cc, K}});
  Real* dproj = g.proj.grow(R * F);  // (R, F)
  scatter(dproj, dz, R, F, 0, E);
  scatter(dproj, dcin, R, F, E, Cc);
  scatter(dproj, ddt, R, F, E + Cc, H);
  Real* dun = g.dun.grow(R * D);  // (R, D)
  linear_bwd(dun, dP + o.in_proj, nullptr, dproj, a.un.data(), P + o.in_proj, R, D, F);
  ops.rmsnorm_backward(ctx(), {du, nullptr, dP + o.norm, dun, a.rstd.data(), a.u.data(), nullptr, P + o.norm,
                               static_cast<int>(R), D, 1});
  add(du, du_next, R * D);
}

template <typename Real>
void ModelGraph<Real>::Impl::mamba1_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P,
                                             Real* dP, const Real* du_next) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, Rk = cfg.rank();
  const int Fx = Rk + 2 * N;
  Real* dy = g.e1.grow(R * E);  // (R, E)
  Real* dx = g.e2.grow(R * E);
  Real* ddt = g.dt.grow(R * E);
  Real* dz = g.e3.grow(R * E);
  Real* dB = g.bc1.grow(R * N);  // (R, N)
  Real* dC = g.bc2.grow(R * N);
  linear_bwd(dy, dP + o.out_proj, nullptr, du_next, a.y.data(), P + o.out_proj, R, E, D);
  const ScanFwd<Real> fwd{nullptr,     nullptr,     a.x.data(), a.dt_raw.data(), P + o.A_log, a.Bm.data(),
                          a.Cm.data(), P + o.D,     P + o.dt_bias, a.z.data(),  nullptr,     ScanDims{B, T, E, 1, N},
                          Q};
  ops.scan_backward(ctx(), {dx, ddt, dP + o.A_log, dB, dC, dP + o.D, dP + o.dt_bias, dz, nullptr, dy, nullptr, fwd});
  Real* ddt_low = g.low.grow(R * Rk);  // (R, rank)
  Real* dxdbl = g.proj.grow(R * std::max(Fx, 2 * E));  // (R, Fx), later (R, 2E)
  Real* dx2 = g.e4.grow(R * E);
  linear_bwd(ddt_low, dP + o.dt_proj, nullptr, ddt, a.dt_low.data(), P + o.dt_proj, R, Rk, E);
  scatter(dxdbl, ddt_low, R, Fx, 0, Rk);
  scatter(dxdbl, dB, R, Fx, Rk, N);
  scatter(dxdbl, dC, R, Fx, Rk + N, N);
  linear_bwd(dx2, dP + o.x_proj, nullptr, dxdbl, a.x.data(), P + o.x_proj, R, E, Fx);
  add(dx, dx2, R * E);
  Real* dpre = g.c1.grow(R * E);  // (R, E)
  Real* dcin = g.c2.grow(R * E);
  ops.silu_backward(ctx(), {dpre, dx, a.cpre.data(), static_cast<long>(R * E)});
  ops.conv1d_backward(ctx(), {dcin, dP + o.conv_w, dP + o.conv_b, nullptr, dpre, nullptr, a.cin.data(), P + o.conv_w,
                              nullptr, Conv1dDims{B, T, E, K}});
  Real* dxz = dxdbl;  // (R, 2E), dxdbl is spent
  Real* dun = g.dun.grow(R * D);
  scatter(dxz, dcin, R, 2 * E, 0, E);
  scatter(dxz, dz, R, 2 * E, E, E);
  linear_bwd(dun, dP + o.in_proj, nullptr, dxz, a.un.data(), P + o.in_proj, R, D, 2 * E);
  ops.rmsnorm_backward(ctx(), {du, nullptr, dP + o.norm, dun, a.rstd.data(), a.u.data(), nullptr, P + o.norm,
                               static_cast<int>(R), D, 1});
  add(du, du_next, R * D);
}

// Pre-norm residual, as the SSM blocks: u -> RMSNorm -> in_proj -> [q | k | v]
// -> sliding-window attention -> out_proj -> + u.
template <typename Real>
void ModelGraph<Real>::Impl::attention_forward(LayerActs<Real>& a, const LayerOffsets& o, const Real* P,
                                               Real* u_next, const Real* st, Real* nst) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, HP = cfg.attn_inner(), H = cfg.attention_heads;
  ops.rmsnorm_forward(ctx(), {a.un.grow(R * D), a.rstd.grow(R), a.u.data(), nullptr, P + o.norm,
                              static_cast<int>(R), D, 1, cfg.norm_eps});
  linear(a.qkv.grow(R * 3 * HP), a.un.data(), P + o.in_proj, nullptr, R, D, 3 * HP);
  ops.attention_forward(ctx(), {a.y.grow(R * HP), a.lse.grow(R * H), nst, a.qkv.data(), st, attn_dims()});
  linear(u_next, a.y.data(), P + o.out_proj, nullptr, R, HP, D);
  add(u_next, a.u.data(), R * D);
}

template <typename Real>
void ModelGraph<Real>::Impl::attention_backward(Real* du, LayerActs<Real>& a, const LayerOffsets& o, const Real* P,
                                                Real* dP, const Real* du_next) {
  const size_t R = static_cast<size_t>(B) * T;
  const int D = cfg.d_model, HP = cfg.attn_inner();
  Real* dy = g.e1.grow(R * HP);  // (R, HP)
  linear_bwd(dy, dP + o.out_proj, nullptr, du_next, a.y.data(), P + o.out_proj, R, HP, D);
  Real* dqkv = g.proj.grow(R * 3 * HP);  // (R, 3 HP)
  const ops::AttnFwd<Real> fwd{nullptr, nullptr, nullptr, a.qkv.data(), nullptr, attn_dims()};
  ops.attention_backward(ctx(), {dqkv, nullptr, dy, nullptr, a.lse.data(), fwd});
  Real* dun = g.dun.grow(R * D);  // (R, D)
  linear_bwd(dun, dP + o.in_proj, nullptr, dqkv, a.un.data(), P + o.in_proj, R, D, 3 * HP);
  ops.rmsnorm_backward(ctx(), {du, nullptr, dP + o.norm, dun, a.rstd.data(), a.u.data(), nullptr, P + o.norm,
                               static_cast<int>(R), D, 1});
  add(du, du_next, R * D);
}

template class ModelGraph<float>;
template class ModelGraph<double>;

}  // namespace ssm
