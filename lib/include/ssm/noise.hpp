// Noise synthesis for training the denoiser on mixed examples (ssm/mixer.hpp):
// white, pink, brown, mains hum, fan-like and babble noise, each a pure
// function of its seed; the level measures and filters the mixer shares.
//
// Every generator writes n samples scaled to RMS 1 (the mixer sets the level
// afterwards); a generator whose output is all zero leaves it zero.
#pragma once
#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ssm/common.hpp"

namespace ssm {

// Portable random numbers: xoshiro256** seeded through splitmix64. Unlike
// the std:: distributions, a seed gives the same integers with every
// compiler and standard library (the Gaussians up to the maths library's
// rounding of log), so noise and training examples are reproducible.
class NoiseRng {
 public:
  explicit NoiseRng(uint64_t seed);
  // An independent stream for each (seed, index), e.g. one per example.
  NoiseRng(uint64_t seed, uint64_t index);

  uint64_t next();
  double uniform();                       // [0, 1)
  double uniform(double lo, double hi);   // [lo, hi)
  double log_uniform(double lo, double hi);  // log-uniform in [lo, hi), 0 < lo <= hi
  uint64_t below(uint64_t n);             // [0, n); n >= 1
  double normal();                        // standard Gaussian (Box-Muller)

 private:
  uint64_t s_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

enum class NoiseKind { White, Pink, Brown, Hum, Fan, Babble };

const char* noise_kind_name(NoiseKind kind);  // "white", "pink", ...

// ---------------------------------------------------------------- levels

// sum(x^2) / n in double; 0 for n == 0.
double mean_square(const float* x,  // (n)
                   size_t n);

// Mean square over the active frames of a speech signal: 20 ms frames (the
// last may be short) whose mean square is within range_db of the loudest
// frame's. Speech level for SNRs, so pauses and padding don't count.
// 0 when x is all zero.
double active_mean_square(const float* x,  // (n)
                          size_t n, int rate, double range_db = 40);

// Scales x to RMS `rms`; returns the gain (1 when x is all zero: left as is).
double normalise_rms(float* x,  // (n)
                     size_t n, double rms = 1);

// ---------------------------------------------------------------- filters

// Second-order section (Bristow-Johnson's audio EQ cookbook), direct form I:
//   y[t] = b0 x[t] + b1 x[t-1] + b2 x[t-2] - a1 y[t-1] - a2 y[t-2]
// q = 1/sqrt(2) gives the Butterworth response, -3 dB at the cutoff.
struct Biquad {
  double b0 = 1, b1 = 0, b2 = 0, a1 = 0, a2 = 0;

  // Throw ssm::Error unless 0 < hz < rate / 2 and q > 0.
  static Biquad lowpass(double hz, int rate, double q = 0.7071067811865476);
  static Biquad highpass(double hz, int rate, double q = 0.7071067811865476);
  // A bell: gain_db at hz, 0 dB far from it (a microphone's or a codec's
  // colouring). Also throws unless gain_db is finite.
  static Biquad peaking(double hz, double gain_db, int rate, double q);

  // Frequency response H(e^{i 2 pi hz / rate}).
  std::complex<double> response(double hz, int rate) const;

  // Filters x in place from a zero state.
  void apply(float* x,  // (n)
             size_t n) const;
};

// ---------------------------------------------------------------- rooms

// A synthetic room impulse response of n taps: the direct path (tap 0, value
// 1) and, from `gap` taps on, Gaussian noise under an exponential envelope
// that falls 60 dB in rt60_s seconds, scaled so that the direct-to-reverberant
// energy ratio is drr_db. Throws ssm::Error unless n >= 1, rt60_s > 0,
// 1 <= gap, and drr_db is finite.
void room_impulse_response(float* h,  // (n)
                           size_t n, int rate, double rt60_s, double drr_db, size_t gap, uint64_t seed);

// ---------------------------------------------------------------- generators

// Gaussian white noise.
void white_noise(float* out,  // (n)
                 size_t n, uint64_t seed);

// Pink noise: power spectral density proportional to 1/f (-10 dB/decade),
// by shaping the spectrum of white Gaussian noise with 1/sqrt(f) (no DC).
void pink_noise(float* out,  // (n)
                size_t n, uint64_t seed);

// Brown noise: white noise through a leaky integrator
//   y[t] = a y[t-1] + w[t],  a = exp(-2 pi corner_hz / rate),
// started from its stationary distribution: density proportional to 1/f^2
// (-20 dB/decade) above corner_hz, flat below (no drift to DC).
// Throws ssm::Error unless 0 < corner_hz < rate / 2.
void brown_noise(float* out,  // (n)
                 size_t n, int rate, uint64_t seed, double corner_hz = 10);

// Mains hum: a fundamental and its harmonics whose frequency wanders slowly,
//   f(t) = fundamental_hz + drift_hz sin(2 pi drift_rate_hz t + phi).
// Harmonic h has level -rolloff_db (h - 1), plus even_db when h is even,
// plus a seeded jitter of up to +-3 dB; phases are seeded. Harmonics whose
// highest frequency reaches rate / 2 are left out.
struct HumParams {
  double fundamental_hz = 50;  // mains: 50 or 60
  int harmonics = 10;          // including the fundamental
  double drift_hz = 0.05;      // peak deviation of the fundamental
  double drift_rate_hz = 0.1;  // how fast it wanders
  double rolloff_db = 3;       // level drop per harmonic
  double even_db = -6;         // even harmonics relative to odd (buzz is odd-heavy)
};

// Throws ssm::Error naming the field unless 0 < fundamental_hz < rate / 2,
// harmonics >= 1, 0 <= drift_hz < fundamental_hz / 2, drift_rate_hz >= 0.
void hum_noise(float* out,  // (n)
               size_t n, int rate, const HumParams& p, uint64_t seed);

// Fan-like noise: white noise band-passed by a second-order high-pass at
// low_hz and low-pass at high_hz, its level swelling slowly as
//   1 + depth (0.7 sin(2 pi f_m t + phi1) + 0.3 sin(2 pi 2.3 f_m t + phi2)),
// plus blade-pass tones at k blade_hz (k = 1..tones, amplitude 1/k) whose
// total power is tone_db relative to the broadband part.
struct FanParams {
  double low_hz = 150, high_hz = 3000;  // -3 dB points of the broadband part
  double modulation_hz = 0.7;           // f_m, the slow swell
  double modulation_depth = 0.2;        // 0..1
  double blade_hz = 110;                // blade-pass frequency
  int tones = 3;                        // 0: no tones
  double tone_db = -10;                 // tones' power relative to the broadband part
};

// Throws ssm::Error naming the field unless 0 < low_hz < high_hz < rate / 2,
// 0 <= modulation_depth <= 1, modulation_hz >= 0, tones >= 0 and (when
// tones > 0) 0 < blade_hz < rate / 2. Tones at or above rate / 2 are left out.
void fan_noise(float* out,  // (n)
               size_t n, int rate, const FanParams& p, uint64_t seed);

// Babble: `talkers` voices, each a stream of utterances drawn from the pool
// (every one scaled to unit active RMS), back to back with pauses uniform in
// [0, max_pause_s], entering mid-utterance at a random point; voice levels
// uniform in [-gain_spread_db, 0] dB.
struct BabbleParams {
  int talkers = 6;
  double gain_spread_db = 10;
  double max_pause_s = 0.3;
};

// `exclude` is a pool index never used (the utterance the babble is mixed
// with), or kNoExclude. Throws ssm::Error unless talkers >= 1,
// gain_spread_db >= 0, max_pause_s >= 0, and the pool has an entry other
// than `exclude`; names the pool index of an empty utterance.
inline constexpr size_t kNoExclude = SIZE_MAX;
void babble_noise(float* out,  // (n)
                  size_t n, int rate,
                  const std::vector<std::vector<float>>& utterances,  // pool, each (len_i) at `rate`
                  const BabbleParams& p, uint64_t seed, size_t exclude = kNoExclude);

// Draws the parameters of `kind` from the seed — mains 50 or 60 Hz and its
// harmonics, the fan's band, swell and tones, the brown corner, the number
// and levels of talkers — and synthesizes it. `utterances` and `exclude`
// are used by Babble only.
void random_noise(float* out,  // (n)
                  size_t n, int rate, NoiseKind kind, uint64_t seed,
                  const std::vector<std::vector<float>>& utterances = {}, size_t exclude = kNoExclude);

}  // namespace ssm
