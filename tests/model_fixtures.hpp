// Model configs and a synthetic denoising task shared by the model, trainer
// and CLI tests.
#pragma once
#include <cmath>
#include <random>

#include "ssm/model.hpp"
#include "ssm/model_config.hpp"
#include "ssm/trainer.hpp"
#include "testing.hpp"

namespace ssm::testing {

// A small model of either block kind: D=16, L=2, E=32, P=8 (H=4), N=8, K=4.
inline ModelConfig small_model_config(BlockKind kind, int chunk) {
  ModelConfig c;
  c.block = kind;
  c.d_model = 16;
  c.n_layers = 2;
  c.expand = 2;
  c.head_dim = 8;
  c.d_state = 8;
  c.d_conv = 4;
  c.chunk = chunk;
  return c;
}

// Clean: a few harmonics of a random fundamental with a slow amplitude
// envelope. Noisy: clean plus white noise. Deterministic in (seed, step, item).
class HarmonicDenoising : public ssm::BatchSource {
 public:
  explicit HarmonicDenoising(double noise_std) : noise_std_(noise_std) {}
  void batch(float* in, float* target, int B, int T, uint64_t seed, int64_t step) override {
    for (int b = 0; b < B; ++b) {
      std::mt19937_64 rng(seed * 1000003u + static_cast<uint64_t>(step) * 131u + b);
      std::uniform_real_distribution<double> u(0, 1);
      std::normal_distribution<double> g(0, noise_std_);
      const double f0 = 0.01 + 0.03 * u(rng);  // cycles per sample
      double amp[3], phase[3];
      for (int k = 0; k < 3; ++k) amp[k] = (0.2 + 0.3 * u(rng)) / (k + 1), phase[k] = 2 * M_PI * u(rng);
      const double env_f = 0.001 + 0.002 * u(rng);
      for (int t = 0; t < T; ++t) {
        double s = 0;
        for (int k = 0; k < 3; ++k) s += amp[k] * std::sin(2 * M_PI * f0 * (k + 1) * t + phase[k]);
        s *= 0.75 + 0.25 * std::sin(2 * M_PI * env_f * t);
        target[static_cast<size_t>(b) * T + t] = static_cast<float>(s);
        in[static_cast<size_t>(b) * T + t] = static_cast<float>(s + g(rng));
      }
    }
  }

 private:
  double noise_std_;
};

// A few hundred steps on HarmonicDenoising batches (4 x 512), L2 loss.
inline TrainerConfig short_training_run(int64_t steps) {
  TrainerConfig t;
  t.steps = steps;
  t.batch = 4;
  t.segment = 512;
  t.lr = 2e-2;
  t.min_lr = 1e-4;
  t.warmup = 10;
  t.l1_weight = 0;
  t.l2_weight = 1;
  t.stft_weight = 0;
  t.seed = 42;
  return t;
}

// The fp64 graph's parameter and input gradients of a random weighted sum
// of its outputs against central finite differences: all parameters within
// 1e-6, each tensor within `per_tensor` (tiny tensors sit nearer the finite
// differences' own rounding), the input within 1e-6. Untrainable tensors
// (ParamSpec::trainable false) get no gradient: theirs must stay exactly 0.
inline void expect_gradients_match_finite_differences(const Model& m, int B, int T, uint64_t seed,
                                                      double per_tensor) {
  const ModelConfig& cfg = m.config();
  std::vector<double> P(m.params().data(), m.params().data() + m.params().size());
  auto in = random_vector<double>(static_cast<size_t>(B) * T * cfg.in_channels, seed);
  auto w = random_vector<double>(static_cast<size_t>(B) * T * cfg.out_channels, seed + 1);
  ModelGraph<double> g(cfg, m.table());
  std::vector<double> out(w.size());
  auto loss = [&] {
    g.forward(out.data(), in.data(), P.data(), B, T);
    return weighted_sum(out, w);
  };
  loss();
  std::vector<double> dP(P.size(), 0.0), din(in.size());
  g.backward(dP.data(), din.data(), w.data(), P.data());
  auto num = numeric_gradient(loss, P);
  for (const auto& e : m.table().entries()) {
    if (e.spec.trainable) continue;
    size_t nonzero = 0;
    for (size_t i = 0; i < e.numel; ++i) nonzero += dP[e.offset + i] != 0.0;
    EXPECT_EQ(nonzero, 0u) << e.spec.name << " is not trained but got a gradient";
    std::fill(num.begin() + e.offset, num.begin() + e.offset + e.numel, 0.0);
  }
  EXPECT_LT(rel_error(dP, num), 1e-6);
  for (const auto& e : m.table().entries())
    if (e.spec.trainable) EXPECT_LT(rel_error(dP.data() + e.offset, num.data() + e.offset, e.numel), per_tensor) << e.spec.name;
  EXPECT_LT(rel_error(din, numeric_gradient(loss, in)), 1e-6);
}

// The fp64 graph over B rows of T1 + T2 input steps (samples, for a framed
// model) equals the graph over the first T1, its state carried into the
// next T2, within 1e-12.
inline void expect_state_carry_matches_whole(const Model& m, int B, int T1, int T2, uint64_t seed) {
  const ModelConfig& cfg = m.config();
  const int T = T1 + T2;
  auto in = random_vector<double>(static_cast<size_t>(B) * T, seed);
  std::vector<double> P(m.params().data(), m.params().data() + m.params().size());
  ModelGraph<double> g(cfg, m.table());
  std::vector<double> whole(in.size());
  g.forward(whole.data(), in.data(), P.data(), B, T);
  std::vector<double> a(static_cast<size_t>(B) * T1), b(static_cast<size_t>(B) * T2), oa(a.size()), ob(b.size());
  for (int i = 0; i < B; ++i) {
    std::copy(in.begin() + i * T, in.begin() + i * T + T1, a.begin() + i * T1);
    std::copy(in.begin() + i * T + T1, in.begin() + (i + 1) * T, b.begin() + i * T2);
  }
  std::vector<double> s1(B * ssm::model_state_size(cfg)), s2(s1.size());
  g.forward(oa.data(), a.data(), P.data(), B, T1, nullptr, s1.data());
  g.forward(ob.data(), b.data(), P.data(), B, T2, s1.data(), s2.data());
  for (int i = 0; i < B; ++i) {
    EXPECT_LT(rel_error(oa.data() + i * T1, whole.data() + i * T, T1), 1e-12) << "row " << i;
    EXPECT_LT(rel_error(ob.data() + i * T2, whole.data() + i * T + T1, T2), 1e-12) << "row " << i;
  }
}

}  // namespace ssm::testing
