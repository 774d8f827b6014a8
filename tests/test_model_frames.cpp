// Models that read frames of F samples per step: gradients by finite
// differences, equality with the same network fed (T / F, F) rows by hand,
// the streamed output as the whole-sequence output delayed by F - 1 samples
// (per sample, random blocks, snapshots taken mid-frame), and config checks.
#include <cmath>
#include <random>

#include "ssm/common.hpp"
#include "ssm/model.hpp"
#include "ssm/optim.hpp"
#include "model_fixtures.hpp"
#include "testing.hpp"

using ssm::BlockKind;
using ssm::Model;
using ssm::ModelConfig;
using ssm::ModelGraph;
using ssm::testing::random_vector;
using ssm::testing::rel_error;

namespace {

ModelConfig framed_config(BlockKind kind, int frame) {
  ModelConfig c = ssm::testing::small_model_config(kind, 8);
  c.frame = frame;
  return c;
}

class FramesByKind : public ::testing::TestWithParam<BlockKind> {};

}  // namespace

TEST_P(FramesByKind, GradientsMatchFiniteDifferences) {
  ModelConfig cfg = framed_config(GetParam(), 3);
  cfg.d_model = 6;
  cfg.head_dim = 4;
  cfg.d_state = 3;
  cfg.in_channels = 2;
  cfg.out_channels = 2;
  Model m(cfg);
  m.init(21);
  // 5 steps of 3 samples, 2 channels each. Per tensor looser: A_log of a
  // 3-state Mamba-1 model is tiny.
  ssm::testing::expect_gradients_match_finite_differences(m, 2, 15, 22, 1e-4);
}

// A frame of F mono samples is the row of an F-channel model: same weights,
// same numbers.
TEST_P(FramesByKind, FrameIsARowOfChannels) {
  const int F = 4, B = 2, T = 64;
  const ModelConfig framed = framed_config(GetParam(), F);
  ModelConfig wide = framed_config(GetParam(), 1);
  wide.in_channels = wide.out_channels = F;
  Model a(framed), b(wide);
  a.init(5);
  ASSERT_EQ(a.params().size(), b.params().size());
  std::copy(a.params().data(), a.params().data() + a.params().size(), b.params().data());
  auto in = random_vector<float>(static_cast<size_t>(B) * T, 6);
  std::vector<float> ya(in.size()), yb(in.size());
  ModelGraph<float>(framed, a.table()).forward(ya.data(), in.data(), a.params().data(), B, T);
  ModelGraph<float>(wide, b.table()).forward(yb.data(), in.data(), b.params().data(), B, T / F);
  EXPECT_EQ(ya, yb);
}

TEST_P(FramesByKind, StreamIsTheSequenceDelayedByTheFrameWait) {
  const int F = 5, T = 600;  // 120 frames
  ModelConfig cfg = framed_config(GetParam(), F);
  cfg.lookahead = 2;
  Model m(cfg);
  m.init(7);
  auto in = random_vector<float>(T, 8);
  // fp64 whole-sequence reference, aligned to the frames.
  std::vector<double> P(m.params().data(), m.params().data() + m.params().size());
  auto ind = ssm::testing::cast_vector<double>(in);
  std::vector<double> ref(T);
  ModelGraph<double>(cfg, m.table()).forward(ref.data(), ind.data(), P.data(), 1, T);
  // Streamed: out[t] = ref[t - (F - 1)], zeros before.
  std::vector<double> delayed(T, 0.0);
  std::copy(ref.begin(), ref.end() - (F - 1), delayed.begin() + (F - 1));
  ssm::Stream one(m, 1);
  EXPECT_EQ(one.latency(), cfg.lookahead + F - 1);
  std::vector<float> o1(T);
  for (int t = 0; t < T; ++t) one.process(&in[t], &o1[t], 1);
  for (int t = 0; t < F - 1; ++t) ASSERT_EQ(o1[t], 0.0f) << t;
  EXPECT_LT(rel_error(o1, delayed), 1e-5);
  // Random blocks, straddling frames, some longer than the stream's max block.
  ssm::Stream blocks(m, 16);
  std::vector<float> o2(T);
  std::mt19937 rng(9);
  for (int t = 0; t < T;) {
    const int n = std::min(T - t, static_cast<int>(rng() % 130) + 1);
    blocks.process(&in[t], &o2[t], n);
    t += n;
  }
  EXPECT_LT(rel_error(o2, delayed), 1e-5);
}

TEST_P(FramesByKind, SnapshotMidFrameContinuesExactly) {
  const int F = 8, T = 400;
  Model m(framed_config(GetParam(), F));
  m.init(10);
  auto in = random_vector<float>(T, 11);
  const int cut = 203;  // 25 frames and 3 samples into the next
  ssm::Stream a(m, 32), b(m, 32);
  std::vector<float> oa(T), ob(T);
  a.process(in.data(), oa.data(), cut);
  a.process(in.data() + cut, oa.data() + cut, T - cut);
  b.process(in.data(), ob.data(), cut);
  const auto snap = b.snapshot();
  ssm::Stream c(m, 32);
  c.restore(snap);
  c.process(in.data() + cut, ob.data() + cut, T - cut);
  for (int t = 0; t < T; ++t) ASSERT_EQ(oa[t], ob[t]) << t;
  // A reset forgets the partial frame too.
  c.reset();
  std::vector<float> oc(T);
  c.process(in.data(), oc.data(), cut);
  c.process(in.data() + cut, oc.data() + cut, T - cut);
  for (int t = 0; t < T; ++t) ASSERT_EQ(oa[t], oc[t]) << t;
  // A snapshot of a sample-by-sample model does not restore into a framed one.
  Model plain(framed_config(GetParam(), 1));
  plain.init(10);
  ssm::Stream p(plain);
  EXPECT_THROW(c.restore(p.snapshot()), ssm::Error);
}

INSTANTIATE_TEST_SUITE_P(Blocks, FramesByKind, ::testing::Values(BlockKind::Mamba2, BlockKind::Mamba1),
                         [](const auto& info) { return std::string(ssm::block_kind_name(info.param)); });

TEST(ModelFrames, PartialFrameIsAnErrorNamingTheSizes) {
  const ModelConfig cfg = framed_config(BlockKind::Mamba2, 16);
  Model m(cfg);
  m.init(1);
  std::vector<float> in(100), out(100);
  ModelGraph<float> g(cfg, m.table());
  try {
    g.forward(out.data(), in.data(), m.params().data(), 1, 100);
    FAIL() << "no error for 100 samples in 16-sample frames";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("100 samples are not a whole number of 16-sample frames"),
              std::string::npos)
        << e.what();
  }
}

TEST(ModelFrames, ConfigRoundTripAndChecks) {
  ModelConfig c = framed_config(BlockKind::Mamba2, 16);
  EXPECT_EQ(c.step_in(), 16);
  EXPECT_EQ(c.latency(), 15);
  const std::string text = c.to_json_text();
  EXPECT_NE(text.find("\"frame\": 16"), std::string::npos) << text;
  EXPECT_EQ(ModelConfig::from_json_text(text, "t").frame, 16);
  // The default is not written, so older configs and checkpoints read the same.
  c.frame = 1;
  EXPECT_EQ(c.to_json_text().find("frame"), std::string::npos);
  EXPECT_THROW(ModelConfig::from_json_text(R"({"frame": 0})", "t"), ssm::Error);
  EXPECT_THROW(ModelConfig::from_json_text(R"({"frame": 5000})", "t"), ssm::Error);
  EXPECT_THROW(ModelConfig::from_json_text(R"({"frame": 1.5})", "t"), ssm::Error);
  // The encoder and head read and write whole frames.
  Model m(framed_config(BlockKind::Mamba2, 16));
  EXPECT_EQ(m.table().shape("encoder.weight"), (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(m.table().shape("head.weight"), (std::vector<int64_t>{16, 16}));
}

// ---------------------------------------------------------------- masking head
// out = S (sigmoid(W h + b) * (A x)) per frame (ModelConfig::mask_bins).

namespace {

ModelConfig masking_config(BlockKind kind, int frame, int bins) {
  ModelConfig c = framed_config(kind, frame);
  c.mask_bins = bins;
  return c;
}

class MaskingByKind : public ::testing::TestWithParam<BlockKind> {};

}  // namespace

TEST_P(MaskingByKind, GradientsMatchFiniteDifferences) {
  for (const int in_channels : {1, 2}) {
    SCOPED_TRACE("in_channels " + std::to_string(in_channels));
    ModelConfig cfg = masking_config(GetParam(), 3, 5);
    cfg.d_model = 6;
    cfg.head_dim = 4;
    cfg.d_state = 3;
    cfg.in_channels = in_channels;
    Model m(cfg);
    m.init(31);
    // Masks away from saturation, so that every path carries gradient.
    for (const char* name : {"head.weight", "head.bias"}) {
      float* p = m.params().data() + m.table().offset(name);
      const auto r = random_vector<float>(m.table().numel(name), 32, -1, 1);
      std::copy(r.begin(), r.end(), p);
    }
    ssm::testing::expect_gradients_match_finite_differences(m, 2, 15, 33, 1e-4);
  }
}

// With the mask logits constant (head.weight = 0), the output is
// sigmoid(b) weighting the filterbank's bins, whatever the layers compute:
// checked against fp64 loops over the tensors. At initialisation S A = I,
// so such a model passes its input through, scaled per bin.
TEST_P(MaskingByKind, ConstantMaskIsTheFilterbankAlone) {
  const int F = 4, K = 6, T = 40;
  const ModelConfig cfg = masking_config(GetParam(), F, K);
  Model m(cfg);
  m.init(41);
  const ssm::ParamTable& t = m.table();
  float* P = m.params().data();
  std::fill(P + t.offset("head.weight"), P + t.offset("head.weight") + t.numel("head.weight"), 0.0f);
  const auto bias = random_vector<float>(K, 42, -2, 2);
  std::copy(bias.begin(), bias.end(), P + t.offset("head.bias"));
  const float* A = P + t.offset("analysis.weight");  // (K, F)
  const float* S = P + t.offset("synthesis.weight");  // (F, K)
  // S A = I at initialisation (K >= F).
  for (int i = 0; i < F; ++i)
    for (int j = 0; j < F; ++j) {
      double v = 0;
      for (int k = 0; k < K; ++k) v += double(S[i * K + k]) * A[k * F + j];
      EXPECT_NEAR(v, i == j ? 1.0 : 0.0, 1e-6) << i << "," << j;
    }
  const auto in = random_vector<double>(T, 43);
  std::vector<double> ref(T);
  for (int f = 0; f < T / F; ++f)
    for (int i = 0; i < F; ++i) {
      double v = 0;
      for (int k = 0; k < K; ++k) {
        double a = 0;
        for (int j = 0; j < F; ++j) a += double(A[k * F + j]) * in[f * F + j];
        v += double(S[i * K + k]) * a / (1 + std::exp(-double(bias[k])));
      }
      ref[f * F + i] = v;
    }
  std::vector<double> Pd(P, P + m.params().size()), out(T);
  ModelGraph<double>(cfg, t).forward(out.data(), in.data(), Pd.data(), 1, T);
  EXPECT_LT(rel_error(out, ref), 1e-12);
}

namespace {

// The streamed output, in random blocks, is the fp64 sequence output
// delayed by F - 1 samples; a snapshot taken mid-frame continues exactly.
void expect_stream_is_the_sequence_delayed(const ModelConfig& cfg, uint64_t seed) {
  const int F = cfg.frame, T = 480;
  Model m(cfg);
  m.init(seed);
  auto in = random_vector<float>(T, seed + 1);
  std::vector<double> P(m.params().data(), m.params().data() + m.params().size());
  auto ind = ssm::testing::cast_vector<double>(in);
  std::vector<double> ref(T), delayed(T, 0.0);
  ModelGraph<double>(cfg, m.table()).forward(ref.data(), ind.data(), P.data(), 1, T);
  std::copy(ref.begin(), ref.end() - (F - 1), delayed.begin() + (F - 1));
  ssm::Stream s(m, 16);
  std::vector<float> o(T);
  std::mt19937 rng(seed + 2);
  for (int t = 0; t < T;) {
    const int n = std::min(T - t, static_cast<int>(rng() % 40) + 1);
    s.process(&in[t], &o[t], n);
    t += n;
  }
  EXPECT_LT(rel_error(o, delayed), 1e-5);
  const int cut = 201;
  ssm::Stream a(m, 16), b(m, 16);
  std::vector<float> oa(T), ob(T);
  a.process(in.data(), oa.data(), cut);  // the same blocks as b and c: the same sums
  a.process(in.data() + cut, oa.data() + cut, T - cut);
  b.process(in.data(), ob.data(), cut);
  ssm::Stream c(m, 16);
  c.restore(b.snapshot());
  c.process(in.data() + cut, ob.data() + cut, T - cut);
  for (int t = 0; t < T; ++t) ASSERT_EQ(oa[t], ob[t]) << t;
}

}  // namespace

TEST_P(MaskingByKind, StreamIsTheSequenceDelayedAndSnapshotsContinue) {
  expect_stream_is_the_sequence_delayed(masking_config(GetParam(), 4, 12), 51);
}

INSTANTIATE_TEST_SUITE_P(Blocks, MaskingByKind, ::testing::Values(BlockKind::Mamba2, BlockKind::Mamba1),
                         [](const auto& info) { return std::string(ssm::block_kind_name(info.param)); });

TEST(ModelMasking, ConfigRoundTripShapesAndChecks) {
  ModelConfig c = masking_config(BlockKind::Mamba2, 16, 48);
  const std::string text = c.to_json_text();
  EXPECT_NE(text.find("\"mask_bins\": 48"), std::string::npos) << text;
  EXPECT_EQ(ModelConfig::from_json_text(text, "t").mask_bins, 48);
  c.mask_bins = 0;  // a mapping head: not written, as before masks existed
  EXPECT_EQ(c.to_json_text().find("mask_bins"), std::string::npos);
  EXPECT_THROW(ModelConfig::from_json_text(R"({"mask_bins": -1})", "t"), ssm::Error);
  EXPECT_THROW(ModelConfig::from_json_text(R"({"mask_bins": 1e9})", "t"), ssm::Error);
  Model m(masking_config(BlockKind::Mamba2, 16, 48));
  EXPECT_EQ(m.table().shape("head.weight"), (std::vector<int64_t>{48, 16}));
  EXPECT_EQ(m.table().shape("analysis.weight"), (std::vector<int64_t>{48, 16}));
  EXPECT_EQ(m.table().shape("synthesis.weight"), (std::vector<int64_t>{16, 48}));
  Model plain(framed_config(BlockKind::Mamba2, 16));
  EXPECT_FALSE(plain.table().contains("analysis.weight"));
}

// ------------------------------------------- windowed analysis, log-power input
// The analysis reads the last W frames (ModelConfig::analysis_frames) and the
// encoder the log power of its bin pairs (ModelConfig::log_power_input).

namespace {

ModelConfig windowed_config(BlockKind kind, bool log_power) {
  ModelConfig c = masking_config(kind, 4, 12);
  c.analysis_frames = 3;
  c.log_power_input = log_power;
  return c;
}

class WindowedByKind : public ::testing::TestWithParam<BlockKind> {};

}  // namespace

TEST_P(WindowedByKind, GradientsMatchFiniteDifferences) {
  for (const bool log_power : {false, true}) {
    SCOPED_TRACE(log_power ? "log-power input" : "sample input");
    ModelConfig cfg = masking_config(GetParam(), 3, 6);
    cfg.analysis_frames = 3;
    cfg.log_power_input = log_power;
    cfg.d_model = 6;
    cfg.head_dim = 4;
    cfg.d_state = 3;
    Model m(cfg);
    m.init(61);
    for (const char* name : {"head.weight", "head.bias"}) {
      float* p = m.params().data() + m.table().offset(name);
      const auto r = random_vector<float>(m.table().numel(name), 62, -1, 1);
      std::copy(r.begin(), r.end(), p);
    }
    // Per tensor looser than the frames' 1e-4: through the log power a tiny
    // Mamba-1 dt_proj's differences sit at 1.2e-4 in some builds.
    ssm::testing::expect_gradients_match_finite_differences(m, 2, 15, 63, 5e-4);
  }
}

TEST_P(WindowedByKind, StreamIsTheSequenceDelayedAndSnapshotsContinue) {
  for (const bool log_power : {false, true}) {
    SCOPED_TRACE(log_power ? "log-power input" : "sample input");
    expect_stream_is_the_sequence_delayed(windowed_config(GetParam(), log_power), 71);
  }
}

// The window's earlier frames travel in the state: a sequence split in two
// with the state carried gives the whole sequence's output.
TEST_P(WindowedByKind, StateCarriesTheWindow) {
  Model m(windowed_config(GetParam(), true));
  m.init(81);
  ssm::testing::expect_state_carry_matches_whole(m, 2, 5 * m.config().frame, 9 * m.config().frame, 82);
}

// At initialisation the synthesis inverts the windowed analysis onto the
// current frame (K >= W F): with the masks held at sigmoid(3), whatever the
// layers compute, the model gives 0.953 of its input back.
TEST_P(WindowedByKind, UntrainedModelPassesItsInputThrough) {
  const ModelConfig cfg = windowed_config(GetParam(), true);
  Model m(cfg);
  m.init(91);
  const ssm::ParamTable& t = m.table();
  float* P = m.params().data();
  const int K = cfg.mask_bins, F = cfg.frame, I = cfg.analysis_in();
  const float* A = P + t.offset("analysis.weight");   // (K, W F)
  const float* S = P + t.offset("synthesis.weight");  // (F, K)
  for (int i = 0; i < F; ++i)
    for (int j = 0; j < I; ++j) {
      double v = 0;
      for (int k = 0; k < K; ++k) v += double(S[i * K + k]) * A[k * I + j];
      EXPECT_NEAR(v, j == I - F + i ? 1.0 : 0.0, 1e-4) << i << "," << j;
    }
  EXPECT_EQ(P[t.offset("head.bias")], 3.0f);
  std::fill(P + t.offset("head.weight"), P + t.offset("head.weight") + t.numel("head.weight"), 0.0f);
  const int T = 40 * F;
  const auto in = random_vector<double>(T, 92);
  std::vector<double> Pd(P, P + m.params().size()), out(T), ref(T);
  ModelGraph<double>(cfg, t).forward(out.data(), in.data(), Pd.data(), 1, T);
  for (int i = 0; i < T; ++i) ref[i] = in[i] / (1 + std::exp(-3.0));
  EXPECT_LT(rel_error(out, ref), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Blocks, WindowedByKind, ::testing::Values(BlockKind::Mamba2, BlockKind::Mamba1),
                         [](const auto& info) { return std::string(ssm::block_kind_name(info.param)); });

TEST(ModelWindowed, ConfigRoundTripShapesAndChecks) {
  const ModelConfig c = windowed_config(BlockKind::Mamba2, true);
  const std::string text = c.to_json_text();
  const ModelConfig back = ModelConfig::from_json_text(text, "t");
  EXPECT_EQ(back.analysis_frames, 3);
  EXPECT_TRUE(back.log_power_input);
  const ModelConfig plain = masking_config(BlockKind::Mamba2, 4, 12);
  EXPECT_EQ(plain.to_json_text().find("analysis_frames"), std::string::npos);  // defaults are not written
  EXPECT_EQ(plain.to_json_text().find("log_power_input"), std::string::npos);
  Model m(c);
  EXPECT_EQ(m.table().shape("analysis.weight"), (std::vector<int64_t>{12, 12}));
  EXPECT_EQ(m.table().shape("encoder.weight"), (std::vector<int64_t>{16, 6}));
  EXPECT_EQ(ssm::model_state_size(c), ssm::model_state_size(plain) + 2 * 4);
  const auto fails_with = [](const std::string& json, const std::string& what) {
    try {
      ModelConfig::from_json_text(json, "t");
      ADD_FAILURE() << json << " was accepted";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  fails_with(R"({"frame": 4, "analysis_frames": 3})", "'analysis_frames' > 1 needs a masking head");
  fails_with(R"({"frame": 4, "mask_bins": 12, "analysis_frames": 0})", "'analysis_frames' must be in");
  fails_with(R"({"frame": 4, "log_power_input": true})", "'log_power_input' needs a masking head");
  fails_with(R"({"frame": 4, "mask_bins": 11, "log_power_input": true})", "even 'mask_bins'");
}

// --------------------------------------- band gains, fixed filterbank
// The head writes mask_bands band logits, spread over the bin pairs by a
// fixed matrix (ModelConfig::mask_bands); the filterbank can be held fixed
// (ModelConfig::fixed_filterbank).

namespace {

ModelConfig banded_config(BlockKind kind, bool fixed) {
  ModelConfig c = windowed_config(kind, true);  // K = 12: 6 pairs
  c.mask_bands = 3;
  c.fixed_filterbank = fixed;
  return c;
}

class BandsByKind : public ::testing::TestWithParam<BlockKind> {};

}  // namespace

TEST_P(BandsByKind, GradientsMatchFiniteDifferences) {
  for (const bool fixed : {false, true}) {
    SCOPED_TRACE(fixed ? "fixed filterbank" : "learned filterbank");
    ModelConfig cfg = banded_config(GetParam(), fixed);
    cfg.frame = 3;
    cfg.mask_bins = 6;
    cfg.d_model = 6;
    cfg.head_dim = 4;
    cfg.d_state = 3;
    Model m(cfg);
    m.init(101);
    for (const char* name : {"head.weight", "head.bias"}) {
      float* p = m.params().data() + m.table().offset(name);
      const auto r = random_vector<float>(m.table().numel(name), 102, -1, 1);
      std::copy(r.begin(), r.end(), p);
    }
    // Per tensor as loose as the windowed model's, and a little more: the
    // tiny Mamba-1 A_log sits at 5.2e-4 here; the whole gradient holds 1e-6.
    ssm::testing::expect_gradients_match_finite_differences(m, 2, 15, 103, 1e-3);
  }
}

TEST_P(BandsByKind, StreamIsTheSequenceDelayedAndStateCarries) {
  expect_stream_is_the_sequence_delayed(banded_config(GetParam(), true), 111);
  Model m(banded_config(GetParam(), false));
  m.init(112);
  ssm::testing::expect_state_carry_matches_whole(m, 2, 5 * m.config().frame, 9 * m.config().frame, 113);
}

// Equal band logits are equal bin logits: with the head's weight at zero the
// untrained banded model passes its input through at sigmoid(3), as the
// per-bin one does.
TEST_P(BandsByKind, UntrainedModelPassesItsInputThrough) {
  const ModelConfig cfg = banded_config(GetParam(), true);
  Model m(cfg);
  m.init(121);
  const ssm::ParamTable& t = m.table();
  float* P = m.params().data();
  std::fill(P + t.offset("head.weight"), P + t.offset("head.weight") + t.numel("head.weight"), 0.0f);
  const int T = 40 * cfg.frame;
  const auto in = random_vector<double>(T, 122);
  std::vector<double> Pd(P, P + m.params().size()), out(T), ref(T);
  ModelGraph<double>(cfg, t).forward(out.data(), in.data(), Pd.data(), 1, T);
  for (int i = 0; i < T; ++i) ref[i] = in[i] / (1 + std::exp(-3.0));
  EXPECT_LT(rel_error(out, ref), 1e-4);
}

// A gain can only scale what comes in: whatever the weights, digital silence
// comes out as exact zeros, and once a signal stops, the output is exactly
// zero as soon as the analysis window holds only silence (no tone, no buzz
// from the state the signal left behind).
TEST_P(BandsByKind, SilenceInIsSilenceOutWhateverTheWeights) {
  const ModelConfig cfg = banded_config(GetParam(), true);
  Model m(cfg);
  m.init(131);
  const ssm::ParamTable& t = m.table();
  const auto r = random_vector<float>(t.numel("head.weight"), 132, -2, 2);
  std::copy(r.begin(), r.end(), m.params().data() + t.offset("head.weight"));
  const int F = cfg.frame, W = cfg.analysis_frames;
  const int T = 30 * F;
  for (const int block : {1, F, 7}) {
    SCOPED_TRACE("block " + std::to_string(block));
    ssm::Stream s(m, block);
    std::vector<float> zeros(T, 0.0f), out(T, 1.0f);
    for (int i = 0; i < T; i += block) s.process(zeros.data() + i, out.data() + i, std::min(block, T - i));
    for (int i = 0; i < T; ++i) ASSERT_EQ(out[i], 0.0f) << "sample " << i << " of silence";
    const auto loud = random_vector<float>(T, 133, -0.8, 0.8);
    for (int i = 0; i < T; i += block) s.process(loud.data() + i, out.data() + i, std::min(block, T - i));
    double energy = 0;
    for (float v : out) energy += double(v) * v;
    EXPECT_GT(energy, 1e-3) << "the signal itself comes through";
    for (int i = 0; i < T; i += block) s.process(zeros.data() + i, out.data() + i, std::min(block, T - i));
    // The frame that holds the signal's last samples, then W - 1 more that
    // still see them in the window; after those, zeros.
    for (int i = (W + 1) * F; i < T; ++i) ASSERT_EQ(out[i], 0.0f) << "sample " << i << " after the signal stopped";
  }
}

INSTANTIATE_TEST_SUITE_P(Blocks, BandsByKind, ::testing::Values(BlockKind::Mamba2, BlockKind::Mamba1),
                         [](const auto& info) { return std::string(ssm::block_kind_name(info.param)); });

// The band-to-bin matrix of the shipped shape (256 bins at 16 kHz, 32 bands):
// rows are interpolation weights (>= 0, summing to 1, on at most two
// neighbouring bands); both bins of a pair alike; the centres at least one
// pair apart, their spacing growing with frequency as the ERB scale's does.
TEST(ModelBands, ExpansionInterpolatesBetweenErbSpacedCentres) {
  ModelConfig cfg = windowed_config(BlockKind::Mamba2, true);
  cfg.frame = 32;
  cfg.analysis_frames = 8;
  cfg.mask_bins = 256;
  cfg.mask_bands = 32;
  Model m(cfg);
  m.init(131);
  const int K = 256, B = 32;
  const float* X = m.params().data() + m.table().offset("band_expand.weight");  // (K, B)
  EXPECT_EQ(m.table().shape("band_expand.weight"), (std::vector<int64_t>{K, B}));
  EXPECT_EQ(m.table().shape("head.weight"), (std::vector<int64_t>{B, cfg.d_model}));
  std::vector<double> centre;  // pairs where a band's weight is 1
  for (int i = 0; i < K / 2; ++i) {
    double sum = 0;
    int first = -1, count = 0;
    for (int b = 0; b < B; ++b) {
      const float w = X[2 * i * B + b];
      EXPECT_EQ(w, X[(2 * i + 1) * B + b]) << "pair " << i;
      EXPECT_GE(w, 0.0f);
      if (w > 0) {
        if (first < 0) first = b;
        EXPECT_LE(b - first, 1) << "pair " << i << " mixes bands that are not neighbours";
        ++count;
      }
      sum += w;
      if (w == 1.0f) centre.push_back(i);
    }
    EXPECT_NEAR(sum, 1.0, 1e-6) << "pair " << i;
    EXPECT_LE(count, 2);
  }
  // Whole-pair centres land exactly; the first bands are one pair apart (the
  // ERB bandwidth is below the 62.5 Hz pair spacing there), the top band sits
  // on the last pair, and the widest gap is far above the narrowest.
  ASSERT_GE(centre.size(), 4u);
  EXPECT_EQ(centre[0], 0);
  EXPECT_EQ(centre[1], 1);
  EXPECT_EQ(centre.back(), K / 2 - 1);
  EXPECT_EQ(X[(K - 1) * B + B - 1], 1.0f);
  // With one band per pair the matrix is the identity on pairs.
  cfg.mask_bands = K / 2;
  Model per_pair(cfg);
  per_pair.init(132);
  const float* Y = per_pair.params().data() + per_pair.table().offset("band_expand.weight");  // (K, K / 2)
  for (int k = 0; k < K; ++k)
    for (int b = 0; b < K / 2; ++b) ASSERT_EQ(Y[k * (K / 2) + b], b == k / 2 ? 1.0f : 0.0f) << k << "," << b;
}

// Untrainable tensors are left alone by the optimizer, whatever their
// gradient; the rest move. The per-element multipliers the CUDA update
// reads say the same (-1: do not move).
TEST(ModelBands, OptimizerLeavesTheFixedTensorsAlone) {
  Model m(banded_config(BlockKind::Mamba2, true));
  m.init(141);
  const ssm::ParamTable& t = m.table();
  ssm::ParamBlock<float> grads(t);
  for (size_t i = 0; i < grads.size(); ++i) grads.data()[i] = 0.5f;
  const std::vector<float> before(m.params().data(), m.params().data() + m.params().size());
  ssm::AdamW<float> opt(t, ssm::AdamWConfig{});
  opt.step(m.params(), grads, 1e-2);
  const std::vector<float> mult = t.update_multipliers();
  ASSERT_EQ(mult.size(), t.total());
  for (const auto& e : t.entries()) {
    const bool fixed = e.spec.name == "analysis.weight" || e.spec.name == "synthesis.weight" ||
                       e.spec.name == "band_expand.weight";
    EXPECT_EQ(e.spec.trainable, !fixed) << e.spec.name;
    size_t moved = 0;
    for (size_t i = 0; i < e.numel; ++i) moved += m.params().data()[e.offset + i] != before[e.offset + i];
    EXPECT_EQ(moved, fixed ? 0u : e.numel) << e.spec.name;
    EXPECT_EQ(mult[e.offset], fixed ? -1.0f : e.spec.weight_decay_mult) << e.spec.name;
  }
  // A learned filterbank trains; the band matrix never does.
  Model learned(banded_config(BlockKind::Mamba2, false));
  EXPECT_TRUE(learned.table().entry("analysis.weight").spec.trainable);
  EXPECT_FALSE(learned.table().entry("band_expand.weight").spec.trainable);
}

TEST(ModelBands, ConfigRoundTripAndChecks) {
  const ModelConfig c = banded_config(BlockKind::Mamba2, true);
  const ModelConfig back = ModelConfig::from_json_text(c.to_json_text(), "t");
  EXPECT_EQ(back.mask_bands, 3);
  EXPECT_TRUE(back.fixed_filterbank);
  const std::string plain = windowed_config(BlockKind::Mamba2, true).to_json_text();
  EXPECT_EQ(plain.find("mask_bands"), std::string::npos);  // defaults are not written
  EXPECT_EQ(plain.find("fixed_filterbank"), std::string::npos);
  const auto fails_with = [](const std::string& json, const std::string& what) {
    try {
      ModelConfig::from_json_text(json, "t");
      ADD_FAILURE() << json << " was accepted";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  fails_with(R"({"frame": 4, "mask_bands": 2})", "'mask_bands' needs a masking head");
  fails_with(R"({"frame": 4, "mask_bins": 11, "mask_bands": 2})", "even 'mask_bins'");
  fails_with(R"({"frame": 4, "mask_bins": 12, "mask_bands": 7})", "at most mask_bins / 2");
  fails_with(R"({"frame": 4, "mask_bins": 12, "mask_bands": -1})", "'mask_bands'");
  fails_with(R"({"frame": 4, "mask_bins": 12, "fixed_filterbank": true})", "'fixed_filterbank' needs");
  fails_with(R"({"frame": 4, "fixed_filterbank": true})", "'fixed_filterbank' needs");
}

// ------------------------------------------------ hybrids over frames
// Attention layers interleaved (ModelConfig::attention_every) attend over
// time steps, frames here: the stream, in random blocks and across a
// snapshot taken mid-frame, is the sequence delayed by the frame wait, and
// the rings travel in the state (the first piece shorter than the window).
TEST(ModelFramesHybrid, StreamIsTheSequenceDelayedAndTheRingsCarry) {
  for (const BlockKind kind : {BlockKind::Mamba2, BlockKind::Mamba1}) {
    SCOPED_TRACE(ssm::block_kind_name(kind));
    ModelConfig c = windowed_config(kind, true);
    c.attention_every = 1;
    c.attention_window = 6;
    c.attention_heads = 2;
    expect_stream_is_the_sequence_delayed(c, 91);  // 120 frames, window 6
    Model m(c);
    m.init(92);
    ssm::testing::expect_state_carry_matches_whole(m, 2, 3 * c.frame, 20 * c.frame, 93);
  }
}
