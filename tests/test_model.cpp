// The whole model: fp64 finite-difference gradients, the three ways of
// running it (whole sequence, per sample, random blocks) agreeing, state
// snapshots, and checkpoints.
#include <cstdio>
#include <filesystem>
#include <random>

#include "ssm/model.hpp"
#include "ssm/safetensors.hpp"
#include "model_fixtures.hpp"
#include "testing.hpp"

using ssm::BlockKind;
using ssm::Model;
using ssm::ModelConfig;
using ssm::ModelGraph;
using ssm::testing::random_vector;
using ssm::testing::rel_error;

namespace {

ModelConfig tiny_config(BlockKind kind) {
  ModelConfig c;
  c.block = kind;
  c.d_model = 6;
  c.n_layers = 2;
  c.expand = 2;
  c.head_dim = 4;  // H = 3
  c.d_state = 3;
  c.d_conv = 3;
  c.n_groups = kind == BlockKind::Mamba2 ? 3 : 1;
  c.dt_rank = 2;
  c.chunk = 4;
  c.in_channels = 2;
  c.out_channels = 2;
  return c;
}

ModelConfig small_config(BlockKind kind) { return ssm::testing::small_model_config(kind, 16); }

// Random parameters around the published initialisation so every path is exercised.
Model make_model(const ModelConfig& cfg, uint64_t seed) {
  Model m(cfg);
  m.init(seed);
  // Perturb norms, D and biases away from their constant init.
  std::mt19937_64 rng(seed + 1);
  std::uniform_real_distribution<double> u(-0.2, 0.2);
  for (const auto& e : m.table().entries()) {
    if (e.spec.weight_decay_mult != 0.0f) continue;
    if (e.spec.name.find("A_log") != std::string::npos || e.spec.name.find("dt_") != std::string::npos) continue;
    float* p = m.params().at(e.spec.name);
    for (size_t i = 0; i < e.numel; ++i) p[i] += static_cast<float>(u(rng));
  }
  return m;
}

std::vector<double> params_as_double(const Model& m) {
  return std::vector<double>(m.params().data(), m.params().data() + m.params().size());
}

class ModelByKind : public ::testing::TestWithParam<BlockKind> {};

}  // namespace

TEST_P(ModelByKind, GradientsMatchFiniteDifferences) {
  const ModelConfig cfg = tiny_config(GetParam());
  // T = 7: not a multiple of the chunk.
  ssm::testing::expect_gradients_match_finite_differences(make_model(cfg, 11), 2, 7, 5, 1e-5);
}

TEST_P(ModelByKind, ParameterGradientsAccumulate) {
  const ModelConfig cfg = tiny_config(GetParam());
  Model m = make_model(cfg, 12);
  std::vector<double> P = params_as_double(m);
  const int B = 1, T = 5;
  auto in = random_vector<double>(static_cast<size_t>(B) * T * cfg.in_channels, 7);
  auto w = random_vector<double>(static_cast<size_t>(B) * T * cfg.out_channels, 8);
  ModelGraph<double> g(cfg, m.table());
  std::vector<double> out(w.size()), d1(P.size(), 0.0), d2(P.size(), 0.0);
  g.forward(out.data(), in.data(), P.data(), B, T);
  g.backward(d1.data(), nullptr, w.data(), P.data());
  g.backward(d2.data(), nullptr, w.data(), P.data());
  g.backward(d2.data(), nullptr, w.data(), P.data());
  for (auto& v : d1) v *= 2;
  EXPECT_LT(rel_error(d2, d1), 1e-12);
}

TEST_P(ModelByKind, FloatMatchesDoubleReference) {
  const ModelConfig cfg = small_config(GetParam());
  Model m = make_model(cfg, 13);
  const int B = 2, T = 300;
  auto in = random_vector<float>(static_cast<size_t>(B) * T, 9);
  ModelGraph<float> gf(cfg, m.table());
  ModelGraph<double> gd(cfg, m.table());
  std::vector<float> of(B * T);
  std::vector<double> od(B * T);
  gf.forward(of.data(), in.data(), m.params().data(), B, T);
  auto Pd = params_as_double(m);
  auto ind = ssm::testing::cast_vector<double>(in);
  gd.forward(od.data(), ind.data(), Pd.data(), B, T);
  EXPECT_LT(rel_error(of, od), 1e-5);
}

TEST_P(ModelByKind, ChunkedPerSampleAndRandomBlocksAgree) {
  const ModelConfig cfg = small_config(GetParam());
  Model m = make_model(cfg, 14);
  const int T = 1000;
  auto in = random_vector<float>(T, 10);
  // fp64 whole-sequence reference.
  ModelGraph<double> gd(cfg, m.table());
  std::vector<double> ref(T);
  auto Pd = params_as_double(m);
  auto ind = ssm::testing::cast_vector<double>(in);
  gd.forward(ref.data(), ind.data(), Pd.data(), 1, T);
  // Chunked mode at several chunk lengths (T not a multiple of any).
  ModelGraph<float> gf(cfg, m.table());
  for (int Q : {1, 7, 16, 64, 2000}) {
    std::vector<float> out(T);
    gf.forward(out.data(), in.data(), m.params().data(), 1, T, nullptr, nullptr, Q);
    EXPECT_LT(rel_error(out, ref), 1e-5) << "Q=" << Q;
  }
  // One sample at a time.
  ssm::Stream per_sample(m, 1);
  std::vector<float> out1(T);
  for (int t = 0; t < T; ++t) per_sample.process(&in[t], &out1[t], 1);
  EXPECT_LT(rel_error(out1, ref), 1e-5);
  // Random block sizes, including blocks larger than the stream's max block.
  ssm::Stream blocks(m, 64);
  std::vector<float> out2(T);
  std::mt19937 rng(3);
  for (int t = 0; t < T;) {
    int n = std::min(T - t, static_cast<int>(rng() % 150) + 1);
    blocks.process(&in[t], &out2[t], n);
    t += n;
  }
  EXPECT_LT(rel_error(out2, ref), 1e-5);
}

TEST_P(ModelByKind, StateCarryWithBatch) {
  ssm::testing::expect_state_carry_matches_whole(make_model(small_config(GetParam()), 15), 3, 37, 50, 16);
}

TEST_P(ModelByKind, SnapshotRestoreContinuesExactly) {
  const ModelConfig cfg = small_config(GetParam());
  Model m = make_model(cfg, 17);
  auto in = random_vector<float>(600, 18);
  ssm::Stream a(m), b(m);
  std::vector<float> oa(600), ob(600);
  // Same block boundaries on both sides, so the results are bit-identical.
  a.process(in.data(), oa.data(), 250);
  a.process(in.data() + 250, oa.data() + 250, 350);
  b.process(in.data(), ob.data(), 250);
  auto snap = b.snapshot();
  ssm::Stream c(m);
  c.restore(snap);
  c.process(in.data() + 250, ob.data() + 250, 350);
  for (int t = 0; t < 600; ++t) ASSERT_EQ(oa[t], ob[t]) << t;
  // Reset returns to the zero state.
  c.reset();
  std::vector<float> oc(600);
  c.process(in.data(), oc.data(), 250);
  c.process(in.data() + 250, oc.data() + 250, 350);
  for (int t = 0; t < 600; ++t) ASSERT_EQ(oa[t], oc[t]) << t;
}

TEST_P(ModelByKind, SaveLoadRoundTrip) {
  const ModelConfig cfg = small_config(GetParam());
  Model m = make_model(cfg, 19);
  auto path = std::filesystem::temp_directory_path() / ("ssm_model_" + std::to_string(::getpid()) + ".safetensors");
  m.save(path);
  Model l = Model::load(path);
  EXPECT_EQ(l.config().to_json_text(), cfg.to_json_text());
  ASSERT_EQ(l.params().size(), m.params().size());
  for (size_t i = 0; i < m.params().size(); ++i) ASSERT_EQ(l.params().data()[i], m.params().data()[i]);
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Blocks, ModelByKind, ::testing::Values(BlockKind::Mamba2, BlockKind::Mamba1),
                         [](const auto& info) { return std::string(ssm::block_kind_name(info.param)); });

TEST(Model, TensorNamesFollowMambaSsm) {
  Model m(small_config(BlockKind::Mamba2));
  for (const char* name : {"layers.0.mixer.in_proj.weight", "layers.0.mixer.conv1d.weight",
                           "layers.0.mixer.conv1d.bias", "layers.0.mixer.A_log", "layers.0.mixer.dt_bias",
                           "layers.0.mixer.D", "layers.0.mixer.norm.weight", "layers.0.mixer.out_proj.weight",
                           "layers.1.norm.weight"})
    EXPECT_TRUE(m.table().contains(name)) << name;
  // in_proj packs [z | x B C | dt]: 2E + 2GN + H rows.
  EXPECT_EQ(m.table().shape("layers.0.mixer.in_proj.weight")[0], 2 * 32 + 2 * 8 + 4);
  EXPECT_EQ(m.table().shape("layers.0.mixer.conv1d.weight"), (std::vector<int64_t>{32 + 16, 1, 4}));
}

TEST(Model, PublishedInitialisation) {
  ModelConfig cfg = small_config(BlockKind::Mamba2);
  Model m(cfg);
  m.init(1);
  const float* A_log = m.params().at("layers.0.mixer.A_log");
  const float* dt_bias = m.params().at("layers.0.mixer.dt_bias");
  for (int h = 0; h < cfg.heads(); ++h) {
    EXPECT_GE(std::exp(A_log[h]), 1.0f - 1e-5f);
    EXPECT_LE(std::exp(A_log[h]), 16.0f + 1e-4f);
    const double dt = std::log1p(std::exp(static_cast<double>(dt_bias[h])));  // softplus
    EXPECT_GE(dt, cfg.dt_min * (1 - 1e-4));
    EXPECT_LE(dt, cfg.dt_max * (1 + 1e-4));
    EXPECT_EQ(m.params().at("layers.0.mixer.D")[h], 1.0f);
  }
}

TEST(Model, ConfigErrorsNameTheKey) {
  try {
    ssm::ModelConfig::from_json_text(R"({"d_model": 64, "head_dim": 48})", "cfg.json");
    FAIL();
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
  try {
    ssm::ModelConfig::from_json_text(R"({"d_modle": 64})", "cfg.json");
    FAIL();
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("d_modle"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ssm::ModelConfig::from_json_text(R"({"n_layers": "four"})", "c"), ssm::Error);
  EXPECT_THROW(ssm::ModelConfig::from_json_text("{not json", "c"), ssm::Error);
  EXPECT_THROW(ssm::ModelConfig::from_json_text(R"({"block": "mamba3"})", "c"), ssm::Error);
}

// Found by fuzz_model_config's invariants (UBSan): a config within every
// single limit could still make E + 2 * G * N, the conv's channel count,
// overflow int.
TEST(Model, ConfigWhoseDerivedSizesOverflowIsAnError) {
  const char* text = R"({"d_model": 65536, "expand": 4, "head_dim": 1, "n_groups": 262144, "d_state": 4096})";
  try {
    ssm::ModelConfig::from_json_text(text, "big.json");
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("n_groups * d_state"), std::string::npos) << e.what();
  }
}

// Found while fuzzing the config readers: an error message quotes the wrong
// value with nlohmann::json::dump(), which recurses once per nesting level,
// so a deeply nested value (a crafted "ssm.config" in a model file) crashed
// with a stack overflow. Nesting is now bounded while parsing.
TEST(Model, DeeplyNestedConfigIsAnErrorNotAStackOverflow) {
  const size_t n = 1000000;
  const std::string text = R"({"d_model": )" + std::string(n, '[') + std::string(n, ']') + "}";
  try {
    ssm::ModelConfig::from_json_text(text, "deep.json");
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("deep.json: model config nests JSON deeper"), std::string::npos)
        << e.what();
  }
}

TEST(Model, LoadRejectsMismatchedTensors) {
  Model m(small_config(BlockKind::Mamba2));
  m.init(2);
  auto dir = std::filesystem::temp_directory_path();
  auto path = dir / ("ssm_bad_model_" + std::to_string(::getpid()) + ".safetensors");
  {
    ssm::SafeTensorsWriter w;
    for (const auto& e : m.table().entries()) {
      auto shape = e.spec.shape;
      if (e.spec.name == "layers.1.mixer.D") shape = {shape[0] + 1};
      std::vector<float> data(1);
      size_t n = 1;
      for (auto s : shape) n *= s;
      data.assign(n, 0.5f);
      w.add(e.spec.name, data.data(), shape);
    }
    w.set_metadata("ssm.config", m.config().to_json_text());
    w.write_file(path);
  }
  try {
    Model::load(path);
    FAIL();
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.1.mixer.D"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}
