// Losses: L1 / L2 / SI-SDR / Laplace NLL against direct fp64 sums and analytic values,
// the multi-resolution STFT loss (FFT version) against its direct-DFT
// reference and known signals, every backward against finite differences.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <numbers>
#include <utility>

#include "ssm/losses.hpp"
#include "testing.hpp"

namespace {

using ssm::LossDims;
using ssm::StftLossConfig;
using ssm::testing::cast_vector;
using ssm::testing::numeric_gradient;
using ssm::testing::random_vector;
using ssm::testing::rel_error;

constexpr double kPi = std::numbers::pi;
constexpr double kDloss = 0.7;  // upstream gradient used by every backward check

// Sines plus noise: spectra with no bins near zero.
std::vector<double> test_signal(int B, int T, uint64_t seed, double noise) {
  auto x = random_vector<double>(size_t(B) * T, seed, -noise, noise);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      x[size_t(b) * T + t] += std::sin(0.05 * (b + 1) * t + seed) + 0.5 * std::sin(0.31 * t + 0.1 * seed);
  return x;
}

// ---------------------------------------------------------------- L1 / L2

template <typename Real>
void check_pointwise(bool l1, double tol) {
  const LossDims d{3, 41};
  const auto pred = random_vector<double>(3 * 41, 1), target = random_vector<double>(3 * 41, 2);
  double ref = 0;
  for (size_t i = 0; i < pred.size(); ++i)
    ref += l1 ? std::fabs(pred[i] - target[i]) : (pred[i] - target[i]) * (pred[i] - target[i]);
  ref /= double(pred.size());
  const auto p = cast_vector<Real>(pred), t = cast_vector<Real>(target);
  const double loss = l1 ? ssm::l1_loss_forward(p.data(), t.data(), d) : ssm::l2_loss_forward(p.data(), t.data(), d);
  EXPECT_LE(std::fabs(loss - ref) / ref, tol);

  std::vector<Real> g(p.size());
  if (l1)
    ssm::l1_loss_backward(g.data(), kDloss, p.data(), t.data(), d);
  else
    ssm::l2_loss_backward(g.data(), kDloss, p.data(), t.data(), d);
  std::vector<double> pd = pred;
  const auto fd = numeric_gradient(
      [&] {
        return kDloss * (l1 ? ssm::l1_loss_forward(pd.data(), target.data(), d)
                            : ssm::l2_loss_forward(pd.data(), target.data(), d));
      },
      pd, 1e-6);
  EXPECT_LE(rel_error(g, fd), std::max(tol, 1e-6));
}

TEST(L1Loss, DoubleMatchesDirectSumAndFiniteDifferences) { check_pointwise<double>(true, 1e-14); }
TEST(L1Loss, FloatMatchesDirectSum) { check_pointwise<float>(true, 1e-5); }
TEST(L2Loss, DoubleMatchesDirectSumAndFiniteDifferences) { check_pointwise<double>(false, 1e-14); }
TEST(L2Loss, FloatMatchesDirectSum) { check_pointwise<float>(false, 1e-5); }

TEST(LaplaceNll, MatchesTheDensityAndFiniteDifferences) {
  // pairs (mu, log b) against pairs (y, unused): -log of the Laplace density.
  const LossDims d{2, 23};
  const auto pred = random_vector<double>(2 * 23 * 2, 3), target = random_vector<double>(2 * 23 * 2, 4);
  double ref = 0;
  for (size_t i = 0; i < pred.size() / 2; ++i) {
    const double b = std::exp(pred[2 * i + 1]);
    ref -= std::log(std::exp(-std::fabs(target[2 * i] - pred[2 * i]) / b) / (2 * b));
  }
  ref /= double(pred.size() / 2);
  EXPECT_NEAR(ssm::laplace_nll_forward(pred.data(), target.data(), d), ref, 1e-12 * std::fabs(ref));
  std::vector<double> g(pred.size());
  ssm::laplace_nll_backward(g.data(), kDloss, pred.data(), target.data(), d);
  std::vector<double> pd = pred;
  const auto fd =
      numeric_gradient([&] { return kDloss * ssm::laplace_nll_forward(pd.data(), target.data(), d); }, pd, 1e-6);
  EXPECT_LE(rel_error(g, fd), 1e-6);
  // The unused target channel changes nothing.
  auto t2 = target;
  for (size_t i = 1; i < t2.size(); i += 2) t2[i] += 5;
  EXPECT_EQ(ssm::laplace_nll_forward(pred.data(), t2.data(), d), ssm::laplace_nll_forward(pred.data(), target.data(), d));
}

TEST(L1Loss, GradientIsZeroWherePredEqualsTarget) {
  const std::vector<double> p{1.0, 2.0}, t{1.0, 3.0};
  std::vector<double> g(2);
  ssm::l1_loss_backward(g.data(), 1.0, p.data(), t.data(), LossDims{1, 2});
  EXPECT_EQ(g[0], 0.0);
  EXPECT_EQ(g[1], -0.5);
}

// ---------------------------------------------------------------- SI-SDR

// Direct fp64 SI-SDR of one item, written from the formula in losses.hpp.
double direct_si_sdr(const double* p0, const double* r0, int T, double eps) {
  double mp = 0, mr = 0;
  for (int t = 0; t < T; ++t) mp += p0[t] / T, mr += r0[t] / T;
  double pr = 0, rr = 0;
  for (int t = 0; t < T; ++t) pr += (p0[t] - mp) * (r0[t] - mr), rr += (r0[t] - mr) * (r0[t] - mr);
  const double alpha = (pr + eps) / (rr + eps);
  double ss = 0, ee = 0;
  for (int t = 0; t < T; ++t) {
    const double s = alpha * (r0[t] - mr);
    ss += s * s;
    ee += (s - (p0[t] - mp)) * (s - (p0[t] - mp));
  }
  return 10 * std::log10((ss + eps) / (ee + eps));
}

TEST(SiSdr, KnownSignalAndNoiseGiveTheAnalyticValue) {
  // Sines on whole periods are zero-mean and orthogonal: SI-SDR = -20 log10(c).
  const int T = 1000;
  const LossDims d{3, T};
  const double c[3] = {0.1, 1.0, 3.0};
  std::vector<double> target(3 * T), pred(3 * T);
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < T; ++t) {
      const double s = 0.8 * std::sin(2 * kPi * 5 * t / T), n = c[b] * 0.8 * std::sin(2 * kPi * 17 * t / T);
      target[b * T + t] = s;
      // Offset and gain on the estimate: the zero-mean, scale-invariant measure ignores both.
      pred[b * T + t] = 2.5 * (s + n) + 0.3;
    }
  std::vector<double> v(3);
  ssm::si_sdr(v.data(), pred.data(), target.data(), d);
  for (int b = 0; b < 3; ++b) EXPECT_NEAR(v[b], -20 * std::log10(c[b]), 1e-6) << "c = " << c[b];
  EXPECT_NEAR(ssm::si_sdr_loss_forward(pred.data(), target.data(), d), -(20 - 0 - 20 * std::log10(3.0)) / 3, 1e-6);
  EXPECT_LT(std::fabs(v[1]), 1e-6);  // equal power: 0 dB
}

template <typename Real>
void check_si_sdr(double tol) {
  const int B = 4, T = 257;
  const LossDims d{B, T};
  const auto target = test_signal(B, T, 3, 0.2);
  auto pred = target;
  const auto noise = random_vector<double>(pred.size(), 4, -0.5, 0.5);
  for (size_t i = 0; i < pred.size(); ++i) pred[i] = 0.7 * pred[i] + noise[i] + 0.1;
  double ref = 0;
  for (int b = 0; b < B; ++b) ref -= direct_si_sdr(&pred[b * T], &target[b * T], T, 1e-8) / B;
  const auto p = cast_vector<Real>(pred), t = cast_vector<Real>(target);
  EXPECT_LE(std::fabs(ssm::si_sdr_loss_forward(p.data(), t.data(), d) - ref) / std::fabs(ref), tol);

  std::vector<Real> g(p.size());
  ssm::si_sdr_loss_backward(g.data(), kDloss, p.data(), t.data(), d);
  std::vector<double> pd = pred;
  const auto fd = numeric_gradient([&] { return kDloss * ssm::si_sdr_loss_forward(pd.data(), target.data(), d); },
                                   pd, 1e-6);
  EXPECT_LE(rel_error(g, fd), std::max(tol, 1e-6));
}

TEST(SiSdr, DoubleMatchesDirectSumAndFiniteDifferences) { check_si_sdr<double>(1e-13); }
TEST(SiSdr, FloatMatchesDirectSum) { check_si_sdr<float>(1e-5); }

TEST(SiSdr, GradientIsFiniteForPerfectAndSilentItems) {
  const LossDims d{2, 64};
  auto target = test_signal(2, 64, 5, 0.0);
  auto pred = target;                               // item 0: perfect estimate
  std::fill(pred.begin() + 64, pred.end(), 0.0);    // item 1: silent estimate
  std::vector<double> g(pred.size());
  ssm::si_sdr_loss_backward(g.data(), 1.0, pred.data(), target.data(), d);
  for (double x : g) ASSERT_TRUE(std::isfinite(x));
  std::vector<double> v(2);
  ssm::si_sdr(v.data(), pred.data(), target.data(), d);
  EXPECT_GT(v[0], 60.0);
  EXPECT_TRUE(std::isfinite(v[1]));
}

// ---------------------------------------------------------------- STFT loss

StftLossConfig small_config() {
  StftLossConfig c;
  c.fft_sizes = {16, 32, 15};  // an odd size has no Nyquist bin
  c.hops = {4, 8, 5};
  // Magnitudes well above the floor and an eps that keeps 1 / (|S| + eps)
  // moderate: finite differences and fp32 are then well-conditioned.
  c.power_floor = 1e-6;
  c.log_eps = 0.1;
  return c;
}

// A target and an estimate of it (half the gain plus noise): the log-magnitude
// ratio stays away from 0, where |.| has its kink, at nearly every bin.
std::pair<std::vector<double>, std::vector<double>> stft_pair(int B, int T, uint64_t seed) {
  auto target = test_signal(B, T, seed, 0.3);
  auto pred = random_vector<double>(target.size(), seed + 1000, -0.1, 0.1);
  for (size_t i = 0; i < pred.size(); ++i) pred[i] += 0.5 * target[i];
  return {target, pred};
}

TEST(StftLoss, FrameCountCoversEverySample) {
  EXPECT_EQ(ssm::stft_frames(100, 256, 64), 1);
  EXPECT_EQ(ssm::stft_frames(256, 256, 64), 1);
  EXPECT_EQ(ssm::stft_frames(257, 256, 64), 2);
  EXPECT_EQ(ssm::stft_frames(16000, 256, 64), 247);   // 1 + ceil(15744 / 64)
  EXPECT_EQ(ssm::stft_frames(16000, 1024, 256), 60);  // 1 + ceil(14976 / 256) = 1 + 59
  for (int T : {1, 7, 100, 333})
    for (int hop : {1, 3, 16}) {
      const int F = ssm::stft_frames(T, 16, hop);
      EXPECT_GE((F - 1) * hop + 16, T);             // the last frame reaches the end
      EXPECT_LT((F - 2) * hop + 16, std::max(T, 16));  // and no frame is spare
    }
}

TEST(StftLoss, DefaultsAndConfigErrors) {
  const StftLossConfig c;
  EXPECT_EQ(c.fft_sizes, (std::vector<int>{256, 512, 1024}));
  EXPECT_EQ(c.hops, (std::vector<int>{64, 128, 256}));
  auto message = [](StftLossConfig bad) {
    try {
      ssm::MultiResStftLoss<float> l(bad);
    } catch (const ssm::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  StftLossConfig bad = c;
  bad.hops = {64, 128};
  EXPECT_NE(message(bad).find("hops"), std::string::npos);
  bad = c;
  bad.hops[1] = 600;
  EXPECT_NE(message(bad).find("hops[1]"), std::string::npos);
  bad = c;
  bad.fft_sizes[2] = 1;
  bad.hops[2] = 1;
  EXPECT_NE(message(bad).find("fft_sizes[2]"), std::string::npos);
  bad = c;
  bad.power_floor = 0;
  EXPECT_NE(message(bad).find("power_floor"), std::string::npos);
}

TEST(StftLoss, KnownSignals) {
  // pred == target: 0. pred == 2 target with negligible floor and eps:
  // sc = 1 and the log term = log 2 at every bin, per resolution.
  const int B = 2, T = 300;
  const LossDims d{B, T};
  StftLossConfig c = small_config();
  c.power_floor = 1e-30;
  c.log_eps = 0;
  const auto target = test_signal(B, T, 6, 0.3);
  auto twice = target;
  for (double& x : twice) x *= 2;
  const double R = double(c.fft_sizes.size());
  EXPECT_EQ(ssm::mrstft_loss_reference_forward(target.data(), target.data(), d, c), 0.0);
  EXPECT_NEAR(ssm::mrstft_loss_reference_forward(twice.data(), target.data(), d, c), R * (1 + std::log(2.0)), 1e-9);
  ssm::MultiResStftLoss<double> fast(c);
  EXPECT_EQ(fast.forward(target.data(), target.data(), d), 0.0);
  EXPECT_NEAR(fast.forward(twice.data(), target.data(), d), R * (1 + std::log(2.0)), 1e-9);
}

TEST(StftLoss, ReferenceBackwardMatchesFiniteDifferences) {
  const int B = 2, T = 70;
  const LossDims d{B, T};
  const StftLossConfig c = small_config();
  auto [target, pred] = stft_pair(B, T, 7);
  std::vector<double> g(pred.size());
  ssm::mrstft_loss_reference_backward(g.data(), kDloss, pred.data(), target.data(), d, c);
  const auto fd = numeric_gradient(
      [&] { return kDloss * ssm::mrstft_loss_reference_forward(pred.data(), target.data(), d, c); }, pred, 1e-6);
  EXPECT_LE(rel_error(g, fd), 1e-6);
  EXPECT_NE(g[T - 1], 0.0);  // the zero-padded tail is covered
}

TEST(StftLoss, FastDoubleMatchesReferenceAndFiniteDifferences) {
  const int B = 3, T = 203;  // no resolution's frames end exactly at T
  const LossDims d{B, T};
  const StftLossConfig c = small_config();
  auto [target, pred] = stft_pair(B, T, 9);
  ssm::MultiResStftLoss<double> fast(c);
  const double ref = ssm::mrstft_loss_reference_forward(pred.data(), target.data(), d, c);
  EXPECT_NEAR(fast.forward(pred.data(), target.data(), d), ref, 1e-12 * ref);
  std::vector<double> g(pred.size()), gref(pred.size());
  fast.backward(g.data(), kDloss, d);
  ssm::mrstft_loss_reference_backward(gref.data(), kDloss, pred.data(), target.data(), d, c);
  EXPECT_LE(rel_error(g, gref), 1e-12);
  const auto fd = numeric_gradient([&] { return kDloss * fast.forward(pred.data(), target.data(), d); }, pred, 1e-6);
  EXPECT_LE(rel_error(g, fd), 1e-6);
}

TEST(StftLoss, FastFloatMatchesReference) {
  const int B = 3, T = 203;
  const LossDims d{B, T};
  const StftLossConfig c = small_config();
  const auto [target, pred] = stft_pair(B, T, 11);
  const auto pf = cast_vector<float>(pred), tf = cast_vector<float>(target);
  ssm::MultiResStftLoss<float> fast(c);
  const double ref = ssm::mrstft_loss_reference_forward(pred.data(), target.data(), d, c);
  EXPECT_LE(std::fabs(fast.forward(pf.data(), tf.data(), d) - ref) / ref, 1e-5);
  std::vector<float> g(pf.size());
  std::vector<double> gref(pred.size());
  fast.backward(g.data(), kDloss, d);
  ssm::mrstft_loss_reference_backward(gref.data(), kDloss, pred.data(), target.data(), d, c);
  EXPECT_LE(rel_error(g, gref), 1e-5);
}

TEST(StftLoss, SignalShorterThanOneFrame) {
  const LossDims d{2, 9};
  const StftLossConfig c = small_config();  // every fft size exceeds T
  auto [target, pred] = stft_pair(2, 9, 13);
  ssm::MultiResStftLoss<double> fast(c);
  EXPECT_NEAR(fast.forward(pred.data(), target.data(), d),
              ssm::mrstft_loss_reference_forward(pred.data(), target.data(), d, c), 1e-12);
  std::vector<double> g(pred.size());
  fast.backward(g.data(), 1.0, d);
  const auto fd = numeric_gradient([&] { return fast.forward(pred.data(), target.data(), d); }, pred, 1e-6);
  EXPECT_LE(rel_error(g, fd), 1e-6);
}

TEST(StftLoss, BackwardNeedsAMatchingForward) {
  ssm::MultiResStftLoss<float> loss(small_config());
  std::vector<float> x(2 * 100, 0.5f), g(2 * 100);
  EXPECT_THROW(loss.backward(g.data(), 1.0, LossDims{2, 100}), ssm::Error);
  loss.forward(x.data(), x.data(), LossDims{2, 100});
  EXPECT_THROW(loss.backward(g.data(), 1.0, LossDims{1, 100}), ssm::Error);
  EXPECT_NO_THROW(loss.backward(g.data(), 1.0, LossDims{2, 100}));
  EXPECT_THROW(loss.forward(nullptr, x.data(), LossDims{2, 100}), ssm::Error);
  EXPECT_THROW(loss.forward(x.data(), x.data(), LossDims{0, 100}), ssm::Error);
}

TEST(StftLoss, DefaultConfigSpeedAtTrainingSize) {
  // B = 32 one-second items at 16 kHz, the size training uses.
  const int B = 32, T = 16000;
  const LossDims d{B, T};
  const auto pred = cast_vector<float>(test_signal(B, T, 15, 0.1)),
             target = cast_vector<float>(test_signal(B, T, 16, 0.1));
  std::vector<float> g(pred.size());
  ssm::MultiResStftLoss<float> loss;
  double best = INFINITY, value = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    value = loss.forward(pred.data(), target.data(), d);
    loss.backward(g.data(), 1.0, d);
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("MR-STFT loss B=%d T=%d forward+backward: %.1f ms (best of 3)\n", B, T, best);
  EXPECT_TRUE(std::isfinite(value));
  for (float x : g) ASSERT_TRUE(std::isfinite(x));
  EXPECT_LT(best, 2000.0);  // a sanity bound only; the printed time is the measurement
}

}  // namespace
