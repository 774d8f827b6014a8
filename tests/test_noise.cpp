// Noise synthesis: spectral slopes of pink and brown noise, hum harmonics
// and drift, fan band and tones, babble against a hand-built slice, the
// biquads against their analytic response, the level measures against
// analytic values, determinism by seed and RMS normalisation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>
#include <vector>

#include "ssm/fft.hpp"
#include "ssm/noise.hpp"
#include "testing.hpp"

namespace {

constexpr double kPi = std::numbers::pi;
constexpr int kRate = 16000;

using ssm::NoiseKind;

double rms(const std::vector<float>& x) { return std::sqrt(ssm::mean_square(x.data(), x.size())); }

// Welch estimate of the power spectral density: Hann-windowed 4096-point
// frames, hop 2048, averaged |X|^2 (arbitrary scale). Bin k is k rate / 4096.
std::vector<double> psd(const std::vector<float>& x) {
  constexpr int n = 4096;
  const ssm::RealFft<double> fft(n);
  std::vector<double> frame(n), p(n / 2 + 1, 0.0);  // (n), (n/2 + 1)
  std::vector<std::complex<double>> spec(n / 2 + 1);  // (n/2 + 1)
  int frames = 0;
  for (size_t s = 0; s + n <= x.size(); s += n / 2, ++frames) {
    for (int j = 0; j < n; ++j) frame[j] = x[s + j] * (0.5 - 0.5 * std::cos(2 * kPi * j / n));
    fft.forward(spec.data(), frame.data());
    for (int k = 0; k <= n / 2; ++k) p[k] += std::norm(spec[k]);
  }
  for (auto& v : p) v /= frames;
  return p;
}

double bin_hz(int k) { return k * double(kRate) / 4096; }

// Least-squares slope, in dB per decade, of the mean PSD in one-third octave
// bands from lo_hz to hi_hz against the log of the band centres. For a
// density proportional to f^a the band means go exactly as f^a.
double slope_db_per_decade(const std::vector<double>& p, double lo_hz, double hi_hz) {
  std::vector<double> lx, ly;
  for (double f0 = lo_hz; f0 * std::cbrt(2.0) <= hi_hz * 1.0001; f0 *= std::cbrt(2.0)) {
    const double f1 = f0 * std::cbrt(2.0);
    double s = 0;
    int c = 0;
    for (size_t k = 1; k < p.size(); ++k)
      if (bin_hz(k) >= f0 && bin_hz(k) < f1) s += p[k], ++c;
    lx.push_back(std::log10(std::sqrt(f0 * f1)));
    ly.push_back(10 * std::log10(s / c));
  }
  const double n = lx.size();
  double mx = 0, my = 0;
  for (size_t i = 0; i < lx.size(); ++i) mx += lx[i] / n, my += ly[i] / n;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < lx.size(); ++i) sxy += (lx[i] - mx) * (ly[i] - my), sxx += (lx[i] - mx) * (lx[i] - mx);
  return sxy / sxx;
}

// Fraction of the PSD's power in [lo_hz, hi_hz].
double power_fraction(const std::vector<double>& p, double lo_hz, double hi_hz) {
  double in = 0, all = 0;
  for (size_t k = 0; k < p.size(); ++k) {
    all += p[k];
    if (bin_hz(k) >= lo_hz && bin_hz(k) <= hi_hz) in += p[k];
  }
  return in / all;
}

// Power of the PSD within +-width_hz of hz.
double power_near(const std::vector<double>& p, double hz, double width_hz) { return power_fraction(p, hz - width_hz, hz + width_hz); }

std::vector<float> make(NoiseKind kind, size_t n, uint64_t seed) {
  std::vector<float> x(n);  // (n)
  std::vector<std::vector<float>> pool;
  for (int i = 0; i < 4; ++i) {
    std::vector<float> u(kRate / 2 + 1000 * i);  // (len_i)
    for (size_t t = 0; t < u.size(); ++t) u[t] = float(std::sin(2 * kPi * (200 + 150 * i) * t / kRate));
    pool.push_back(std::move(u));
  }
  ssm::random_noise(x.data(), n, kRate, kind, seed, pool, 0);
  return x;
}

constexpr NoiseKind kKinds[] = {NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown,
                                NoiseKind::Hum,   NoiseKind::Fan,  NoiseKind::Babble};

// Upward zero crossings of a sine-like signal, linearly interpolated, as
// instantaneous frequencies (one per period).
std::vector<double> zero_crossing_frequencies(const std::vector<float>& x) {
  std::vector<double> at;
  for (size_t i = 1; i < x.size(); ++i)
    if (x[i - 1] < 0 && x[i] >= 0) at.push_back(i - 1 + x[i - 1] / double(x[i - 1] - x[i]));
  std::vector<double> f;
  for (size_t i = 1; i < at.size(); ++i) f.push_back(kRate / (at[i] - at[i - 1]));
  return f;
}

}  // namespace

TEST(NoiseRng, StreamsAreReproducibleAndDistinct) {
  ssm::NoiseRng a(42), b(42), c(43), d(42, 0), e(42, 1);
  bool ac = true, de = true;
  for (int i = 0; i < 100; ++i) {
    const uint64_t va = a.next();
    ASSERT_EQ(va, b.next());
    ac &= va == c.next();
    de &= d.next() == e.next();
  }
  EXPECT_FALSE(ac);
  EXPECT_FALSE(de);
}

TEST(NoiseRng, Distributions) {
  ssm::NoiseRng r(7);
  const int n = 200000;
  double su = 0, sn = 0, sn2 = 0;
  uint64_t counts[5] = {};
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform();
    ASSERT_TRUE(u >= 0 && u < 1);
    su += u;
    const double g = r.normal();
    sn += g, sn2 += g * g;
    const uint64_t k = r.below(5);
    ASSERT_LT(k, 5u);
    ++counts[k];
    const double l = r.log_uniform(10, 1000);
    ASSERT_TRUE(l >= 10 && l < 1000);
  }
  EXPECT_NEAR(su / n, 0.5, 0.005);
  EXPECT_NEAR(sn / n, 0.0, 0.01);
  EXPECT_NEAR(sn2 / n, 1.0, 0.01);
  for (auto c : counts) EXPECT_NEAR(double(c) / n, 0.2, 0.005);
  EXPECT_THROW(r.below(0), ssm::Error);
}

TEST(NoiseLevels, ActiveMeanSquareSkipsPausesAndPadding) {
  // 20 ms frames are 320 samples at 16 kHz. A sine of amplitude 0.5 for 50
  // frames, then 50 frames at -30 dB (active), then 50 at -60 dB (silent),
  // then zeros.
  const int F = 320;
  std::vector<float> x(200 * F, 0.0f);
  const double a = 0.5, q = a * std::pow(10.0, -30 / 20.0), s = a * std::pow(10.0, -60 / 20.0);
  for (int i = 0; i < 150 * F; ++i) {
    const double amp = i < 50 * F ? a : i < 100 * F ? q : s;
    x[i] = float(amp * std::sin(2 * kPi * 1000 * i / kRate));  // whole periods per frame
  }
  const double expect = (a * a / 2 + q * q / 2) / 2;
  EXPECT_NEAR(ssm::active_mean_square(x.data(), x.size(), kRate), expect, 1e-6 * expect);
  // With a 20 dB range the -30 dB part is silent too.
  EXPECT_NEAR(ssm::active_mean_square(x.data(), x.size(), kRate, 20), a * a / 2, 1e-6 * a * a);
  const std::vector<float> zeros(1000, 0.0f);
  EXPECT_EQ(ssm::active_mean_square(zeros.data(), zeros.size(), kRate), 0.0);
  // A last short frame counts with its own length.
  std::vector<float> y = {1, 1, 1};
  EXPECT_DOUBLE_EQ(ssm::active_mean_square(y.data(), y.size(), kRate), 1.0);
  EXPECT_THROW(ssm::active_mean_square(y.data(), y.size(), 0), ssm::Error);
}

TEST(NoiseLevels, NormaliseRms) {
  auto x = ssm::testing::random_vector<float>(5000, 1, -0.3, 0.3);
  ssm::normalise_rms(x.data(), x.size(), 0.1);
  EXPECT_NEAR(rms(x), 0.1, 1e-6);
  std::vector<float> z(10, 0.0f);
  EXPECT_EQ(ssm::normalise_rms(z.data(), z.size(), 0.1), 1.0);
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

TEST(Biquad, ResponseMatchesAnalyticPointsAndFilteredSines) {
  const auto lp = ssm::Biquad::lowpass(1000, kRate), hp = ssm::Biquad::highpass(1000, kRate);
  EXPECT_NEAR(std::abs(lp.response(0, kRate)), 1.0, 1e-12);
  EXPECT_NEAR(std::abs(lp.response(1000, kRate)), std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(std::abs(lp.response(kRate / 2.0, kRate)), 0.0, 1e-12);
  EXPECT_NEAR(std::abs(hp.response(0, kRate)), 0.0, 1e-12);
  EXPECT_NEAR(std::abs(hp.response(1000, kRate)), std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(std::abs(hp.response(kRate / 2.0, kRate)), 1.0, 1e-12);
  // The filter itself: a sine's settled amplitude is |H| at its frequency.
  for (double hz : {200.0, 1000.0, 3000.0}) {
    for (const auto* f : {&lp, &hp}) {
      std::vector<float> x(kRate);
      for (int i = 0; i < kRate; ++i) x[i] = float(std::sin(2 * kPi * hz * i / kRate));
      f->apply(x.data(), x.size());
      const double amp = std::sqrt(2 * ssm::mean_square(x.data() + kRate / 2, kRate / 2));
      EXPECT_NEAR(amp, std::abs(f->response(hz, kRate)), 2e-3) << hz;
    }
  }
  EXPECT_THROW(ssm::Biquad::lowpass(9000, kRate), ssm::Error);
  EXPECT_THROW(ssm::Biquad::highpass(0, kRate), ssm::Error);
}

TEST(Noise, EveryKindIsUnitRmsFiniteAndDeterministic) {
  for (NoiseKind kind : kKinds) {
    const auto a = make(kind, 20000, 5), b = make(kind, 20000, 5), c = make(kind, 20000, 6);
    EXPECT_NEAR(rms(a), 1.0, 1e-5) << ssm::noise_kind_name(kind);
    for (float v : a) ASSERT_TRUE(std::isfinite(v)) << ssm::noise_kind_name(kind);
    EXPECT_EQ(a, b) << ssm::noise_kind_name(kind);
    EXPECT_NE(a, c) << ssm::noise_kind_name(kind);
  }
}

TEST(Noise, WhiteIsFlat) {
  std::vector<float> x(8 * kRate);
  ssm::white_noise(x.data(), x.size(), 1);
  EXPECT_NEAR(slope_db_per_decade(psd(x), 100, 6000), 0.0, 0.5);
}

TEST(Noise, PinkFallsTenDbPerDecade) {
  std::vector<float> x(8 * kRate);
  ssm::pink_noise(x.data(), x.size(), 2);
  EXPECT_NEAR(slope_db_per_decade(psd(x), 50, 6000), -10.0, 0.7);
}

TEST(Noise, BrownFallsTwentyDbPerDecade) {
  std::vector<float> x(8 * kRate);
  ssm::brown_noise(x.data(), x.size(), kRate, 3, 10);
  EXPECT_NEAR(slope_db_per_decade(psd(x), 100, 2000), -20.0, 1.0);
  EXPECT_THROW(ssm::brown_noise(x.data(), x.size(), kRate, 3, 0), ssm::Error);
}

TEST(Noise, HumEnergySitsOnTheHarmonics) {
  for (double mains : {50.0, 60.0}) {
    ssm::HumParams p;
    p.fundamental_hz = mains;
    p.harmonics = 8;
    p.drift_hz = 0.05;
    p.rolloff_db = 3;
    p.even_db = -6;
    std::vector<float> x(8 * kRate);
    ssm::hum_noise(x.data(), x.size(), kRate, p, 4);
    EXPECT_NEAR(rms(x), 1.0, 1e-5);
    const auto s = psd(x);
    const double width = 4 * bin_hz(1);  // the Hann main lobe and the drift
    double on = 0;
    const double fundamental = power_near(s, mains, width);
    for (int h = 1; h <= p.harmonics; ++h) {
      const double ph = power_near(s, h * mains, width);
      on += ph;
      // Designed level relative to the fundamental, each with +-3 dB jitter.
      const double expect_db = -p.rolloff_db * (h - 1) + (h % 2 == 0 ? p.even_db : 0.0);
      EXPECT_NEAR(10 * std::log10(ph / fundamental), expect_db, 6.01) << mains << " Hz, harmonic " << h;
    }
    EXPECT_GT(on, 0.999) << mains;
    EXPECT_LT(power_near(s, 9 * mains, width), 1e-6) << "no harmonics past the 8th";
  }
}

TEST(Noise, HumFrequencyDriftsWithinItsBounds) {
  ssm::HumParams p;
  p.harmonics = 1;
  p.drift_hz = 0.5;
  p.drift_rate_hz = 0.5;  // two full swings in 4 s
  std::vector<float> x(4 * kRate);
  ssm::hum_noise(x.data(), x.size(), kRate, p, 5);
  const auto f = zero_crossing_frequencies(x);
  EXPECT_NEAR(*std::min_element(f.begin(), f.end()), 50 - 0.5, 0.02);
  EXPECT_NEAR(*std::max_element(f.begin(), f.end()), 50 + 0.5, 0.02);
  p.drift_hz = 0;
  ssm::hum_noise(x.data(), x.size(), kRate, p, 5);
  for (double v : zero_crossing_frequencies(x)) ASSERT_NEAR(v, 50.0, 1e-3);
  p.fundamental_hz = 0;
  EXPECT_THROW(ssm::hum_noise(x.data(), x.size(), kRate, p, 5), ssm::Error);
}

TEST(Noise, FanIsBandLimitedWithTonesAndSwell) {
  ssm::FanParams p;
  p.low_hz = 300;
  p.high_hz = 2000;
  p.blade_hz = 110 * 7;  // inside the band, away from its edges
  p.tones = 2;
  p.tone_db = -6;
  p.modulation_depth = 0.5;
  std::vector<float> x(8 * kRate);
  ssm::fan_noise(x.data(), x.size(), kRate, p, 6);
  EXPECT_NEAR(rms(x), 1.0, 1e-5);
  const auto s = psd(x);
  EXPECT_GT(power_fraction(s, p.low_hz / 2, 2 * p.high_hz), 0.95);
  // Tone k holds (1/k^2) / (1 + 1/4) of the tones' power, which is tone_db
  // relative to the broadband part: a fraction of the total that the PSD
  // shows within +-2 bins (the Hann main lobe), above the broadband floor.
  const double tones = std::pow(10.0, p.tone_db / 10);
  for (int k = 1; k <= p.tones; ++k) {
    const double expect = 1.0 / (k * k) / 1.25 * tones / (1 + tones);
    const double floor_per_bin = power_near(s, k * p.blade_hz + 100, 50) / (100 / bin_hz(1));
    const double measured = power_near(s, k * p.blade_hz, 2.01 * bin_hz(1)) - 5 * floor_per_bin;
    EXPECT_NEAR(measured / expect, 1.0, 0.1) << "tone " << k;
  }
  // The swell: short-time level varies much more than without modulation.
  auto level_spread = [&](double depth) {
    ssm::FanParams q = p;
    q.modulation_depth = depth;
    q.tones = 0;
    std::vector<float> y(8 * kRate);
    ssm::fan_noise(y.data(), y.size(), kRate, q, 7);
    std::vector<double> lv;
    for (size_t s0 = 0; s0 + 1600 <= y.size(); s0 += 1600) lv.push_back(ssm::mean_square(y.data() + s0, 1600));
    double m = 0, v = 0;
    for (double l : lv) m += l / lv.size();
    for (double l : lv) v += (l - m) * (l - m) / lv.size();
    return std::sqrt(v) / m;
  };
  EXPECT_GT(level_spread(0.5), 3 * level_spread(0.0));
  p.high_hz = 200;
  EXPECT_THROW(ssm::fan_noise(x.data(), x.size(), kRate, p, 6), ssm::Error);
}

TEST(Noise, BabbleOfOneTalkerIsAScaledSliceOfTheUtterance) {
  const auto u = ssm::testing::random_vector<float>(3 * kRate, 8, -0.5, 0.5);
  const std::vector<std::vector<float>> pool = {u};
  ssm::BabbleParams p;
  p.talkers = 1;
  p.gain_spread_db = 0;
  p.max_pause_s = 0;
  const size_t n = kRate;
  std::vector<float> x(n);
  ssm::babble_noise(x.data(), n, kRate, pool, p, 9);
  EXPECT_NEAR(rms(x), 1.0, 1e-5);
  // Find the offset by the first sample, then check every sample: the voice
  // enters mid-utterance and, with no pause, starts it again right after.
  bool found = false;
  for (size_t off = 0; off < u.size() && !found; ++off) {
    const double g = x[0] / u[off];
    bool all = true;
    for (size_t t = 0; t < n && all; ++t) all = std::abs(x[t] - g * u[(off + t) % u.size()]) < 1e-5;
    found = all;
  }
  EXPECT_TRUE(found);
}

TEST(Noise, BabbleUsesThePoolButNotTheExcludedUtterance) {
  // Three "talkers" that are pure tones; the 300 Hz one is excluded.
  std::vector<std::vector<float>> pool;
  for (double hz : {300.0, 700.0, 1300.0}) {
    std::vector<float> u(kRate / 2);
    for (size_t t = 0; t < u.size(); ++t) u[t] = float(std::sin(2 * kPi * hz * t / kRate));
    pool.push_back(std::move(u));
  }
  ssm::BabbleParams p;
  p.talkers = 6;
  std::vector<float> x(4 * kRate);
  ssm::babble_noise(x.data(), x.size(), kRate, pool, p, 10, /*exclude=*/0);
  const auto s = psd(x);
  EXPECT_LT(power_near(s, 300, 30), 1e-3);
  EXPECT_GT(power_near(s, 700, 30) + power_near(s, 1300, 30), 0.9);
  EXPECT_GT(power_near(s, 700, 30), 0.05);
  EXPECT_GT(power_near(s, 1300, 30), 0.05);
}

TEST(Noise, BabbleErrors) {
  std::vector<float> x(1000);
  ssm::BabbleParams p;
  EXPECT_THROW(ssm::babble_noise(x.data(), x.size(), kRate, {}, p, 1), ssm::Error);
  EXPECT_THROW(ssm::babble_noise(x.data(), x.size(), kRate, {{0.1f, 0.2f}}, p, 1, 0), ssm::Error);
  try {
    ssm::babble_noise(x.data(), x.size(), kRate, {{0.1f}, {}}, p, 1);
    FAIL() << "no error for an empty utterance";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("utterance 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ssm::random_noise(x.data(), x.size(), kRate, NoiseKind::Babble, 1), ssm::Error);
}

TEST(Biquad, PeakingHasItsGainAtTheCentreAndNoneFarAway) {
  for (double g : {-8.0, 6.0}) {
    const auto f = ssm::Biquad::peaking(1000, g, kRate, 1.0);
    EXPECT_NEAR(20 * std::log10(std::abs(f.response(1000, kRate))), g, 1e-9);
    EXPECT_NEAR(std::abs(f.response(0, kRate)), 1.0, 1e-12);
    EXPECT_NEAR(std::abs(f.response(kRate / 2.0, kRate)), 1.0, 1e-12);
    // A filtered sine at the centre settles at the gain.
    std::vector<float> x(kRate);
    for (int i = 0; i < kRate; ++i) x[i] = float(std::sin(2 * kPi * 1000 * i / kRate));
    f.apply(x.data(), x.size());
    const double amp = std::sqrt(2 * ssm::mean_square(x.data() + kRate / 2, kRate / 2));
    EXPECT_NEAR(20 * std::log10(amp), g, 0.02);
  }
  EXPECT_THROW(ssm::Biquad::peaking(1000, NAN, kRate, 1), ssm::Error);
  EXPECT_THROW(ssm::Biquad::peaking(1000, 3, kRate, 0), ssm::Error);
}

TEST(Room, ImpulseResponseHasTheDrawnRt60AndDirectToReverberantRatio) {
  for (double rt60 : {0.2, 0.8}) {
    for (double drr : {-3.0, 9.0}) {
      const size_t n = size_t(1.5 * rt60 * kRate), gap = 40;
      std::vector<float> h(n);
      ssm::room_impulse_response(h.data(), n, kRate, rt60, drr, gap, 5);
      EXPECT_EQ(h[0], 1.0f);
      for (size_t k = 1; k < gap; ++k) ASSERT_EQ(h[k], 0.0f);
      double tail = 0;
      for (size_t k = gap; k < n; ++k) tail += double(h[k]) * h[k];
      EXPECT_NEAR(10 * std::log10(1 / tail), drr, 1e-4);
      // Schroeder's backward integral of the tail falls 60 dB per RT60: fit
      // its slope between -5 and -25 dB (T20), as room acoustics does.
      std::vector<double> edc(n + 1, 0.0);  // (n + 1)
      for (size_t k = n; k-- > gap;) edc[k] = edc[k + 1] + double(h[k]) * h[k];
      double t5 = 0, t25 = 0;
      for (size_t k = gap; k < n; ++k) {
        const double level = 10 * std::log10(edc[k] / edc[gap]);
        if (t5 == 0 && level <= -5) t5 = double(k) / kRate;
        if (t25 == 0 && level <= -25) t25 = double(k) / kRate;
      }
      ASSERT_GT(t25, t5);
      EXPECT_NEAR(3 * (t25 - t5), rt60, 0.1 * rt60) << "rt60 " << rt60 << " drr " << drr;
    }
  }
  std::vector<float> h(8);
  EXPECT_THROW(ssm::room_impulse_response(h.data(), 8, kRate, 0, 0, 1, 1), ssm::Error);
  EXPECT_THROW(ssm::room_impulse_response(h.data(), 8, kRate, 0.3, 0, 0, 1), ssm::Error);
}
