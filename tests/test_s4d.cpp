// S4D: the kernel against its closed form, convolution mode against recurrent
// mode over 16,000 samples, state carry and streaming, and every gradient
// against central finite differences in fp64.
#include <ssm/s4d.hpp>

#include <complex>
#include <random>
#include <vector>

#include "testing.hpp"

namespace {

using ssm::S4dDims;
using ssm::testing::cast_vector;
using ssm::testing::numeric_gradient;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using ssm::testing::weighted_sum;

template <typename Real>
struct Params {
  std::vector<Real> log_dt, A_re_log, A_im, C, D;  // (H), (H, N), (H, N), (H, N, 2), (H)

  explicit Params(const S4dDims& d)
      : log_dt(d.H), A_re_log(d.H * d.N), A_im(d.H * d.N), C(d.H * d.N * 2), D(d.H) {}

  template <typename To>
  Params<To> cast(const S4dDims& d) const {
    Params<To> p(d);
    p.log_dt = cast_vector<To>(log_dt), p.A_re_log = cast_vector<To>(A_re_log), p.A_im = cast_vector<To>(A_im);
    p.C = cast_vector<To>(C), p.D = cast_vector<To>(D);
    return p;
  }
};

// S4D-Lin parameters with every entry jittered, so no gradient is special.
Params<double> jittered(const S4dDims& d, uint64_t seed, double dt_min, double dt_max) {
  Params<double> p(d);
  ssm::s4d_init_lin(p.log_dt.data(), p.A_re_log.data(), p.A_im.data(), p.C.data(), p.D.data(), d, seed, dt_min,
                    dt_max);
  const auto j = random_vector(d.H * d.N, seed + 1, -0.3, 0.3);
  for (size_t i = 0; i < j.size(); ++i) p.A_re_log[i] += j[i], p.A_im[i] += j[i];
  return p;
}

TEST(S4d, InitialisationFollowsTheRecipes) {
  const S4dDims d{1, 1, 3, 5};
  Params<double> lin(d), real(d), again(d);
  ssm::s4d_init_lin(lin.log_dt.data(), lin.A_re_log.data(), lin.A_im.data(), lin.C.data(), lin.D.data(), d, 7);
  ssm::s4d_init_real(real.log_dt.data(), real.A_re_log.data(), real.A_im.data(), real.C.data(), real.D.data(), d, 7);
  ssm::s4d_init_lin(again.log_dt.data(), again.A_re_log.data(), again.A_im.data(), again.C.data(), again.D.data(), d,
                    7);
  for (int h = 0; h < d.H; ++h) {
    EXPECT_GE(lin.log_dt[h], std::log(1e-3));
    EXPECT_LE(lin.log_dt[h], std::log(1e-1));
    for (int n = 0; n < d.N; ++n) {
      EXPECT_NEAR(-std::exp(lin.A_re_log[h * d.N + n]), -0.5, 1e-15);
      EXPECT_NEAR(lin.A_im[h * d.N + n], M_PI * n, 1e-12);
      EXPECT_NEAR(-std::exp(real.A_re_log[h * d.N + n]), -(n + 1.0), 1e-12);
      EXPECT_EQ(real.A_im[h * d.N + n], 0.0);
    }
  }
  EXPECT_EQ(lin.C, again.C) << "the same seed gives the same parameters";
  EXPECT_EQ(lin.log_dt, again.log_dt);
  EXPECT_THROW(ssm::s4d_init_lin(lin.log_dt.data(), lin.A_re_log.data(), lin.A_im.data(), lin.C.data(),
                                 lin.D.data(), d, 7, 0.1, 0.01),
               ssm::Error);
}

TEST(S4d, KernelMatchesClosedForm) {
  const S4dDims d{1, 300, 2, 4};
  const auto p = jittered(d, 3, 1e-2, 0.2);
  std::vector<double> K(d.H * d.T);
  ssm::s4d_kernel_forward(K.data(), p.log_dt.data(), p.A_re_log.data(), p.A_im.data(), p.C.data(), d);
  // Abar^k as exp(k dt A) in long double, independent of the recurrence.
  using cl = std::complex<long double>;
  std::vector<double> ref(K.size());
  for (int h = 0; h < d.H; ++h)
    for (int k = 0; k < d.T; ++k) {
      cl s = 0;
      const long double dt = expl(p.log_dt[h]);
      for (int n = 0; n < d.N; ++n) {
        const int i = h * d.N + n;
        const cl A(-expl(p.A_re_log[i]), p.A_im[i]);
        const cl Bbar = (std::exp(dt * A) - 1.0L) / A;
        s += cl(p.C[2 * i], p.C[2 * i + 1]) * Bbar * std::exp(static_cast<long double>(k) * dt * A);
      }
      ref[h * d.T + k] = static_cast<double>(s.real());
    }
  EXPECT_LE(rel_error(K, ref), 1e-13);
}

// Convolution mode (FFT) and recurrent mode over one second of 16 kHz audio.
TEST(S4d, ConvolutionModeEqualsRecurrentModeOver16000Samples) {
  const S4dDims d{2, 16000, 3, 16};
  for (bool lin : {true, false}) {
    // Parameters and input are drawn in float and widened, so that the fp64
    // run is the exact reference for the fp32 one.
    Params<float> pf(d);
    (lin ? ssm::s4d_init_lin<float> : ssm::s4d_init_real<float>)(pf.log_dt.data(), pf.A_re_log.data(),
                                                                  pf.A_im.data(), pf.C.data(), pf.D.data(), d, 11,
                                                                  1e-3, 1e-1);
    std::vector<float> xf = random_vector<float>(d.B * d.T * d.H, 12);
    for (int i = 0; i < d.B * d.T * d.H; ++i) xf[i] += std::sin(0.01f * i);
    const auto p = pf.cast<double>(d);
    const auto x = cast_vector<double>(xf);

    std::vector<double> y_rec(x.size()), y_conv(x.size()), K(d.H * d.T);
    std::vector<double> s_rec(d.B * d.H * d.N * 2), s_conv(s_rec.size());
    ssm::s4d_recurrent_forward(y_rec.data(), s_rec.data(), x.data(), p.log_dt.data(), p.A_re_log.data(),
                               p.A_im.data(), p.C.data(), p.D.data(), nullptr, d);
    ssm::s4d_conv_forward(y_conv.data(), s_conv.data(), K.data(), x.data(), p.log_dt.data(), p.A_re_log.data(),
                          p.A_im.data(), p.C.data(), p.D.data(), d);
    const double e64 = rel_error(y_conv, y_rec), es64 = rel_error(s_conv, s_rec);
    EXPECT_LE(e64, 1e-11) << (lin ? "S4D-Lin" : "S4D-Real");
    EXPECT_LE(es64, 1e-11) << (lin ? "S4D-Lin" : "S4D-Real");

    std::vector<float> yf_rec(x.size()), yf_conv(x.size()), Kf(d.H * d.T);
    std::vector<float> sf_rec(s_rec.size()), sf_conv(s_rec.size());
    ssm::s4d_recurrent_forward(yf_rec.data(), sf_rec.data(), xf.data(), pf.log_dt.data(), pf.A_re_log.data(),
                               pf.A_im.data(), pf.C.data(), pf.D.data(), nullptr, d);
    ssm::s4d_conv_forward(yf_conv.data(), sf_conv.data(), Kf.data(), xf.data(), pf.log_dt.data(),
                          pf.A_re_log.data(), pf.A_im.data(), pf.C.data(), pf.D.data(), d);
    const double e_rec = rel_error(yf_rec, y_rec), e_conv = rel_error(yf_conv, y_rec);
    EXPECT_LE(e_rec, 1e-5) << (lin ? "S4D-Lin" : "S4D-Real");
    EXPECT_LE(e_conv, 1e-5) << (lin ? "S4D-Lin" : "S4D-Real");
    EXPECT_LE(rel_error(sf_rec, s_rec), 1e-5);
    EXPECT_LE(rel_error(sf_conv, s_rec), 1e-5);
    EXPECT_LE(rel_error(Kf, K), 1e-6);
    std::printf("[ measured ] %s T=16000: fp64 conv vs rec %.2e (state %.2e); fp32 rec %.2e, fp32 conv %.2e vs fp64\n",
                lin ? "S4D-Lin " : "S4D-Real", e64, es64, e_rec, e_conv);
  }
}

template <typename Real>
void check_state_carry() {
  const S4dDims d{2, 500, 3, 8};
  const auto p = jittered(d, 21, 1e-3, 1e-1).cast<Real>(d);
  const auto x = random_vector<Real>(d.B * d.T * d.H, 22);
  const size_t ns = d.B * d.H * d.N * 2;
  std::vector<Real> y(x.size()), s_final(ns);
  ssm::s4d_recurrent_forward(y.data(), s_final.data(), x.data(), p.log_dt.data(), p.A_re_log.data(), p.A_im.data(),
                             p.C.data(), p.D.data(), nullptr, d);

  // Blocks of random sizes, each continuing from the carried state: the same
  // samples, bit for bit, since every step does the same arithmetic.
  std::mt19937 rng(5);
  std::vector<Real> y_blocks(x.size()), state(ns, Real(0));
  for (int t0 = 0; t0 < d.T;) {
    const int len = std::min<int>(d.T - t0, 1 + rng() % 37);
    S4dDims db = d;
    db.T = len;
    std::vector<Real> xb(d.B * len * d.H), yb(xb.size()), next(ns);
    for (int b = 0; b < d.B; ++b)
      std::copy_n(x.begin() + (b * d.T + t0) * d.H, len * d.H, xb.begin() + b * len * d.H);
    ssm::s4d_recurrent_forward(yb.data(), next.data(), xb.data(), p.log_dt.data(), p.A_re_log.data(),
                               p.A_im.data(), p.C.data(), p.D.data(), state.data(), db);
    for (int b = 0; b < d.B; ++b)
      std::copy_n(yb.begin() + b * len * d.H, len * d.H, y_blocks.begin() + (b * d.T + t0) * d.H);
    state = next;
    t0 += len;
  }
  EXPECT_EQ(y_blocks, y);
  EXPECT_EQ(state, s_final);

  // Sample by sample with s4d_step.
  std::vector<double> Abar(d.H * d.N * 2), Bbar(Abar.size());
  ssm::s4d_discretize(Abar.data(), Bbar.data(), p.log_dt.data(), p.A_re_log.data(), p.A_im.data(), d);
  std::vector<Real> y_steps(x.size()), st(ns, Real(0)), xt(d.B * d.H), yt(d.B * d.H);
  for (int t = 0; t < d.T; ++t) {
    for (int b = 0; b < d.B; ++b)
      for (int h = 0; h < d.H; ++h) xt[b * d.H + h] = x[(b * d.T + t) * d.H + h];
    ssm::s4d_step(yt.data(), st.data(), xt.data(), Abar.data(), Bbar.data(), p.C.data(), p.D.data(), d);
    for (int b = 0; b < d.B; ++b)
      for (int h = 0; h < d.H; ++h) y_steps[(b * d.T + t) * d.H + h] = yt[b * d.H + h];
  }
  EXPECT_EQ(y_steps, y);
  EXPECT_EQ(st, s_final);

  // Prefill in convolution mode, continue in recurrent mode.
  const int T1 = 300;
  S4dDims d1 = d, d2 = d;
  d1.T = T1, d2.T = d.T - T1;
  std::vector<Real> x1(d.B * T1 * d.H), x2(d.B * d2.T * d.H), y1(x1.size()), y2(x2.size()), K(d.H * T1), s1(ns);
  for (int b = 0; b < d.B; ++b) {
    std::copy_n(x.begin() + b * d.T * d.H, T1 * d.H, x1.begin() + b * T1 * d.H);
    std::copy_n(x.begin() + (b * d.T + T1) * d.H, d2.T * d.H, x2.begin() + b * d2.T * d.H);
  }
  ssm::s4d_conv_forward(y1.data(), s1.data(), K.data(), x1.data(), p.log_dt.data(), p.A_re_log.data(),
                        p.A_im.data(), p.C.data(), p.D.data(), d1);
  ssm::s4d_recurrent_forward(y2.data(), nullptr, x2.data(), p.log_dt.data(), p.A_re_log.data(),
                             p.A_im.data(), p.C.data(), p.D.data(), s1.data(), d2);
  std::vector<Real> y_joined(x.size());
  for (int b = 0; b < d.B; ++b) {
    std::copy_n(y1.begin() + b * T1 * d.H, T1 * d.H, y_joined.begin() + b * d.T * d.H);
    std::copy_n(y2.begin() + b * d2.T * d.H, d2.T * d.H, y_joined.begin() + (b * d.T + T1) * d.H);
  }
  EXPECT_LE(rel_error(y_joined, y), sizeof(Real) == 8 ? 1e-12 : 1e-5);
}

TEST(S4d, StateCarriesAcrossBlocksStepsAndModesDouble) { check_state_carry<double>(); }
TEST(S4d, StateCarriesAcrossBlocksStepsAndModesFloat) { check_state_carry<float>(); }

TEST(S4d, KernelBackwardMatchesFiniteDifferences) {
  for (bool lin : {true, false}) {
    const S4dDims d{1, 11, 2, 3};
    auto p = jittered(d, lin ? 31 : 41, 5e-2, 0.5);
    if (!lin)
      for (auto& a : p.A_im) a = 0;  // S4D-Real poles: Im A = 0 exercises the real-pole path
    const auto w = random_vector(d.H * d.T, 32);
    auto loss = [&] {
      std::vector<double> K(d.H * d.T);
      ssm::s4d_kernel_forward(K.data(), p.log_dt.data(), p.A_re_log.data(), p.A_im.data(), p.C.data(), d);
      return weighted_sum(K, w);
    };
    const auto g_dt = numeric_gradient(loss, p.log_dt), g_re = numeric_gradient(loss, p.A_re_log);
    const auto g_im = numeric_gradient(loss, p.A_im), g_C = numeric_gradient(loss, p.C);
    // Start from nonzero values to check accumulation (+=).
    const auto base_h = random_vector(d.H, 1), base_hn = random_vector(d.H * d.N, 2);
    const auto base_c = random_vector(d.H * d.N * 2, 3);
    auto dlog_dt = base_h, dA_re_log = base_hn, dA_im = base_hn, dC = base_c;
    ssm::s4d_kernel_backward(dlog_dt.data(), dA_re_log.data(), dA_im.data(), dC.data(), w.data(), p.log_dt.data(),
                             p.A_re_log.data(), p.A_im.data(), p.C.data(), d);
    for (size_t i = 0; i < dlog_dt.size(); ++i) dlog_dt[i] -= base_h[i];
    for (size_t i = 0; i < dA_re_log.size(); ++i) dA_re_log[i] -= base_hn[i], dA_im[i] -= base_hn[i];
    for (size_t i = 0; i < dC.size(); ++i) dC[i] -= base_c[i];
    EXPECT_LE(rel_error(dlog_dt, g_dt), 1e-6);
    EXPECT_LE(rel_error(dA_re_log, g_re), 1e-6);
    EXPECT_LE(rel_error(dC, g_C), 1e-6);
    EXPECT_LE(rel_error(dA_im, g_im), 1e-6);
    std::printf("[ measured ] %s kernel FD: log_dt %.2e A_re_log %.2e A_im %.2e C %.2e\n", lin ? "Lin " : "Real",
                rel_error(dlog_dt, g_dt), rel_error(dA_re_log, g_re), rel_error(dA_im, g_im), rel_error(dC, g_C));
  }
}

TEST(S4d, ConvBackwardMatchesFiniteDifferences) {
  const S4dDims d{2, 9, 2, 3};
  auto p = jittered(d, 51, 5e-2, 0.5);
  auto x = random_vector(d.B * d.T * d.H, 52);
  const auto w = random_vector(d.B * d.T * d.H, 53);
  auto loss = [&] {
    std::vector<double> y(x.size()), K(d.H * d.T);
    ssm::s4d_conv_forward(y.data(), nullptr, K.data(), x.data(), p.log_dt.data(),
                          p.A_re_log.data(), p.A_im.data(), p.C.data(), p.D.data(), d);
    return weighted_sum(y, w);
  };
  const auto gx = numeric_gradient(loss, x), g_dt = numeric_gradient(loss, p.log_dt);
  const auto g_re = numeric_gradient(loss, p.A_re_log), g_im = numeric_gradient(loss, p.A_im);
  const auto g_C = numeric_gradient(loss, p.C), g_D = numeric_gradient(loss, p.D);

  std::vector<double> y(x.size()), K(d.H * d.T);
  ssm::s4d_conv_forward(y.data(), nullptr, K.data(), x.data(), p.log_dt.data(),
                        p.A_re_log.data(), p.A_im.data(), p.C.data(), p.D.data(), d);
  std::vector<double> dx(x.size(), 99.0), dlog_dt(d.H, 0.0), dA_re_log(d.H * d.N, 0.0), dA_im(d.H * d.N, 0.0);
  std::vector<double> dC(d.H * d.N * 2, 0.0), dD(d.H, 0.0);
  ssm::s4d_conv_backward(dx.data(), dlog_dt.data(), dA_re_log.data(), dA_im.data(), dC.data(), dD.data(), w.data(),
                         K.data(), x.data(), p.log_dt.data(), p.A_re_log.data(), p.A_im.data(), p.C.data(),
                         p.D.data(), d);
  EXPECT_LE(rel_error(dx, gx), 1e-6);
  EXPECT_LE(rel_error(dlog_dt, g_dt), 1e-6);
  EXPECT_LE(rel_error(dA_re_log, g_re), 1e-6);
  EXPECT_LE(rel_error(dA_im, g_im), 1e-6);
  EXPECT_LE(rel_error(dC, g_C), 1e-6);
  EXPECT_LE(rel_error(dD, g_D), 1e-6);
  std::printf("[ measured ] conv FD: x %.2e log_dt %.2e A_re_log %.2e A_im %.2e C %.2e D %.2e\n", rel_error(dx, gx),
              rel_error(dlog_dt, g_dt), rel_error(dA_re_log, g_re), rel_error(dA_im, g_im), rel_error(dC, g_C),
              rel_error(dD, g_D));
}

TEST(S4d, FloatBackwardMatchesDouble) {
  const S4dDims d{2, 2000, 3, 8};
  Params<float> pf(d);
  ssm::s4d_init_lin(pf.log_dt.data(), pf.A_re_log.data(), pf.A_im.data(), pf.C.data(), pf.D.data(), d, 61);
  const auto p = pf.cast<double>(d);
  const auto xf = random_vector<float>(d.B * d.T * d.H, 62), wf = random_vector<float>(d.B * d.T * d.H, 63);
  const auto x = cast_vector<double>(xf), w = cast_vector<double>(wf);

  auto run = [&](const auto& pp, const auto& xx, const auto& ww, auto zero) {
    using Real = decltype(zero);
    std::vector<Real> y(xx.size()), K(d.H * d.T), dx(xx.size()), dlog_dt(d.H, 0), dA_re_log(d.H * d.N, 0);
    std::vector<Real> dA_im(d.H * d.N, 0), dC(d.H * d.N * 2, 0), dD(d.H, 0);
    ssm::s4d_conv_forward(y.data(), nullptr, K.data(), xx.data(), pp.log_dt.data(),
                          pp.A_re_log.data(), pp.A_im.data(), pp.C.data(), pp.D.data(), d);
    ssm::s4d_conv_backward(dx.data(), dlog_dt.data(), dA_re_log.data(), dA_im.data(), dC.data(), dD.data(),
                           ww.data(), K.data(), xx.data(), pp.log_dt.data(), pp.A_re_log.data(), pp.A_im.data(),
                           pp.C.data(), pp.D.data(), d);
    return std::vector<std::vector<Real>>{y, dx, dlog_dt, dA_re_log, dA_im, dC, dD};
  };
  const auto rf = run(pf, xf, wf, 0.0f);
  const auto rd = run(p, x, w, 0.0);
  const char* names[] = {"y", "dx", "dlog_dt", "dA_re_log", "dA_im", "dC", "dD"};
  std::printf("[ measured ] fp32 vs fp64 conv fwd/bwd:");
  for (size_t i = 0; i < rf.size(); ++i) {
    EXPECT_LE(rel_error(rf[i], rd[i]), 1e-5) << names[i];
    std::printf(" %s %.1e", names[i], rel_error(rf[i], rd[i]));
  }
  std::printf("\n");
}

TEST(S4d, BadArgumentsThrow) {
  const S4dDims d{1, 4, 1, 2};
  Params<double> p(d);
  std::vector<double> y(4), x(4), K(4);
  for (S4dDims bad : {S4dDims{0, 4, 1, 2}, S4dDims{1, 0, 1, 2}, S4dDims{1, 4, 0, 2}, S4dDims{1, 4, 1, 0}})
    EXPECT_THROW(ssm::s4d_conv_forward(y.data(), nullptr, K.data(), x.data(), p.log_dt.data(),
                                       p.A_re_log.data(), p.A_im.data(), p.C.data(), p.D.data(), bad),
                 ssm::Error);
  EXPECT_THROW(ssm::s4d_kernel_forward(K.data(), p.log_dt.data(), p.A_re_log.data(), static_cast<double*>(nullptr),
                                       p.C.data(), d),
               ssm::Error);
  EXPECT_THROW(ssm::s4d_check_dims(S4dDims{1, 1, 1, -3}), ssm::Error);
}

}  // namespace
