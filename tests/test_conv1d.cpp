// Causal depthwise conv1d: forward against a plain-loop fp64 reference, the
// step loop and random-block streaming against one call, every gradient
// against central finite differences, errors on bad dims.
#include "ssm/conv1d.hpp"

#include <limits>
#include <random>
#include <vector>

#include "testing.hpp"

namespace {

using ssm::Conv1dDims;
using ssm::testing::cast_vector;
using ssm::testing::numeric_gradient;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using ssm::testing::weighted_sum;

size_t act(const Conv1dDims& d) { return size_t(d.B) * d.T * d.C; }         // (B, T, C)
size_t tail(const Conv1dDims& d) { return size_t(d.B) * (d.K - 1) * d.C; }  // (B, K-1, C)

struct Case {
  Conv1dDims d;
  bool bias;
  bool init;
};

template <typename Real>
struct Inputs {
  std::vector<Real> x, weight, bias, init;
  bool has_bias = false, has_init = false;
  const Real* biasp() const { return has_bias ? bias.data() : nullptr; }
  const Real* initp() const { return has_init ? init.data() : nullptr; }
  template <typename To>
  Inputs<To> cast() const {
    return {cast_vector<To>(x), cast_vector<To>(weight), cast_vector<To>(bias), cast_vector<To>(init), has_bias,
            has_init};
  }
};

Inputs<double> make_inputs(const Case& c, uint64_t seed) {
  const Conv1dDims& d = c.d;
  return {random_vector(act(d), seed + 1), random_vector(size_t(d.C) * d.K, seed + 2), random_vector(d.C, seed + 3),
          random_vector(tail(d), seed + 4), c.bias, c.init};
}

template <typename Real>
struct Outputs {
  std::vector<Real> y, final_tail;
};

// Straight from the definition: the input at time s < 0 is tail row s + K-1.
Outputs<double> reference(const Inputs<double>& in, const Conv1dDims& d) {
  const int K1 = d.K - 1;
  auto input = [&](int b, int s, int c) -> double {
    if (s >= 0) return in.x[(size_t(b) * d.T + s) * d.C + c];
    return in.has_init ? in.init[(size_t(b) * K1 + s + K1) * d.C + c] : 0.0;
  };
  Outputs<double> o{std::vector<double>(act(d)), std::vector<double>(tail(d))};
  for (int b = 0; b < d.B; ++b)
    for (int t = 0; t < d.T; ++t)
      for (int c = 0; c < d.C; ++c) {
        double v = in.has_bias ? in.bias[c] : 0.0;
        for (int k = 0; k < d.K; ++k) v += in.weight[size_t(c) * d.K + k] * input(b, t - K1 + k, c);
        o.y[(size_t(b) * d.T + t) * d.C + c] = v;
      }
  for (int b = 0; b < d.B; ++b)
    for (int j = 0; j < K1; ++j)
      for (int c = 0; c < d.C; ++c) o.final_tail[(size_t(b) * K1 + j) * d.C + c] = input(b, d.T - K1 + j, c);
  return o;
}

template <typename Real>
Outputs<Real> forward(const Inputs<Real>& in, const Conv1dDims& d) {
  Outputs<Real> o{std::vector<Real>(act(d)), std::vector<Real>(tail(d))};
  ssm::conv1d_forward(o.y.data(), o.final_tail.data(), in.x.data(), in.weight.data(), in.biasp(), in.initp(), d);
  return o;
}

std::vector<Case> cases() {
  const std::vector<Conv1dDims> dims = {
      {1, 1, 3, 4},    // T = 1
      {2, 2, 5, 4},    // T < K-1: the final tail still holds old tail rows
      {2, 17, 7, 4},   // the Mamba width
      {1, 9, 3, 1},    // K = 1: no tail at all
      {2, 12, 33, 3},  // odd channel count
  };
  std::vector<Case> out;
  for (const auto& d : dims)
    for (bool bias : {false, true})
      for (bool init : {false, true}) out.push_back({d, bias, init});
  return out;
}

std::string name(const Case& c) {
  return "B=" + std::to_string(c.d.B) + " T=" + std::to_string(c.d.T) + " C=" + std::to_string(c.d.C) +
         " K=" + std::to_string(c.d.K) + (c.bias ? " bias" : "") + (c.init ? " init" : "");
}

// Rows [t0, t0 + len) of a (B, T, C) tensor.
std::vector<double> time_slice(const std::vector<double>& v, int B, int T, int C, int t0, int len) {
  std::vector<double> o(size_t(B) * len * C);
  for (int b = 0; b < B; ++b)
    std::copy(v.begin() + (size_t(b) * T + t0) * C, v.begin() + (size_t(b) * T + t0 + len) * C,
              o.begin() + size_t(b) * len * C);
  return o;
}

// Writes a (B, len, C) tensor into rows [t0, t0 + len) of a (B, T, C) tensor.
void time_put(std::vector<double>& v, const std::vector<double>& part, int B, int T, int C, int t0, int len) {
  for (int b = 0; b < B; ++b)
    std::copy(part.begin() + size_t(b) * len * C, part.begin() + size_t(b + 1) * len * C,
              v.begin() + (size_t(b) * T + t0) * C);
}

TEST(Conv1d, ForwardMatchesReference) {
  double worst = 0;
  uint64_t seed = 10;
  for (const Case& c : cases()) {
    const auto in = make_inputs(c, seed += 10);
    const auto ref = reference(in, c.d);
    const auto out = forward(in, c.d);
    EXPECT_LE(rel_error(out.y, ref.y), 1e-14) << name(c);
    // Copied values: exact.
    EXPECT_EQ(rel_error(out.final_tail, ref.final_tail), 0.0) << name(c);
    worst = std::max(worst, rel_error(out.y, ref.y));
  }
  std::printf("forward vs reference, fp64: max rel error %.3g\n", worst);
}

TEST(Conv1d, FloatMatchesDoubleReference) {
  const Case c{{2, 500, 64, 4}, true, true};
  const auto in = make_inputs(c, 5);
  const auto ref = reference(in, c.d);
  const auto out = forward(in.cast<float>(), c.d);
  const double e = rel_error(out.y, ref.y);
  EXPECT_LE(e, 1e-5);
  EXPECT_LE(rel_error(out.final_tail, ref.final_tail), 1e-7);
  std::printf("fp32 vs fp64 reference: %.3g\n", e);
}

TEST(Conv1d, StepLoopMatchesReference) {
  double worst = 0;
  uint64_t seed = 300;
  for (const Case& c : cases()) {
    const Conv1dDims& d = c.d;
    const auto in = make_inputs(c, seed += 10);
    const auto ref = reference(in, d);
    std::vector<double> t = c.init ? in.init : std::vector<double>(tail(d), 0.0);
    std::vector<double> y(act(d));
    for (int s = 0; s < d.T; ++s) {
      const auto xs = time_slice(in.x, d.B, d.T, d.C, s, 1);
      std::vector<double> ys(size_t(d.B) * d.C);
      ssm::conv1d_step(ys.data(), t.data(), xs.data(), in.weight.data(), in.biasp(), d);
      time_put(y, ys, d.B, d.T, d.C, s, 1);
    }
    const double e = rel_error(y, ref.y);
    EXPECT_LE(e, 1e-14) << name(c);
    EXPECT_EQ(rel_error(t, ref.final_tail), 0.0) << name(c);
    worst = std::max(worst, e);
  }
  std::printf("step loop vs reference, fp64: max rel error %.3g\n", worst);
}

TEST(Conv1d, StreamingInRandomBlocksMatchesWholeSequence) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> len(1, 6);
  double worst = 0;
  uint64_t seed = 600;
  for (const Case& c : cases()) {
    const Conv1dDims& d = c.d;
    const auto in = make_inputs(c, seed += 10);
    const auto whole = forward(in, d);
    // The tail is carried in place: final_tail and initial_tail are one buffer.
    std::vector<double> t = c.init ? in.init : std::vector<double>(tail(d), 0.0);
    std::vector<double> y(act(d));
    for (int t0 = 0; t0 < d.T;) {
      const int n = std::min(len(rng), d.T - t0);
      const Conv1dDims db{d.B, n, d.C, d.K};
      const auto xs = time_slice(in.x, d.B, d.T, d.C, t0, n);
      std::vector<double> ys(size_t(d.B) * n * d.C);
      ssm::conv1d_forward(ys.data(), t.data(), xs.data(), in.weight.data(), in.biasp(), t.data(), db);
      time_put(y, ys, d.B, d.T, d.C, t0, n);
      t0 += n;
    }
    const double e = rel_error(y, whole.y);
    EXPECT_LE(e, 1e-14) << name(c);
    EXPECT_EQ(rel_error(t, whole.final_tail), 0.0) << name(c);
    worst = std::max(worst, e);
  }
  std::printf("random-block streaming vs whole, fp64: max rel error %.3g\n", worst);
}

struct Grads {
  std::vector<double> x, weight, bias, init;
};

Grads backward(const Inputs<double>& in, const Conv1dDims& d, const std::vector<double>& dy,
               const std::vector<double>* dfinal) {
  Grads g{std::vector<double>(act(d)), std::vector<double>(size_t(d.C) * d.K), std::vector<double>(d.C),
          std::vector<double>(tail(d))};
  ssm::conv1d_backward(g.x.data(), g.weight.data(), g.bias.data(), g.init.data(), dy.data(),
                       dfinal ? dfinal->data() : nullptr, in.x.data(), in.weight.data(), in.initp(), d);
  return g;
}

TEST(Conv1d, GradientsMatchFiniteDifferences) {
  double worst = 0;
  uint64_t seed = 1000;
  for (const Case& c : cases()) {
    for (bool use_dfinal : {false, true}) {
      const Conv1dDims& d = c.d;
      auto in = make_inputs(c, seed += 10);
      const auto wy = random_vector(act(d), seed + 5);
      const auto wf = random_vector(tail(d), seed + 6);
      const auto g = backward(in, d, wy, use_dfinal ? &wf : nullptr);
      auto loss = [&]() {
        const auto o = reference(in, d);
        return weighted_sum(o.y, wy) + (use_dfinal ? weighted_sum(o.final_tail, wf) : 0.0);
      };
      auto check = [&](const char* what, std::vector<double>& param, const std::vector<double>& analytic) {
        const double e = rel_error(analytic, numeric_gradient(loss, param));
        EXPECT_LE(e, 1e-6) << "d" << what << " " << name(c) << (use_dfinal ? " dfinal" : "");
        worst = std::max(worst, e);
      };
      check("x", in.x, g.x);
      check("weight", in.weight, g.weight);
      // dbias and dinitial_tail exist whether or not bias / tail were passed.
      in.has_bias = true;
      if (!c.bias) std::fill(in.bias.begin(), in.bias.end(), 0.0);
      check("bias", in.bias, g.bias);
      in.has_init = true;
      if (!c.init) std::fill(in.init.begin(), in.init.end(), 0.0);
      if (d.K > 1) check("initial_tail", in.init, g.init);
    }
  }
  std::printf("gradients vs finite differences, fp64: max rel error %.3g\n", worst);
}

TEST(Conv1d, LargerBackwardFloatMatchesDouble) {
  const Case c{{3, 400, 48, 4}, true, true};
  const auto in = make_inputs(c, 21);
  const auto dy = random_vector(act(c.d), 22);
  const auto wf = random_vector(tail(c.d), 23);
  const auto gd = backward(in, c.d, dy, &wf);
  const auto inf = in.cast<float>();
  const auto dyf = cast_vector<float>(dy), wff = cast_vector<float>(wf);
  std::vector<float> dx(act(c.d)), dw(size_t(c.d.C) * c.d.K), db(c.d.C), dt(tail(c.d));
  ssm::conv1d_backward(dx.data(), dw.data(), db.data(), dt.data(), dyf.data(), wff.data(), inf.x.data(),
                       inf.weight.data(), inf.initp(), c.d);
  const double e = std::max({rel_error(dx, gd.x), rel_error(dw, gd.weight), rel_error(db, gd.bias),
                             rel_error(dt, gd.init)});
  EXPECT_LE(e, 1e-5);
  std::printf("backward fp32 vs fp64: max rel error %.3g\n", e);
}

TEST(Conv1d, ActivationGradientsAssignParameterGradientsAccumulate) {
  const Case c{{2, 9, 6, 4}, true, true};
  const Conv1dDims& d = c.d;
  const auto in = make_inputs(c, 40);
  const auto dy = random_vector(act(d), 41);
  const auto clean = backward(in, d, dy, nullptr);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> dx(act(d), nan), dt(tail(d), nan), dw(size_t(d.C) * d.K, 1.5), db(d.C, -2.0);
  ssm::conv1d_backward(dx.data(), dw.data(), db.data(), dt.data(), dy.data(), static_cast<const double*>(nullptr),
                       in.x.data(), in.weight.data(), in.initp(), d);
  EXPECT_EQ(rel_error(dx, clean.x), 0.0);
  EXPECT_EQ(rel_error(dt, clean.init), 0.0);
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_DOUBLE_EQ(dw[i], 1.5 + clean.weight[i]);
  for (int i = 0; i < d.C; ++i) EXPECT_DOUBLE_EQ(db[i], -2.0 + clean.bias[i]);
  // dbias and dinitial_tail may be left out.
  std::vector<double> dw2(dw.size());
  ssm::conv1d_backward(dx.data(), dw2.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr),
                       dy.data(), static_cast<const double*>(nullptr), in.x.data(), in.weight.data(), in.initp(), d);
  EXPECT_EQ(rel_error(dw2, clean.weight), 0.0);
}

TEST(Conv1d, BadDimsThrow) {
  using ssm::Error;
  EXPECT_NO_THROW(ssm::conv1d_check_dims({1, 1, 1, 1}));
  EXPECT_THROW(ssm::conv1d_check_dims({0, 1, 1, 1}), Error);
  EXPECT_THROW(ssm::conv1d_check_dims({1, 0, 1, 1}), Error);
  EXPECT_THROW(ssm::conv1d_check_dims({1, 1, 0, 1}), Error);
  EXPECT_THROW(ssm::conv1d_check_dims({1, 1, 1, 0}), Error);
  EXPECT_THROW(ssm::conv1d_check_dims({1, 1, -3, 4}), Error);
  try {
    ssm::conv1d_check_dims({1, 1, 1, 0});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("K"), std::string::npos) << e.what();
  }
  const Case c{{1, 4, 3, 4}, true, true};
  const auto in = make_inputs(c, 1);
  std::vector<double> y(act(c.d)), t(tail(c.d));
  EXPECT_THROW(ssm::conv1d_forward(y.data(), t.data(), in.x.data(), in.weight.data(), in.biasp(), in.initp(),
                                   Conv1dDims{1, 4, 3, 0}),
               Error);
  EXPECT_THROW(ssm::conv1d_forward(y.data(), t.data(), static_cast<const double*>(nullptr), in.weight.data(),
                                   in.biasp(), in.initp(), c.d),
               Error);
  EXPECT_THROW(ssm::conv1d_step(y.data(), static_cast<double*>(nullptr), in.x.data(), in.weight.data(), in.biasp(),
                                c.d),
               Error);
  EXPECT_THROW(ssm::conv1d_step(y.data(), t.data(), in.x.data(), in.weight.data(), in.biasp(),
                                Conv1dDims{0, 1, 3, 4}),
               Error);
  const auto dy = random_vector(act(c.d), 2);
  EXPECT_THROW(backward(in, Conv1dDims{1, 0, 3, 4}, dy, nullptr), Error);
}

}  // namespace
