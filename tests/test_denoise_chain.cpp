// The one denoiser chain (ssm/denoise_chain.hpp) against the model run one
// sample at a time (Stream::process of 1 sample, the per-sample definition of
// DESIGN §2.4): every timing, per-channel state, the rate converters, the
// dry/wet and attenuation-limit mix, non-finite input.
#include <cmath>

#include "denoise_testing.hpp"
#include "ssm/audio_file.hpp"
#include "ssm/denoise_chain.hpp"
#include "testing.hpp"

using ssm::ChainTiming;
using ssm::DenoiseChain;
using ssm::DenoiseChainOptions;
using ssm::testing::rel_error;

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
