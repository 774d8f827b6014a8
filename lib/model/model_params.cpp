// Parameter table, initialisation, cost counts and checkpoint I/O of a model.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "ssm/attention.hpp"
#include "ssm/model.hpp"
#include "ssm/safetensors.hpp"

namespace ssm {

namespace {

std::string layer_prefix(int i) { return "layers." + std::to_string(i) + "."; }

// The analysis over a window of W frames starts as a windowed Fourier
// basis, (cosine, sine) row pairs at K / 2 frequencies spread over (0, pi),
// so that log_power_input reads a short-time power spectrum; the window
// rises over the older frames and is flat over the current one. (Inputs of
// several channels start from random rows instead.) The synthesis is the
// least-squares inverse onto the current frame, S = E A^T (A A^T + l I)^-1,
// so the untrained model, masks at 1, gives its input back.
void windowed_filterbank_init(float* A_out, float* S_out, const ModelConfig& cfg, std::mt19937_64& rng) {
  const int K = cfg.mask_bins, Ci = cfg.in_channels, F = cfg.frame, Ns = cfg.analysis_frames * F;
  const int I = cfg.analysis_in(), Fo = cfg.step_out();
  std::vector<double> A(static_cast<size_t>(K) * I);  // (K, I)
  if (Ci == 1) {
    const int rise = Ns - F;
    const double pi = std::acos(-1.0), scale = std::sqrt(2.0 / Ns);
    for (int n = 0; n < Ns; ++n) {
      const double r = n < rise ? std::sin(0.5 * pi * (n + 0.5) / rise) : 1.0;
      const double w = r * r * scale;
      for (int i = 0; i < K / 2; ++i) {
        const double om = pi * (i + 0.5) / (K / 2);
        A[static_cast<size_t>(2 * i) * I + n] = w * std::cos(om * n);
        A[static_cast<size_t>(2 * i + 1) * I + n] = w * std::sin(om * n);
      }
      if (K % 2) A[static_cast<size_t>(K - 1) * I + n] = w;
    }
  } else {
    std::normal_distribution<double> gauss(0.0, 1.0 / std::sqrt(static_cast<double>(K)));
    for (double& v : A) v = gauss(rng);
  }
  // M = A A^T + l I (K, K), factored as L L^T.
  std::vector<double> M(static_cast<size_t>(K) * K);
  double trace = 0;
  for (int a = 0; a < K; ++a)
    for (int b = 0; b <= a; ++b) {
      double d = 0;
      for (int n = 0; n < I; ++n) d += A[static_cast<size_t>(a) * I + n] * A[static_cast<size_t>(b) * I + n];
      M[static_cast<size_t>(a) * K + b] = d;
      if (a == b) trace += d;
    }
  const double lambda = 1e-6 * trace / K;
  for (int a = 0; a < K; ++a) {
    M[static_cast<size_t>(a) * K + a] += lambda;
    for (int b = 0; b <= a; ++b) {
      double v = M[static_cast<size_t>(a) * K + b];
      for (int k = 0; k < b; ++k) v -= M[static_cast<size_t>(a) * K + k] * M[static_cast<size_t>(b) * K + k];
      M[static_cast<size_t>(a) * K + b] = a == b ? std::sqrt(v) : v / M[static_cast<size_t>(b) * K + b];
    }
  }
  // Row o of S solves M s = A[:, c] for the current frame's column c of output o.
  std::vector<double> s(K);
  for (int o = 0; o < Fo; ++o) {
    const int c = (cfg.analysis_frames - 1) * cfg.step_in() + o;
    const bool has = o < cfg.step_in();
    for (int k = 0; k < K; ++k) s[k] = has ? A[static_cast<size_t>(k) * I + c] : 0.0;
    for (int a = 0; a < K; ++a) {  // L y = s
      for (int k = 0; k < a; ++k) s[a] -= M[static_cast<size_t>(a) * K + k] * s[k];
      s[a] /= M[static_cast<size_t>(a) * K + a];
    }
    for (int a = K - 1; a >= 0; --a) {  // L^T x = y
      for (int k = a + 1; k < K; ++k) s[a] -= M[static_cast<size_t>(k) * K + a] * s[k];
      s[a] /= M[static_cast<size_t>(a) * K + a];
    }
    for (int k = 0; k < K; ++k) S_out[static_cast<size_t>(o) * K + k] = static_cast<float>(s[k]);
  }
  for (size_t i = 0; i < A.size(); ++i) A_out[i] = static_cast<float>(A[i]);
}

}  // namespace

ParamTable model_param_table(const ModelConfig& cfg) {
  cfg.validate();
  const int64_t D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv;
  const int64_t Cc = cfg.conv_channels();
  ParamTable t;
  t.add({"encoder.weight", {D, cfg.encoder_in()}, 1.0f});
  t.add({"encoder.bias", {D}, 0.0f});
  for (int i = 0; i < cfg.layers(); ++i) {
    const std::string p = layer_prefix(i);
    t.add({p + "norm.weight", {D}, 0.0f});
    if (cfg.is_attention(i)) {
      // mamba_ssm's MHA (qkv_proj_bias=False, out_proj_bias=False): in_proj packs [q | k | v].
      const int64_t HP = cfg.attn_inner();
      t.add({p + "mixer.in_proj.weight", {3 * HP, D}, 1.0f});
      t.add({p + "mixer.out_proj.weight", {D, HP}, 1.0f});
      continue;
    }
    if (cfg.block == BlockKind::Mamba2) {
      const int64_t H = cfg.heads(), G = cfg.n_groups;
      t.add({p + "mixer.in_proj.weight", {2 * E + 2 * G * N + H, D}, 1.0f});
      t.add({p + "mixer.conv1d.weight", {Cc, 1, K}, 1.0f});
      t.add({p + "mixer.conv1d.bias", {Cc}, 0.0f});
      t.add({p + "mixer.dt_bias", {H}, 0.0f});
      t.add({p + "mixer.A_log", {H}, 0.0f});
      t.add({p + "mixer.D", {H}, 0.0f});
      t.add({p + "mixer.norm.weight", {E}, 0.0f});
    } else {
      const int64_t R = cfg.rank();
      t.add({p + "mixer.in_proj.weight", {2 * E, D}, 1.0f});
      t.add({p + "mixer.conv1d.weight", {Cc, 1, K}, 1.0f});
      t.add({p + "mixer.conv1d.bias", {Cc}, 0.0f});
      t.add({p + "mixer.x_proj.weight", {R + 2 * N, E}, 1.0f});
      t.add({p + "mixer.dt_proj.weight", {E, R}, 1.0f});
      t.add({p + "mixer.dt_proj.bias", {E}, 0.0f});
      t.add({p + "mixer.A_log", {E, N}, 0.0f});
      t.add({p + "mixer.D", {E}, 0.0f});
    }
    t.add({p + "mixer.out_proj.weight", {D, E}, 1.0f});
  }
  t.add({"norm_f.weight", {D}, 0.0f});
  t.add({"head.weight", {cfg.head_out(), D}, 1.0f});
  t.add({"head.bias", {cfg.head_out()}, 0.0f});
  if (cfg.masking()) {
    const bool learned = !cfg.fixed_filterbank;
    t.add({"analysis.weight", {cfg.mask_bins, cfg.analysis_in()}, learned ? 1.0f : 0.0f, learned});
    t.add({"synthesis.weight", {cfg.step_out(), cfg.mask_bins}, learned ? 1.0f : 0.0f, learned});
    if (cfg.mask_bands > 0) t.add({"band_expand.weight", {cfg.mask_bins, cfg.mask_bands}, 0.0f, false});
  }
  return t;
}

// Band logits to bin logits, (K, B): band centres equally spaced on the ERB
// rate scale over the pair frequencies, at least one pair apart; a pair's
// logit is the linear interpolation of the two centres around it, and both
// bins of the pair get it. Every row sums to 1, so equal band logits give
// equal bin logits.
void band_expansion_init(float* X, const ModelConfig& cfg) {
  const int K = cfg.mask_bins, pairs = K / 2, B = cfg.mask_bands;
  std::fill(X, X + static_cast<size_t>(K) * B, 0.0f);
  // Pair i sits at (i + 0.5) / pairs of the Nyquist frequency (windowed_filterbank_init).
  const double nyquist = 0.5 * cfg.sample_rate;
  auto pair_hz = [&](double i) { return (i + 0.5) / pairs * nyquist; };
  auto erb_rate = [](double hz) { return 21.4 * std::log10(1 + 0.00437 * hz); };
  auto hz_of_rate = [](double e) { return (std::pow(10.0, e / 21.4) - 1) / 0.00437; };
  std::vector<double> centre(B);  // in pairs
  if (B == 1) {
    centre[0] = 0;
  } else {
    const double e0 = erb_rate(pair_hz(0)), e1 = erb_rate(pair_hz(pairs - 1));
    for (int b = 0; b < B; ++b) {
      const double hz = hz_of_rate(e0 + (e1 - e0) * b / (B - 1));
      centre[b] = std::max(hz / nyquist * pairs - 0.5, b > 0 ? centre[b - 1] + 1 : 0.0);
    }
    if (centre[B - 1] > pairs - 1)  // too many bands for the ERB spacing: evenly spaced instead
      for (int b = 0; b < B; ++b) centre[b] = static_cast<double>(b) * (pairs - 1) / (B - 1);
    centre[B - 1] = pairs - 1;
  }
  for (int i = 0; i < pairs; ++i) {
    int b = 0;
    while (b + 1 < B && centre[b + 1] <= i) ++b;
    double w[2] = {1.0, 0.0};  // of bands b and b + 1
    if (b + 1 < B && i > centre[b]) {
      w[1] = (i - centre[b]) / (centre[b + 1] - centre[b]);
      w[0] = 1 - w[1];
    }
    for (int k = 2 * i; k < 2 * i + 2; ++k) {
      X[static_cast<size_t>(k) * B + b] = static_cast<float>(w[0]);
      if (w[1] > 0) X[static_cast<size_t>(k) * B + b + 1] = static_cast<float>(w[1]);
    }
  }
}

void model_init(ParamBlock<float>& params, const ModelConfig& cfg, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](float* p, size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(u(rng));
  };
  auto fill = [](float* p, size_t n, float v) { std::fill(p, p + n, v); };
  auto linear = [&](const std::string& name, double scale = 1.0) {
    const auto& e = params.table().entry(name);
    const double bound = scale / std::sqrt(static_cast<double>(e.numel / e.spec.shape[0]));
    uniform(params.at(name), e.numel, -bound, bound);
  };
  // dt drawn log-uniformly in [dt_min, dt_max], stored through softplus^-1.
  auto dt_bias = [&](float* p, size_t n) {
    std::uniform_real_distribution<double> u(std::log(cfg.dt_min), std::log(cfg.dt_max));
    for (size_t i = 0; i < n; ++i) {
      const double dt = std::max(std::exp(u(rng)), cfg.dt_init_floor);
      p[i] = static_cast<float>(dt + std::log(-std::expm1(-dt)));
    }
  };
  const ParamTable& t = params.table();
  params.zero();
  linear("encoder.weight");
  // Residual branches scaled by 1/sqrt(L) so the stream's variance stays put.
  const double out_scale = 1.0 / std::sqrt(static_cast<double>(cfg.layers()));
  for (int i = 0; i < cfg.layers(); ++i) {
    const std::string p = layer_prefix(i);
    fill(params.at(p + "norm.weight"), t.numel(p + "norm.weight"), 1.0f);
    linear(p + "mixer.in_proj.weight");
    if (cfg.is_attention(i)) {
      linear(p + "mixer.out_proj.weight", out_scale);
      continue;
    }
    const double conv_bound = 1.0 / std::sqrt(static_cast<double>(cfg.d_conv));
    uniform(params.at(p + "mixer.conv1d.weight"), t.numel(p + "mixer.conv1d.weight"), -conv_bound, conv_bound);
    uniform(params.at(p + "mixer.conv1d.bias"), t.numel(p + "mixer.conv1d.bias"), -conv_bound, conv_bound);
    fill(params.at(p + "mixer.D"), t.numel(p + "mixer.D"), 1.0f);
    if (cfg.block == BlockKind::Mamba2) {
      dt_bias(params.at(p + "mixer.dt_bias"), t.numel(p + "mixer.dt_bias"));
      float* A_log = params.at(p + "mixer.A_log");  // (H)
      std::uniform_real_distribution<double> u(1.0, 16.0);
      for (int h = 0; h < cfg.heads(); ++h) A_log[h] = static_cast<float>(std::log(u(rng)));
      fill(params.at(p + "mixer.norm.weight"), t.numel(p + "mixer.norm.weight"), 1.0f);
    } else {
      linear(p + "mixer.x_proj.weight");
      const double dt_bound = 1.0 / std::sqrt(static_cast<double>(cfg.rank()));
      uniform(params.at(p + "mixer.dt_proj.weight"), t.numel(p + "mixer.dt_proj.weight"), -dt_bound, dt_bound);
      dt_bias(params.at(p + "mixer.dt_proj.bias"), t.numel(p + "mixer.dt_proj.bias"));
      float* A_log = params.at(p + "mixer.A_log");  // (E, N): S4D-Real, A = -(n + 1)
      for (int e = 0; e < cfg.inner(); ++e)
        for (int n = 0; n < cfg.d_state; ++n) A_log[e * cfg.d_state + n] = static_cast<float>(std::log(n + 1.0));
    }
    linear(p + "mixer.out_proj.weight", out_scale);
  }
  fill(params.at("norm_f.weight"), t.numel("norm_f.weight"), 1.0f);
  linear("head.weight");
  if (cfg.masking() && (cfg.analysis_frames > 1 || cfg.log_power_input)) {
    windowed_filterbank_init(params.at("analysis.weight"), params.at("synthesis.weight"), cfg, rng);
    if (cfg.mask_bands > 0) band_expansion_init(params.at("band_expand.weight"), cfg);
    linear("head.weight", 0.1);
    fill(params.at("head.bias"), t.numel("head.bias"), 3.0f);  // sigmoid(3) = 0.95
  } else if (cfg.masking()) {
    if (cfg.mask_bands > 0) band_expansion_init(params.at("band_expand.weight"), cfg);
    // The filterbank starts as a tight frame (S A = I on the frame when
    // K >= F) and the masks near 1: the untrained model passes its input
    // through, a little quieter, and learns what to take away.
    const int K = cfg.mask_bins, Fi = cfg.step_in(), Fo = cfg.step_out();
    float* A = params.at("analysis.weight");   // (K, Fi)
    float* S = params.at("synthesis.weight");  // (Fo, K)
    std::normal_distribution<double> gauss(0.0, 1.0);
    std::vector<double> q(static_cast<size_t>(K) * Fi);  // (K, Fi), columns made orthonormal
    for (double& v : q) v = gauss(rng);
    for (int c = 0; c < std::min(Fi, K); ++c) {
      for (int p = 0; p < c; ++p) {
        double dot = 0;
        for (int k = 0; k < K; ++k) dot += q[k * Fi + c] * q[k * Fi + p];
        for (int k = 0; k < K; ++k) q[k * Fi + c] -= dot * q[k * Fi + p];
      }
      double norm = 0;
      for (int k = 0; k < K; ++k) norm += q[k * Fi + c] * q[k * Fi + c];
      norm = std::sqrt(norm);
      for (int k = 0; k < K; ++k) q[k * Fi + c] /= norm;
    }
    for (size_t i = 0; i < q.size(); ++i) A[i] = static_cast<float>(q[i]);
    // S = A^T where the output channels match the input ones, else a small random start.
    for (int o = 0; o < Fo; ++o)
      for (int k = 0; k < K; ++k)
        S[static_cast<size_t>(o) * K + k] = o < Fi ? A[static_cast<size_t>(k) * Fi + o] : 0.0f;
    linear("head.weight", 0.1);
    fill(params.at("head.bias"), t.numel("head.bias"), 3.0f);  // sigmoid(3) = 0.95
  }
}

size_t model_layer_state_size(const ModelConfig& cfg, int layer) {
  if (cfg.is_attention(layer)) return attention_state_size(cfg.attention_heads, cfg.attn_head_dim(), cfg.attention_window);
  const size_t tail = static_cast<size_t>(cfg.d_conv - 1) * cfg.conv_channels();
  const size_t ssm = static_cast<size_t>(cfg.inner()) * cfg.d_state;  // H*P*N == E*N
  return tail + ssm;
}

size_t model_state_size(const ModelConfig& cfg) {
  size_t n = 0;
  for (int l = 0; l < cfg.layers(); ++l) n += model_layer_state_size(cfg, l);
  // Then the frames before the current one that the analysis reads.
  return n + static_cast<size_t>(cfg.analysis_frames - 1) * cfg.step_in();
}

double model_flops_per_step(const ModelConfig& cfg) {
  const double D = cfg.d_model, E = cfg.inner(), N = cfg.d_state, K = cfg.d_conv, Cc = cfg.conv_channels();
  double per_layer = 4 * D;  // RMSNorm
  if (cfg.block == BlockKind::Mamba2) {
    const double H = cfg.heads(), G = cfg.n_groups;
    per_layer += 2 * D * (2 * E + 2 * G * N + H);  // in_proj
    per_layer += 2 * Cc * K + 4 * Cc;              // conv + SiLU
    per_layer += E * N * 4 + 2 * E + 10 * H;       // decay*S + dt*x*B, S@C, D*x, dt/exp
    per_layer += 8 * E;                            // gated RMSNorm
  } else {
    const double R = cfg.rank();
    per_layer += 2 * D * 2 * E + 2 * Cc * K + 4 * Cc;
    per_layer += 2 * E * (R + 2 * N) + 2 * R * E;  // x_proj, dt_proj
    per_layer += E * N * 6 + 6 * E;                // exp per (e, n), update, readout, gate
  }
  per_layer += 2 * E * D + D;  // out_proj + residual
  // An attention layer once its window is full: RMSNorm, in_proj to q, k, v,
  // W scores and W weighted values per head (2 H P each), the softmax (an
  // exp, a bias and a sum per score), out_proj and the residual.
  const double HP = cfg.attn_inner(), W = cfg.attention_window, Ha = cfg.attention_heads;
  const double attn_layer = 4 * D + 2 * D * 3 * HP + W * 4 * HP + W * Ha * 4 + 2 * HP * D + D;
  const double head = cfg.masking() ? 2.0 * D * cfg.head_out() +
                                           (cfg.mask_bands > 0 ? 2.0 * cfg.mask_bands * cfg.mask_bins : 0.0) + 2.0 * cfg.analysis_in() * cfg.mask_bins +
                                           5.0 * cfg.mask_bins + 2.0 * cfg.mask_bins * cfg.step_out() +
                                           (cfg.log_power_input ? 2.0 * cfg.mask_bins : 0.0)
                                     : 2.0 * D * cfg.step_out();
  return cfg.n_layers * per_layer + cfg.attention_layers() * attn_layer + 2.0 * cfg.encoder_in() * D + 4 * D + head;
}

Model::Model(ModelConfig cfg) : cfg_(std::move(cfg)), params_(model_param_table(cfg_)) {}

void Model::save(const std::string& path, const std::map<std::string, std::string>& extra_metadata) const {
  SafeTensorsWriter w;
  for (const auto& [k, v] : extra_metadata) w.set_metadata(k, v);
  for (const auto& e : table().entries()) w.add(e.spec.name, params_.data() + e.offset, e.spec.shape);
  w.set_metadata("ssm.config", cfg_.to_json_text());
  w.set_metadata("format", "pt");
  w.write_file(path);
}

Model Model::load(const std::string& path) {
  SafeTensors st = SafeTensors::read_file(path);
  auto it = st.metadata().find("ssm.config");
  if (it == st.metadata().end())
    fail("model '" + path + "': no 'ssm.config' entry in the safetensors __metadata__");
  Model m(ModelConfig::from_json_text(it->second, path + " (__metadata__ ssm.config)"));
  for (const auto& e : m.table().entries()) {
    if (!st.contains(e.spec.name))
      fail("model '" + path + "': tensor '" + e.spec.name + "' is missing for this config");
    st.read_float(e.spec.name, m.params_.data() + e.offset, e.spec.shape);
  }
  for (const auto& name : st.names())
    if (!m.table().contains(name)) fail("model '" + path + "': unexpected tensor '" + name + "' for this config");
  for (const auto& e : m.table().entries()) {
    const float* p = m.params_.data() + e.offset;
    for (size_t i = 0; i < e.numel; ++i)
      if (!std::isfinite(p[i]))
        fail("model '" + path + "': tensor '" + e.spec.name + "' holds a non-finite value at element " +
             std::to_string(i));
  }
  return m;
}

}  // namespace ssm
