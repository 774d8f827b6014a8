#include "ssm/mixer.hpp"

#include "ssm/fft.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

namespace ssm {

namespace {

void check_clips(const std::vector<std::vector<float>>& clips, const std::string& what) {
  for (size_t i = 0; i < clips.size(); ++i) {
    require(!clips[i].empty(), "Mixer: " + what + " clip " + std::to_string(i) + " is empty");
    for (size_t t = 0; t < clips[i].size(); ++t)
      require(std::isfinite(clips[i][t]), "Mixer: " + what + " clip " + std::to_string(i) +
                                              " has a non-finite sample at index " + std::to_string(t));
  }
}

void check_in(double v, double lo, double hi, const std::string& field) {
  require(v >= lo && v <= hi, "MixerConfig." + field + " must be in [" + std::to_string(lo) + ", " +
                                  std::to_string(hi) + "], got " + std::to_string(v));
}

void check_range(double lo, double hi, const std::string& lo_field, const std::string& hi_field) {
  require(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "MixerConfig." + lo_field + " (" + std::to_string(lo) +
                                                                  ") must be finite and <= " + hi_field + " (" +
                                                                  std::to_string(hi) + ")");
}

// Weights in NoiseSource order.
std::array<double, 7> source_weights(const MixerConfig& c) {
  return {c.weight_clip, c.weight_white, c.weight_pink, c.weight_brown, c.weight_hum, c.weight_fan, c.weight_babble};
}

// The kinds behind NoiseSource::White .. Babble, in that order.
constexpr NoiseKind kSynthesized[] = {NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown,
                                      NoiseKind::Hum,   NoiseKind::Fan,  NoiseKind::Babble};

// Applies a filter with probability `prob` to every signal given; returns its
// cutoff, 0 if not applied.
double maybe_filter(NoiseRng& rng, double prob, bool lowpass, double lo_hz, double hi_hz, int rate,
                    const std::vector<std::vector<float>*>& signals  // each (T), filtered alike
) {
  if (!(rng.uniform() < prob)) return 0;
  double hz = rng.log_uniform(lo_hz, hi_hz);
  if (lowpass) hz = std::min(hz, 0.45 * rate);
  const Biquad f = lowpass ? Biquad::lowpass(hz, rate) : Biquad::highpass(hz, rate);
  for (auto* x : signals) f.apply(x->data(), x->size());
  return hz;
}

// G.711 mu-law, 8 bits: compress, round to 256 levels, expand.
float mu_law_8bit(float x) {
  constexpr double mu = 255;
  const double c = std::clamp(static_cast<double>(x), -1.0, 1.0);
  const double y = std::copysign(std::log1p(mu * std::abs(c)) / std::log1p(mu), c);
  const double q = std::round(y * 127.5 - 0.5) + 0.5;  // mid-rise: 256 levels, none at 0
  const double yq = q / 127.5;
  return static_cast<float>(std::copysign(std::expm1(std::abs(yq) * std::log1p(mu)) / mu, yq));
}

// out[t] = the clip read at position start + t * r (zero outside it) through
// a Hann-windowed sinc of kSincTaps zero crossings a side, its cutoff at
// min(1, 1/r) of Nyquist so that a faster reading does not alias. The kernel
// is tabulated once per call at kSincSteps points per clip sample and read
// with linear interpolation (error ~1e-6 of its peak), so a sample costs its
// taps' multiply-adds and no transcendental function.
constexpr int kSincTaps = 16;
constexpr int kSincSteps = 512;

void read_at_speed(const std::vector<float>& clip, double start, double r,
                   float* out,  // (n)
                   size_t n) {
  const double fc = std::min(1.0, 1.0 / r);  // cutoff, fraction of Nyquist
  const double half = kSincTaps / fc;        // half-width of the kernel in clip samples
  std::vector<float> table(static_cast<size_t>(std::ceil(half * kSincSteps)) + 2);  // kernel at d = i / kSincSteps
  for (size_t i = 0; i < table.size(); ++i) {
    const double d = static_cast<double>(i) / kSincSteps;
    if (d >= half) break;  // zero from the window's end on
    const double arg = M_PI * fc * d;
    const double sinc = arg < 1e-12 ? 1.0 : std::sin(arg) / arg;
    table[i] = static_cast<float>(fc * sinc * (0.5 + 0.5 * std::cos(M_PI * d / half)));
  }
  const int64_t len = static_cast<int64_t>(clip.size());
  for (size_t t = 0; t < n; ++t) {
    const double x = start + static_cast<double>(t) * r;
    const int64_t k0 = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(x - half)));
    const int64_t k1 = std::min<int64_t>(len - 1, static_cast<int64_t>(std::floor(x + half)));
    double acc = 0;
    for (int64_t k = k0; k <= k1; ++k) {
      const double pos = std::abs(x - static_cast<double>(k)) * kSincSteps;
      const size_t i = static_cast<size_t>(pos);
      const double w = pos - static_cast<double>(i);
      acc += clip[static_cast<size_t>(k)] * ((1 - w) * table[i] + w * table[i + 1]);
    }
    out[t] = static_cast<float>(acc);
  }
}

}  // namespace

const char* noise_source_name(NoiseSource s) {
  switch (s) {
    case NoiseSource::Clip: return "clip";
    case NoiseSource::White: return "white";
    case NoiseSource::Pink: return "pink";
    case NoiseSource::Brown: return "brown";
    case NoiseSource::Hum: return "hum";
    case NoiseSource::Fan: return "fan";
    case NoiseSource::Babble: return "babble";
  }
  return "unknown";
}

Mixer::Mixer(std::vector<std::vector<float>> speech, std::vector<std::vector<float>> noise, MixerConfig config,
             int rate)
    : speech_(std::move(speech)), noise_(std::move(noise)), config_(config), rate_(rate) {
  const auto& c = config_;
  require(rate_ >= 1, "Mixer: sample rate must be >= 1, got " + std::to_string(rate_));
  require(!speech_.empty(), "Mixer: no speech clips (expected at least one)");
  check_clips(speech_, "speech");
  check_clips(noise_, "noise");

  const auto weights = source_weights(c);
  const char* names[] = {"weight_clip", "weight_white", "weight_pink", "weight_brown",
                         "weight_hum",  "weight_fan",   "weight_babble"};
  double total = 0;
  for (int i = 0; i < 7; ++i) {
    require(std::isfinite(weights[i]) && weights[i] >= 0,
            "MixerConfig." + std::string(names[i]) + " must be finite and >= 0, got " + std::to_string(weights[i]));
    total += weights[i];
  }
  require(total > 0, "MixerConfig: the noise source weights are all 0 (expected at least one > 0)");
  require(c.weight_clip == 0 || !noise_.empty(),
          "MixerConfig.weight_clip is > 0 but no noise clips were given (set it to 0 to use synthesized noise only)");
  require(c.weight_babble == 0 || speech_.size() >= 2,
          "MixerConfig.weight_babble is > 0 but babble needs at least 2 speech clips (it uses the ones not being "
          "mixed), got " + std::to_string(speech_.size()));

  check_in(c.noise_lowpass_prob, 0, 1, "noise_lowpass_prob");
  check_in(c.noise_highpass_prob, 0, 1, "noise_highpass_prob");
  check_in(c.channel_lowpass_prob, 0, 1, "channel_lowpass_prob");
  check_in(c.channel_highpass_prob, 0, 1, "channel_highpass_prob");
  check_range(c.snr_min_db, c.snr_max_db, "snr_min_db", "snr_max_db");
  check_range(c.speed_min, c.speed_max, "speed_min", "speed_max");
  require(c.speed_min >= 0.5 && c.speed_max <= 2, "MixerConfig.speed_min .. speed_max must lie in [0.5, 2], got " +
                                                      std::to_string(c.speed_min) + " .. " +
                                                      std::to_string(c.speed_max));
  check_range(c.level_min_dbfs, c.level_max_dbfs, "level_min_dbfs", "level_max_dbfs");
  require(c.level_max_dbfs <= 0, "MixerConfig.level_max_dbfs must be <= 0, got " + std::to_string(c.level_max_dbfs));
  require(c.max_peak > 0 && c.max_peak <= 1, "MixerConfig.max_peak must be in (0, 1], got " +
                                                  std::to_string(c.max_peak));
  check_range(c.lowpass_min_hz, c.lowpass_max_hz, "lowpass_min_hz", "lowpass_max_hz");
  require(c.lowpass_min_hz > 0, "MixerConfig.lowpass_min_hz must be > 0, got " + std::to_string(c.lowpass_min_hz));
  check_range(c.highpass_min_hz, c.highpass_max_hz, "highpass_min_hz", "highpass_max_hz");
  check_in(c.silence_prob, 0, 1, "silence_prob");
  check_in(c.noise_only_prob, 0, 1, "noise_only_prob");
  check_in(c.reverb_prob, 0, 1, "reverb_prob");
  check_in(c.eq_prob, 0, 1, "eq_prob");
  check_in(c.clipping_prob, 0, 1, "clipping_prob");
  check_in(c.codec_prob, 0, 1, "codec_prob");
  check_range(c.rt60_min_s, c.rt60_max_s, "rt60_min_s", "rt60_max_s");
  require(c.rt60_min_s > 0 && c.rt60_max_s <= 5, "MixerConfig.rt60_min_s .. rt60_max_s must lie in (0, 5] s, got " +
                                                     std::to_string(c.rt60_min_s) + " .. " +
                                                     std::to_string(c.rt60_max_s));
  check_range(c.drr_min_db, c.drr_max_db, "drr_min_db", "drr_max_db");
  check_range(c.join_pause_min_s, c.join_pause_max_s, "join_pause_min_s", "join_pause_max_s");
  require(c.join_pause_min_s >= 0 && c.join_pause_max_s <= 10,
          "MixerConfig.join_pause_min_s .. join_pause_max_s must lie in [0, 10] s, got " +
              std::to_string(c.join_pause_min_s) + " .. " + std::to_string(c.join_pause_max_s));
  check_in(c.early_ms, 0, 1000, "early_ms");
  check_in(c.eq_max_db, 0, 24, "eq_max_db");
  require(c.highpass_min_hz > 0 && c.highpass_max_hz < rate_ / 2.0,
          "MixerConfig.highpass_min_hz .. highpass_max_hz must lie in (0, " + std::to_string(rate_ / 2.0) +
              ") Hz at rate " + std::to_string(rate_) + ", got " + std::to_string(c.highpass_min_hz) + " .. " +
              std::to_string(c.highpass_max_hz));
}

MixInfo Mixer::example(float* noisy, float* clean, int T, uint64_t seed, uint64_t index) const {
  require(T >= 1, "Mixer::example: T must be >= 1, got " + std::to_string(T));
  require(noisy && clean, "Mixer::example: null output buffer (noisy or clean)");
  const auto& c = config_;
  const size_t n = static_cast<size_t>(T);
  NoiseRng rng(seed, index);
  NoiseRng aug(seed ^ 0xa5a5'5a5a'c3c3'3c3cULL, index);  // the augmentations' own stream
  MixInfo info;
  if (aug.uniform() < c.silence_prob) {  // a.
    std::fill(noisy, noisy + T, 0.0f);
    std::fill(clean, clean + T, 0.0f);
    info.silence = true;
    info.snr_db = -INFINITY;
    info.gain = 0;
    info.level_dbfs = -INFINITY;
    return info;
  }

  // 1. Speech segment.
  info.speech_clip = rng.below(speech_.size());
  std::vector<float> s(n, 0.0f);  // (T)
  const double r = c.speed_min < c.speed_max ? rng.log_uniform(c.speed_min, c.speed_max) : c.speed_min;
  info.speed = r;
  // join_clips: a clip shorter than its span continues with the clips after
  // it in the list, a pause between each; their own stream draws the pauses.
  std::vector<float> joined;  // (>= span) the clips joined, when they are
  const std::vector<float>* speech_src = &speech_[info.speech_clip];
  const double span_needed = static_cast<double>(n - 1) * r + 1;
  if (c.join_clips && static_cast<double>(speech_src->size()) < span_needed) {
    NoiseRng pauses(seed ^ 0x3c3c'c3c3'5a5a'a5a5ULL, index);
    joined = *speech_src;
    for (size_t k = 1; static_cast<double>(joined.size()) < span_needed && k <= 4 * speech_.size(); ++k) {
      joined.resize(joined.size() + static_cast<size_t>(pauses.uniform(c.join_pause_min_s, c.join_pause_max_s) * rate_),
                    0.0f);
      const auto& next = speech_[(info.speech_clip + k) % speech_.size()];
      joined.insert(joined.end(), next.begin(), next.end());
    }
    speech_src = &joined;
  }
  const auto& clip = *speech_src;
  if (r != 1) {
    // The clip span that plays for the T samples; its first output sample.
    const double span = static_cast<double>(n - 1) * r + 1;
    double start;
    if (static_cast<double>(clip.size()) >= span) {
      start = static_cast<double>(rng.below(static_cast<uint64_t>(static_cast<double>(clip.size()) - span) + 1));
    } else {
      const size_t plays = static_cast<size_t>(static_cast<double>(clip.size() - 1) / r) + 1;  // output samples
      start = -static_cast<double>(rng.below(n - std::min(plays, n) + 1)) * r;
    }
    info.speech_start = static_cast<int64_t>(std::floor(start));
    read_at_speed(clip, start, r, s.data(), n);
  } else if (clip.size() >= n) {
    info.speech_start = static_cast<int64_t>(rng.below(clip.size() - n + 1));
    std::copy_n(clip.begin() + info.speech_start, n, s.begin());
  } else {
    const size_t pad = rng.below(n - clip.size() + 1);
    info.speech_start = -static_cast<int64_t>(pad);
    std::copy(clip.begin(), clip.end(), s.begin() + pad);
  }

  // b. No speech; c. a room.
  if (aug.uniform() < c.noise_only_prob) {
    std::fill(s.begin(), s.end(), 0.0f);
    info.noise_only = true;
  }
  std::vector<float> target;  // (T) the clean output before the gain; s itself unless a room applies
  if (aug.uniform() < c.reverb_prob) {
    info.rt60_s = aug.log_uniform(c.rt60_min_s, c.rt60_max_s);
    const double drr = aug.uniform(c.drr_min_db, c.drr_max_db);
    const size_t gap = 1 + aug.below(static_cast<uint64_t>(std::max(1.0, 0.005 * rate_)));  // first reflection
    std::vector<float> h(n), dry = s;  // (T) the response, zero past its end; the dry speech
    room_impulse_response(h.data(), std::min(n, static_cast<size_t>(std::ceil(1.2 * info.rt60_s * rate_))), rate_,
                          info.rt60_s, drr, gap, aug.next());
    causal_fft_conv_forward<float>(s.data(), dry.data(), h.data(), T);
    std::fill(h.begin() + std::min(n, static_cast<size_t>(std::lround(c.early_ms * 1e-3 * rate_)) + 1), h.end(), 0.0f);
    target.resize(n);
    causal_fft_conv_forward<float>(target.data(), dry.data(), h.data(), T);
  }

  // 2. Noise.
  const auto weights = source_weights(c);
  double total = 0;
  for (double w : weights) total += w;
  double u = rng.uniform() * total;
  int source = 0;
  for (int i = 0; i < 7; ++i) {
    if (weights[i] == 0) continue;
    source = i;  // rounding past the top lands on the last positive weight
    if (u < weights[i]) break;
    u -= weights[i];
  }
  info.noise = static_cast<NoiseSource>(source);
  std::vector<float> v(n);  // (T)
  if (info.noise == NoiseSource::Clip) {
    info.noise_clip = rng.below(noise_.size());
    const auto& nc = noise_[info.noise_clip];
    const size_t start = rng.below(nc.size());
    for (size_t t = 0; t < n; ++t) v[t] = nc[(start + t) % nc.size()];  // looped when short
  } else {
    random_noise(v.data(), n, rate_, kSynthesized[source - 1], rng.next(), speech_, info.speech_clip);
  }
  if (mean_square(v.data(), n) == 0) {  // digital silence cannot be set to an SNR
    info.noise = NoiseSource::White;
    white_noise(v.data(), n, rng.next());
  }

  // 3. Noise colouring; 4. channel colouring (speech too).
  const double nyq_safe = 0.45 * rate_;
  const double lp_lo = std::min(c.lowpass_min_hz, nyq_safe), lp_hi = std::min(c.lowpass_max_hz, nyq_safe);
  const bool room = !target.empty();
  std::vector<std::vector<float>*> channel{&s, &v};  // what a microphone colours
  if (room) channel.push_back(&target);
  info.noise_lowpass_hz = maybe_filter(rng, c.noise_lowpass_prob, true, lp_lo, lp_hi, rate_, {&v});
  info.noise_highpass_hz =
      maybe_filter(rng, c.noise_highpass_prob, false, c.highpass_min_hz, c.highpass_max_hz, rate_, {&v});
  info.channel_lowpass_hz = maybe_filter(rng, c.channel_lowpass_prob, true, lp_lo, lp_hi, rate_, channel);
  info.channel_highpass_hz =
      maybe_filter(rng, c.channel_highpass_prob, false, c.highpass_min_hz, c.highpass_max_hz, rate_, channel);
  // d. Device colouring.
  if (aug.uniform() < c.eq_prob) {
    info.eq_bands = 1 + static_cast<int>(aug.below(3));
    for (int b = 0; b < info.eq_bands; ++b) {
      const double hz = aug.log_uniform(100, 0.4 * rate_), gain_db = aug.uniform(-c.eq_max_db, c.eq_max_db),
                   q = aug.log_uniform(0.5, 2);
      const Biquad f = Biquad::peaking(hz, gain_db, rate_, q);
      for (auto* x : channel) f.apply(x->data(), n);
    }
  }
  const std::vector<float>& tgt = room ? target : s;  // (T)

  // 5. SNR on the active speech.
  const double snr = rng.uniform(c.snr_min_db, c.snr_max_db);
  const double ps = active_mean_square(s.data(), n, rate_), pn = mean_square(v.data(), n);
  double g_noise = 1;
  if (ps > 0 && pn > 0) {
    g_noise = std::sqrt(ps / (pn * std::pow(10.0, snr / 10)));
    info.snr_db = snr;
  } else {
    info.snr_db = -INFINITY;
  }

  // 6. Level, limited by the peaks of both outputs.
  const double level = rng.uniform(c.level_min_dbfs, c.level_max_dbfs);
  std::vector<double> m(n);  // (T)
  double sum2 = 0, peak = 0;
  for (size_t t = 0; t < n; ++t) {
    m[t] = s[t] + g_noise * v[t];
    sum2 += m[t] * m[t];
    peak = std::max({peak, std::abs(m[t]), std::abs(double(tgt[t]))});
  }
  const double rms = std::sqrt(sum2 / n);
  double gain = rms > 0 ? std::pow(10.0, level / 20) / rms : 1.0;
  if (gain * peak > c.max_peak) gain = c.max_peak / peak;
  for (size_t t = 0; t < n; ++t) {
    noisy[t] = static_cast<float>(gain * m[t]);
    clean[t] = static_cast<float>(gain * tgt[t]);
  }
  info.gain = gain;
  info.level_dbfs = rms > 0 ? 20 * std::log10(gain * rms) : -INFINITY;

  // e. Clipping; f. a codec (the input only: the model is to undo both).
  if (aug.uniform() < c.clipping_prob) {
    info.clipped_db = aug.uniform(1, 12);
    float top = 0;
    for (size_t t = 0; t < n; ++t) top = std::max(top, std::abs(noisy[t]));
    const float limit = static_cast<float>(top * std::pow(10.0, -info.clipped_db / 20));
    for (size_t t = 0; t < n; ++t) noisy[t] = std::clamp(noisy[t], -limit, limit);
  }
  if (aug.uniform() < c.codec_prob) {
    info.codec = true;
    for (size_t t = 0; t < n; ++t) noisy[t] = mu_law_8bit(noisy[t]);
  }
  return info;
}

}  // namespace ssm
