// Selective scan (Mamba-1, S6): the blocked scan, the step loop and streaming
// against the fp64 sequential reference; a closed-form impulse response; every
// gradient against central finite differences; errors on bad dims.
#include "ssm/selective_scan.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "testing.hpp"

namespace {

using ssm::ScanDims;
using ssm::testing::cast_vector;
using ssm::testing::numeric_gradient;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using ssm::testing::weighted_sum;

size_t act(const ScanDims& d) { return size_t(d.B) * d.T * d.E; }      // (B, T, E)
size_t bc(const ScanDims& d) { return size_t(d.B) * d.T * d.G * d.N; }  // (B, T, G, N)
size_t st(const ScanDims& d) { return size_t(d.B) * d.E * d.N; }        // (B, E, N)

struct Case {
  ScanDims d;
  bool gate;  // pass z
  bool init;  // pass initial_state
};

template <typename Real>
struct Inputs {
  std::vector<Real> x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, init;
  bool gate = false, has_init = false;
  const Real* zp() const { return gate ? z.data() : nullptr; }
  const Real* initp() const { return has_init ? init.data() : nullptr; }

  template <typename To>
  Inputs<To> cast() const {
    Inputs<To> o;
    o.x = cast_vector<To>(x);
    o.dt_raw = cast_vector<To>(dt_raw);
    o.A_log = cast_vector<To>(A_log);
    o.Bm = cast_vector<To>(Bm);
    o.Cm = cast_vector<To>(Cm);
    o.D = cast_vector<To>(D);
    o.dt_bias = cast_vector<To>(dt_bias);
    o.z = cast_vector<To>(z);
    o.init = cast_vector<To>(init);
    o.gate = gate;
    o.has_init = has_init;
    return o;
  }
};

// dt = softplus(dt_raw + dt_bias) lands in about [0.05, 1.3] and |A| in
// [0.5, 4]: states neither vanish in one step nor blow up.
Inputs<double> make_inputs(const Case& c, uint64_t seed) {
  const ScanDims& d = c.d;
  Inputs<double> in;
  in.x = random_vector(act(d), seed + 1);
  in.dt_raw = random_vector(act(d), seed + 2, -2.0, 1.0);
  in.A_log = random_vector(size_t(d.E) * d.N, seed + 3, std::log(0.5), std::log(4.0));
  in.Bm = random_vector(bc(d), seed + 4);
  in.Cm = random_vector(bc(d), seed + 5);
  in.D = random_vector(d.E, seed + 6);
  in.dt_bias = random_vector(d.E, seed + 7, -1.0, 0.0);
  in.z = random_vector(act(d), seed + 8, -2.0, 2.0);
  in.init = random_vector(st(d), seed + 9);
  in.gate = c.gate;
  in.has_init = c.init;
  return in;
}

template <typename Real>
struct Outputs {
  std::vector<Real> y, final_state;
};

template <typename Real>
Outputs<Real> reference(const Inputs<Real>& in, const ScanDims& d) {
  Outputs<Real> o{std::vector<Real>(act(d)), std::vector<Real>(st(d))};
  ssm::selective_scan_reference_forward(o.y.data(), o.final_state.data(), in.x.data(), in.dt_raw.data(),
                                        in.A_log.data(), in.Bm.data(), in.Cm.data(), in.D.data(),
                                        in.dt_bias.data(), in.zp(), in.initp(), d);
  return o;
}

template <typename Real>
Outputs<Real> blocked(const Inputs<Real>& in, const ScanDims& d, int Q) {
  Outputs<Real> o{std::vector<Real>(act(d)), std::vector<Real>(st(d))};
  ssm::selective_scan_blocked_forward(o.y.data(), o.final_state.data(), in.x.data(), in.dt_raw.data(),
                                      in.A_log.data(), in.Bm.data(), in.Cm.data(), in.D.data(), in.dt_bias.data(),
                                      in.zp(), in.initp(), d, Q);
  return o;
}

template <typename Real>
struct Grads {
  std::vector<Real> x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, init;
};

template <typename Real>
Grads<Real> backward(const Inputs<Real>& in, const ScanDims& d, int Q, const std::vector<Real>& dy,
                     const std::type_identity_t<std::vector<Real>>* dfinal) {
  Grads<Real> g{std::vector<Real>(act(d)),         std::vector<Real>(act(d)), std::vector<Real>(size_t(d.E) * d.N),
                std::vector<Real>(bc(d)),          std::vector<Real>(bc(d)),  std::vector<Real>(d.E),
                std::vector<Real>(d.E),            std::vector<Real>(act(d)), std::vector<Real>(st(d))};
  ssm::selective_scan_backward(g.x.data(), g.dt_raw.data(), g.A_log.data(), g.Bm.data(), g.Cm.data(), g.D.data(),
                               g.dt_bias.data(), in.gate ? g.z.data() : nullptr, g.init.data(), dy.data(),
                               dfinal ? dfinal->data() : nullptr, in.x.data(), in.dt_raw.data(), in.A_log.data(),
                               in.Bm.data(), in.Cm.data(), in.D.data(), in.dt_bias.data(), in.zp(), in.initp(), d,
                               Q);
  return g;
}

// Rows [t0, t0 + len) of a (B, T, F) tensor.
template <typename Real>
std::vector<Real> time_slice(const std::vector<Real>& v, int B, int T, size_t F, int t0, int len) {
  std::vector<Real> o(size_t(B) * len * F);
  for (int b = 0; b < B; ++b)
    std::copy(v.begin() + (size_t(b) * T + t0) * F, v.begin() + (size_t(b) * T + t0 + len) * F,
              o.begin() + size_t(b) * len * F);
  return o;
}

// Writes a (B, len, F) tensor into rows [t0, t0 + len) of a (B, T, F) tensor.
template <typename Real>
void time_put(std::vector<Real>& v, const std::vector<Real>& part, int B, int T, size_t F, int t0, int len) {
  for (int b = 0; b < B; ++b)
    std::copy(part.begin() + size_t(b) * len * F, part.begin() + size_t(b + 1) * len * F,
              v.begin() + (size_t(b) * T + t0) * F);
}

// The inputs of time steps [t0, t0 + len) (parameters unchanged, no initial state).
Inputs<double> time_slice(const Inputs<double>& in, const ScanDims& d, int t0, int len) {
  Inputs<double> o = in;
  const size_t E = d.E, GN = size_t(d.G) * d.N;
  o.x = time_slice(in.x, d.B, d.T, E, t0, len);
  o.dt_raw = time_slice(in.dt_raw, d.B, d.T, E, t0, len);
  o.Bm = time_slice(in.Bm, d.B, d.T, GN, t0, len);
  o.Cm = time_slice(in.Cm, d.B, d.T, GN, t0, len);
  o.z = time_slice(in.z, d.B, d.T, E, t0, len);
  o.has_init = false;
  return o;
}

// The shapes the invariants must hold on: T = 1, T < Q, T not a multiple of
// Q, G = 1, G = E, N = 1, E wider than one channel tile with groups split
// across tiles; each with and without z and initial state.
std::vector<Case> cases() {
  const std::vector<ScanDims> dims = {
      {1, 1, 4, 2, 3},    // T = 1
      {2, 5, 6, 3, 4},    // T < Q for most Q
      {2, 37, 8, 1, 4},   // G = 1, T prime
      {1, 29, 5, 5, 3},   // G = E
      {2, 19, 4, 2, 1},   // N = 1
      {1, 40, 20, 4, 16}, // E > channel tile, groups of 5 straddle tiles
  };
  std::vector<Case> out;
  for (const auto& d : dims)
    for (bool gate : {false, true})
      for (bool init : {false, true}) out.push_back({d, gate, init});
  return out;
}

std::string name(const Case& c) {
  return "B=" + std::to_string(c.d.B) + " T=" + std::to_string(c.d.T) + " E=" + std::to_string(c.d.E) +
         " G=" + std::to_string(c.d.G) + " N=" + std::to_string(c.d.N) + (c.gate ? " z" : "") +
         (c.init ? " init" : "");
}

TEST(SelectiveScan, BlockedMatchesReferenceForEveryQ) {
  double worst = 0;
  uint64_t seed = 100;
  for (const Case& c : cases()) {
    const auto in = make_inputs(c, seed += 10);
    const auto ref = reference(in, c.d);
    for (int Q : {1, 2, 3, 5, 8, 16, 64, c.d.T, c.d.T + 3}) {
      const auto out = blocked(in, c.d, Q);
      const double ey = rel_error(out.y, ref.y), es = rel_error(out.final_state, ref.final_state);
      EXPECT_LE(ey, 1e-12) << name(c) << " Q=" << Q;
      EXPECT_LE(es, 1e-12) << name(c) << " Q=" << Q;
      worst = std::max({worst, ey, es});
    }
  }
  std::printf("blocked vs reference, fp64: max rel error %.3g\n", worst);
}

TEST(SelectiveScan, ImpulseResponseHasClosedForm) {
  // One channel, N = 1, A = -1, dt = 0.5, B = C = 1, D = 0.25, x = impulse:
  // y[t] = 0.5 * exp(-0.5 t) + 0.25 [t = 0]; the gate scales each y by silu(z).
  const int T = 20;
  const ScanDims d{1, T, 1, 1, 1};
  std::vector<double> x(T, 0.0), dt_raw(T, std::log(std::expm1(0.5))), A_log{0.0}, Bm(T, 1.0), Cm(T, 1.0),
      D{0.25}, dt_bias{0.0}, z = random_vector(T, 7, -3.0, 3.0), y(T), fs(1);
  x[0] = 1;
  for (bool gate : {false, true}) {
    ssm::selective_scan_reference_forward(y.data(), fs.data(), x.data(), dt_raw.data(), A_log.data(), Bm.data(),
                                          Cm.data(), D.data(), dt_bias.data(), gate ? z.data() : nullptr,
                                          static_cast<const double*>(nullptr), d);
    std::vector<double> want(T);
    for (int t = 0; t < T; ++t) {
      want[t] = 0.5 * std::exp(-0.5 * t) + (t == 0 ? 0.25 : 0.0);
      if (gate) want[t] *= z[t] / (1 + std::exp(-z[t]));
    }
    EXPECT_LE(rel_error(y, want), 1e-14) << (gate ? "with z" : "without z");
    EXPECT_NEAR(fs[0], 0.5 * std::exp(-0.5 * (T - 1)), 1e-16);
  }
}

TEST(SelectiveScan, FloatMatchesDoubleReference) {
  const Case c{{2, 300, 24, 2, 16}, true, true};
  const auto in = make_inputs(c, 7);
  const auto ref = reference(in, c.d);
  const auto inf = in.cast<float>();
  const auto rf = reference(inf, c.d);
  const auto bf = blocked(inf, c.d, 64);
  const double e1 = rel_error(rf.y, ref.y), e2 = rel_error(bf.y, ref.y);
  const double e3 = rel_error(rf.final_state, ref.final_state), e4 = rel_error(bf.final_state, ref.final_state);
  EXPECT_LE(e1, 1e-5);
  EXPECT_LE(e2, 1e-5);
  EXPECT_LE(e3, 1e-5);
  EXPECT_LE(e4, 1e-5);
  std::printf("fp32 vs fp64 reference: reference y %.3g state %.3g, blocked y %.3g state %.3g\n", e1, e3, e2, e4);
}

TEST(SelectiveScan, StepLoopMatchesReference) {
  double worst = 0;
  uint64_t seed = 500;
  for (const Case& c : cases()) {
    const ScanDims& d = c.d;
    const auto in = make_inputs(c, seed += 10);
    const auto ref = reference(in, d);
    std::vector<double> state = c.init ? in.init : std::vector<double>(st(d), 0.0);
    std::vector<double> y(act(d));
    for (int t = 0; t < d.T; ++t) {
      const auto s = time_slice(in, d, t, 1);
      std::vector<double> ys(size_t(d.B) * d.E);
      ssm::selective_scan_step(ys.data(), state.data(), s.x.data(), s.dt_raw.data(), s.A_log.data(), s.Bm.data(),
                               s.Cm.data(), s.D.data(), s.dt_bias.data(), s.zp(), d);
      time_put(y, ys, d.B, d.T, d.E, t, 1);
    }
    const double ey = rel_error(y, ref.y), es = rel_error(state, ref.final_state);
    EXPECT_LE(ey, 1e-12) << name(c);
    EXPECT_LE(es, 1e-12) << name(c);
    worst = std::max({worst, ey, es});
  }
  std::printf("step loop vs reference, fp64: max rel error %.3g\n", worst);
}

TEST(SelectiveScan, StreamingInRandomBlocksMatchesWholeSequence) {
  std::mt19937 rng(11);
  double worst = 0;
  uint64_t seed = 900;
  for (const Case& c : cases()) {
    const ScanDims& d = c.d;
    const auto in = make_inputs(c, seed += 10);
    const auto whole = reference(in, d);
    std::uniform_int_distribution<int> len(1, 9), q(1, 6);
    // The state is carried in place: final_state and initial_state are one buffer.
    std::vector<double> state = c.init ? in.init : std::vector<double>(st(d), 0.0);
    std::vector<double> y(act(d));
    for (int t0 = 0; t0 < d.T;) {
      const int n = std::min(len(rng), d.T - t0);
      ScanDims db = d;
      db.T = n;
      const auto s = time_slice(in, d, t0, n);
      std::vector<double> ys(size_t(d.B) * n * d.E);
      ssm::selective_scan_blocked_forward(ys.data(), state.data(), s.x.data(), s.dt_raw.data(), s.A_log.data(),
                                          s.Bm.data(), s.Cm.data(), s.D.data(), s.dt_bias.data(), s.zp(),
                                          state.data(), db, q(rng));
      time_put(y, ys, d.B, d.T, d.E, t0, n);
      t0 += n;
    }
    const double ey = rel_error(y, whole.y), es = rel_error(state, whole.final_state);
    EXPECT_LE(ey, 1e-12) << name(c);
    EXPECT_LE(es, 1e-12) << name(c);
    worst = std::max({worst, ey, es});
  }
  std::printf("random-block streaming vs whole, fp64: max rel error %.3g\n", worst);
}

// Loss = sum(wy * y) + sum(wS * final_state) through the reference forward;
// every analytic gradient of the backward against central differences.
void check_gradients(const Case& c, int Q, bool use_dfinal, uint64_t seed, double& worst) {
  const ScanDims& d = c.d;
  auto in = make_inputs(c, seed);
  const auto wy = random_vector(act(d), seed + 50);
  const auto wS = random_vector(st(d), seed + 51);
  const auto g = backward(in, d, Q, wy, use_dfinal ? &wS : nullptr);
  auto loss = [&]() {
    const auto o = reference(in, d);
    return weighted_sum(o.y, wy) + (use_dfinal ? weighted_sum(o.final_state, wS) : 0.0);
  };
  auto check = [&](const char* what, std::vector<double>& param, const std::vector<double>& analytic) {
    const auto num = numeric_gradient(loss, param);
    const double e = rel_error(analytic, num);
    EXPECT_LE(e, 1e-6) << "d" << what << " " << name(c) << " Q=" << Q << (use_dfinal ? " dfinal" : "");
    worst = std::max(worst, e);
  };
  check("x", in.x, g.x);
  check("dt_raw", in.dt_raw, g.dt_raw);
  check("A_log", in.A_log, g.A_log);
  check("Bm", in.Bm, g.Bm);
  check("Cm", in.Cm, g.Cm);
  check("D", in.D, g.D);
  check("dt_bias", in.dt_bias, g.dt_bias);
  if (c.gate) check("z", in.z, g.z);
  // The initial state's gradient exists whether or not one was passed (zeros).
  in.has_init = true;
  if (!c.init) std::fill(in.init.begin(), in.init.end(), 0.0);
  check("initial_state", in.init, g.init);
}

TEST(SelectiveScan, GradientsMatchFiniteDifferences) {
  double worst = 0;
  uint64_t seed = 2000;
  const std::vector<ScanDims> dims = {
      {1, 1, 2, 1, 2},   // T = 1
      {2, 7, 4, 2, 3},   // T not a multiple of Q = 3
      {1, 6, 3, 3, 2},   // G = E
      {2, 5, 2, 1, 1},   // N = 1, G = 1
      {1, 9, 18, 3, 2},  // E > channel tile, groups straddle tiles
  };
  for (const auto& d : dims)
    for (bool gate : {false, true})
      for (bool init : {false, true}) check_gradients({d, gate, init}, 3, true, seed += 100, worst);
  // No dfinal_state, and one block longer than T.
  check_gradients({{2, 7, 4, 2, 3}, true, true}, 3, false, seed += 100, worst);
  check_gradients({{2, 7, 4, 2, 3}, true, true}, 16, true, seed += 100, worst);
  std::printf("gradients vs finite differences, fp64: max rel error %.3g\n", worst);
}

TEST(SelectiveScan, BackwardIndependentOfBlockLengthAndFloatMatchesDouble) {
  const Case c{{2, 150, 24, 3, 16}, true, true};
  const auto in = make_inputs(c, 31);
  const auto dy = random_vector(act(c.d), 32);
  const auto dS = random_vector(st(c.d), 33);
  const auto ref = backward(in, c.d, 150, dy, &dS);
  double worst_q = 0, worst_f = 0;
  auto all = [](const auto& g) {
    return std::vector<const std::vector<typename std::decay_t<decltype(g.x)>::value_type>*>{
        &g.x, &g.dt_raw, &g.A_log, &g.Bm, &g.Cm, &g.D, &g.dt_bias, &g.z, &g.init};
  };
  const auto r = all(ref);
  for (int Q : {1, 7, 64}) {
    const auto g = backward(in, c.d, Q, dy, &dS);
    const auto a = all(g);
    for (size_t i = 0; i < a.size(); ++i) {
      const double e = rel_error(*a[i], *r[i]);
      EXPECT_LE(e, 1e-12) << "gradient " << i << " Q=" << Q;
      worst_q = std::max(worst_q, e);
    }
  }
  const auto gf = backward(in.cast<float>(), c.d, 32, cast_vector<float>(dy), nullptr);
  const auto gd = backward(in, c.d, 32, dy, nullptr);
  const auto af = all(gf);
  const auto ad = all(gd);
  for (size_t i = 0; i < af.size(); ++i) {
    const double e = rel_error(*af[i], *ad[i]);
    EXPECT_LE(e, 1e-5) << "gradient " << i;
    worst_f = std::max(worst_f, e);
  }
  std::printf("backward: Q=1/7/64 vs one block max rel error %.3g; fp32 vs fp64 max rel error %.3g\n", worst_q,
              worst_f);
}

TEST(SelectiveScan, ActivationGradientsAssignParameterGradientsAccumulate) {
  const Case c{{2, 11, 6, 2, 3}, true, true};
  const ScanDims& d = c.d;
  const auto in = make_inputs(c, 77);
  const auto dy = random_vector(act(d), 78);
  const auto clean = backward(in, d, 4, dy, nullptr);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> dx(act(d), nan), ddt(act(d), nan), dB(bc(d), nan), dC(bc(d), nan), dz(act(d), nan),
      dS0(st(d), nan);
  std::vector<double> dA(size_t(d.E) * d.N, 1.0), dD(d.E, 2.0), ddtb(d.E, 3.0);
  ssm::selective_scan_backward(dx.data(), ddt.data(), dA.data(), dB.data(), dC.data(), dD.data(), ddtb.data(),
                               dz.data(), dS0.data(), dy.data(), static_cast<const double*>(nullptr), in.x.data(),
                               in.dt_raw.data(), in.A_log.data(), in.Bm.data(), in.Cm.data(), in.D.data(),
                               in.dt_bias.data(), in.zp(), in.initp(), d, 4);
  EXPECT_EQ(rel_error(dx, clean.x), 0.0);
  EXPECT_EQ(rel_error(ddt, clean.dt_raw), 0.0);
  EXPECT_EQ(rel_error(dB, clean.Bm), 0.0);
  EXPECT_EQ(rel_error(dC, clean.Cm), 0.0);
  EXPECT_EQ(rel_error(dz, clean.z), 0.0);
  EXPECT_EQ(rel_error(dS0, clean.init), 0.0);
  for (size_t i = 0; i < dA.size(); ++i) EXPECT_DOUBLE_EQ(dA[i], 1.0 + clean.A_log[i]);
  for (int e = 0; e < d.E; ++e) {
    EXPECT_DOUBLE_EQ(dD[e], 2.0 + clean.D[e]);
    EXPECT_DOUBLE_EQ(ddtb[e], 3.0 + clean.dt_bias[e]);
  }
  // dz and dinitial_state may be left out.
  std::vector<double> dA2(dA.size()), dD2(d.E), ddtb2(d.E);
  ssm::selective_scan_backward(dx.data(), ddt.data(), dA2.data(), dB.data(), dC.data(), dD2.data(), ddtb2.data(),
                               static_cast<double*>(nullptr), static_cast<double*>(nullptr), dy.data(),
                               static_cast<const double*>(nullptr), in.x.data(), in.dt_raw.data(), in.A_log.data(),
                               in.Bm.data(), in.Cm.data(), in.D.data(), in.dt_bias.data(), in.zp(), in.initp(), d, 4);
  EXPECT_EQ(rel_error(dx, clean.x), 0.0);
  EXPECT_EQ(rel_error(dA2, clean.A_log), 0.0);
}

TEST(SelectiveScan, LongSequence) {
  // Many blocks, several channel tiles, two threads' worth of tasks.
  const Case c{{2, 4000, 40, 2, 16}, true, true};
  const auto in = make_inputs(c, 4242);
  const auto ref = reference(in, c.d);
  const auto out = blocked(in, c.d, 64);
  const double ey = rel_error(out.y, ref.y), es = rel_error(out.final_state, ref.final_state);
  EXPECT_LE(ey, 1e-12);
  EXPECT_LE(es, 1e-12);
  const auto dy = random_vector(act(c.d), 4243);
  const auto g64 = backward(in, c.d, 64, dy, nullptr);
  const auto g1000 = backward(in, c.d, 1000, dy, nullptr);
  const double eg = std::max({rel_error(g64.x, g1000.x), rel_error(g64.dt_raw, g1000.dt_raw),
                              rel_error(g64.A_log, g1000.A_log), rel_error(g64.Bm, g1000.Bm),
                              rel_error(g64.Cm, g1000.Cm)});
  EXPECT_LE(eg, 1e-12);
  std::printf("T=4000: blocked vs reference y %.3g state %.3g; backward Q=64 vs Q=1000 %.3g\n", ey, es, eg);
}

TEST(SelectiveScan, BadDimsThrow) {
  using ssm::Error;
  EXPECT_NO_THROW(ssm::selective_scan_check_dims({1, 1, 4, 2, 1}));
  EXPECT_THROW(ssm::selective_scan_check_dims({0, 1, 4, 2, 1}), Error);
  EXPECT_THROW(ssm::selective_scan_check_dims({1, 0, 4, 2, 1}), Error);
  EXPECT_THROW(ssm::selective_scan_check_dims({1, 1, 0, 1, 1}), Error);
  EXPECT_THROW(ssm::selective_scan_check_dims({1, 1, 4, 0, 1}), Error);
  EXPECT_THROW(ssm::selective_scan_check_dims({1, 1, 4, 2, 0}), Error);
  EXPECT_THROW(ssm::selective_scan_check_dims({1, 1, 4, 3, 1}), Error);  // E % G != 0
  EXPECT_THROW(ssm::selective_scan_check_dims({-2, 1, 4, 2, 1}), Error);

  const Case c{{1, 4, 4, 2, 2}, false, false};
  const ScanDims& d = c.d;
  auto in = make_inputs(c, 3);
  std::vector<double> y(act(d)), fs(st(d));
  auto fwd = [&](const ScanDims& dd, int Q, const double* x) {
    ssm::selective_scan_blocked_forward(y.data(), fs.data(), x, in.dt_raw.data(), in.A_log.data(), in.Bm.data(),
                                        in.Cm.data(), in.D.data(), in.dt_bias.data(), in.zp(), in.initp(), dd, Q);
  };
  EXPECT_NO_THROW(fwd(d, 2, in.x.data()));
  EXPECT_THROW(fwd(d, 0, in.x.data()), Error);
  EXPECT_THROW(fwd({1, 4, 4, 3, 2}, 2, in.x.data()), Error);
  EXPECT_THROW(fwd(d, 2, nullptr), Error);
  EXPECT_THROW(ssm::selective_scan_reference_forward(y.data(), fs.data(), in.x.data(), in.dt_raw.data(),
                                                     static_cast<const double*>(nullptr), in.Bm.data(), in.Cm.data(),
                                                     in.D.data(), in.dt_bias.data(), in.zp(), in.initp(), d),
               Error);
  const auto dy = random_vector(act(d), 4);
  EXPECT_THROW(backward(in, d, 0, dy, nullptr), Error);
  EXPECT_THROW(backward(in, {1, 4, 0, 1, 2}, 2, dy, nullptr), Error);
  std::vector<double> state(st(d));
  EXPECT_THROW(ssm::selective_scan_step(y.data(), state.data(), in.x.data(), in.dt_raw.data(), in.A_log.data(),
                                        in.Bm.data(), in.Cm.data(), in.D.data(), in.dt_bias.data(),
                                        static_cast<const double*>(nullptr), ScanDims{1, 1, 4, 3, 2}),
               Error);
  EXPECT_THROW(ssm::selective_scan_step(y.data(), static_cast<double*>(nullptr), in.x.data(), in.dt_raw.data(),
                                        in.A_log.data(), in.Bm.data(), in.Cm.data(), in.D.data(), in.dt_bias.data(),
                                        static_cast<const double*>(nullptr), d),
               Error);
  // The message names the field.
  try {
    ssm::selective_scan_check_dims({1, 1, 4, 3, 1});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("G"), std::string::npos) << e.what();
  }
}

}  // namespace
