// STOI / ESTOI: identity, monotonic decrease with noise, regression values
// pinned from pystoi, and the errors. StoiCrossCheck.Files scores the file
// pairs listed in $SSM_STOI_LIST for scripts/check_stoi.py (skipped without it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numbers>
#include <string>
#include <vector>

#include "ssm/audio_file.hpp"
#include "ssm/common.hpp"
#include "ssm/stoi.hpp"
#include "testing.hpp"

namespace {

constexpr double kPi = std::numbers::pi;

// A speech-like test signal: a glottal-pulse-rich harmonic source with a
// gliding pitch, shaped by syllable envelopes (4 Hz) with pauses between
// words, so that silent-frame removal and band envelopes both have work.
std::vector<float> speech_like(int rate, double seconds, uint64_t seed) {
  const size_t n = size_t(rate * seconds);
  std::vector<float> s(n);  // (n)
  const auto jitter = ssm::testing::random_vector<double>(64, seed, 0.0, 1.0);
  double phase = 0;
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    const double f0 = 120 + 40 * std::sin(2 * kPi * 0.7 * t + 6 * jitter[0]);
    phase += 2 * kPi * f0 / rate;
    double v = 0;
    // Harmonics up to 4 kHz with two moving formant-like peaks.
    const double f1 = 500 + 300 * std::sin(2 * kPi * 3.1 * t + 6 * jitter[1]);
    const double f2 = 1500 + 700 * std::sin(2 * kPi * 2.3 * t + 6 * jitter[2]);
    for (int h = 1; h * f0 < 4000; ++h) {
      const double f = h * f0;
      const double a = 1 / (1 + std::pow((f - f1) / 150, 2)) + 0.5 / (1 + std::pow((f - f2) / 250, 2)) + 0.02;
      v += a * std::sin(h * phase + 6 * jitter[3 + h % 32]);
    }
    // Syllables: raised-cosine bursts of 250 ms; every fourth slot is a pause.
    const int slot = int(t / 0.25);
    const double in_slot = std::fmod(t, 0.25) / 0.25;
    const double env = (slot % 4 == 3) ? 0.0 : std::pow(std::sin(kPi * in_slot), 2) * (0.4 + 0.6 * jitter[40 + slot % 20]);
    s[i] = float(0.1 * env * v);
  }
  return s;
}

// clean + white noise scaled to snr_db over the whole signal.
std::vector<float> with_noise(const std::vector<float>& clean, double snr_db, uint64_t seed) {
  auto noise = ssm::testing::random_vector<double>(clean.size(), seed, -1.0, 1.0);
  double ps = 0, pn = 0;
  for (size_t i = 0; i < clean.size(); ++i) ps += double(clean[i]) * clean[i], pn += noise[i] * noise[i];
  const double g = std::sqrt(ps / pn * std::pow(10.0, -snr_db / 10));
  std::vector<float> y(clean.size());  // (n)
  for (size_t i = 0; i < clean.size(); ++i) y[i] = float(clean[i] + g * noise[i]);
  return y;
}

std::string sample(const std::string& name) { return std::string(SSM_SOURCE_DIR) + "/samples/" + name; }

// The generated pair whose scores are pinned below, at 10 kHz so that no
// resampler stands between this code and pystoi.
constexpr int kPinnedRate = 10000;
std::vector<float> pinned_clean() { return speech_like(kPinnedRate, 3.0, 7); }
std::vector<float> pinned_processed() { return with_noise(pinned_clean(), 0.0, 8); }

}  // namespace

TEST(Stoi, IdenticalSignalsScoreOne) {
  for (int rate : {10000, 16000}) {
    const auto x = speech_like(rate, 3.0, 1);
    EXPECT_NEAR(ssm::stoi(x.data(), x.data(), x.size(), rate), 1.0, 1e-9) << rate;
    EXPECT_NEAR(ssm::estoi(x.data(), x.data(), x.size(), rate), 1.0, 1e-9) << rate;
  }
}

TEST(Stoi, InvariantToProcessedGain) {
  // Each band envelope is rescaled to the clean one's energy before clipping,
  // so a global gain on the processed signal changes nothing.
  const auto x = speech_like(10000, 3.0, 2);
  const auto y = with_noise(x, 5, 3);
  std::vector<float> y3(y);
  for (auto& v : y3) v *= 3;
  EXPECT_NEAR(ssm::stoi(x.data(), y.data(), x.size(), 10000), ssm::stoi(x.data(), y3.data(), x.size(), 10000), 1e-9);
  EXPECT_NEAR(ssm::estoi(x.data(), y.data(), x.size(), 10000), ssm::estoi(x.data(), y3.data(), x.size(), 10000),
              1e-9);
}

TEST(Stoi, DecreasesMonotonicallyWithNoise) {
  const int rate = 10000;
  const auto x = speech_like(rate, 4.0, 4);
  double prev_stoi = 1.0 + 1e-9, prev_estoi = 1.0 + 1e-9;
  for (double snr : {30.0, 20.0, 10.0, 5.0, 0.0, -5.0, -10.0, -20.0}) {
    const auto y = with_noise(x, snr, 5);  // same noise, rising level
    const double s = ssm::stoi(x.data(), y.data(), x.size(), rate);
    const double e = ssm::estoi(x.data(), y.data(), x.size(), rate);
    EXPECT_LT(s, prev_stoi) << "SNR " << snr << " dB";
    EXPECT_LT(e, prev_estoi) << "SNR " << snr << " dB";
    prev_stoi = s, prev_estoi = e;
  }
  EXPECT_LT(prev_stoi, 0.6);  // -20 dB of white noise leaves little
}

TEST(Stoi, Errors) {
  const auto x = speech_like(10000, 3.0, 6);
  EXPECT_THROW(ssm::stoi(x.data(), x.data(), 0, 10000), ssm::Error);
  EXPECT_THROW(ssm::stoi(x.data(), x.data(), x.size(), 0), ssm::Error);
  EXPECT_THROW(ssm::stoi(nullptr, x.data(), x.size(), 10000), ssm::Error);
  // 0.3 s: fewer than 30 frames.
  EXPECT_THROW(ssm::stoi(x.data(), x.data(), 3000, 10000), ssm::Error);
  // Silence everywhere but 0.2 s: the rest is dropped as silent frames.
  std::vector<float> burst(x.size(), 0.0f);
  for (size_t i = 0; i < 2000; ++i) burst[10000 + i] = x[10000 + i];
  EXPECT_THROW(ssm::estoi(burst.data(), burst.data(), burst.size(), 10000), ssm::Error);
  std::vector<float> bad(x);
  bad[123] = NAN;
  try {
    ssm::stoi(x.data(), bad.data(), x.size(), 10000);
    FAIL() << "no error for a NaN sample";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 123 of the processed"), std::string::npos) << e.what();
  }
}

TEST(Stoi, PinnedGeneratedPair) {
  // pystoi 0.4.1 on the same samples (written by StoiCrossCheck.WriteGenerated,
  // scored by scripts/check_stoi.py): stoi 0.802584753085, estoi 0.531473409690.
  const auto x = pinned_clean(), y = pinned_processed();
  EXPECT_NEAR(ssm::stoi(x.data(), y.data(), x.size(), kPinnedRate), 0.802584753085, 1e-9);
  EXPECT_NEAR(ssm::estoi(x.data(), y.data(), x.size(), kPinnedRate), 0.531473409690, 1e-9);
}

TEST(Stoi, PinnedSamplePair) {
  // samples/ holds VoiceBank+DEMAND p287_002 at 16 kHz, so both sides
  // resample, pystoi with its own filter: it gives stoi 0.862404760873 and
  // estoi 0.677248822744, 3e-6 from the values pinned here (docs/STOI.md).
  const auto x = ssm::read_mono(sample("clean_speech.flac"), 16000);
  const auto y = ssm::read_mono(sample("noisy_speech.flac"), 16000);
  ASSERT_EQ(x.size(), y.size());
  const double s = ssm::stoi(x.data(), y.data(), x.size(), 16000);
  const double e = ssm::estoi(x.data(), y.data(), x.size(), 16000);
  EXPECT_NEAR(s, 0.862402110373, 1e-6);
  EXPECT_NEAR(e, 0.677245782851, 1e-6);
  EXPECT_NEAR(s, 0.862404760873, 1e-5);
  EXPECT_NEAR(e, 0.677248822744, 1e-5);
}

// Writes the pinned pair as float WAVs to $SSM_STOI_WRITE_DIR for
// scripts/check_stoi.py.
TEST(StoiCrossCheck, WriteGenerated) {
  const char* dir = std::getenv("SSM_STOI_WRITE_DIR");
  if (!dir) GTEST_SKIP() << "set SSM_STOI_WRITE_DIR to write the pinned pair";
  const auto x = pinned_clean(), y = pinned_processed();
  ssm::write_audio(std::string(dir) + "/pinned_clean.wav", x.data(), x.size(), kPinnedRate, 1, /*float_wav=*/true);
  ssm::write_audio(std::string(dir) + "/pinned_processed.wav", y.data(), y.size(), kPinnedRate, 1, true);
}

// Scores every pair of files listed in $SSM_STOI_LIST (one "clean processed"
// pair per line) and prints them for scripts/check_stoi.py.
TEST(StoiCrossCheck, Files) {
  const char* list = std::getenv("SSM_STOI_LIST");
  if (!list) GTEST_SKIP() << "set SSM_STOI_LIST to score file pairs";
  std::ifstream in(list);
  ASSERT_TRUE(in) << "cannot read " << list;
  std::string clean_path, processed_path;
  while (in >> clean_path >> processed_path) {
    const auto clean = ssm::read_audio(clean_path), processed = ssm::read_audio(processed_path);
    ASSERT_EQ(clean.rate, processed.rate) << clean_path << " vs " << processed_path;
    const auto x = ssm::mix_to_mono(clean), y = ssm::mix_to_mono(processed);
    ASSERT_EQ(x.size(), y.size()) << clean_path << " vs " << processed_path;
    std::printf("SCORE %s %s %.12f %.12f\n", clean_path.c_str(), processed_path.c_str(),
                ssm::stoi(x.data(), y.data(), x.size(), clean.rate),
                ssm::estoi(x.data(), y.data(), x.size(), clean.rate));
  }
}
