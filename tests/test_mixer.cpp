// Mixer: the SNR measured on the returned pair equals the drawn one, levels
// and peaks stay in bounds, clean is the speech segment times the reported
// gain, examples are a pure function of (seed, index) across threads, and
// bad inputs give errors that name what is wrong.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ssm/mixer.hpp"
#include "testing.hpp"

namespace {

constexpr double kPi = std::numbers::pi;
constexpr int kRate = 16000;
constexpr int kT = kRate;  // 1 s examples

// A "talker": tone bursts of 200 ms with 100 ms pauses, pitch set by `i`.
std::vector<float> talker(int i, size_t n) {
  std::vector<float> x(n);  // (n)
  for (size_t t = 0; t < n; ++t) {
    const double in_cycle = std::fmod(double(t) / kRate, 0.3);
    const double env = in_cycle < 0.2 ? std::sin(kPi * in_cycle / 0.2) : 0.0;
    x[t] = float(0.3 * env * (std::sin(2 * kPi * (150 + 40 * i) * t / kRate) +
                              0.5 * std::sin(2 * kPi * (900 + 130 * i) * t / kRate)));
  }
  return x;
}

std::vector<std::vector<float>> speech_clips() {
  // Lengths around T, one much shorter (padded) and one long.
  return {talker(0, 3 * kRate), talker(1, kRate / 3), talker(2, kT), talker(3, 2 * kRate + 123)};
}

std::vector<std::vector<float>> noise_clips() {
  auto hiss = ssm::testing::random_vector<float>(2 * kRate, 11, -0.2, 0.2);
  std::vector<float> drone(kRate / 4);  // shorter than T: looped
  for (size_t t = 0; t < drone.size(); ++t) drone[t] = float(0.05 * std::sin(2 * kPi * 100 * t / kRate));
  return {hiss, drone};
}

ssm::Mixer default_mixer(ssm::MixerConfig c = {}) { return ssm::Mixer(speech_clips(), noise_clips(), c, kRate); }

double db(double power) { return 10 * std::log10(power); }

struct Example {
  std::vector<float> noisy = std::vector<float>(kT), clean = std::vector<float>(kT);
  ssm::MixInfo info;
};

Example make(const ssm::Mixer& m, uint64_t seed, uint64_t index) {
  Example e;
  e.info = m.example(e.noisy.data(), e.clean.data(), kT, seed, index);
  return e;
}

}  // namespace

TEST(Mixer, AchievedSnrEqualsDrawnSnr) {
  const auto m = default_mixer();
  std::set<ssm::NoiseSource> seen;
  int noise_only = 0;
  for (uint64_t i = 0; i < 300; ++i) {
    const auto e = make(m, 1, i);
    seen.insert(e.info.noise);
    std::vector<float> noise(kT);  // (T)
    for (int t = 0; t < kT; ++t) noise[t] = e.noisy[t] - e.clean[t];
    const double speech = ssm::active_mean_square(e.clean.data(), kT, kRate);
    if (speech == 0) {  // the segment fell in a pause longer than T: noise only
      EXPECT_TRUE(std::isinf(e.info.snr_db) && e.info.snr_db < 0) << i;
      ++noise_only;
      continue;
    }
    const double achieved = db(speech / ssm::mean_square(noise.data(), kT));
    EXPECT_NEAR(achieved, e.info.snr_db, 0.1) << "example " << i << ", noise " << ssm::noise_source_name(e.info.noise);
    EXPECT_GE(e.info.snr_db, -5.0);
    EXPECT_LT(e.info.snr_db, 20.0);
  }
  EXPECT_EQ(noise_only, 0);  // pauses here are shorter than T
  EXPECT_EQ(seen.size(), 7u) << "every noise source is drawn in 300 examples";
}

TEST(Mixer, LevelsAndPeaksStayInBounds) {
  const auto m = default_mixer();
  for (uint64_t i = 0; i < 100; ++i) {
    const auto e = make(m, 2, i);
    const double level = db(ssm::mean_square(e.noisy.data(), kT));
    EXPECT_NEAR(level, e.info.level_dbfs, 1e-3) << i;
    EXPECT_LE(level, -5 + 1e-6) << i;
    for (int t = 0; t < kT; ++t) {
      ASSERT_LE(std::abs(e.noisy[t]), 0.99f) << i;
      ASSERT_LE(std::abs(e.clean[t]), 0.99f) << i;
    }
    // Below the peak limit the level is the drawn one, inside the range.
    bool limited = false;
    for (int t = 0; t < kT; ++t) limited |= std::abs(e.noisy[t]) > 0.989f || std::abs(e.clean[t]) > 0.989f;
    if (!limited) EXPECT_GE(level, -25 - 1e-6) << i;
  }
  // Loud targets: the peak limit takes over and nothing reaches 1.
  ssm::MixerConfig loud;
  loud.level_min_dbfs = -1;
  loud.level_max_dbfs = 0;
  const auto ml = default_mixer(loud);
  int limited = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    const auto e = make(ml, 3, i);
    float peak = 0;
    for (int t = 0; t < kT; ++t) peak = std::max({peak, std::abs(e.noisy[t]), std::abs(e.clean[t])});
    EXPECT_LE(peak, 0.99f);
    limited += peak > 0.989f;
  }
  EXPECT_GT(limited, 40);
}

TEST(Mixer, CleanIsTheSpeechSegmentTimesTheGain) {
  ssm::MixerConfig c;
  c.channel_lowpass_prob = c.channel_highpass_prob = 0;  // no channel colouring: clean is a plain copy
  const auto m = default_mixer(c);
  const auto clips = speech_clips();
  int padded = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    const auto e = make(m, 4, i);
    const auto& clip = clips[e.info.speech_clip];
    for (int t = 0; t < kT; ++t) {
      const int64_t j = e.info.speech_start + t;
      const double expect = (j >= 0 && j < int64_t(clip.size())) ? e.info.gain * clip[j] : 0.0;
      ASSERT_NEAR(e.clean[t], expect, 1e-6) << "example " << i << ", sample " << t;
    }
    padded += e.info.speech_start < 0;
  }
  EXPECT_GT(padded, 0) << "the short clip is drawn and padded";
}

TEST(Mixer, DeterministicByIndexAndSeed) {
  const auto m = default_mixer();
  const auto a = make(m, 5, 17), b = make(m, 5, 17), c = make(m, 5, 18), d = make(m, 6, 17);
  EXPECT_EQ(a.noisy, b.noisy);
  EXPECT_EQ(a.clean, b.clean);
  EXPECT_EQ(a.info.snr_db, b.info.snr_db);
  EXPECT_NE(a.noisy, c.noisy);
  EXPECT_NE(a.noisy, d.noisy);
  // A second mixer built from the same inputs gives the same examples.
  const auto m2 = default_mixer();
  EXPECT_EQ(make(m2, 5, 17).noisy, a.noisy);
}

TEST(Mixer, ThreadsFillingABatchMatchOneThread) {
  const auto m = default_mixer();
  const int B = 16;
  std::vector<float> noisy(B * kT), clean(B * kT), noisy1(B * kT), clean1(B * kT);  // (B, T)
  std::vector<std::thread> pool;
  for (int w = 0; w < 4; ++w)
    pool.emplace_back([&, w] {
      for (int b = w; b < B; b += 4) m.example(&noisy[b * kT], &clean[b * kT], kT, 9, 1000 + b);
    });
  for (auto& th : pool) th.join();
  for (int b = 0; b < B; ++b) m.example(&noisy1[b * kT], &clean1[b * kT], kT, 9, 1000 + b);
  EXPECT_EQ(noisy, noisy1);
  EXPECT_EQ(clean, clean1);
}

TEST(Mixer, SynthesizedNoiseOnlyNeedsNoNoiseClips) {
  ssm::MixerConfig c;
  c.weight_clip = 0;
  const ssm::Mixer m(speech_clips(), {}, c, kRate);
  for (uint64_t i = 0; i < 20; ++i) EXPECT_NE(make(m, 10, i).info.noise, ssm::NoiseSource::Clip);
}

TEST(Mixer, ErrorsNameTheProblem) {
  auto expect_error = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([] { ssm::Mixer({}, noise_clips(), {}, kRate); }, "no speech clips");
  expect_error([] { ssm::Mixer({talker(0, 100), {}}, noise_clips(), {}, kRate); }, "speech clip 1 is empty");
  expect_error([] { ssm::Mixer(speech_clips(), {{}}, {}, kRate); }, "noise clip 0 is empty");
  expect_error([] { ssm::Mixer(speech_clips(), {}, {}, kRate); }, "weight_clip");
  expect_error([] { ssm::Mixer({talker(0, 100)}, noise_clips(), {}, kRate); }, "weight_babble");
  expect_error(
      [] {
        std::vector<float> bad(100, 0.1f);
        bad[42] = NAN;
        ssm::Mixer(speech_clips(), {bad}, {}, kRate);
      },
      "noise clip 0 has a non-finite sample at index 42");
  ssm::MixerConfig c;
  c.snr_min_db = 30;
  expect_error([&] { ssm::Mixer(speech_clips(), noise_clips(), c, kRate); }, "snr_min_db");
  c = {};
  c.noise_lowpass_prob = 1.5;
  expect_error([&] { ssm::Mixer(speech_clips(), noise_clips(), c, kRate); }, "noise_lowpass_prob");
  c = {};
  c.weight_clip = c.weight_white = c.weight_pink = c.weight_brown = c.weight_hum = c.weight_fan = c.weight_babble = 0;
  expect_error([&] { ssm::Mixer(speech_clips(), noise_clips(), c, kRate); }, "weights are all 0");
  c = {};
  c.speed_max = 3;
  expect_error([&] { ssm::Mixer(speech_clips(), noise_clips(), c, kRate); }, "speed_min .. speed_max must lie in");
  const auto m = default_mixer();
  std::vector<float> a(10), b(10);
  expect_error([&] { m.example(a.data(), b.data(), 0, 1, 1); }, "T must be >= 1");
}

// Share of x's energy at frequency f (least squares on sin and cos over x).
double energy_share_at(const std::vector<float>& x, double f) {
  double ss = 0, cc = 0, sc = 0, xs = 0, xc = 0, xx = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    const double s = std::sin(2 * kPi * f * t / kRate), c = std::cos(2 * kPi * f * t / kRate);
    ss += s * s;
    cc += c * c;
    sc += s * c;
    xs += x[t] * s;
    xc += x[t] * c;
    xx += double(x[t]) * x[t];
  }
  // The projection onto span{sin, cos}: solve the 2x2 normal equations.
  const double det = ss * cc - sc * sc, a = (xs * cc - xc * sc) / det, b = (xc * ss - xs * sc) / det;
  return (a * xs + b * xc) / xx;
}

std::vector<float> tone(double f, size_t n) {
  std::vector<float> x(n);  // (n)
  for (size_t t = 0; t < n; ++t) x[t] = float(0.3 * std::sin(2 * kPi * f * t / kRate + 0.4));
  return x;
}

// join_clips: a clip shorter than the segment continues with the ones after
// it in the list, pauses between them, so the segment holds speech most of
// the time instead of one clip in silence; the base draws (noise, SNR) stay
// the same, and a clip long enough is taken as before.
TEST(Mixer, JoinedClipsFillTheSegmentWithSpeech) {
  const int T = 3 * kRate / 2;  // 1.5 s
  const double freqs[] = {300, 700, 1300, 2100, 3100};
  std::vector<std::vector<float>> clips;
  for (int k = 0; k < 4; ++k) clips.push_back(tone(freqs[k], 3 * kRate / 10));  // 0.3 s each
  clips.push_back(tone(freqs[4], 2 * kRate));                                  // one long enough
  ssm::MixerConfig c;
  c.channel_lowpass_prob = c.channel_highpass_prob = 0;
  c.noise_lowpass_prob = c.noise_highpass_prob = 0;
  ssm::MixerConfig joined_cfg = c;
  joined_cfg.join_clips = true;
  joined_cfg.join_pause_min_s = 0.1;
  joined_cfg.join_pause_max_s = 0.2;
  const ssm::Mixer alone(clips, noise_clips(), c, kRate), joined(clips, noise_clips(), joined_cfg, kRate);
  // Share of 20 ms frames of x that hold anything.
  auto active_share = [](const std::vector<float>& x) {
    const size_t frame = kRate / 50;
    size_t active = 0, frames = x.size() / frame;
    for (size_t f = 0; f < frames; ++f) {
      double e = 0;
      for (size_t t = f * frame; t < (f + 1) * frame; ++t) e += double(x[t]) * x[t];
      active += e > 1e-6;
    }
    return double(active) / frames;
  };
  int short_ones = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    std::vector<float> n1(T), c1(T), n2(T), c2(T);
    const ssm::MixInfo a = alone.example(n1.data(), c1.data(), T, 5, i);
    const ssm::MixInfo b = joined.example(n2.data(), c2.data(), T, 5, i);
    ASSERT_EQ(a.speech_clip, b.speech_clip) << i;
    EXPECT_EQ(a.noise, b.noise) << i;
    EXPECT_EQ(a.noise_clip, b.noise_clip) << i;
    EXPECT_EQ(a.snr_db, b.snr_db) << i;
    if (a.speech_clip == 4) {  // long enough: nothing joined, the same example
      for (int t = 0; t < T; ++t) ASSERT_EQ(c1[t], c2[t]) << i << ", sample " << t;
      continue;
    }
    ++short_ones;
    EXPECT_LT(active_share(c1), 0.25) << "example " << i << ": one 0.3 s clip in 1.5 s";
    EXPECT_GT(active_share(c2), 0.55) << "example " << i << ": clips of 0.3 s with pauses of 0.1-0.2 s";
    // Clips after the drawn one in the list are there (alone, none is).
    double others_alone = 0, others_joined = 0;
    for (size_t k = 0; k < 5; ++k)
      if (k != a.speech_clip) {
        others_alone += energy_share_at(c1, freqs[k]);
        others_joined += energy_share_at(c2, freqs[k]);
      }
    EXPECT_LT(others_alone, 0.02) << "example " << i;
    EXPECT_GT(others_joined, 0.1) << "example " << i;
  }
  EXPECT_GT(short_ones, 20);
  ssm::MixerConfig bad = joined_cfg;
  bad.join_pause_max_s = 20;
  EXPECT_THROW(ssm::Mixer(clips, noise_clips(), bad, kRate), ssm::Error);
}

TEST(Mixer, SpeedMovesEveryFrequencyByTheFactor) {
  ssm::MixerConfig c;
  c.channel_lowpass_prob = c.channel_highpass_prob = 0;
  c.speed_min = 0.8;
  c.speed_max = 1.25;
  const ssm::Mixer m({tone(440, 3 * kRate), tone(1000, 3 * kRate)}, noise_clips(), c, kRate);
  double lo = 2, hi = 0;
  for (uint64_t i = 0; i < 24; ++i) {
    const auto e = make(m, 9, i);
    const double r = e.info.speed, f0 = e.info.speech_clip == 0 ? 440 : 1000;
    lo = std::min(lo, r);
    hi = std::max(hi, r);
    ASSERT_GE(r, 0.8);
    ASSERT_LE(r, 1.25);
    // A tone at f0 read r times as fast is a tone at f0 * r, and nothing else.
    EXPECT_GT(energy_share_at(e.clean, f0 * r), 0.9999) << "example " << i << " r " << r;
    if (std::abs(r - 1) > 0.02) EXPECT_LT(energy_share_at(e.clean, f0), 0.01) << "example " << i << " r " << r;
  }
  EXPECT_LT(lo, 0.9);  // the draws cover the range
  EXPECT_GT(hi, 1.1);
}

TEST(Mixer, SpeedingUpDoesNotAlias) {
  // At r = 1.25 a tone at 7 kHz would land at 8.75 kHz, above Nyquist: the
  // reader's low-pass (cutoff 0.8 of Nyquist, 6.4 kHz before the speed-up)
  // removes it; one at 3 kHz passes whole, as 3.75 kHz.
  ssm::MixerConfig c;
  c.channel_lowpass_prob = c.channel_highpass_prob = 0;
  c.speed_min = c.speed_max = 1.25;
  const ssm::Mixer high({tone(7000, 3 * kRate), tone(7000, 3 * kRate)}, noise_clips(), c, kRate);
  const ssm::Mixer mid({tone(3000, 3 * kRate), tone(3000, 3 * kRate)}, noise_clips(), c, kRate);
  for (uint64_t i = 0; i < 4; ++i) {
    const auto h = make(high, 5, i), d = make(mid, 5, i);
    EXPECT_EQ(h.info.speed, 1.25);
    double eh = 0, ed = 0;
    for (int t = 0; t < kT; ++t) {
      eh += double(h.clean[t]) * h.clean[t] / (h.info.gain * h.info.gain);
      ed += double(d.clean[t]) * d.clean[t] / (d.info.gain * d.info.gain);
    }
    const double tone_energy = 0.3 * 0.3 / 2 * kT;
    EXPECT_LT(eh / tone_energy, 1e-3) << "example " << i;       // below -30 dB
    EXPECT_NEAR(ed / tone_energy, 1.0, 0.01) << "example " << i;  // passband
    EXPECT_GT(energy_share_at(d.clean, 3750), 0.9999);
  }
}

namespace {

ssm::MixerConfig plain() {
  ssm::MixerConfig c;
  c.channel_lowpass_prob = c.channel_highpass_prob = 0;  // clean is the speech segment times the gain
  return c;
}

// The clip segment an example drew, before its gain (as in CleanIsTheSpeechSegmentTimesTheGain).
std::vector<double> dry_segment(const ssm::MixInfo& info) {
  const auto clips = speech_clips();
  const auto& clip = clips[info.speech_clip];
  std::vector<double> s(kT, 0.0);  // (T)
  for (int t = 0; t < kT; ++t) {
    const int64_t j = info.speech_start + t;
    if (j >= 0 && j < int64_t(clip.size())) s[t] = clip[j];
  }
  return s;
}

}  // namespace

TEST(MixerAugment, TheBaseDrawsDoNotDependOnTheAugmentations) {
  ssm::MixerConfig on;
  on.reverb_prob = on.eq_prob = on.clipping_prob = on.codec_prob = 0.5;
  const auto a = default_mixer(), b = default_mixer(on);
  int changed = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    const auto x = make(a, 9, i), y = make(b, 9, i);
    EXPECT_EQ(x.info.speech_clip, y.info.speech_clip);
    EXPECT_EQ(x.info.speech_start, y.info.speech_start);
    EXPECT_EQ(x.info.noise, y.info.noise);
    EXPECT_EQ(x.info.snr_db, y.info.snr_db);
    const bool augmented = y.info.rt60_s > 0 || y.info.eq_bands > 0 || y.info.clipped_db > 0 || y.info.codec;
    changed += augmented;
    if (!augmented) EXPECT_EQ(x.noisy, y.noisy) << i;
  }
  EXPECT_GT(changed, 20);
}

TEST(MixerAugment, SilenceGivesZerosAndNoSpeechGivesAZeroTarget) {
  ssm::MixerConfig c;
  c.silence_prob = 1;
  const auto e = make(default_mixer(c), 1, 0);
  EXPECT_TRUE(e.info.silence);
  for (int t = 0; t < kT; ++t) ASSERT_TRUE(e.noisy[t] == 0 && e.clean[t] == 0);
  c.silence_prob = 0;
  c.noise_only_prob = 1;
  const auto f = make(default_mixer(c), 1, 0);
  EXPECT_TRUE(f.info.noise_only);
  EXPECT_GT(ssm::mean_square(f.noisy.data(), kT), 1e-6);
  for (int t = 0; t < kT; ++t) ASSERT_EQ(f.clean[t], 0.0f);
}

TEST(MixerAugment, ARoomKeepsTheDirectPathInTheTargetAndReverberatesTheInput) {
  ssm::MixerConfig c = plain();
  c.reverb_prob = 1;
  c.early_ms = 0;  // the target is the direct path alone: the dry segment
  const auto m = default_mixer(c);
  for (uint64_t i = 0; i < 10; ++i) {
    const auto e = make(m, 3, i);
    ASSERT_GT(e.info.rt60_s, 0);
    EXPECT_GE(e.info.rt60_s, 0.1);
    EXPECT_LE(e.info.rt60_s, 1.0);
    const auto dry = dry_segment(e.info);
    for (int t = 0; t < kT; ++t) ASSERT_NEAR(e.clean[t], e.info.gain * dry[t], 2e-6) << i << " " << t;
  }
  // A target with the whole room: noisy - clean is then the noise alone, and
  // the drawn SNR holds on the reverberant speech; the room adds a tail.
  c.early_ms = 1000;
  const auto mr = default_mixer(c);
  for (uint64_t i = 0; i < 10; ++i) {
    const auto e = make(mr, 3, i);
    std::vector<float> noise(kT);  // (T)
    for (int t = 0; t < kT; ++t) noise[t] = e.noisy[t] - e.clean[t];
    const double speech = ssm::active_mean_square(e.clean.data(), kT, kRate);
    EXPECT_NEAR(db(speech / ssm::mean_square(noise.data(), kT)), e.info.snr_db, 0.1) << i;
    const auto dry = dry_segment(e.info);
    double diff = 0, ref = 0;
    for (int t = 0; t < kT; ++t) {
      diff += std::pow(e.clean[t] - e.info.gain * dry[t], 2);
      ref += std::pow(e.info.gain * dry[t], 2);
    }
    EXPECT_GT(diff / ref, 1e-3) << i;  // the reverberant tail is there
  }
}

TEST(MixerAugment, ClippingAndCodecChangeTheInputOnly) {
  ssm::MixerConfig base = plain(), c = plain();
  c.clipping_prob = 1;
  const auto a = default_mixer(base), b = default_mixer(c);
  for (uint64_t i = 0; i < 10; ++i) {
    const auto x = make(a, 5, i), y = make(b, 5, i);
    ASSERT_GE(y.info.clipped_db, 1);
    ASSERT_LE(y.info.clipped_db, 12);
    EXPECT_EQ(x.clean, y.clean);
    float top = 0;
    for (float v : x.noisy) top = std::max(top, std::abs(v));
    const float limit = float(top * std::pow(10.0, -y.info.clipped_db / 20));
    int at_limit = 0;
    for (int t = 0; t < kT; ++t) {
      ASSERT_FLOAT_EQ(y.noisy[t], std::clamp(x.noisy[t], -limit, limit));
      at_limit += std::abs(y.noisy[t]) == limit;
    }
    EXPECT_GT(at_limit, 0);
  }
  ssm::MixerConfig k = plain();
  k.codec_prob = 1;
  const auto mk = default_mixer(k);
  for (uint64_t i = 0; i < 5; ++i) {
    const auto x = make(a, 6, i), y = make(mk, 6, i);
    EXPECT_TRUE(y.info.codec);
    EXPECT_EQ(x.clean, y.clean);
    std::set<float> levels(y.noisy.begin(), y.noisy.end());
    EXPECT_LE(levels.size(), 256u);
    // mu-law keeps the relative error of loud samples small (a 4-bit mantissa).
    for (int t = 0; t < kT; ++t)
      ASSERT_NEAR(y.noisy[t], x.noisy[t], 0.07 * std::abs(x.noisy[t]) + 2e-4) << i << " " << t;
  }
}

TEST(MixerAugment, DeviceColouringIsAppliedToInputAndTargetAlike) {
  ssm::MixerConfig c = plain();
  c.eq_prob = 1;
  c.weight_clip = 0;
  c.weight_babble = c.weight_hum = c.weight_fan = c.weight_brown = c.weight_pink = 0;  // white noise only
  const auto m = default_mixer(c);
  for (uint64_t i = 0; i < 5; ++i) {
    const auto e = make(m, 7, i);
    ASSERT_GE(e.info.eq_bands, 1);
    ASSERT_LE(e.info.eq_bands, 3);
    // The target is no longer a scaled copy of the dry segment.
    const auto dry = dry_segment(e.info);
    double diff = 0, ref = 0;
    for (int t = 0; t < kT; ++t) {
      diff += std::pow(e.clean[t] - e.info.gain * dry[t], 2);
      ref += std::pow(e.info.gain * dry[t], 2);
    }
    EXPECT_GT(diff / ref, 1e-4);
  }
  ssm::MixerConfig bad;
  bad.reverb_prob = 1.5;
  EXPECT_THROW(default_mixer(bad), ssm::Error);
  bad = {};
  bad.rt60_min_s = 0;
  EXPECT_THROW(default_mixer(bad), ssm::Error);
}
