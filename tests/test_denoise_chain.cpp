// The one denoiser chain (ssm/denoise_chain.hpp) against the model run one
// sample at a time (Stream::process of 1 sample, the per-sample definition of
// DESIGN §2.4): every timing, per-channel state, the rate converters, the
// dry/wet and attenuation-limit mix, non-finite input, and the band above
// the model's range carried through at the model's attenuation.
#include <cmath>
#include <random>

#include "denoise_testing.hpp"
#include "ssm/audio_file.hpp"
#include "ssm/default_model.hpp"
#include "ssm/denoise_chain.hpp"
#include "testing.hpp"

using ssm::ChainTiming;
using ssm::DenoiseChain;
using ssm::DenoiseChainOptions;
using ssm::testing::rel_error;
using ssm::testing::scaling_model;
using ssm::testing::tone_amplitude;

namespace {

// The model over x one sample at a time: y[t] estimates clean x[t - d].
std::vector<float> per_sample(const ssm::Model& m, const std::vector<float>& x) {
  ssm::Stream s(m, 1);
  std::vector<float> y(x.size());
  for (size_t t = 0; t < x.size(); ++t) s.process(&x[t], &y[t], 1);
  return y;
}

std::vector<float> channel(const std::vector<float>& inter, int C, int c) {
  std::vector<float> v(inter.size() / C);
  for (size_t t = 0; t < v.size(); ++t) v[t] = inter[t * C + c];
  return v;
}

// Runs the chain over x (frames, channels) in blocks cycling through `blocks`;
// with `flush`, the tail too.
std::vector<float> run_chain(DenoiseChain& chain, const std::vector<float>& x, std::vector<size_t> blocks,
                             bool flush = true) {
  const int Ci = chain.in_channels(), Co = chain.out_channels();
  const size_t frames = x.size() / Ci;
  std::vector<float> y, buf;
  for (size_t i = 0, b = 0; i < frames;) {
    const size_t n = std::min(blocks[b++ % blocks.size()], frames - i);
    buf.resize(chain.max_output(n) * Co);
    const size_t got = chain.process(x.data() + i * Ci, n, buf.data());
    y.insert(y.end(), buf.begin(), buf.begin() + got * Co);
    i += n;
  }
  if (flush) chain.flush(y);
  return y;
}

// Mean power per DFT bin of x[from, end) between lo and hi Hz: Hann windowed
// segments of 1024 frames, every bin by Goertzel's recurrence.
double band_power(const std::vector<float>& x, size_t from, int rate, double lo, double hi) {
  constexpr size_t N = 1024;
  double sum = 0;
  size_t count = 0;
  for (size_t at = from; at + N <= x.size(); at += N)
    for (size_t k = static_cast<size_t>(std::ceil(lo * N / rate)); k * rate < hi * N; ++k, ++count) {
      const double a = tone_amplitude(x, at, N, rate, static_cast<double>(k) * rate / N);
      sum += a * a;
    }
  return sum / static_cast<double>(count);
}

double db(double power_ratio) { return 10 * std::log10(power_ratio); }

std::vector<float> white_noise(size_t n, uint64_t seed, double rms) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0, rms);
  std::vector<float> v(n);
  for (auto& s : v) s = static_cast<float>(g(rng));
  return v;
}

// Block sizes in [1, max], seeded.
std::vector<size_t> random_blocks(uint64_t seed, size_t max) {
  std::mt19937_64 rng(seed);
  std::vector<size_t> b(97);
  for (auto& n : b) n = 1 + rng() % max;
  return b;
}

std::vector<float> interleave(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> v(2 * a.size());
  for (size_t t = 0; t < a.size(); ++t) {
    v[2 * t] = a[t];
    v[2 * t + 1] = b[t];
  }
  return v;
}

}  // namespace

// Aligned, at the model's rate, stereo: each channel is the per-sample model
// of that channel alone, the latency taken out.
TEST(DenoiseChain, AlignedStereoIsThePerSampleModelOfEachChannel) {
  const int d = 3;
  const ssm::Model m = ssm::testing::small_model(5, d);
  const auto a = ssm::testing::random_vector<float>(3000, 1, -0.5, 0.5);
  const auto b = ssm::testing::random_vector<float>(3000, 2, -0.3, 0.3);
  DenoiseChainOptions o;
  o.channels = 2;
  o.max_block = 512;
  DenoiseChain chain(m, o);
  EXPECT_EQ(chain.total_latency(), 0u);
  const std::vector<float> y = run_chain(chain, interleave(a, b), {512, 1, 77});
  ASSERT_EQ(y.size(), 2 * a.size());
  for (int c = 0; c < 2; ++c) {
    std::vector<float> x = c == 0 ? a : b;
    x.resize(x.size() + d, 0.0f);  // d zeros: the last outputs
    const std::vector<float> ref = per_sample(m, x);
    const std::vector<float> got = channel(y, 2, c);
    EXPECT_LT(rel_error(got.data(), ref.data() + d, a.size()), 1e-5) << "channel " << c;
  }
}

// Fixed, at the model's rate: n frames in, n out, the model's own latency.
TEST(DenoiseChain, FixedAtTheModelRateIsThePerSampleModel) {
  const ssm::Model m = ssm::testing::small_model(6, 2, 16, 4);  // frames of 4: latency 2 + 3
  const auto x = ssm::testing::random_vector<float>(2000, 3, -0.5, 0.5);
  DenoiseChainOptions o;
  o.max_block = 256;
  o.timing = ChainTiming::Fixed;
  DenoiseChain chain(m, o);
  EXPECT_EQ(chain.total_latency(), 5u);
  EXPECT_EQ(chain.holdback(), 0u);
  const std::vector<float> y = run_chain(chain, x, {256, 3, 100}, false);
  ASSERT_EQ(y.size(), x.size());
  const std::vector<float> ref = per_sample(m, x);
  EXPECT_LT(rel_error(y.data(), ref.data(), ref.size()), 1e-5);
}

// Streaming at 48 kHz: the per-sample model of the signal converted to 16 kHz
// as a whole, converted back as a whole; Fixed is the same behind
// holdback() frames of silence.
TEST(DenoiseChain, StreamingAndFixedAt48kHzConvertAroundThePerSampleModel) {
  const ssm::Model m = ssm::testing::small_model(7, 1);
  const ssm::Audio a = ssm::read_audio(ssm::testing::kNoisy);
  const std::vector<float> x = ssm::resample(a.samples.data(), a.frames(), 16000, 48000);
  const std::vector<float> x16 = ssm::resample(x.data(), x.size(), 48000, 16000);
  const std::vector<float> y16 = per_sample(m, x16);
  const std::vector<float> ref = ssm::resample(y16.data(), y16.size(), 16000, 48000);
  DenoiseChainOptions o;
  o.rate = 48000;
  o.max_block = 1024;
  o.timing = ChainTiming::Streaming;
  o.carry_high_band = false;  // the converters alone (the carry: below)
  DenoiseChain streaming(m, o);
  EXPECT_EQ(streaming.total_latency(), 3u);  // 1 sample at 16 kHz
  const std::vector<float> ys = run_chain(streaming, x, {1024, 480, 7});
  const size_t n = std::min(ys.size(), ref.size()) - 64;
  EXPECT_LT(rel_error(ys.data(), ref.data(), n), 1e-4);

  o.timing = ChainTiming::Fixed;
  DenoiseChain fixed(m, o);
  const size_t P = fixed.holdback();
  EXPECT_GT(P, 0u);
  EXPECT_EQ(fixed.total_latency(), P + 3);
  const std::vector<float> yf = run_chain(fixed, x, {256, 1000, 1}, false);
  ASSERT_EQ(yf.size(), x.size());
  for (size_t t = 0; t < P; ++t) ASSERT_EQ(yf[t], 0.0f) << t;
  EXPECT_LT(rel_error(yf.data() + P, ys.data(), x.size() - P), 1e-6);
}

// wet 0 is the input, delayed by the latency; an attenuation limit mixes the
// delayed input back at 10^(-limit/20); wet 1 with no limit is the model's.
TEST(DenoiseChain, DryWetAndAttenuationLimitMixTheDelayedInputBackIn) {
  const int d = 4;
  const ssm::Model m = ssm::testing::small_model(8, d);
  const auto x = ssm::testing::random_vector<float>(3000, 4, -0.5, 0.5);
  DenoiseChainOptions o;
  o.max_block = 256;
  o.timing = ChainTiming::Fixed;
  DenoiseChain den(m, o), dry(m, o), lim(m, o), half(m, o);
  dry.set_wet(0);
  lim.set_attenuation_limit_db(12);
  half.set_wet(0.25f);
  half.set_attenuation_limit_db(6);
  const auto yd = run_chain(den, x, {256}, false), y0 = run_chain(dry, x, {256}, false),
             yl = run_chain(lim, x, {100}, false), yh = run_chain(half, x, {17, 256}, false);
  for (size_t t = 0; t < x.size(); ++t) ASSERT_EQ(y0[t], t >= d ? x[t - d] : 0.0f) << t;
  const float g = std::pow(10.0f, -12.0f / 20), g6 = std::pow(10.0f, -6.0f / 20);
  for (size_t t = 0; t < x.size(); ++t) {
    const float delayed = t >= d ? x[t - d] : 0.0f;
    ASSERT_NEAR(yl[t], (1 - g) * yd[t] + g * delayed, 1e-5) << t;
    ASSERT_NEAR(yh[t], 0.25f * ((1 - g6) * yd[t] + g6 * delayed) + 0.75f * delayed, 1e-5) << t;
  }
}

// Non-finite input is silence, counted; one channel's input never reaches
// another channel's state.
TEST(DenoiseChain, NonFiniteInputIsSilenceAndChannelsAreIndependent) {
  const ssm::Model m = ssm::testing::small_model(9, 2);
  auto a = ssm::testing::random_vector<float>(2000, 5, -0.5, 0.5);
  auto b = ssm::testing::random_vector<float>(2000, 6, -0.5, 0.5);
  std::vector<float> b_nan = b;
  b_nan[10] = NAN;
  b_nan[1500] = -INFINITY;
  b[10] = b[1500] = 0;
  DenoiseChainOptions o;
  o.channels = 2;
  o.rate = 44100;
  o.max_block = 512;
  DenoiseChain with_nan(m, o), zeroed(m, o);
  const auto y1 = run_chain(with_nan, interleave(a, b_nan), {512}), y2 = run_chain(zeroed, interleave(a, b), {512});
  EXPECT_EQ(with_nan.non_finite(), 2u);
  EXPECT_EQ(with_nan.first_non_finite(), 10u);
  EXPECT_EQ(y1, y2);
  // Channel 0 of a stereo chain is channel 0 run alone.
  o.channels = 1;
  DenoiseChain alone(m, o);
  EXPECT_EQ(channel(y1, 2, 0), run_chain(alone, a, {512}));
}

// 48 kHz: speech plus a 12 kHz tone, through a model that scales its input
// by a known factor. With the carry the tone comes out at that factor (the
// model's attenuation of 4-8 kHz); without it the converters take it out.
TEST(DenoiseChain, HighBandIsCarriedAtTheModelsGainOrDropped) {
  float scale = 0;
  const ssm::Model m = scaling_model(-1.0f, &scale);  // sigmoid(-1): about -11 dB
  ASSERT_GT(scale, 0.2f);
  ASSERT_LT(scale, 0.35f);
  const ssm::Audio a = ssm::read_audio(ssm::testing::kNoisy);
  std::vector<float> x = ssm::resample(a.samples.data(), a.frames(), a.rate, 48000);
  const double tone = 0.1;
  for (size_t t = 0; t < x.size(); ++t) x[t] = 0.5f * x[t] + static_cast<float>(tone * std::sin(M_PI / 2 * t));
  DenoiseChainOptions o;
  o.rate = 48000;
  o.max_block = 1024;
  DenoiseChain carry(m, o);
  EXPECT_TRUE(carry.carries_high_band());
  o.carry_high_band = false;
  DenoiseChain drop(m, o);
  EXPECT_FALSE(drop.carries_high_band());
  const std::vector<float> yc = run_chain(carry, x, {1024}), yd = run_chain(drop, x, {1024});
  ASSERT_EQ(yc.size(), x.size());
  ASSERT_EQ(yd.size(), x.size());
  // One second past the first half second (the gain has settled).
  const size_t from = 24000, n = 48000;
  ASSERT_LT(from + n, x.size());
  EXPECT_NEAR(tone_amplitude(x, from, n, 48000, 12000), tone, 1e-3 * tone);
  const double kept = tone_amplitude(yc, from, n, 48000, 12000) / tone,
               dropped = tone_amplitude(yd, from, n, 48000, 12000) / tone;
  std::printf("12 kHz tone: carried at %.4f (%.2f dB; the model's factor %.4f), dropped at %.1f dB\n", kept,
              20 * std::log10(kept), scale, 20 * std::log10(dropped));
  EXPECT_NEAR(kept, scale, 0.02 * scale);
  EXPECT_LT(20 * std::log10(dropped), -60);
}

// A model that passes its input through: the carried band and the model's
// band add up to the input itself, delayed by total_latency() (the model's
// latency is whole at 48 kHz, and Aligned takes it out at any rate).
TEST(DenoiseChain, CarriedBandAndModelBandAddUpToTheDelayedInput) {
  float scale = 0;
  const ssm::Model m = scaling_model(40.0f, &scale);  // passes everything
  ASSERT_EQ(scale, 1.0f);
  const std::vector<float> x = white_noise(48000, 3, 0.1);
  for (const auto& [rate, timing] : {std::pair{48000, ChainTiming::Aligned}, {48000, ChainTiming::Streaming},
                                     {48000, ChainTiming::Fixed}, {44100, ChainTiming::Aligned}}) {
    DenoiseChainOptions o;
    o.rate = rate;
    o.max_block = 512;
    o.timing = timing;
    DenoiseChain chain(m, o);
    const size_t L = chain.total_latency();
    if (rate == 48000 && timing != ChainTiming::Aligned) EXPECT_GE(L, 9u);  // 3 samples at 16 kHz
    const std::vector<float> y = run_chain(chain, x, {512, 33, 480});
    ASSERT_GE(y.size(), x.size() - 4);
    // The converters' start and end: their edges are not signal.
    const size_t from = L + 1000, n = x.size() - 2000 - L;
    double worst = 0;
    for (size_t t = from; t < from + n; ++t) worst = std::max(worst, std::fabs(double(y[t]) - x[t - L]));
    const double rel = rel_error(y.data() + from, x.data() + from - L, n);
    std::printf("%d Hz, timing %d: latency %zu frames, largest error %.3g, relative %.3g\n", rate,
                static_cast<int>(timing), L, worst, rel);
    EXPECT_LT(rel, 1e-4) << rate << " Hz, timing " << static_cast<int>(timing);
    // Without the carry only the model's band is there: far from the input.
    o.carry_high_band = false;
    DenoiseChain drop(m, o);
    const std::vector<float> yd = run_chain(drop, x, {512});
    EXPECT_GT(rel_error(yd.data() + from, x.data() + from - L, n), 0.5);
  }
}

// Noise alone through the shipped model, at 48 kHz: where the model takes
// most of 4-8 kHz out, the carried band (9-20 kHz) comes down about as far;
// an attenuation limit holds the carried band up as it does the rest.
TEST(DenoiseChain, CarriedBandFollowsTheShippedModelsAttenuation) {
  const ssm::Model m = ssm::default_denoiser();
  const std::vector<float> x = white_noise(3 * 48000, 4, 0.03);
  DenoiseChainOptions o;
  o.rate = 48000;
  o.max_block = 1024;
  DenoiseChain chain(m, o);
  const std::vector<float> y = run_chain(chain, x, {1024});
  const size_t from = 48000;  // past the first second: the model has settled
  const double top = db(band_power(y, from, 48000, 4000, 7500) / band_power(x, from, 48000, 4000, 7500));
  const double high = db(band_power(y, from, 48000, 9000, 20000) / band_power(x, from, 48000, 9000, 20000));
  std::printf("noise through the shipped model: 4-7.5 kHz %.1f dB, carried 9-20 kHz %.1f dB\n", top, high);
  EXPECT_LT(top, -10);
  EXPECT_NEAR(high, top, 4);
  // A 6 dB limit: neither band comes down by more.
  o.attenuation_limit_db = 6;
  DenoiseChain limited(m, o);
  const std::vector<float> yl = run_chain(limited, x, {1024});
  const double high_l = db(band_power(yl, from, 48000, 9000, 20000) / band_power(x, from, 48000, 9000, 20000));
  std::printf("with a 6 dB limit: carried 9-20 kHz %.1f dB\n", high_l);
  EXPECT_GT(high_l, -6.1);
  EXPECT_LT(high_l, -4);
}

// The carried band is the same whatever the block sizes, in every timing,
// at 44.1 and 48 kHz, stereo (each channel's gain its own): compared on its
// own (the output less the output without it), so that a gain taken from
// a block not yet measured shows.
TEST(DenoiseChain, CarriedBandIsTheSameInAnyBlockSizes) {
  const ssm::Model m = ssm::default_denoiser();
  const ssm::Audio a = ssm::read_audio(ssm::testing::kNoisy);
  for (const int rate : {48000, 44100}) {
    std::vector<float> x = ssm::resample(a.samples.data(), a.frames(), a.rate, rate);
    x.resize(std::min<size_t>(x.size(), rate));
    const std::vector<float> hiss = white_noise(x.size(), 5, 0.02);
    std::vector<float> left(x.size()), right(x.size());
    for (size_t t = 0; t < x.size(); ++t) {
      left[t] = x[t] + hiss[t];
      right[t] = 0.3f * hiss[t];
    }
    const std::vector<float> st = interleave(left, right);
    for (const ChainTiming timing : {ChainTiming::Aligned, ChainTiming::Streaming, ChainTiming::Fixed}) {
      DenoiseChainOptions o;
      o.rate = rate;
      o.channels = 2;
      o.max_block = 4096;
      o.timing = timing;
      o.model_block = 256;  // the model's own passes alike in every run
      const bool flush = timing != ChainTiming::Fixed;
      DenoiseChain whole(m, o), pieces(m, o);
      o.carry_high_band = false;
      DenoiseChain drop(m, o);
      const std::vector<float> y1 = run_chain(whole, st, {4096}, flush),
                               y2 = run_chain(pieces, st, random_blocks(rate + static_cast<int>(timing), 700), flush),
                               yd = run_chain(drop, st, {4096}, flush);
      ASSERT_EQ(y1.size(), y2.size());
      ASSERT_EQ(y1.size(), yd.size());
      std::vector<float> carried1(y1.size()), carried2(y1.size());
      for (size_t i = 0; i < y1.size(); ++i) {
        carried1[i] = y1[i] - yd[i];
        carried2[i] = y2[i] - yd[i];
      }
      const double rel = rel_error(carried2, carried1);
      std::printf("%d Hz, timing %d: carried band in random blocks vs one, relative %.3g\n", rate,
                  static_cast<int>(timing), rel);
      EXPECT_LT(rel, 1e-5) << rate << " Hz, timing " << static_cast<int>(timing);
      EXPECT_LT(rel_error(y2, y1), 1e-5) << rate << " Hz, timing " << static_cast<int>(timing);
    }
  }
}

// At the model's rate there is no band above it: the option changes nothing.
TEST(DenoiseChain, AtTheModelRateTheCarryChangesNothing) {
  const ssm::Model m = ssm::testing::small_model(10, 2, 16, 4);
  const auto x = ssm::testing::random_vector<float>(5000, 7, -0.5, 0.5);
  for (const ChainTiming timing : {ChainTiming::Aligned, ChainTiming::Streaming, ChainTiming::Fixed}) {
    DenoiseChainOptions o;
    o.max_block = 256;
    o.timing = timing;
    o.attenuation_limit_db = 10;
    DenoiseChain on(m, o);
    o.carry_high_band = false;
    DenoiseChain off(m, o);
    EXPECT_FALSE(on.carries_high_band());
    EXPECT_EQ(run_chain(on, x, {256, 7}), run_chain(off, x, {256, 7}));
  }
}
