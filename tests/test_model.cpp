// The whole model: fp64 finite-difference gradients, the three ways of
// running it (whole sequence, per sample, random blocks) agreeing, state
// snapshots, and checkpoints; for each block kind alone and as a hybrid with
// sliding-window attention layers interleaved.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <random>

#include "ssm/backend_ops.hpp"
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

// A block kind, alone or with attention layers interleaved (hybrid).
struct Variant {
  BlockKind kind;
  bool hybrid;
};

std::string variant_name(const Variant& v) {
  return std::string(ssm::block_kind_name(v.kind)) + (v.hybrid ? "_attention" : "");
}
void PrintTo(const Variant& v, std::ostream* os) { *os << variant_name(v); }

ModelConfig tiny_config(Variant v) {
  const BlockKind kind = v.kind;
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
  if (v.hybrid) {
    // SSM, attention, SSM, attention; a window of 3 (T = 7 runs past it), 2 heads of 3.
    c.attention_every = 1;
    c.attention_window = 3;
    c.attention_heads = 2;
  }
  return c;
}

ModelConfig small_config(Variant v) {
  ModelConfig c = ssm::testing::small_model_config(v.kind, 16);
  if (v.hybrid) {
    // SSM, attention, SSM, attention; 4 heads of 4 over a window of 24.
    c.attention_every = 1;
    c.attention_window = 24;
    c.attention_heads = 4;
  }
  return c;
}

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

class ModelByKind : public ::testing::TestWithParam<Variant> {};

}  // namespace

TEST_P(ModelByKind, GradientsMatchFiniteDifferences) {
  const ModelConfig cfg = tiny_config(GetParam());
  // T = 7: not a multiple of the chunk (and past the hybrid's window of 3).
  // Every parameter together within 1e-6; each tensor within 1e-5, or 1e-4
  // in the hybrids, where a Mamba-1 dt_proj.weight of 24 elements behind an
  // attention layer sits at 1.4e-5, the finite differences' own rounding.
  ssm::testing::expect_gradients_match_finite_differences(make_model(cfg, 11), 2, 7, 5,
                                                          GetParam().hybrid ? 1e-4 : 1e-5);
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

// The first piece shorter than the attention window: the carried rings are
// partly filled, then fill and wrap around in the second piece.
TEST_P(ModelByKind, StateCarryFromAShortFirstPiece) {
  ssm::testing::expect_state_carry_matches_whole(make_model(small_config(GetParam()), 21), 2, 5, 61, 22);
  ssm::testing::expect_state_carry_matches_whole(make_model(small_config(GetParam()), 23), 2, 1, 2, 24);
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

INSTANTIATE_TEST_SUITE_P(Blocks, ModelByKind,
                         ::testing::Values(Variant{BlockKind::Mamba2, false}, Variant{BlockKind::Mamba1, false},
                                           Variant{BlockKind::Mamba2, true}, Variant{BlockKind::Mamba1, true}),
                         [](const auto& info) { return variant_name(info.param); });

TEST(Model, TensorNamesFollowMambaSsm) {
  Model m(small_config({BlockKind::Mamba2, false}));
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
  ModelConfig cfg = small_config({BlockKind::Mamba2, false});
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
  Model m(small_config({BlockKind::Mamba2, false}));
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

// ---- hybrids: attention layers interleaved with the SSM blocks ----

TEST(ModelHybrid, LayersInterleaveAndTensorsAreNamedLikeMambaSsm) {
  ModelConfig c = small_config({BlockKind::Mamba2, false});
  c.n_layers = 4;
  c.attention_every = 2;
  c.attention_heads = 2;
  c.attention_head_dim = 12;
  ASSERT_EQ(c.layers(), 6);
  Model m(c);
  // SSM, SSM, attention, SSM, SSM, attention.
  for (int i = 0; i < 6; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const bool attn = i == 2 || i == 5;
    EXPECT_EQ(c.is_attention(i), attn) << i;
    EXPECT_TRUE(m.table().contains(p + "norm.weight")) << i;
    EXPECT_TRUE(m.table().contains(p + "mixer.out_proj.weight")) << i;
    EXPECT_EQ(m.table().contains(p + "mixer.conv1d.weight"), !attn) << i;
    if (attn) {
      EXPECT_EQ(m.table().shape(p + "mixer.in_proj.weight"), (std::vector<int64_t>{3 * 24, 16}));
      EXPECT_EQ(m.table().shape(p + "mixer.out_proj.weight"), (std::vector<int64_t>{16, 24}));
    }
  }
  EXPECT_FALSE(m.table().contains("layers.6.norm.weight"));
  // Each attention ring holds W - 1 keys and values of H * P and two counters.
  const size_t ssm_layer = 3 * (32 + 16) + 32 * 8;
  EXPECT_EQ(ssm::model_state_size(c), 4 * ssm_layer + 2 * (63 * 2 * 24 + 2));
}

TEST(ModelHybrid, ConfigRoundTripsAndIsWrittenOnlyWhenOn) {
  const ModelConfig plain = small_config({BlockKind::Mamba2, false});
  EXPECT_EQ(plain.to_json_text().find("attention"), std::string::npos);
  const ModelConfig hybrid = small_config({BlockKind::Mamba1, true});
  const ModelConfig back = ModelConfig::from_json_text(hybrid.to_json_text(), "hybrid.json");
  EXPECT_EQ(back.to_json_text(), hybrid.to_json_text());
  EXPECT_EQ(back.attention_every, 1);
  EXPECT_EQ(back.attention_window, 24);
  EXPECT_EQ(back.attention_heads, 4);
  EXPECT_EQ(back.attn_head_dim(), 4);
}

TEST(ModelHybrid, ConfigErrorsNameTheKey) {
  auto error = [](const char* text) {
    return ssm::testing::error_of([&] { ModelConfig::from_json_text(text, "cfg.json"); });
  };
  auto expect_has = [](const std::string& what, const char* part) {
    EXPECT_NE(what.find(part), std::string::npos) << what;
    EXPECT_NE(what.find("cfg.json"), std::string::npos) << what;
  };
  expect_has(error(R"({"attention_window": 32})"), "'attention_window' needs 'attention_every' > 0");
  expect_has(error(R"({"n_layers": 2, "attention_every": 3})"), "'attention_every' (3) is more than 'n_layers' (2)");
  expect_has(error(R"({"attention_every": -1})"), "'attention_every' must be >= 0");
  expect_has(error(R"({"attention_every": 1, "attention_window": 0})"), "'attention_window' must be in [1, 65536]");
  expect_has(error(R"({"d_model": 64, "attention_every": 1, "attention_heads": 5})"),
             "'d_model' (64) is not a multiple of 'attention_heads' (5)");
  expect_has(error(R"({"attention_every": 1, "attention_heads": 0})"), "'attention_heads' must be in [1, 4096]");
  expect_has(error(R"({"attention_every": 1, "attention_head_dim": 2.5})"), "attention_head_dim");
  // Set in code without attention_every: not silently dropped from the JSON.
  ModelConfig c;
  c.attention_window = 16;
  EXPECT_NE(ssm::testing::error_of([&] { c.validate(); }).find("need 'attention_every' > 0"), std::string::npos);
}

// A backend without the attention op fails when the graph is built, naming
// the op: never a silent fallback to another backend.
TEST(ModelHybrid, ABackendWithoutTheAttentionOpIsAnErrorNamingIt) {
  const ModelConfig cfg = small_config({BlockKind::Mamba2, true});
  Model m(cfg);
  ssm::ops::OpsTable<float> lacking = ssm::ops::cpu_f32();
  lacking.name = "cpu<float> without attention";
  lacking.attention_forward = nullptr;
  lacking.attention_backward = nullptr;
  const std::string what = ssm::testing::error_of([&] { ModelGraph<float> g(cfg, m.table(), lacking); });
  EXPECT_NE(what.find("attention_forward"), std::string::npos) << what;
  EXPECT_NE(what.find("cpu<float> without attention"), std::string::npos) << what;
  // The same model without attention layers builds on it.
  EXPECT_NO_THROW(ModelGraph<float>(small_config({BlockKind::Mamba2, false}),
                                    Model(small_config({BlockKind::Mamba2, false})).table(), lacking));
}

// The stream's state is the graph's layout for one stream: a state the graph
// hands over continues in the stream exactly as the graph would go on.
TEST(ModelHybrid, GraphStateHandsOverToTheStream) {
  const ModelConfig cfg = small_config({BlockKind::Mamba2, true});
  Model m = make_model(cfg, 31);
  const int T1 = 40, T2 = 60;
  auto in = random_vector<float>(T1 + T2, 32);
  ModelGraph<float> g(cfg, m.table());
  std::vector<float> whole(T1 + T2), st(ssm::model_state_size(cfg));
  g.forward(whole.data(), in.data(), m.params().data(), 1, T1 + T2);
  std::vector<float> first(T1);
  g.forward(first.data(), in.data(), m.params().data(), 1, T1, nullptr, st.data());
  ssm::Stream s(m);
  ASSERT_EQ(s.state_size(), st.size());
  // A snapshot of a fresh stream, its state replaced by the graph's.
  std::vector<uint8_t> snap = s.snapshot();
  std::memcpy(snap.data() + 24, st.data(), st.size() * sizeof(float));
  s.restore(snap);
  std::vector<float> rest(T2);
  s.process(in.data() + T1, rest.data(), T2);
  EXPECT_LT(rel_error(rest.data(), whole.data() + T1, T2), 1e-5);
}

TEST(ModelHybrid, SnapshotWithCountersOutsideTheRingIsAnError) {
  const ModelConfig cfg = small_config({BlockKind::Mamba2, true});
  Model m = make_model(cfg, 33);
  ssm::Stream s(m);
  std::vector<float> in(30, 0.1f), out(30);
  s.process(in.data(), out.data(), 30);
  std::vector<uint8_t> snap = s.snapshot();
  // Layer 1 is the first attention layer; its counters end its ring.
  const size_t at = ssm::model_layer_state_size(cfg, 0) + ssm::model_layer_state_size(cfg, 1) - 2;
  float head = 0;
  std::memcpy(&head, snap.data() + 24 + at * sizeof(float), sizeof(float));
  EXPECT_EQ(head, 7.0f);  // 30 steps round a ring of 23 slots
  const float bad = 23.0f;
  std::memcpy(snap.data() + 24 + at * sizeof(float), &bad, sizeof(float));
  const std::string what = ssm::testing::error_of([&] { s.restore(snap); });
  EXPECT_NE(what.find("stream snapshot: layer 1"), std::string::npos) << what;
  EXPECT_NE(what.find("state counters"), std::string::npos) << what;
}
