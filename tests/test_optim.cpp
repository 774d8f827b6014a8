// AdamW against a plain fp64 re-implementation of PyTorch's formula,
// clipping by global norm, the learning-rate schedule, and bit-identical
// resume from a saved optimizer state.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numbers>

#include "ssm/optim.hpp"
#include "testing.hpp"

namespace {

using ssm::AdamW;
using ssm::AdamWConfig;
using ssm::ParamBlock;
using ssm::ParamTable;
using ssm::testing::random_vector;
using ssm::testing::rel_error;

ParamTable make_table(bool big) {
  ParamTable t;
  t.add({"layers.0.mixer.in_proj.weight", {12, 5}, 1.0f});
  t.add({"layers.0.mixer.A_log", {3}, 0.0f});
  t.add({"layers.0.mixer.D", {3}, 0.0f});
  t.add({"layers.0.mixer.out_proj.weight", {5, 7}, 1.0f});
  t.add({"half_decay", {9}, 0.5f});
  if (big) t.add({"big.weight", {300, 250}, 1.0f});  // large enough for the threaded path
  return t;
}

// torch.optim.AdamW (amsgrad off), written from its documentation, in fp64
// over the whole block; `mult` is the per-element weight decay multiplier.
struct ReferenceAdamW {
  AdamWConfig c;
  std::vector<double> m, v, mult;
  int64_t t = 0;

  ReferenceAdamW(const ParamTable& table, const AdamWConfig& cfg)
      : c(cfg), m(table.total()), v(table.total()), mult(table.total()) {
    for (const auto& e : table.entries())
      for (size_t i = 0; i < e.numel; ++i) mult[e.offset + i] = e.spec.weight_decay_mult;
  }
  void step(std::vector<double>& p, const std::vector<double>& g, double lr) {
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] -= lr * c.weight_decay * mult[i] * p[i];
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i];
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(c.beta1, t));
      const double vhat = v[i] / (1 - std::pow(c.beta2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + c.eps);
    }
  }
};

// Random values in the tensors, zeros in the alignment gaps.
template <typename Real>
void fill(ParamBlock<Real>& b, uint64_t seed, double scale) {
  const auto r = random_vector<double>(b.size(), seed, -scale, scale);
  b.zero();
  for (const auto& e : b.table().entries())
    for (size_t i = 0; i < e.numel; ++i) b.data()[e.offset + i] = static_cast<Real>(r[e.offset + i]);
}

template <typename Real>
std::vector<double> to_double(const ParamBlock<Real>& b) {
  return std::vector<double>(b.data(), b.data() + b.size());
}

template <typename Real>
void check_against_reference(int steps, double tol) {
  const ParamTable table = make_table(true);
  AdamWConfig cfg;
  cfg.weight_decay = 0.1;
  const ssm::LrSchedule sched{3e-2, 1e-3, std::min(steps, 3), steps};
  AdamW<Real> opt(table, cfg);
  ReferenceAdamW ref(table, cfg);
  ParamBlock<Real> p(table), g(table);
  fill(p, 1, 1.0);
  std::vector<double> pref = to_double(p);  // the reference starts from the same rounded values
  for (int s = 0; s < steps; ++s) {
    fill(g, 100 + s, 0.5 + s);  // gradients of changing scale
    const double lr = sched.at(s);
    opt.step(p, g, lr);
    ref.step(pref, to_double(g), lr);
    ASSERT_LE(rel_error(to_double(p), pref), tol) << "step " << s;
    ASSERT_LE(rel_error(to_double(opt.state().m), ref.m), tol) << "m, step " << s;
    ASSERT_LE(rel_error(to_double(opt.state().v), ref.v), tol) << "v, step " << s;
  }
  EXPECT_EQ(opt.state().step, steps);
}

TEST(AdamW, OneStepDoubleMatchesReference) { check_against_reference<double>(1, 1e-14); }
TEST(AdamW, OneStepFloatMatchesReference) { check_against_reference<float>(1, 1e-6); }
TEST(AdamW, ManyStepsDoubleMatchesReference) { check_against_reference<double>(12, 1e-13); }
TEST(AdamW, ManyStepsFloatMatchesReference) { check_against_reference<float>(12, 1e-5); }

TEST(AdamW, WeightDecayFollowsTheTableMultiplier) {
  const ParamTable table = make_table(false);
  AdamWConfig cfg;
  cfg.weight_decay = 0.2;
  AdamW<double> opt(table, cfg);
  ParamBlock<double> p(table), g(table);  // zero gradients: only the decay acts
  fill(p, 7, 1.0);
  const ParamBlock<double> before = p;
  opt.step(p, g, 0.5);
  for (const auto& e : table.entries()) {
    const double k = 1 - 0.5 * 0.2 * e.spec.weight_decay_mult;
    for (size_t i = 0; i < e.numel; ++i)
      ASSERT_EQ(p.data()[e.offset + i], before.data()[e.offset + i] * k) << e.spec.name;
  }
}

TEST(AdamW, AlignmentGapsAreNotTouched) {
  const ParamTable table = make_table(false);
  AdamW<float> opt(table, AdamWConfig{});
  ParamBlock<float> p(table), g(table);
  fill(p, 3, 1.0);
  fill(g, 4, 1.0);
  const size_t gap = table.entry("layers.0.mixer.A_log").offset + 3;  // just past A_log
  ASSERT_LT(gap, table.offset("layers.0.mixer.D"));
  p.data()[gap] = 7.0f;
  g.data()[gap] = 1e3f;
  opt.step(p, g, 1e-2);
  EXPECT_EQ(p.data()[gap], 7.0f);
  EXPECT_EQ(opt.state().m.data()[gap], 0.0f);
}

template <typename Real>
bool same_bits(const ParamBlock<Real>& a, const ParamBlock<Real>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(Real)) == 0;
}

template <typename Real>
void check_resume() {
  const ParamTable table = make_table(true);
  const ssm::LrSchedule sched{1e-2, 1e-4, 2, 10};
  AdamW<Real> opt(table, AdamWConfig{});
  ParamBlock<Real> p(table), g(table);
  fill(p, 11, 1.0);
  for (int s = 0; s < 4; ++s) {
    fill(g, 200 + s, 1.0);
    opt.step(p, g, sched.at(s));
  }
  // Checkpoint: the state and parameters as raw bytes, read back into fresh blocks.
  ssm::AdamWState<Real> saved;
  saved.step = opt.state().step;
  saved.m = ParamBlock<Real>(table);
  saved.v = ParamBlock<Real>(table);
  ParamBlock<Real> saved_p(table);
  std::memcpy(saved.m.data(), opt.state().m.data(), table.total() * sizeof(Real));
  std::memcpy(saved.v.data(), opt.state().v.data(), table.total() * sizeof(Real));
  std::memcpy(saved_p.data(), p.data(), table.total() * sizeof(Real));

  for (int s = 4; s < 10; ++s) {
    fill(g, 200 + s, 1.0);
    opt.step(p, g, sched.at(s));
  }
  AdamW<Real> resumed(table, AdamWConfig{});
  resumed.load_state(saved);
  for (int s = static_cast<int>(resumed.state().step); s < 10; ++s) {
    fill(g, 200 + s, 1.0);
    resumed.step(saved_p, g, sched.at(s));
  }
  EXPECT_EQ(resumed.state().step, opt.state().step);
  EXPECT_TRUE(same_bits(saved_p, p));
  EXPECT_TRUE(same_bits(resumed.state().m, opt.state().m));
  EXPECT_TRUE(same_bits(resumed.state().v, opt.state().v));
}

TEST(AdamW, ResumeFromSavedStateIsBitIdenticalFloat) { check_resume<float>(); }
TEST(AdamW, ResumeFromSavedStateIsBitIdenticalDouble) { check_resume<double>(); }

TEST(AdamW, RejectsMismatchedBlocksAndBadConfig) {
  const ParamTable table = make_table(false), other = make_table(true);
  AdamW<float> opt(table, AdamWConfig{});
  ParamBlock<float> p(table), g(table), q(other);
  EXPECT_THROW(opt.step(q, g, 1e-3), ssm::Error);
  EXPECT_THROW(opt.step(p, q, 1e-3), ssm::Error);
  EXPECT_THROW(opt.step(p, g, NAN), ssm::Error);
  ssm::AdamWState<float> s;
  s.m = ParamBlock<float>(other);
  s.v = ParamBlock<float>(other);
  EXPECT_THROW(opt.load_state(s), ssm::Error);
  EXPECT_EQ(opt.state().step, 0);
  AdamWConfig bad;
  bad.beta2 = 1.0;
  EXPECT_THROW((AdamW<float>(table, bad)), ssm::Error);
  bad = AdamWConfig{};
  bad.eps = 0;
  EXPECT_THROW((AdamW<float>(table, bad)), ssm::Error);
}

template <typename Real>
void check_clip(size_t n) {
  const auto g0 = random_vector<Real>(n, 5, -1, 1);
  double sum = 0;
  for (Real x : g0) sum += double(x) * double(x);
  const double norm_ref = std::sqrt(sum);

  auto g = g0;  // above the limit: scaled onto it, direction kept
  const double max_norm = 0.25 * norm_ref;
  const double norm = ssm::clip_grad_norm(g.data(), n, max_norm);
  EXPECT_NEAR(norm, norm_ref, 1e-12 * norm_ref);
  std::vector<double> expect(n);
  for (size_t i = 0; i < n; ++i) expect[i] = double(g0[i]) * max_norm / (norm_ref + 1e-6);
  const double tol = std::is_same_v<Real, float> ? 1e-6 : 1e-14;
  EXPECT_LE(rel_error(g, expect), tol);
  double after = 0;
  for (Real x : g) after += double(x) * double(x);
  EXPECT_NEAR(std::sqrt(after), max_norm, 1e-5 * max_norm);

  g = g0;  // below the limit: untouched
  EXPECT_NEAR(ssm::clip_grad_norm(g.data(), n, 2 * norm_ref), norm_ref, 1e-12 * norm_ref);
  EXPECT_EQ(std::memcmp(g.data(), g0.data(), n * sizeof(Real)), 0);
}

TEST(ClipGradNorm, SmallFloat) { check_clip<float>(37); }
TEST(ClipGradNorm, LargeFloat) { check_clip<float>(300000); }
TEST(ClipGradNorm, LargeDouble) { check_clip<double>(300000); }

TEST(ClipGradNorm, NonFiniteIsReportedAndNotApplied) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto g = random_vector<float>(100000, 9);
    g[54321] = bad;
    const auto g0 = g;
    const double norm = ssm::clip_grad_norm(g.data(), g.size(), 1.0);
    EXPECT_FALSE(std::isfinite(norm)) << bad;
    EXPECT_EQ(std::memcmp(g.data(), g0.data(), g.size() * sizeof(float)), 0) << bad;
  }
  std::vector<float> g(4, 1.0f);
  EXPECT_THROW(ssm::clip_grad_norm(g.data(), g.size(), 0.0), ssm::Error);
}

TEST(LrSchedule, ValuesAtKnownSteps) {
  const ssm::LrSchedule s{1e-3, 1e-5, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(4), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(35), 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + std::cos(std::numbers::pi / 4)));
  EXPECT_DOUBLE_EQ(s.at(60), 1e-5 + 0.5 * (1e-3 - 1e-5));
  EXPECT_DOUBLE_EQ(s.at(110), 1e-5);
  EXPECT_DOUBLE_EQ(s.at(100000), 1e-5);
  for (int64_t k = 10; k < 110; ++k) ASSERT_GT(s.at(k), s.at(k + 1)) << k;  // decreasing after warm-up
  EXPECT_DOUBLE_EQ((ssm::LrSchedule{2e-3, 0, 0, 4}.at(0)), 2e-3);            // no warm-up
  EXPECT_DOUBLE_EQ((ssm::LrSchedule{2e-3, 0, 0, 4}.at(2)), 1e-3);
}

TEST(LrSchedule, RejectsBadFields) {
  EXPECT_THROW((ssm::LrSchedule{1e-3, 1e-2, 0, 10}.at(0)), ssm::Error);  // floor above peak
  EXPECT_THROW((ssm::LrSchedule{1e-3, 0, 11, 10}.at(0)), ssm::Error);    // warm-up past the end
  EXPECT_THROW((ssm::LrSchedule{1e-3, 0, 0, 0}.at(0)), ssm::Error);
  EXPECT_THROW((ssm::LrSchedule{-1, -2, 0, 10}.at(0)), ssm::Error);
}

}  // namespace
