// The recurrent mode of a model: one stream, any number of samples per call.
// The projections of a block run as matrix products over its rows; only the
// conv tail and the SSM state advance sample by sample (DESIGN.md §2.4).
// Nothing here allocates after construction, and no OpenMP team is started:
// this is the low-latency path and runs on the caller's core.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "layer_offsets.hpp"
#include "ssm/attention.hpp"
#include "ssm/conv1d.hpp"
#include "ssm/hash.hpp"
#include "ssm/layers.hpp"
#include "ssm/model.hpp"
#include "ssm/selective_scan.hpp"
#include "ssm/ssd.hpp"

namespace ssm {

struct Stream::Impl {
  ModelConfig cfg;
  const float* P;  // the model's flat parameters (the model outlives the stream)
  size_t enc_w, enc_b, norm_f, head_w, head_b;
  size_t ana_w = 0, syn_w = 0;  // masking head
  size_t band_x = 0;            // masking head with bands: the band-to-bin matrix
  std::vector<LayerOffsets> off;
  int max_block;
  size_t tail_size;
  std::vector<size_t> layer_at;  // (L + 1) where each layer's state starts; the last: the analysis tail
  // Per layer: conv tail (K-1, Cc), then SSM state (E, N) = (H, P, N), or an
  // attention layer's ring (ssm/attention.hpp); after the layers, the
  // (W - 1, step_in) frames the analysis window holds.
  std::vector<float> state;
  // Frames (F = cfg.frame > 1): input samples gather until a frame is whole;
  // the frame's outputs are handed out one per input sample after it.
  int fill = 0;                   // samples of the current frame received
  std::vector<float> frame_in;    // (F, in_channels)  the frame being gathered
  std::vector<float> frame_out;   // (F, out_channels) the last frame's output
  std::vector<float> block_out;   // (max_block, F * out_channels) whole frames at once
  // Scratch for one block of up to max_block rows.
  std::vector<float> h;      // (n, D) residual stream
  std::vector<float> un;     // (n, D)
  std::vector<float> rstd;   // (n, G)
  std::vector<float> proj;   // (n, F) in_proj output; attention: (n, 3 Ha Pa) [q | k | v]
  std::vector<float> act;    // (n, Cc) conv + SiLU output
  std::vector<float> xdbl;   // (n, rank + 2N) Mamba-1 x_proj output
  std::vector<float> dt;     // (n, E) Mamba-1 dt_raw
  std::vector<float> z;      // (n, E)
  std::vector<float> y;      // (n, E); attention: (n, Ha Pa)
  std::vector<float> yn;     // (n, E)
  std::vector<float> o;      // (n, D)
  std::vector<float> band_logit;  // (n, mask_bands) masking head with bands: the head's output
  std::vector<float> logit;  // (n, K) masking head: mask logits
  std::vector<float> bins;   // (n, K) masking head: the input's bins, then masked
  std::vector<float> win;    // (n, W * step_in) masking head: the analysis window (W > 1)
  std::vector<float> win_tail;  // (W - 1, step_in) the window's next tail
  std::vector<float> feat;   // (n, K / 2) log-power features (log_power_input)
  std::vector<float> scores; // (W) attention: one head's scores, then weights

  Impl(const Model& m, int max_block_) : cfg(m.config()), P(m.params().data()), max_block(max_block_) {
    const ParamTable& t = m.table();
    enc_w = t.offset("encoder.weight");
    enc_b = t.offset("encoder.bias");
    norm_f = t.offset("norm_f.weight");
    head_w = t.offset("head.weight");
    head_b = t.offset("head.bias");
    if (cfg.masking()) {
      ana_w = t.offset("analysis.weight");
      syn_w = t.offset("synthesis.weight");
      if (cfg.mask_bands > 0) band_x = t.offset("band_expand.weight");
    }
    off = model_layer_offsets(cfg, t);
    tail_size = static_cast<size_t>(cfg.d_conv - 1) * cfg.conv_channels();
    layer_at.assign(cfg.layers() + 1, 0);
    for (int l = 0; l < cfg.layers(); ++l) layer_at[l + 1] = layer_at[l] + model_layer_state_size(cfg, l);
    state.assign(model_state_size(cfg), 0.0f);
    if (cfg.frame > 1) {
      frame_in.assign(static_cast<size_t>(cfg.step_in()), 0.0f);
      frame_out.assign(static_cast<size_t>(cfg.step_out()), 0.0f);
      block_out.assign(static_cast<size_t>(max_block) * cfg.step_out(), 0.0f);
    }
    const size_t n = max_block, D = cfg.d_model, E = cfg.inner(), N = cfg.d_state;
    const size_t HPa = cfg.hybrid() ? cfg.attn_inner() : 0;
    const size_t F = std::max(cfg.block == BlockKind::Mamba2 ? 2 * E + 2 * cfg.n_groups * N + cfg.heads() : 2 * E,
                              3 * HPa);
    h.resize(n * D);
    un.resize(n * D);
    rstd.resize(n * cfg.n_groups);
    proj.resize(n * F);
    act.resize(n * cfg.conv_channels());
    xdbl.resize(n * (cfg.rank() + 2 * N));
    dt.resize(n * E);
    z.resize(n * E);
    y.resize(n * std::max(E, HPa));
    yn.resize(n * E);
    o.resize(n * D);
    band_logit.resize(n * cfg.mask_bands);
    logit.resize(n * cfg.mask_bins);
    bins.resize(n * cfg.mask_bins);
    if (cfg.analysis_frames > 1) {
      win.resize(n * cfg.analysis_in());
      win_tail.resize(static_cast<size_t>(cfg.analysis_frames - 1) * cfg.step_in());
    }
    if (cfg.log_power_input) feat.resize(n * (cfg.mask_bins / 2));
    if (cfg.hybrid()) scores.resize(cfg.attention_window);
  }

  void block(const float* in, float* out, int n);
  void process_frames(const float* in, float* out, size_t n);
  size_t snapshot_floats() const { return state.size() + (cfg.frame > 1 ? frame_in.size() + frame_out.size() + 1 : 0); }
  void mamba2_layer(const LayerOffsets& L, float* st, int n);
  void mamba1_layer(const LayerOffsets& L, float* st, int n);
  void attention_layer(const LayerOffsets& L, float* st, int n);
  AttnDims attn_dims() const { return {1, 1, cfg.attention_heads, cfg.attn_head_dim(), cfg.attention_window}; }
};

// The projections of the block as matrix products; the ring advances a step at a time.
void Stream::Impl::attention_layer(const LayerOffsets& L, float* st, int n) {
  const int D = cfg.d_model, HP = cfg.attn_inner();
  const AttnDims ad = attn_dims();
  rmsnorm_forward(un.data(), rstd.data(), h.data(), P + L.norm, n, D, cfg.norm_eps);
  linear_forward(proj.data(), un.data(), P + L.in_proj, nullptr, n, D, 3 * HP);
  for (int t = 0; t < n; ++t)
    attention_step(y.data() + static_cast<size_t>(t) * HP, st, proj.data() + static_cast<size_t>(t) * 3 * HP, ad,
                   scores.data());
  linear_forward(o.data(), y.data(), P + L.out_proj, nullptr, n, HP, D);
  for (size_t i = 0; i < static_cast<size_t>(n) * D; ++i) h[i] += o[i];
}

void Stream::Impl::mamba2_layer(const LayerOffsets& L, float* st, int n) {
  const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), G = cfg.n_groups, N = cfg.d_state;
  const int Cc = cfg.conv_channels(), K = cfg.d_conv;
  const int F = 2 * E + 2 * G * N + H;  // [z | xBC | dt_raw]
  float* tail = st;
  float* ssm_state = st + tail_size;
  rmsnorm_forward(un.data(), rstd.data(), h.data(), P + L.norm, n, D, cfg.norm_eps);
  linear_forward(proj.data(), un.data(), P + L.in_proj, nullptr, n, D, F);
  const Conv1dDims cd{1, 1, Cc, K};
  const SsdDims sd{1, 1, H, cfg.head_dim, G, N};
  for (int t = 0; t < n; ++t) {
    const float* row = proj.data() + static_cast<size_t>(t) * F;
    float* a = act.data() + static_cast<size_t>(t) * Cc;  // [x | B | C]
    conv1d_step(a, tail, row + E, P + L.conv_w, P + L.conv_b, cd);
    silu_forward(a, a, Cc);
    ssd_step(y.data() + static_cast<size_t>(t) * E, ssm_state, a, row + E + Cc, P + L.A_log, a + E, a + E + G * N,
             P + L.D, P + L.dt_bias, sd);
    std::memcpy(z.data() + static_cast<size_t>(t) * E, row, sizeof(float) * E);
  }
  gated_rmsnorm_forward(yn.data(), rstd.data(), y.data(), z.data(), P + L.mixer_norm, n, E, G, cfg.norm_eps);
  linear_forward(o.data(), yn.data(), P + L.out_proj, nullptr, n, E, D);
  for (size_t i = 0; i < static_cast<size_t>(n) * D; ++i) h[i] += o[i];
}

void Stream::Impl::mamba1_layer(const LayerOffsets& L, float* st, int n) {
  const int D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, R = cfg.rank();
  const int Fx = R + 2 * N;  // [dt_low | B | C]
  float* tail = st;
  float* ssm_state = st + tail_size;
  rmsnorm_forward(un.data(), rstd.data(), h.data(), P + L.norm, n, D, cfg.norm_eps);
  linear_forward(proj.data(), un.data(), P + L.in_proj, nullptr, n, D, 2 * E);  // [x | z]
  const Conv1dDims cd{1, 1, E, K};
  for (int t = 0; t < n; ++t) {
    float* a = act.data() + static_cast<size_t>(t) * E;
    conv1d_step(a, tail, proj.data() + static_cast<size_t>(t) * 2 * E, P + L.conv_w, P + L.conv_b, cd);
    silu_forward(a, a, E);
  }
  linear_forward(xdbl.data(), act.data(), P + L.x_proj, nullptr, n, E, Fx);
  // dt_raw = dt_proj(dt_low), one row at a time from the strided x_proj output.
  for (int t = 0; t < n; ++t)
    linear_forward(dt.data() + static_cast<size_t>(t) * E, xdbl.data() + static_cast<size_t>(t) * Fx,
                   P + L.dt_proj, nullptr, 1, R, E);
  const ScanDims sd{1, 1, E, 1, N};
  for (int t = 0; t < n; ++t) {
    const float* xr = xdbl.data() + static_cast<size_t>(t) * Fx;
    selective_scan_step(y.data() + static_cast<size_t>(t) * E, ssm_state, act.data() + static_cast<size_t>(t) * E,
                        dt.data() + static_cast<size_t>(t) * E, P + L.A_log, xr + R, xr + R + N, P + L.D,
                        P + L.dt_bias, proj.data() + static_cast<size_t>(t) * 2 * E + E, sd);
  }
  linear_forward(o.data(), y.data(), P + L.out_proj, nullptr, n, E, D);
  for (size_t i = 0; i < static_cast<size_t>(n) * D; ++i) h[i] += o[i];
}

void Stream::Impl::block(const float* in, float* out, int n) {
  const int D = cfg.d_model, K = cfg.mask_bins;
  const float* enc_in = in;  // (n, encoder_in)
  if (cfg.masking()) {
    // The analysis of the last W frames (the earlier ones kept in the state).
    const float* w = in;  // (n, W * step_in)
    if (cfg.analysis_frames > 1) {
      float* tail = state.data() + layer_at.back();
      unfold_forward(win.data(), win_tail.data(), in, tail, 1, n, cfg.step_in(), cfg.analysis_frames);
      std::copy(win_tail.begin(), win_tail.end(), tail);
      w = win.data();
    }
    linear_forward(bins.data(), w, P + ana_w, nullptr, n, cfg.analysis_in(), K);
    if (cfg.log_power_input) {
      log_power_forward(feat.data(), bins.data(), static_cast<long>(n) * (K / 2), ModelConfig::kLogPowerEps);
      enc_in = feat.data();
    }
  }
  linear_forward(h.data(), enc_in, P + enc_w, P + enc_b, n, cfg.encoder_in(), D);
  for (int l = 0; l < cfg.layers(); ++l) {
    float* st = state.data() + layer_at[l];
    if (off[l].attention)
      attention_layer(off[l], st, n);
    else if (cfg.block == BlockKind::Mamba2)
      mamba2_layer(off[l], st, n);
    else
      mamba1_layer(off[l], st, n);
  }
  rmsnorm_forward(un.data(), rstd.data(), h.data(), P + norm_f, n, D, cfg.norm_eps);
  if (!cfg.masking()) return linear_forward(out, un.data(), P + head_w, P + head_b, n, D, cfg.step_out());
  if (cfg.mask_bands > 0) {
    linear_forward(band_logit.data(), un.data(), P + head_w, P + head_b, n, D, cfg.mask_bands);
    linear_forward(logit.data(), band_logit.data(), P + band_x, nullptr, n, cfg.mask_bands, K);
  } else {
    linear_forward(logit.data(), un.data(), P + head_w, P + head_b, n, D, K);
  }
  sigmoid_gate_forward(bins.data(), bins.data(), logit.data(), static_cast<long>(n) * K);
  linear_forward(out, bins.data(), P + syn_w, nullptr, n, K, cfg.step_out());
}

// out[t] is frame output sample t - (F - 1): the samples of a frame come out
// during the F - 1 inputs after it, plus the first as the frame completes.
void Stream::Impl::process_frames(const float* in, float* out, size_t n) {
  const size_t F = cfg.frame, ci = cfg.in_channels, co = cfg.out_channels;
  const size_t lag = (F - 1) * co;  // output values held back from the last frame
  size_t t = 0;
  while (t < n) {
    if (fill == 0 && n - t >= F) {
      // Whole frames straight from the input, as one block of rows.
      const size_t m = std::min((n - t) / F, static_cast<size_t>(max_block));
      block(in + t * ci, block_out.data(), static_cast<int>(m));
      std::copy(frame_out.begin() + co, frame_out.end(), out + t * co);
      std::copy(block_out.begin(), block_out.begin() + (m * F * co - lag), out + t * co + lag);
      std::copy(block_out.begin() + (m - 1) * F * co, block_out.begin() + m * F * co, frame_out.begin());
      t += m * F;
      continue;
    }
    std::copy(in + t * ci, in + (t + 1) * ci, frame_in.begin() + fill * ci);
    if (fill + 1 == static_cast<int>(F)) {
      block(frame_in.data(), frame_out.data(), 1);
      std::copy(frame_out.begin(), frame_out.begin() + co, out + t * co);
      fill = 0;
    } else {
      ++fill;
      std::copy(frame_out.begin() + fill * co, frame_out.begin() + (fill + 1) * co, out + t * co);
    }
    ++t;
  }
}

Stream::Stream(const Model& model, int max_block) : impl_(std::make_unique<Impl>(model, std::max(1, max_block))) {}
Stream::~Stream() = default;
Stream::Stream(Stream&&) noexcept = default;

void Stream::process(const float* in, float* out, size_t n) {
  Impl& s = *impl_;
  // Keep any OpenMP region inside the ops on this core.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const int ci = s.cfg.in_channels, co = s.cfg.out_channels;
  if (s.cfg.frame > 1) {
    s.process_frames(in, out, n);
    n = 0;
  }
  while (n > 0) {
    const int m = static_cast<int>(std::min<size_t>(n, s.max_block));
    s.block(in, out, m);
    in += static_cast<size_t>(m) * ci;
    out += static_cast<size_t>(m) * co;
    n -= m;
  }
  omp_set_num_threads(threads);
}

void Stream::reset() {
  Impl& s = *impl_;
  std::fill(s.state.begin(), s.state.end(), 0.0f);
  std::fill(s.frame_in.begin(), s.frame_in.end(), 0.0f);
  std::fill(s.frame_out.begin(), s.frame_out.end(), 0.0f);
  s.fill = 0;
}

int Stream::latency() const { return impl_->cfg.latency(); }

size_t Stream::state_size() const { return impl_->state.size(); }

namespace {

constexpr char kSnapshotMagic[8] = {'S', 'S', 'M', 'S', 'T', 'A', 'T', '1'};

// Of the config text: a snapshot only restores into the model it came from.
uint64_t config_fingerprint(const ModelConfig& cfg) { return fnv1a(cfg.to_json_text()); }

}  // namespace

// Layout: magic (8) | config fingerprint (8) | count n (8) | n floats: the
// state, then with frames the partial input frame, the last frame's output
// and the fill count.
std::vector<uint8_t> Stream::snapshot() const {
  const Impl& s = *impl_;
  const uint64_t n = s.snapshot_floats(), fp = config_fingerprint(s.cfg);
  std::vector<float> values(s.state);  // (n)
  if (s.cfg.frame > 1) {
    values.insert(values.end(), s.frame_in.begin(), s.frame_in.end());
    values.insert(values.end(), s.frame_out.begin(), s.frame_out.end());
    values.push_back(static_cast<float>(s.fill));
  }
  std::vector<uint8_t> bytes(sizeof(kSnapshotMagic) + 16 + n * sizeof(float));
  std::memcpy(bytes.data(), kSnapshotMagic, sizeof(kSnapshotMagic));
  std::memcpy(bytes.data() + 8, &fp, 8);
  std::memcpy(bytes.data() + 16, &n, 8);
  std::memcpy(bytes.data() + 24, values.data(), n * sizeof(float));
  return bytes;
}

void Stream::restore(const std::vector<uint8_t>& bytes) {
  const size_t head = 24;
  require(bytes.size() >= head && std::memcmp(bytes.data(), kSnapshotMagic, sizeof(kSnapshotMagic)) == 0,
          "stream snapshot: not a state snapshot (bad magic)");
  uint64_t fp = 0, n = 0;
  std::memcpy(&fp, bytes.data() + 8, 8);
  std::memcpy(&n, bytes.data() + 16, 8);
  require(fp == config_fingerprint(impl_->cfg), "stream snapshot: taken from a model with a different config");
  Impl& s = *impl_;
  require(n == s.snapshot_floats(), "stream snapshot: holds " + std::to_string(n) +
                                        " state values, this model needs " + std::to_string(s.snapshot_floats()));
  require(bytes.size() == head + n * sizeof(float), "stream snapshot: size does not match its header");
  std::vector<float> values(n);  // (state_size)
  std::memcpy(values.data(), bytes.data() + head, n * sizeof(float));
  for (size_t i = 0; i < n; ++i) require(std::isfinite(values[i]), "stream snapshot: non-finite state value");
  for (int l = 0; l < s.cfg.layers(); ++l) {
    if (!s.off[l].attention) continue;
    try {
      attention_check_state(values.data() + s.layer_at[l], s.attn_dims());
    } catch (const Error& e) {
      fail("stream snapshot: layer " + std::to_string(l) + ": " + e.what());
    }
  }
  int fill = 0;
  if (s.cfg.frame > 1) {
    const float f = values.back();
    require(f >= 0 && f < static_cast<float>(s.cfg.frame) && f == std::floor(f),
            "stream snapshot: the frame fill count is not a whole number below the frame size");
    fill = static_cast<int>(f);
  }
  auto it = values.begin();
  std::copy(it, it + s.state.size(), s.state.begin());
  it += s.state.size();
  std::copy(it, it + s.frame_in.size(), s.frame_in.begin());
  it += s.frame_in.size();
  std::copy(it, it + s.frame_out.size(), s.frame_out.begin());
  s.fill = fill;
}

}  // namespace ssm
