// The forecaster's fused recurrent step (one value of one series) and model
// loading, the built-in model included.
#include <cmath>
#include <cstring>

#include "../model/layer_offsets.hpp"
#include "ssm/detector.hpp"
#include "ssm/safetensors.hpp"

namespace ssm {

namespace {

inline float sigmoidf(float x) {
  // exp of a non-positive argument only: never overflows.
  if (x >= 0) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}

inline float softplusf(float x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// y (O) = W (O, I) @ x (I) [+ b].
inline void matvec(float* y, const float* W, const float* x, const float* b, int O, int I) {
  for (int o = 0; o < O; ++o) {
    const float* w = W + static_cast<size_t>(o) * I;
    float acc = 0;
    for (int i = 0; i < I; ++i) acc += w[i] * x[i];
    y[o] = b ? acc + b[o] : acc;
  }
}

// RMSNorm of (C) values in groups of m, optionally gated by silu(z).
inline void rmsnorm(float* y, const float* x, const float* z, const float* w, int C, int m, double eps) {
  for (int g0 = 0; g0 < C; g0 += m) {
    double ss = 0;
    for (int c = g0; c < g0 + m; ++c) {
      const double v = z ? double(x[c]) * z[c] * sigmoidf(z[c]) : x[c];
      ss += v * v;
    }
    const float rs = static_cast<float>(1.0 / std::sqrt(ss / m + eps));
    for (int c = g0; c < g0 + m; ++c) {
      const float v = z ? x[c] * z[c] * sigmoidf(z[c]) : x[c];
      y[c] = v * rs * w[c];
    }
  }
}

}  // namespace

Model model_from_safetensors_bytes(std::vector<uint8_t> bytes, const std::string& source) {
  SafeTensors st = SafeTensors::parse(std::move(bytes), source);
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

Forecaster::Forecaster(const Model& model) : cfg_(model.config()) {
  const ModelConfig& c = cfg_;
  c.validate();
  require(c.block == BlockKind::Mamba2, "forecaster: the model must be Mamba-2 (got block Mamba-1)");
  require(c.in_channels == 1 && c.out_channels == 1,
          "forecaster: the model must have in_channels = out_channels = 1 (got " + std::to_string(c.in_channels) +
              " and " + std::to_string(c.out_channels) + ")");
  require(c.d_model <= kMaxWidth, "forecaster: d_model must be <= " + std::to_string(kMaxWidth));
  require(c.inner() <= kMaxInner, "forecaster: expand * d_model must be <= " + std::to_string(kMaxInner));
  require(c.n_groups * c.d_state <= kMaxGroupState,
          "forecaster: n_groups * d_state must be <= " + std::to_string(kMaxGroupState));
  require(c.d_conv >= 1 && c.d_conv <= 8, "forecaster: d_conv must be in 1..8");
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
  tail_size_ = static_cast<size_t>(c.d_conv - 1) * c.conv_channels();
  layer_state_ = tail_size_ + static_cast<size_t>(c.inner()) * c.d_state;
  state_size_ = layer_state_ * c.n_layers;
  require(state_size_ == model_state_size(c), "forecaster: state layout differs from the model's");
  const std::string text = c.to_json_text();
  fingerprint_ = fnv1a(fnv1a(1469598103934665603ull, text.data(), text.size()), p_.data(), p_.size() * sizeof(float));
}

Forecaster::~Forecaster() = default;

std::shared_ptr<const Forecaster> Forecaster::builtin() {
  static const std::shared_ptr<const Forecaster> f = [] {
    const auto b = builtin_forecaster_bytes();
    require(!b.empty(), "forecaster: no built-in model was compiled in");
    return std::make_shared<const Forecaster>(
        model_from_safetensors_bytes(std::vector<uint8_t>(b.begin(), b.end()), "built-in forecaster"));
  }();
  return f;
}

std::shared_ptr<const Forecaster> Forecaster::load(const std::string& path) {
  if (path.empty() || path == "builtin") return builtin();
  return std::make_shared<const Forecaster>(Model::load(path));
}

float Forecaster::step(float* state, float z) const {
  const ModelConfig& c = cfg_;
  const int D = c.d_model, E = c.inner(), H = c.heads(), Pd = c.head_dim, G = c.n_groups, N = c.d_state;
  const int Cc = c.conv_channels(), K = c.d_conv, K1 = K - 1, F = 2 * E + 2 * G * N + H, hpg = H / G;
  const float* P = p_.data();
  float h[kMaxWidth], un[kMaxWidth], o[kMaxWidth];
  float proj[2 * kMaxInner + 2 * kMaxGroupState + kMaxInner];  // (F) [z | xBC | dt_raw]
  float act[kMaxInner + 2 * kMaxGroupState];                   // (Cc) conv + SiLU: [x | B | C]
  float y[kMaxInner], yn[kMaxInner];                           // (E)
  for (int d = 0; d < D; ++d) h[d] = P[enc_w_ + d] * z + P[enc_b_ + d];
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerOffsets& L = layers_[l];
    float* tail = state + l * layer_state_;  // (K-1, Cc), oldest first
    float* S = tail + tail_size_;            // (H, P, N)
    rmsnorm(un, h, nullptr, P + L.norm, D, D, c.norm_eps);
    matvec(proj, P + L.in_proj, un, nullptr, F, D);
    const float* xin = proj + E;
    const float* cw = P + L.conv_w;  // (Cc, K)
    for (int ch = 0; ch < Cc; ++ch) {
      const float* w = cw + static_cast<size_t>(ch) * K;
      float acc = P[L.conv_b + ch];
      for (int k = 0; k < K1; ++k) acc += w[k] * tail[static_cast<size_t>(k) * Cc + ch];
      const float v = acc + w[K1] * xin[ch];
      act[ch] = v * sigmoidf(v);
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
      const float dt = softplusf(dt_raw[hh] + P[L.dt_bias + hh]);
      const float a = std::exp(dt * A_[l * H + hh]);
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
    rmsnorm(yn, y, proj, P + L.mixer_norm, E, E / G, c.norm_eps);  // gate z = proj[0:E]
    matvec(o, P + L.out_proj, yn, nullptr, D, E);
    for (int d = 0; d < D; ++d) h[d] += o[d];
  }
  rmsnorm(un, h, nullptr, P + norm_f_, D, D, c.norm_eps);
  float out;
  matvec(&out, P + head_w_, un, P + head_b_, 1, D);
  return out;
}

}  // namespace ssm
