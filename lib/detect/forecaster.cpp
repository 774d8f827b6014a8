// The forecaster's fused recurrent step (one value of one series) and model
// loading, the built-in model included.
#include <algorithm>
#include <charconv>
#include <fstream>
#include <iterator>
#include <cmath>
#include <cstring>

#include "../cpu/fast_math.hpp"
#include "../model/layer_offsets.hpp"
#include "ssm/detector.hpp"
#include "ssm/safetensors.hpp"

namespace ssm {

namespace {

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// y (O) = x (I) @ Wt (I, O) [+ b]: the weights transposed, so that every
// step is a vectorised axpy over the outputs (no horizontal sums).
SSM_ALWAYS_INLINE void matvec_t(float* __restrict y, const float* __restrict Wt, const float* __restrict x,
                                 const float* __restrict b, int O, int I) {
  for (int o = 0; o < O; ++o) y[o] = b ? b[o] : 0.0f;
  for (int i = 0; i < I; ++i) {
    const float xi = x[i];
    const float* w = Wt + static_cast<size_t>(i) * O;
    for (int o = 0; o < O; ++o) y[o] += xi * w[o];
  }
}

// Appends W (O, I) transposed to `out` and returns where it starts.
size_t append_transposed(std::vector<float>& out, const float* W, int O, int I) {
  const size_t at = out.size();
  for (int i = 0; i < I; ++i)
    for (int o = 0; o < O; ++o) out.push_back(W[static_cast<size_t>(o) * I + i]);
  return at;
}

// RMSNorm of (C) values in groups of m, optionally gated by silu(z).
SSM_ALWAYS_INLINE void rmsnorm(float* y, const float* x, const float* z, const float* w, int C, int m, float eps) {
  float g[Forecaster::kMaxInner];  // (C) the normalised input
  for (int c = 0; c < C; ++c) g[c] = z ? x[c] * (z[c] * fast_sigmoid(z[c])) : x[c];
  for (int g0 = 0; g0 < C; g0 += m) {
    float ss = 0;
    for (int c = g0; c < g0 + m; ++c) ss += g[c] * g[c];
    const float rs = 1.0f / std::sqrt(ss / m + eps);
    for (int c = g0; c < g0 + m; ++c) y[c] = g[c] * rs * w[c];
  }
}

}  // namespace

Model model_from_safetensors_bytes(std::vector<uint8_t> bytes, const std::string& source, int* horizon) {
  SafeTensors st = SafeTensors::parse(std::move(bytes), source);
  if (horizon) {
    *horizon = 1;
    if (auto h = st.metadata().find("ssm.horizon"); h != st.metadata().end()) {
      const std::string& v = h->second;
      int n = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      require(ec == std::errc{} && end == v.data() + v.size() && n >= 1 && n <= Forecaster::kMaxHorizon,
              "model '" + source + "': __metadata__ 'ssm.horizon' must be an integer in 1 .. " +
                  std::to_string(Forecaster::kMaxHorizon) + ", got '" + v + "'");
      *horizon = n;
    }
  }
  auto it = st.metadata().find("ssm.config");
  require(it != st.metadata().end(), "model '" + source + "': no 'ssm.config' entry in the safetensors __metadata__");
  Model m(ModelConfig::from_json_text(it->second, source + " (__metadata__ ssm.config)"));
  for (const auto& e : m.table().entries()) {
    require(st.contains(e.spec.name), "model '" + source + "': tensor '" + e.spec.name + "' is missing for this config");
    st.read_float(e.spec.name, m.params().data() + e.offset, e.spec.shape);
    for (size_t i = 0; i < e.numel; ++i)
      require(std::isfinite(m.params().data()[e.offset + i]),
              "model '" + source + "': tensor '" + e.spec.name + "' holds a non-finite value");
  }
  for (const auto& name : st.names())
    require(m.table().contains(name), "model '" + source + "': unexpected tensor '" + name + "' for this config");
  return m;
}

Model Forecaster::model() const {
  Model m(cfg_);
  require(m.params().size() == p_.size(), "forecaster: parameter block size differs from the model's");
  std::copy(p_.begin(), p_.end(), m.params().data());
  return m;
}

Forecaster::Forecaster(const Model& model, int horizon) : cfg_(model.config()), horizon_(horizon) {
  const ModelConfig& c = cfg_;
  c.validate();
  require(horizon >= 1 && horizon <= kMaxHorizon,
          "forecaster: the horizon must be in 1 .. " + std::to_string(kMaxHorizon) + " (got " + std::to_string(horizon) + ")");
  require(c.block == BlockKind::Mamba2, "forecaster: the model must be Mamba-2 (got block Mamba-1)");
  require(c.in_channels == 1 || c.in_channels == kForecastInputs,
          "forecaster: the model must have in_channels 1 or " + std::to_string(kForecastInputs) + " (got " +
              std::to_string(c.in_channels) + ")");
  require(c.out_channels == 1 || c.out_channels == 2,
          "forecaster: the model must have out_channels 1 or 2 (got " + std::to_string(c.out_channels) + ")");
  require(c.frame == 1, "forecaster: the model must take one value per step (got frame " + std::to_string(c.frame) + ")");
  require(!c.masking(), "forecaster: the model must have a mapping head (got mask_bins " + std::to_string(c.mask_bins) + ")");
  require(c.d_model <= kMaxWidth, "forecaster: d_model must be <= " + std::to_string(kMaxWidth));
  require(c.inner() <= kMaxInner, "forecaster: expand * d_model must be <= " + std::to_string(kMaxInner));
  require(c.n_groups * c.d_state <= kMaxGroupState,
          "forecaster: n_groups * d_state must be <= " + std::to_string(kMaxGroupState));
  require(c.d_conv >= 1 && c.d_conv <= 8, "forecaster: d_conv must be in 1..8");
  require(!c.hybrid(), "forecaster: the model must have no attention layers (got attention_every " +
                           std::to_string(c.attention_every) + ")");
  const ParamTable& t = model.table();
  p_.assign(model.params().data(), model.params().data() + model.params().size());
  enc_w_ = t.offset("encoder.weight");
  enc_b_ = t.offset("encoder.bias");
  norm_f_ = t.offset("norm_f.weight");
  head_w_ = t.offset("head.weight");
  head_b_ = t.offset("head.bias");
  const int H = c.heads();
  layers_ = model_layer_offsets(c, t);
  for (const LayerOffsets& L : layers_)
    for (int h = 0; h < H; ++h) A_.push_back(-std::exp(p_[L.A_log + h]));
  // Projections and conv weights transposed, in the order the step uses them.
  const int Cc = c.conv_channels(), K = c.d_conv, D = c.d_model, E = c.inner();
  const int F = 2 * E + 2 * c.n_groups * c.d_state + H;
  for (const LayerOffsets& L : layers_) {
    append_transposed(t_, p_.data() + L.in_proj, F, D);
    append_transposed(t_, p_.data() + L.conv_w, Cc, K);
    append_transposed(t_, p_.data() + L.out_proj, D, E);
  }
  head_t_ = append_transposed(t_, p_.data() + head_w_, c.out_channels, D);
  enc_t_ = append_transposed(t_, p_.data() + enc_w_, D, c.in_channels);
  tail_size_ = static_cast<size_t>(c.d_conv - 1) * c.conv_channels();
  layer_state_ = tail_size_ + static_cast<size_t>(c.inner()) * c.d_state;
  state_size_ = layer_state_ * c.n_layers;
  require(state_size_ == model_state_size(c), "forecaster: state layout differs from the model's");
  const std::string text = c.to_json_text();
  fingerprint_ = fnv1a(fnv1a(1469598103934665603ull, text.data(), text.size()), p_.data(), p_.size() * sizeof(float));
  if (horizon_ != 1) fingerprint_ = fnv1a(fingerprint_, &horizon_, sizeof(horizon_));
}

Forecaster::~Forecaster() = default;

std::shared_ptr<const Forecaster> Forecaster::builtin() {
  static const std::shared_ptr<const Forecaster> f = [] {
    const auto b = builtin_forecaster_bytes();
    require(!b.empty(), "forecaster: no built-in model was compiled in");
    int horizon = 1;
    Model m = model_from_safetensors_bytes(std::vector<uint8_t>(b.begin(), b.end()), "built-in forecaster", &horizon);
    return std::make_shared<const Forecaster>(m, horizon);
  }();
  return f;
}

std::shared_ptr<const Forecaster> Forecaster::load(const std::string& path) {
  if (path.empty() || path == "builtin") return builtin();
  std::ifstream f(path, std::ios::binary);
  require(f.good(), "forecaster: cannot open model file '" + path + "'");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  require(!f.bad(), "forecaster: cannot read model file '" + path + "'");
  int horizon = 1;
  Model m = model_from_safetensors_bytes(std::move(bytes), path, &horizon);
  return std::make_shared<const Forecaster>(m, horizon);
}

template <class Dims>
SSM_ALWAYS_INLINE void Forecaster::step_with(float* state, const float* in, float* out, const Dims& dm) const {
  const int D = dm.D, E = dm.E, H = dm.H, Pd = dm.P, G = dm.G, N = dm.N, K = dm.K;
  const int Cc = E + 2 * G * N, K1 = K - 1, F = 2 * E + 2 * G * N + H, hpg = H / G;
  const float eps = static_cast<float>(cfg_.norm_eps);
  const float* P = p_.data();
  const float* T = t_.data();  // per layer: in_proj (D, F), conv (K, Cc), out_proj (E, D)
  float h[kMaxWidth], un[kMaxWidth], o[kMaxWidth];
  float proj[2 * kMaxInner + 2 * kMaxGroupState + kMaxInner];  // (F) [z | xBC | dt_raw]
  float act[kMaxInner + 2 * kMaxGroupState];                   // (Cc) conv + SiLU: [x | B | C]
  float y[kMaxInner], yn[kMaxInner];                           // (E)
  matvec_t(h, t_.data() + enc_t_, in, P + enc_b_, D, cfg_.in_channels);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerOffsets& L = layers_[l];
    float* tail = state + l * layer_state_;  // (K-1, Cc), oldest first
    float* S = tail + tail_size_;            // (H, P, N)
    rmsnorm(un, h, nullptr, P + L.norm, D, D, eps);
    matvec_t(proj, T, un, nullptr, F, D);
    T += static_cast<size_t>(D) * F;
    const float* xin = proj + E;
    const float* wt = T;  // (K, Cc)
    T += static_cast<size_t>(K) * Cc;
    const float* bias = P + L.conv_b;
    for (int ch = 0; ch < Cc; ++ch) act[ch] = bias[ch];
    for (int k = 0; k < K1; ++k) {
      const float* w = wt + static_cast<size_t>(k) * Cc;
      const float* t = tail + static_cast<size_t>(k) * Cc;
      for (int ch = 0; ch < Cc; ++ch) act[ch] += w[ch] * t[ch];
    }
    const float* wl = wt + static_cast<size_t>(K1) * Cc;
    for (int ch = 0; ch < Cc; ++ch) {
      const float v = act[ch] + wl[ch] * xin[ch];
      act[ch] = v * fast_sigmoid(v);
    }
    if (K1 > 0) {
      std::memmove(tail, tail + Cc, sizeof(float) * static_cast<size_t>(K1 - 1) * Cc);
      std::memcpy(tail + static_cast<size_t>(K1 - 1) * Cc, xin, sizeof(float) * Cc);
    }
    const float* x = act;
    const float* Bm = act + E;
    const float* Cm = act + E + G * N;
    const float* dt_raw = proj + E + Cc;
    for (int hh = 0; hh < H; ++hh) {
      const int g = hh / hpg;
      const float dt = fast_softplus(dt_raw[hh] + P[L.dt_bias + hh]);
      const float a = decay_exp(dt * A_[l * H + hh]);
      const float* Bt = Bm + g * N;
      const float* Ct = Cm + g * N;
      const float Dh = P[L.D + hh];
      for (int p = 0; p < Pd; ++p) {
        const int e = hh * Pd + p;
        const float dx = dt * x[e];
        float* Sp = S + static_cast<size_t>(e) * N;
        float acc = 0;
        for (int n = 0; n < N; ++n) {
          Sp[n] = a * Sp[n] + dx * Bt[n];
          acc += Sp[n] * Ct[n];
        }
        y[e] = acc + Dh * x[e];
      }
    }
    rmsnorm(yn, y, proj, P + L.mixer_norm, E, E / G, eps);  // gate z = proj[0:E]
    matvec_t(o, T, yn, nullptr, D, E);
    T += static_cast<size_t>(E) * D;
    for (int d = 0; d < D; ++d) h[d] += o[d];
  }
  rmsnorm(un, h, nullptr, P + norm_f_, D, D, eps);
  matvec_t(out, t_.data() + head_t_, un, P + head_b_, cfg_.out_channels, D);
}


// The shipped forecaster's shape, known at compile time so that the short
// loops unroll; any other shape takes the same code with runtime sizes.
namespace {
struct RuntimeDims {
  int D, E, H, P, G, N, K;
};
struct ShippedDims {
  static constexpr int D = 8, E = 16, H = 2, P = 8, G = 1, N = 8, K = 4;
};
}  // namespace

SSM_SIMD_CLONES void Forecaster::step(float* state, const float* in, float* out) const {
  const ModelConfig& c = cfg_;
  if (c.d_model == ShippedDims::D && c.inner() == ShippedDims::E && c.head_dim == ShippedDims::P &&
      c.n_groups == ShippedDims::G && c.d_state == ShippedDims::N && c.d_conv == ShippedDims::K)
    return step_with(state, in, out, ShippedDims{});
  step_with(state, in, out, RuntimeDims{c.d_model, c.inner(), c.heads(), c.head_dim, c.n_groups, c.d_state, c.d_conv});
}

float Forecaster::step(float* state, float z) const {
  require(cfg_.in_channels == 1, "forecaster: step(state, z) needs a one-input model");
  float out[2];
  step(state, &z, out);
  return out[0];
}

void forecaster_inputs(float* in, double z, int64_t epoch, int64_t gap_seconds) {
  constexpr double two_pi = 6.283185307179586;
  const int64_t day = ((epoch % 86400) + 86400) % 86400;
  const int64_t week = (((epoch / 86400 + 3) % 7 + 7) % 7) * 86400 + day;  // 0 = Monday 00:00
  in[0] = static_cast<float>(z);
  in[1] = static_cast<float>(std::sin(two_pi * day / 86400.0));
  in[2] = static_cast<float>(std::cos(two_pi * day / 86400.0));
  in[3] = static_cast<float>(std::sin(two_pi * week / 604800.0));
  in[4] = static_cast<float>(std::cos(two_pi * week / 604800.0));
  in[5] = gap_seconds > 0 ? static_cast<float>(std::clamp(std::log10(static_cast<double>(gap_seconds)) - 2.5, -3.0, 3.0))
                          : 0.0f;
}

}  // namespace ssm
