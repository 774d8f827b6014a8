#include "ssm/stoi.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <complex>
#include <numbers>
#include <string>
#include <vector>

#include "ssm/audio_file.hpp"
#include "ssm/fft.hpp"

namespace ssm {

namespace {

constexpr int kRate = 10000;         // the rate the measure is defined at
constexpr int kFrame = 256;          // samples per frame
constexpr int kHop = kFrame / 2;     // 50% overlap
constexpr int kFft = 512;            // frames are zero-padded to this
constexpr int kBins = kFft / 2 + 1;  // one-sided spectrum
constexpr int kBands = 15;           // one-third octave bands
constexpr double kMinHz = 150;       // centre of the lowest band
constexpr int kSegment = 30;         // frames per segment (384 ms)
constexpr double kBetaDb = -15;      // lower signal-to-distortion bound of the clipping
constexpr double kRangeDb = 40;      // frames this far below the loudest are silent
// numpy's float64 eps: pystoi adds it in the same places, which keeps the
// scores equal to the last digits.
constexpr double kEps = 2.220446049250313e-16;

// MATLAB's hanning(256): the symmetric Hann window of 258 points without its
// two zero end points.
const std::array<double, kFrame>& window() {
  static const std::array<double, kFrame> w = [] {
    std::array<double, kFrame> a{};
    for (int j = 0; j < kFrame; ++j) a[j] = 0.5 - 0.5 * std::cos(2 * std::numbers::pi * (j + 1) / (kFrame + 1));
    return a;
  }();
  return w;
}

// Bin ranges [first, end) of the one-third octave bands: each band edge
// snaps to the nearest FFT bin (the lower bin on a tie), as in the reference.
struct Band {
  int first, end;
};

const std::array<Band, kBands>& bands() {
  static const std::array<Band, kBands> table = [] {
    auto nearest_bin = [](double hz) {
      int best = 0;
      double best_d = INFINITY;
      for (int k = 0; k < kBins; ++k) {
        const double d = (k * double(kRate) / kFft - hz) * (k * double(kRate) / kFft - hz);
        if (d < best_d) best = k, best_d = d;
      }
      return best;
    };
    std::array<Band, kBands> t{};
    for (int b = 0; b < kBands; ++b)
      t[b] = {nearest_bin(kMinHz * std::pow(2.0, (2 * b - 1) / 6.0)),
              nearest_bin(kMinHz * std::pow(2.0, (2 * b + 1) / 6.0))};
    return t;
  }();
  return table;
}

// Frames start every kHop samples at s with s + kFrame < n (the reference
// never uses the frame that ends exactly at the last sample).
size_t frame_count(size_t n) { return n > size_t(kFrame) ? (n - kFrame + kHop - 1) / kHop : 0; }

std::vector<double> at_10k(const float* x, size_t n, int rate) {
  if (rate == kRate) return std::vector<double>(x, x + n);
  const auto r = resample(x, n, rate, kRate);
  return std::vector<double>(r.begin(), r.end());
}

// Drops the frames whose clean energy is more than kRangeDb below the loudest
// clean frame, from both signals, and overlap-adds the windowed frames left.
void remove_silent_frames(std::vector<double>& x,  // (n) -> ((kept - 1) * kHop + kFrame)
                          std::vector<double>& y   // (n) -> same
) {
  const auto& w = window();
  const size_t F = frame_count(x.size());
  require(F >= 1, "stoi: the signal is " + std::to_string(x.size()) + " samples at 10 kHz; need more than " +
                      std::to_string(kFrame));
  std::vector<double> energy_db(F);  // (F)
  for (size_t f = 0; f < F; ++f) {
    double e = 0;
    for (int j = 0; j < kFrame; ++j) {
      const double v = w[j] * x[f * kHop + j];
      e += v * v;
    }
    energy_db[f] = 20 * std::log10(std::sqrt(e) + kEps);
  }
  const double floor_db = *std::max_element(energy_db.begin(), energy_db.end()) - kRangeDb;
  std::vector<size_t> kept;  // (K) frame indices
  for (size_t f = 0; f < F; ++f)
    if (energy_db[f] > floor_db) kept.push_back(f);
  // The loudest frame always passes, so K >= 1.
  const size_t len = (kept.size() - 1) * kHop + kFrame;
  std::vector<double> xs(len, 0.0), ys(len, 0.0);  // (len)
  for (size_t k = 0; k < kept.size(); ++k)
    for (int j = 0; j < kFrame; ++j) {
      xs[k * kHop + j] += w[j] * x[kept[k] * kHop + j];
      ys[k * kHop + j] += w[j] * y[kept[k] * kHop + j];
    }
  x = std::move(xs);
  y = std::move(ys);
}

// One-third octave band envelopes of every STFT frame.
std::vector<double> band_envelopes(const std::vector<double>& x,  // (n)
                                   size_t M                        // frames
) {                                                                // -> (M, kBands)
  static const RealFft<double> fft(kFft);
  const auto& w = window();
  const auto& bt = bands();
  std::vector<double> frame(kFft, 0.0);              // (kFft) zero-padded
  std::vector<std::complex<double>> spectrum(kBins);  // (kBins)
  std::vector<double> env(M * kBands);                // (M, kBands)
  for (size_t m = 0; m < M; ++m) {
    for (int j = 0; j < kFrame; ++j) frame[j] = w[j] * x[m * kHop + j];
    fft.forward(spectrum.data(), frame.data());
    for (int b = 0; b < kBands; ++b) {
      double p = 0;
      for (int k = bt[b].first; k < bt[b].end; ++k) p += std::norm(spectrum[k]);
      env[m * kBands + b] = std::sqrt(p);
    }
  }
  return env;
}

double norm(const double* v, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += v[i] * v[i];
  return std::sqrt(s);
}

void subtract_mean(double* v, int n) {
  double m = 0;
  for (int i = 0; i < n; ++i) m += v[i];
  m /= n;
  for (int i = 0; i < n; ++i) v[i] -= m;
}

// Correlation of one band over one segment (STOI's d_{j,m}).
double clipped_correlation(double* x,  // (kSegment) clean envelope, overwritten
                           double* y   // (kSegment) processed envelope, overwritten
) {
  const double scale = norm(x, kSegment) / (norm(y, kSegment) + kEps);
  const double clip = 1 + std::pow(10.0, -kBetaDb / 20);
  for (int j = 0; j < kSegment; ++j) y[j] = std::min(y[j] * scale, x[j] * clip);
  subtract_mean(x, kSegment);
  subtract_mean(y, kSegment);
  const double nx = norm(x, kSegment) + kEps, ny = norm(y, kSegment) + kEps;
  double d = 0;
  for (int j = 0; j < kSegment; ++j) d += (x[j] / nx) * (y[j] / ny);
  return d;
}

// ESTOI's row-then-column normalisation of one segment; a constant row or
// column becomes zeros.
void row_column_normalise(double* s  // (kBands, kSegment)
) {
  for (int b = 0; b < kBands; ++b) {
    double* row = s + b * kSegment;
    subtract_mean(row, kSegment);
    const double n = norm(row, kSegment);
    for (int j = 0; j < kSegment; ++j) row[j] = n > 0 ? row[j] / n : 0.0;
  }
  for (int j = 0; j < kSegment; ++j) {
    double col[kBands];  // (kBands)
    for (int b = 0; b < kBands; ++b) col[b] = s[b * kSegment + j];
    subtract_mean(col, kBands);
    const double n = norm(col, kBands);
    for (int b = 0; b < kBands; ++b) s[b * kSegment + j] = n > 0 ? col[b] / n : 0.0;
  }
}

double intelligibility(const float* clean, const float* processed, size_t n, int rate, bool extended) {
  const char* name = extended ? "estoi" : "stoi";
  require(clean && processed, std::string(name) + ": null signal (clean or processed)");
  require(n >= 1, std::string(name) + ": empty signals (n = 0)");
  require(rate >= 1, std::string(name) + ": sample rate must be >= 1, got " + std::to_string(rate));
  for (size_t i = 0; i < n; ++i)
    require(std::isfinite(clean[i]) && std::isfinite(processed[i]),
            std::string(name) + ": non-finite sample at index " + std::to_string(i) + " of the " +
                (std::isfinite(clean[i]) ? "processed" : "clean") + " signal");

  auto x = at_10k(clean, n, rate);      // (n10)
  auto y = at_10k(processed, n, rate);  // (n10)
  remove_silent_frames(x, y);
  const size_t M = frame_count(x.size());
  require(M >= size_t(kSegment), std::string(name) + ": only " + std::to_string(M) +
                                     " STFT frames of speech remain after dropping silent frames; need at least " +
                                     std::to_string(kSegment) + " (about 0.4 s)");
  const auto X = band_envelopes(x, M);  // (M, kBands)
  const auto Y = band_envelopes(y, M);  // (M, kBands)

  const size_t J = M - kSegment + 1;  // segments, one ending at every frame from the 30th
  double sum = 0;
  std::vector<double> xs(kBands * kSegment), ys(kBands * kSegment);  // (kBands, kSegment)
  for (size_t s = 0; s < J; ++s) {
    for (int b = 0; b < kBands; ++b)
      for (int j = 0; j < kSegment; ++j) {
        xs[b * kSegment + j] = X[(s + j) * kBands + b];
        ys[b * kSegment + j] = Y[(s + j) * kBands + b];
      }
    if (extended) {
      row_column_normalise(xs.data());
      row_column_normalise(ys.data());
      double d = 0;
      for (int i = 0; i < kBands * kSegment; ++i) d += xs[i] * ys[i];
      sum += d / kSegment;
    } else {
      for (int b = 0; b < kBands; ++b) sum += clipped_correlation(&xs[b * kSegment], &ys[b * kSegment]);
    }
  }
  return extended ? sum / J : sum / (double(J) * kBands);
}

}  // namespace

double stoi(const float* clean, const float* processed, size_t n, int rate) {
  return intelligibility(clean, processed, n, rate, false);
}

double estoi(const float* clean, const float* processed, size_t n, int rate) {
  return intelligibility(clean, processed, n, rate, true);
}

}  // namespace ssm
