#include "ssm/noise.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "ssm/fft.hpp"

namespace ssm {

namespace {

constexpr double kTwoPi = 2 * std::numbers::pi;

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double db_to_amplitude(double db) { return std::pow(10.0, db / 20); }

void check_rate(int rate, const char* who) {
  require(rate >= 1, std::string(who) + ": sample rate must be >= 1, got " + std::to_string(rate));
}

void check_below_nyquist(double hz, int rate, const std::string& field) {
  require(hz > 0 && hz < rate / 2.0, field + " must be in (0, " + std::to_string(rate / 2.0) + ") Hz at rate " +
                                         std::to_string(rate) + ", got " + std::to_string(hz));
}

// Writes a double signal out as float scaled to RMS 1.
void store_unit_rms(float* out,       // (n)
                    const double* x,  // (n)
                    size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += x[i] * x[i];
  const double g = s > 0 ? std::sqrt(n / s) : 1.0;
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(g * x[i]);
}

std::vector<double> gaussian(size_t n, NoiseRng& rng) {
  std::vector<double> w(n);  // (n)
  for (auto& v : w) v = rng.normal();
  return w;
}

// Direct form I from a zero state, in double whatever the buffer type.
template <typename Sample>
void filter_in_place(const Biquad& f, Sample* x,  // (n)
                     size_t n) {
  double x1 = 0, x2 = 0, y1 = 0, y2 = 0;
  for (size_t t = 0; t < n; ++t) {
    const double y = f.b0 * x[t] + f.b1 * x1 + f.b2 * x2 - f.a1 * y1 - f.a2 * y2;
    x2 = x1, x1 = x[t], y2 = y1, y1 = y;
    x[t] = static_cast<Sample>(y);
  }
}

// sum_h Im(coef[h-1] e^{i h phi}), h = 1..coef.size(): harmonics of one
// phase by powers of one complex exponential rather than a sine each. The
// products are written out: std::complex's operator* checks for inf/NaN and
// is several times slower.
double harmonic_sum(const std::vector<std::complex<double>>& coef,  // (H) amplitude e^{i phase}
                    double phi) {
  const double zr = std::cos(phi), zi = std::sin(phi);
  double hr = zr, hi = zi, acc = 0;  // e^{i h phi}
  for (const auto& c : coef) {
    acc += c.real() * hi + c.imag() * hr;
    const double r = hr * zr - hi * zi;
    hi = hr * zi + hi * zr;
    hr = r;
  }
  return acc;
}

}  // namespace

// ---------------------------------------------------------------- NoiseRng

NoiseRng::NoiseRng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

NoiseRng::NoiseRng(uint64_t seed, uint64_t index) {
  // Hash the seed first so that (seed, index) and (seed', index') collide
  // only by chance, not for seed ^ index == seed' ^ index'.
  uint64_t x = splitmix64(seed) ^ (index * 0xd1b54a32d192ed03ULL);
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t NoiseRng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double NoiseRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double NoiseRng::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

double NoiseRng::log_uniform(double lo, double hi) {
  require(lo > 0 && lo <= hi, "NoiseRng::log_uniform: need 0 < lo <= hi, got " + std::to_string(lo) + ", " +
                                  std::to_string(hi));
  return lo * std::exp(std::log(hi / lo) * uniform());
}

uint64_t NoiseRng::below(uint64_t n) {
  require(n >= 1, "NoiseRng::below: n must be >= 1");
  // Multiply-shift: bias below 2^-64 * n, no division.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
}

double NoiseRng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Marsaglia's polar method: two Gaussians per accepted point, no trigonometry.
  double u, v, r2;
  do {
    u = uniform(-1, 1);
    v = uniform(-1, 1);
    r2 = u * u + v * v;
  } while (r2 >= 1 || r2 == 0);
  const double f = std::sqrt(-2 * std::log(r2) / r2);
  spare_ = v * f;
  has_spare_ = true;
  return u * f;
}

const char* noise_kind_name(NoiseKind kind) {
  switch (kind) {
    case NoiseKind::White: return "white";
    case NoiseKind::Pink: return "pink";
    case NoiseKind::Brown: return "brown";
    case NoiseKind::Hum: return "hum";
    case NoiseKind::Fan: return "fan";
    case NoiseKind::Babble: return "babble";
  }
  return "unknown";
}

// ---------------------------------------------------------------- levels

double mean_square(const float* x, size_t n) {
  if (n == 0) return 0;
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return s / n;
}

double active_mean_square(const float* x, size_t n, int rate, double range_db) {
  check_rate(rate, "active_mean_square");
  require(range_db >= 0, "active_mean_square: range_db must be >= 0, got " + std::to_string(range_db));
  const size_t frame = std::max(1, rate / 50);  // 20 ms
  const size_t F = (n + frame - 1) / frame;
  std::vector<double> sum(F);  // (F) sum of squares per frame
  double loudest = 0;          // largest mean square of a frame
  for (size_t f = 0; f < F; ++f) {
    const size_t end = std::min(n, (f + 1) * frame);
    for (size_t i = f * frame; i < end; ++i) sum[f] += double(x[i]) * x[i];
    loudest = std::max(loudest, sum[f] / (end - f * frame));
  }
  if (loudest == 0) return 0;
  const double floor = loudest * std::pow(10.0, -range_db / 10);
  double s = 0;
  size_t count = 0;
  for (size_t f = 0; f < F; ++f) {
    const size_t len = std::min(n, (f + 1) * frame) - f * frame;
    if (sum[f] / len >= floor) s += sum[f], count += len;
  }
  return s / count;
}

double normalise_rms(float* x, size_t n, double rms) {
  const double ms = mean_square(x, n);
  if (ms == 0) return 1;
  const double g = rms / std::sqrt(ms);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(g * x[i]);
  return g;
}

// ---------------------------------------------------------------- filters

namespace {

Biquad normalised(double b0, double b1, double b2, double a0, double a1, double a2) {
  return {b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0};
}

}  // namespace

Biquad Biquad::lowpass(double hz, int rate, double q) {
  check_rate(rate, "Biquad::lowpass");
  check_below_nyquist(hz, rate, "Biquad::lowpass cutoff");
  require(q > 0, "Biquad::lowpass: q must be > 0, got " + std::to_string(q));
  const double w = kTwoPi * hz / rate, c = std::cos(w), alpha = std::sin(w) / (2 * q);
  return normalised((1 - c) / 2, 1 - c, (1 - c) / 2, 1 + alpha, -2 * c, 1 - alpha);
}

Biquad Biquad::highpass(double hz, int rate, double q) {
  check_rate(rate, "Biquad::highpass");
  check_below_nyquist(hz, rate, "Biquad::highpass cutoff");
  require(q > 0, "Biquad::highpass: q must be > 0, got " + std::to_string(q));
  const double w = kTwoPi * hz / rate, c = std::cos(w), alpha = std::sin(w) / (2 * q);
  return normalised((1 + c) / 2, -(1 + c), (1 + c) / 2, 1 + alpha, -2 * c, 1 - alpha);
}

Biquad Biquad::peaking(double hz, double gain_db, int rate, double q) {
  check_rate(rate, "Biquad::peaking");
  check_below_nyquist(hz, rate, "Biquad::peaking centre");
  require(q > 0, "Biquad::peaking: q must be > 0, got " + std::to_string(q));
  require(std::isfinite(gain_db), "Biquad::peaking: gain_db must be finite");
  const double a = std::pow(10.0, gain_db / 40), w = kTwoPi * hz / rate, c = std::cos(w),
               alpha = std::sin(w) / (2 * q);
  return normalised(1 + alpha * a, -2 * c, 1 - alpha * a, 1 + alpha / a, -2 * c, 1 - alpha / a);
}

std::complex<double> Biquad::response(double hz, int rate) const {
  const std::complex<double> z1 = std::polar(1.0, -kTwoPi * hz / rate);  // z^-1
  return (b0 + b1 * z1 + b2 * z1 * z1) / (1.0 + a1 * z1 + a2 * z1 * z1);
}

void Biquad::apply(float* x, size_t n) const { filter_in_place(*this, x, n); }

// ---------------------------------------------------------------- rooms

void room_impulse_response(float* h, size_t n, int rate, double rt60_s, double drr_db, size_t gap, uint64_t seed) {
  require(n >= 1, "room_impulse_response: n must be >= 1");
  check_rate(rate, "room_impulse_response");
  require(rt60_s > 0 && std::isfinite(rt60_s), "room_impulse_response: rt60_s must be > 0");
  require(gap >= 1, "room_impulse_response: gap must be >= 1");
  require(std::isfinite(drr_db), "room_impulse_response: drr_db must be finite");
  std::fill(h, h + n, 0.0f);
  h[0] = 1;
  if (n <= gap) return;
  NoiseRng rng(seed);
  const auto w = gaussian(n - gap, rng);  // (n - gap)
  const double decay = std::log(1000.0) / (rt60_s * rate);  // amplitude: -60 dB at rt60
  double tail = 0;
  std::vector<double> t(n - gap);  // (n - gap)
  for (size_t k = 0; k < t.size(); ++k) {
    t[k] = w[k] * std::exp(-decay * static_cast<double>(k));
    tail += t[k] * t[k];
  }
  if (!(tail > 0)) return;
  const double scale = std::sqrt(std::pow(10.0, -drr_db / 10) / tail);  // direct energy is 1
  for (size_t k = 0; k < t.size(); ++k) h[gap + k] = static_cast<float>(scale * t[k]);
}

// ---------------------------------------------------------------- generators

void white_noise(float* out, size_t n, uint64_t seed) {
  NoiseRng rng(seed);
  const auto w = gaussian(n, rng);  // (n)
  store_unit_rms(out, w.data(), n);
}

void pink_noise(float* out, size_t n, uint64_t seed) {
  if (n == 0) return;
  // Shape one FFT block of fast length m >= n and keep the first n samples.
  const int m = fft_next_fast_size(static_cast<int>(std::max<size_t>(n, 2)));
  NoiseRng rng(seed);
  auto w = gaussian(m, rng);  // (m)
  const RealFft<double> fft(m);
  std::vector<std::complex<double>> spec(fft.spectrum_size());  // (m/2 + 1)
  fft.forward(spec.data(), w.data());
  spec[0] = 0;  // no DC
  for (size_t k = 1; k < spec.size(); ++k) spec[k] /= std::sqrt(double(k));  // power 1/f
  fft.inverse_destroy(w.data(), spec.data());
  store_unit_rms(out, w.data(), n);
}

void brown_noise(float* out, size_t n, int rate, uint64_t seed, double corner_hz) {
  check_rate(rate, "brown_noise");
  check_below_nyquist(corner_hz, rate, "brown_noise corner_hz");
  const double a = std::exp(-kTwoPi * corner_hz / rate);
  NoiseRng rng(seed);
  std::vector<double> y(n);  // (n)
  double state = rng.normal() / std::sqrt(1 - a * a);  // stationary start: no fade-in
  for (size_t t = 0; t < n; ++t) y[t] = state = a * state + rng.normal();
  store_unit_rms(out, y.data(), n);
}

void hum_noise(float* out, size_t n, int rate, const HumParams& p, uint64_t seed) {
  check_rate(rate, "hum_noise");
  check_below_nyquist(p.fundamental_hz, rate, "HumParams.fundamental_hz");
  require(p.harmonics >= 1, "HumParams.harmonics must be >= 1, got " + std::to_string(p.harmonics));
  require(p.drift_hz >= 0 && p.drift_hz < p.fundamental_hz / 2,
          "HumParams.drift_hz must be in [0, fundamental_hz / 2), got " + std::to_string(p.drift_hz));
  require(p.drift_rate_hz >= 0, "HumParams.drift_rate_hz must be >= 0, got " + std::to_string(p.drift_rate_hz));
  NoiseRng rng(seed);
  const double drift_phase = rng.uniform(0, kTwoPi);
  std::vector<std::complex<double>> coef;  // (harmonics below Nyquist) amplitude e^{i phase}
  for (int h = 1; h <= p.harmonics; ++h) {
    const double db = -p.rolloff_db * (h - 1) + (h % 2 == 0 ? p.even_db : 0.0) + rng.uniform(-3, 3);
    const double phase = rng.uniform(0, kTwoPi);
    if (h * (p.fundamental_hz + p.drift_hz) < rate / 2.0) coef.push_back(std::polar(db_to_amplitude(db), phase));
  }
  std::vector<double> y(n, 0.0);  // (n)
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    // Phase of the fundamental: 2 pi times the integral of f(t).
    const double phi = p.drift_rate_hz > 0
                           ? kTwoPi * p.fundamental_hz * t -
                                 p.drift_hz / p.drift_rate_hz * std::cos(kTwoPi * p.drift_rate_hz * t + drift_phase)
                           : kTwoPi * (p.fundamental_hz + p.drift_hz * std::sin(drift_phase)) * t;
    y[i] = harmonic_sum(coef, phi);
  }
  store_unit_rms(out, y.data(), n);
}

void fan_noise(float* out, size_t n, int rate, const FanParams& p, uint64_t seed) {
  check_rate(rate, "fan_noise");
  check_below_nyquist(p.low_hz, rate, "FanParams.low_hz");
  check_below_nyquist(p.high_hz, rate, "FanParams.high_hz");
  require(p.low_hz < p.high_hz, "FanParams: low_hz (" + std::to_string(p.low_hz) + ") must be below high_hz (" +
                                    std::to_string(p.high_hz) + ")");
  require(p.modulation_depth >= 0 && p.modulation_depth <= 1,
          "FanParams.modulation_depth must be in [0, 1], got " + std::to_string(p.modulation_depth));
  require(p.modulation_hz >= 0, "FanParams.modulation_hz must be >= 0, got " + std::to_string(p.modulation_hz));
  require(p.tones >= 0, "FanParams.tones must be >= 0, got " + std::to_string(p.tones));
  if (p.tones > 0) check_below_nyquist(p.blade_hz, rate, "FanParams.blade_hz");
  NoiseRng rng(seed);
  // Run the filters through a lead-in first so the output starts settled.
  const size_t lead = static_cast<size_t>(8.0 * rate / p.low_hz) + 16;
  auto b = gaussian(lead + n, rng);  // (lead + n)
  filter_in_place(Biquad::highpass(p.low_hz, rate), b.data(), b.size());
  filter_in_place(Biquad::lowpass(p.high_hz, rate), b.data(), b.size());
  const double phi1 = rng.uniform(0, kTwoPi), phi2 = rng.uniform(0, kTwoPi);
  std::vector<double> y(n);  // (n)
  double broadband = 0;
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    const double swell = 0.7 * std::sin(kTwoPi * p.modulation_hz * t + phi1) +
                         0.3 * std::sin(kTwoPi * 2.3 * p.modulation_hz * t + phi2);
    y[i] = b[lead + i] * (1 + p.modulation_depth * swell);
    broadband += y[i] * y[i];
  }
  broadband /= std::max<size_t>(n, 1);
  // Tones k blade_hz with amplitude 1/k, then one gain for their total power.
  std::vector<std::complex<double>> tones;  // (tones below Nyquist) amplitude e^{i phase}
  double tone_power = 0;
  for (int k = 1; k <= p.tones; ++k) {
    const double phase = rng.uniform(0, kTwoPi);
    if (k * p.blade_hz >= rate / 2.0) continue;
    tones.push_back(std::polar(1.0 / k, phase));
    tone_power += 0.5 / (double(k) * k);
  }
  if (tone_power > 0 && broadband > 0) {
    const double g = std::sqrt(broadband * std::pow(10.0, p.tone_db / 10) / tone_power);
    for (auto& c : tones) c *= g;
    for (size_t i = 0; i < n; ++i) y[i] += harmonic_sum(tones, kTwoPi * p.blade_hz * i / rate);
  }
  store_unit_rms(out, y.data(), n);
}

void babble_noise(float* out, size_t n, int rate, const std::vector<std::vector<float>>& utterances,
                  const BabbleParams& p, uint64_t seed, size_t exclude) {
  check_rate(rate, "babble_noise");
  require(p.talkers >= 1, "BabbleParams.talkers must be >= 1, got " + std::to_string(p.talkers));
  require(p.gain_spread_db >= 0, "BabbleParams.gain_spread_db must be >= 0, got " + std::to_string(p.gain_spread_db));
  require(p.max_pause_s >= 0, "BabbleParams.max_pause_s must be >= 0, got " + std::to_string(p.max_pause_s));
  for (size_t i = 0; i < utterances.size(); ++i)
    require(!utterances[i].empty(), "babble_noise: utterance " + std::to_string(i) + " of the pool is empty");
  const size_t usable = utterances.size() - (exclude < utterances.size() ? 1 : 0);
  require(usable >= 1, "babble_noise: the pool has " + std::to_string(utterances.size()) +
                           " utterances and none other than the excluded one");
  NoiseRng rng(seed);
  auto pick = [&]() -> const std::vector<float>& {
    size_t i = rng.below(usable);
    if (exclude < utterances.size() && i >= exclude) ++i;  // skip over the excluded one
    return utterances[i];
  };
  const uint64_t max_pause = static_cast<uint64_t>(p.max_pause_s * rate);
  std::vector<double> y(n, 0.0);  // (n)
  for (int k = 0; k < p.talkers; ++k) {
    const double gain = db_to_amplitude(-rng.uniform(0, p.gain_spread_db));
    const auto* u = &pick();
    int64_t pos = -static_cast<int64_t>(rng.below(u->size()));  // enters mid-utterance
    while (pos < static_cast<int64_t>(n)) {
      const double level = active_mean_square(u->data(), u->size(), rate);
      const double g = level > 0 ? gain / std::sqrt(level) : 0.0;
      const int64_t len = static_cast<int64_t>(u->size());
      for (int64_t j = std::max<int64_t>(0, -pos); j < len && pos + j < static_cast<int64_t>(n); ++j)
        y[pos + j] += g * (*u)[j];
      pos += len + static_cast<int64_t>(rng.below(max_pause + 1));
      u = &pick();
    }
  }
  store_unit_rms(out, y.data(), n);
}

void random_noise(float* out, size_t n, int rate, NoiseKind kind, uint64_t seed,
                  const std::vector<std::vector<float>>& utterances, size_t exclude) {
  check_rate(rate, "random_noise");
  NoiseRng rng(seed);
  const double nyquist = rate / 2.0;
  switch (kind) {
    case NoiseKind::White: return white_noise(out, n, rng.next());
    case NoiseKind::Pink: return pink_noise(out, n, rng.next());
    case NoiseKind::Brown: {
      const double corner = std::min(rng.log_uniform(5, 50), 0.25 * nyquist);
      return brown_noise(out, n, rate, rng.next(), corner);
    }
    case NoiseKind::Hum: {
      HumParams p;
      p.fundamental_hz = rng.uniform() < 0.5 ? 50 : 60;
      p.harmonics = 2 + static_cast<int>(rng.below(15));
      p.drift_hz = rng.uniform(0, 0.1);
      p.drift_rate_hz = rng.uniform(0.02, 0.3);
      p.rolloff_db = rng.uniform(1, 6);
      p.even_db = rng.uniform(-12, 0);
      return hum_noise(out, n, rate, p, rng.next());
    }
    case NoiseKind::Fan: {
      FanParams p;
      p.low_hz = std::min(rng.log_uniform(60, 400), 0.2 * nyquist);
      p.high_hz = std::max(std::min(rng.log_uniform(800, 6000), 0.9 * nyquist), 2 * p.low_hz);
      p.modulation_hz = rng.uniform(0.1, 2);
      p.modulation_depth = rng.uniform(0, 0.4);
      p.blade_hz = std::min(rng.log_uniform(40, 400), 0.4 * nyquist);
      p.tones = static_cast<int>(rng.below(5));
      p.tone_db = rng.uniform(-20, 0);
      return fan_noise(out, n, rate, p, rng.next());
    }
    case NoiseKind::Babble: {
      BabbleParams p;
      p.talkers = 3 + static_cast<int>(rng.below(8));
      p.gain_spread_db = rng.uniform(0, 12);
      return babble_noise(out, n, rate, utterances, p, rng.next(), exclude);
    }
  }
  fail("random_noise: unknown noise kind " + std::to_string(static_cast<int>(kind)));
}

}  // namespace ssm
