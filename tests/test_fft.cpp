// RealFft against a direct DFT, the plan cache, and the FFT convolutions
// against direct causal convolution (fp64 plain loops) and finite differences.
#include <ssm/fft.hpp>

#include <complex>
#include <thread>
#include <vector>

#include "testing.hpp"

namespace {

using ssm::testing::numeric_gradient;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using ssm::testing::weighted_sum;
using cd = std::complex<double>;

const double kPi = 3.14159265358979323846;

// X[k] = sum_t x[t] exp(-2 pi i k t / n), k < n/2 + 1, in long double.
std::vector<cd> direct_dft(const std::vector<double>& x) {
  const size_t n = x.size();
  std::vector<cd> X(n / 2 + 1);
  for (size_t k = 0; k < X.size(); ++k) {
    long double re = 0, im = 0;
    for (size_t t = 0; t < n; ++t) {
      const long double a = -2.0L * kPi * static_cast<long double>((k * t) % n) / n;
      re += x[t] * cosl(a);
      im += x[t] * sinl(a);
    }
    X[k] = cd(static_cast<double>(re), static_cast<double>(im));
  }
  return X;
}

// Flattens complex spectra so rel_error can compare them.
template <typename Real>
std::vector<double> flat(const std::vector<std::complex<Real>>& v) {
  std::vector<double> out;
  for (auto c : v) {
    out.push_back(c.real());
    out.push_back(c.imag());
  }
  return out;
}

// y[b, t, h] = sum_{s <= t} k[h, t - s] x[b, s, h]
std::vector<double> direct_conv(const std::vector<double>& x, const std::vector<double>& k, int B, int T, int H) {
  std::vector<double> y(x.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        double s = 0;
        for (int j = 0; j <= t; ++j) s += k[h * T + j] * x[(b * T + t - j) * H + h];
        y[(b * T + t) * H + h] = s;
      }
  return y;
}

TEST(Fft, NextFastSize) {
  auto smooth = [](int m) {
    for (int f : {2, 3, 5, 7})
      while (m % f == 0) m /= f;
    return m == 1;
  };
  for (int n = 1; n < 3000; ++n) {
    const int m = ssm::fft_next_fast_size(n);
    ASSERT_GE(m, n);
    ASSERT_TRUE(smooth(m)) << n;
    for (int j = n; j < m; ++j) ASSERT_FALSE(smooth(j)) << n;
  }
  EXPECT_EQ(ssm::fft_next_fast_size(31999), 32000);
  EXPECT_THROW(ssm::fft_next_fast_size(0), ssm::Error);
}

TEST(Fft, ForwardMatchesDirectDft) {
  for (int n : {1, 2, 3, 8, 15, 60, 97, 128, 210}) {
    const auto x = random_vector(n, 100 + n);
    const auto ref = flat(direct_dft(x));
    ssm::RealFft<double> fd(n);
    std::vector<cd> Xd(n / 2 + 1);
    fd.forward(Xd.data(), x.data());
    EXPECT_LE(rel_error(flat(Xd), ref), 1e-13) << "n = " << n;

    const auto xf = ssm::testing::cast_vector<float>(x);
    ssm::RealFft<float> ff(n);
    std::vector<std::complex<float>> Xf(n / 2 + 1);
    ff.forward(Xf.data(), xf.data());
    EXPECT_LE(rel_error(flat(Xf), ref), 1e-6) << "n = " << n;
    EXPECT_EQ(ff.size(), n);
    EXPECT_EQ(ff.spectrum_size(), n / 2 + 1);
  }
}

TEST(Fft, InverseIsUnnormalisedAndKeepsInput) {
  for (int n : {1, 5, 64, 99}) {
    const auto x = random_vector(n, 7 * n);
    ssm::RealFft<double> fft(n);
    std::vector<cd> X(n / 2 + 1);
    fft.forward(X.data(), x.data());
    const auto X_before = X;
    std::vector<double> back(n), back2(n);
    fft.inverse(back.data(), X.data());
    EXPECT_EQ(flat(X), flat(X_before)) << "inverse must not write its input";
    for (auto& v : back) v /= n;
    EXPECT_LE(rel_error(back, x), 1e-14) << "n = " << n;
    fft.inverse_destroy(back2.data(), X.data());
    for (auto& v : back2) v /= n;
    EXPECT_LE(rel_error(back2, x), 1e-14) << "n = " << n;
  }
}

TEST(Fft, UnalignedBuffersGiveTheSameResult) {
  // Offsetting by one element breaks SIMD alignment and selects the
  // unaligned plans.
  const int n = 96;
  const auto x = random_vector<float>(n + 1, 3);
  ssm::RealFft<float> fft(n);
  std::vector<std::complex<float>> a(n / 2 + 2), b(n / 2 + 2);
  fft.forward(a.data(), x.data());
  fft.forward(b.data() + 1, x.data() + 1);
  std::vector<float> xa(x.begin(), x.begin() + n), xb(x.begin() + 1, x.end());
  const auto ra = flat(direct_dft(ssm::testing::cast_vector<double>(xa)));
  const auto rb = flat(direct_dft(ssm::testing::cast_vector<double>(xb)));
  EXPECT_LE(rel_error(flat(std::vector<std::complex<float>>(a.begin(), a.end() - 1)), ra), 1e-6);
  EXPECT_LE(rel_error(flat(std::vector<std::complex<float>>(b.begin() + 1, b.end())), rb), 1e-6);
  std::vector<float> out(n + 1);
  fft.inverse(out.data() + 1, b.data() + 1);
  for (auto& v : out) v /= n;
  EXPECT_LE(rel_error(out.data() + 1, xb.data(), n), 1e-6);
}

TEST(Fft, PlansAreCachedPerSizeAndPrecision) {
  const int n = 4913;  // 17^3: a size nothing else in this test uses
  const std::vector<double> x = random_vector(n, 1);
  std::vector<cd> X(n / 2 + 1);
  const size_t before = ssm::fft_plans_created();
  {
    ssm::RealFft<double> fft(n);
    fft.forward(X.data(), x.data());
  }
  const size_t after_first = ssm::fft_plans_created();
  EXPECT_GT(after_first, before) << "the first transform of a new size plans";
  for (int rep = 0; rep < 3; ++rep) {
    ssm::RealFft<double> fft(n);  // a new object reuses the cached plans
    fft.forward(X.data(), x.data());
  }
  EXPECT_EQ(ssm::fft_plans_created(), after_first) << "a cached size must not re-plan";
  // The other precision has its own plans.
  ssm::RealFft<float> ff(n);
  std::vector<float> xf(x.begin(), x.end());
  std::vector<std::complex<float>> Xf(n / 2 + 1);
  ff.forward(Xf.data(), xf.data());
  EXPECT_GT(ssm::fft_plans_created(), after_first);
}

TEST(Fft, ConcurrentPlanningAndExecution) {
  // Many threads plan new sizes and execute shared ones at once; every
  // result must equal the single-threaded one.
  const std::vector<int> sizes = {300, 301, 302, 303, 304, 305, 306, 307};
  std::vector<std::vector<cd>> ref(sizes.size());
  std::vector<std::vector<double>> xs(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    xs[i] = random_vector(sizes[i], 50 + i);
    ref[i] = direct_dft(xs[i]);
  }
  std::vector<double> err(8 * sizes.size(), INFINITY);
  std::vector<std::thread> threads;
  for (int th = 0; th < 8; ++th)
    threads.emplace_back([&, th] {
      for (size_t j = 0; j < sizes.size(); ++j) {
        const size_t i = (j + th) % sizes.size();
        ssm::RealFft<double> fft(sizes[i]);
        std::vector<cd> X(sizes[i] / 2 + 1);
        fft.forward(X.data(), xs[i].data());
        err[th * sizes.size() + i] = rel_error(flat(X), flat(ref[i]));
      }
    });
  for (auto& t : threads) t.join();
  for (double e : err) EXPECT_LE(e, 1e-13);
}

TEST(Fft, CausalConvMatchesDirect) {
  for (int T : {1, 2, 5, 64, 1000, 4001}) {
    const auto x = random_vector(T, 11 + T);
    const auto k = random_vector(T, 13 + T);
    const auto ref = direct_conv(x, k, 1, T, 1);
    std::vector<double> y(T);
    ssm::causal_fft_conv_forward(y.data(), x.data(), k.data(), T);
    EXPECT_LE(rel_error(y, ref), 1e-13) << "T = " << T;

    const auto xf = ssm::testing::cast_vector<float>(x), kf = ssm::testing::cast_vector<float>(k);
    std::vector<float> yf(T);
    ssm::causal_fft_conv_forward(yf.data(), xf.data(), kf.data(), T);
    // float inputs are rounded; compare with the exact convolution of them.
    const auto reff = direct_conv(ssm::testing::cast_vector<double>(xf), ssm::testing::cast_vector<double>(kf), 1, T, 1);
    EXPECT_LE(rel_error(yf, reff), 1e-5) << "T = " << T;
  }
}

TEST(Fft, CausalConvBackwardMatchesFiniteDifferences) {
  for (int T : {1, 6, 13}) {
    auto x = random_vector(T, 21 + T);
    auto k = random_vector(T, 23 + T);
    const auto w = random_vector(T, 25 + T);
    auto loss = [&] {
      std::vector<double> y(T);
      ssm::causal_fft_conv_forward(y.data(), x.data(), k.data(), T);
      return weighted_sum(y, w);
    };
    const auto gx = numeric_gradient(loss, x);
    const auto gk = numeric_gradient(loss, k);
    std::vector<double> dx(T, 123.0), dk(T, 0.0);
    ssm::causal_fft_conv_backward(dx.data(), dk.data(), w.data(), x.data(), k.data(), T);
    EXPECT_LE(rel_error(dx, gx), 1e-6) << "T = " << T;
    EXPECT_LE(rel_error(dk, gk), 1e-6) << "T = " << T;
  }
}

TEST(Fft, DepthwiseConvForwardAndBackward) {
  const int B = 2, T = 37, H = 3;
  auto x = random_vector(B * T * H, 31);
  auto k = random_vector(H * T, 32);
  const auto w = random_vector(B * T * H, 33);
  std::vector<double> y(B * T * H);
  ssm::depthwise_fft_conv_forward(y.data(), x.data(), k.data(), B, T, H);
  EXPECT_LE(rel_error(y, direct_conv(x, k, B, T, H)), 1e-13);

  // Backward against the direct adjoint (large shape) ...
  std::vector<double> dx(B * T * H), dk0 = random_vector(H * T, 34), dk = dk0;
  ssm::depthwise_fft_conv_backward(dx.data(), dk.data(), w.data(), x.data(), k.data(), B, T, H);
  std::vector<double> dx_ref(B * T * H, 0.0), dk_ref = dk0;  // dkernel accumulates onto its contents
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t)
        for (int j = 0; j <= t; ++j) {
          dx_ref[(b * T + t - j) * H + h] += k[h * T + j] * w[(b * T + t) * H + h];
          dk_ref[h * T + j] += x[(b * T + t - j) * H + h] * w[(b * T + t) * H + h];
        }
  EXPECT_LE(rel_error(dx, dx_ref), 1e-13);
  EXPECT_LE(rel_error(dk, dk_ref), 1e-13);

  // ... and finite differences (small shape).
  const int b2 = 2, t2 = 5, h2 = 2;
  auto xs = random_vector(b2 * t2 * h2, 35);
  auto ks = random_vector(h2 * t2, 36);
  const auto ws = random_vector(b2 * t2 * h2, 37);
  auto loss = [&] {
    std::vector<double> ys(b2 * t2 * h2);
    ssm::depthwise_fft_conv_forward(ys.data(), xs.data(), ks.data(), b2, t2, h2);
    return weighted_sum(ys, ws);
  };
  const auto gx = numeric_gradient(loss, xs), gk = numeric_gradient(loss, ks);
  std::vector<double> dxs(xs.size()), dks(ks.size(), 0.0);
  ssm::depthwise_fft_conv_backward(dxs.data(), dks.data(), ws.data(), xs.data(), ks.data(), b2, t2, h2);
  EXPECT_LE(rel_error(dxs, gx), 1e-6);
  EXPECT_LE(rel_error(dks, gk), 1e-6);

  // float against the fp64 result.
  const auto xf = ssm::testing::cast_vector<float>(x), kf = ssm::testing::cast_vector<float>(k);
  const auto wf = ssm::testing::cast_vector<float>(w);
  std::vector<float> yf(B * T * H), dxf(B * T * H), dkf(H * T, 0.0f);
  ssm::depthwise_fft_conv_forward(yf.data(), xf.data(), kf.data(), B, T, H);
  ssm::depthwise_fft_conv_backward(dxf.data(), dkf.data(), wf.data(), xf.data(), kf.data(), B, T, H);
  std::vector<double> dkd(H * T, 0.0);
  ssm::depthwise_fft_conv_backward(dx.data(), dkd.data(), w.data(), x.data(), k.data(), B, T, H);
  EXPECT_LE(rel_error(yf, y), 1e-5);
  EXPECT_LE(rel_error(dxf, dx), 1e-5);
  EXPECT_LE(rel_error(dkf, dkd), 1e-5);
}

TEST(Fft, BadArgumentsThrow) {
  std::vector<double> a(4), b(4), c(4);
  EXPECT_THROW(ssm::RealFft<double>(0), ssm::Error);
  EXPECT_THROW(ssm::causal_fft_conv_forward(a.data(), b.data(), c.data(), 0), ssm::Error);
  EXPECT_THROW(ssm::causal_fft_conv_forward<double>(nullptr, b.data(), c.data(), 4), ssm::Error);
  EXPECT_THROW(ssm::depthwise_fft_conv_forward(a.data(), b.data(), c.data(), 1, 4, 0), ssm::Error);
  EXPECT_THROW(ssm::depthwise_fft_conv_backward(a.data(), b.data(), c.data(), a.data(), c.data(), 0, 4, 1),
               ssm::Error);
}

}  // namespace
