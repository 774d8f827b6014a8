// Training on the CPU: a tiny model learns to remove white noise from a
// synthetic harmonic signal, and a resumed run follows the uninterrupted one
// bit for bit.
#include <cmath>
#include <filesystem>
#include <random>

#include "ssm/trainer.hpp"
#include "model_fixtures.hpp"
#include "testing.hpp"

using ssm::BlockKind;
using ssm::Model;
using ssm::ModelConfig;
using ssm::Trainer;
using ssm::TrainerConfig;

namespace {

using ssm::testing::HarmonicDenoising;

ModelConfig tiny_denoiser(BlockKind kind) { return ssm::testing::small_model_config(kind, 32); }

TrainerConfig short_run(int64_t steps) { return ssm::testing::short_training_run(steps); }

// 300 steps of the short run on HarmonicDenoising(0.1) batches: the
// validation L2 before and after, on a held-out batch (a seed the training
// batches never use), and the identity's (passing the noisy input through:
// noise_std^2 = 0.01).
struct Learned {
  double before, after, identity;
};
Learned learn_to_denoise(Model& model) {
  const TrainerConfig tc = short_run(300);
  Trainer trainer(model, tc);
  HarmonicDenoising data(0.1);
  const int VB = 8, VT = 1024;
  std::vector<float> vin(VB * VT), vtarget(VB * VT);
  data.batch(vin.data(), vtarget.data(), VB, VT, /*seed=*/999, 0);
  Learned r{trainer.evaluate(vin.data(), vtarget.data(), VB, VT), 0, 0};
  for (int i = 0; i < tc.steps; ++i) trainer.step(data);
  r.after = trainer.evaluate(vin.data(), vtarget.data(), VB, VT);
  for (int i = 0; i < VB * VT; ++i) r.identity += (vin[i] - vtarget[i]) * (vin[i] - vtarget[i]);
  r.identity /= VB * VT;
  std::printf("validation L2: %.5f -> %.5f (identity %.5f)\n", r.before, r.after, r.identity);
  return r;
}

}  // namespace

class TrainerByKind : public ::testing::TestWithParam<BlockKind> {};

TEST_P(TrainerByKind, TinyModelLearnsToDenoise) {
  Model model(tiny_denoiser(GetParam()));
  model.init(7);
  const Learned r = learn_to_denoise(model);
  EXPECT_LT(r.after, r.before / 10);
  EXPECT_LT(r.after, r.identity / 2);  // it removes noise, not just learns to copy
}

TEST_P(TrainerByKind, ResumeContinuesBitIdentically) {
  const TrainerConfig tc = short_run(12);
  HarmonicDenoising data(0.3);
  Model a(tiny_denoiser(GetParam()));
  a.init(3);
  Trainer ta(a, tc);
  std::vector<double> losses_a;
  for (int i = 0; i < 12; ++i) losses_a.push_back(ta.step(data).loss);

  Model b(tiny_denoiser(GetParam()));
  b.init(3);
  auto path = (std::filesystem::temp_directory_path() / ("ssm_ckpt_" + std::to_string(::getpid()) + ".safetensors")).string();
  {
    Trainer tb(b, tc);
    for (int i = 0; i < 5; ++i) ASSERT_EQ(tb.step(data).loss, losses_a[i]);
    tb.save_checkpoint(path);
  }
  Model c(tiny_denoiser(GetParam()));
  Trainer tcnt(c, tc);
  tcnt.load_checkpoint(path);
  EXPECT_EQ(tcnt.steps_done(), 5);
  for (int i = 5; i < 12; ++i) ASSERT_EQ(tcnt.step(data).loss, losses_a[i]) << "step " << i;
  for (size_t i = 0; i < a.params().size(); ++i) ASSERT_EQ(c.params().data()[i], a.params().data()[i]);
  std::filesystem::remove(path);
  std::filesystem::remove(path + ".optim");
}

TEST_P(TrainerByKind, MismatchedCheckpointPartsAreRefused) {
  const TrainerConfig tc = short_run(10);
  HarmonicDenoising data(0.3);
  Model a(tiny_denoiser(GetParam()));
  a.init(3);
  Trainer ta(a, tc);
  auto dir = std::filesystem::temp_directory_path();
  auto p1 = (dir / ("ssm_ck1_" + std::to_string(::getpid()) + ".safetensors")).string();
  auto p2 = (dir / ("ssm_ck2_" + std::to_string(::getpid()) + ".safetensors")).string();
  ta.step(data);
  ta.save_checkpoint(p1);
  ta.step(data);
  ta.save_checkpoint(p2);
  std::filesystem::copy_file(p2 + ".optim", p1 + ".optim", std::filesystem::copy_options::overwrite_existing);
  Model b(tiny_denoiser(GetParam()));
  Trainer tb(b, tc);
  EXPECT_THROW(tb.load_checkpoint(p1), ssm::Error);
  for (const auto& p : {p1, p2}) std::filesystem::remove(p), std::filesystem::remove(p + ".optim");
}

INSTANTIATE_TEST_SUITE_P(Blocks, TrainerByKind, ::testing::Values(BlockKind::Mamba2, BlockKind::Mamba1),
                         [](const auto& info) { return std::string(ssm::block_kind_name(info.param)); });

// A hybrid (an attention layer after each of the two Mamba-2 blocks, window
// 32) learns the same task: the attention layers' gradients reach AdamW
// through the one graph.
TEST(Trainer, HybridWithAttentionLearnsToDenoise) {
  ModelConfig mc = tiny_denoiser(BlockKind::Mamba2);
  mc.attention_every = 1;
  mc.attention_window = 32;
  mc.attention_heads = 2;
  Model model(mc);
  model.init(7);
  const std::vector<float> start(model.params().data(), model.params().data() + model.params().size());
  const Learned r = learn_to_denoise(model);
  EXPECT_LT(r.after, r.before / 10);
  EXPECT_LT(r.after, r.identity / 2);
  // The attention layers' projections moved (the trainer updates the model in place).
  const Model& trained = model;
  for (const char* name : {"layers.1.mixer.in_proj.weight", "layers.3.mixer.out_proj.weight"}) {
    const auto& e = trained.table().entry(name);
    double moved = 0;
    for (size_t i = 0; i < e.numel; ++i) moved += std::abs(trained.params().data()[e.offset + i] - start[e.offset + i]);
    EXPECT_GT(moved / e.numel, 1e-4) << name;
  }
}

TEST(Trainer, LookaheadShiftsTheTarget) {
  std::vector<float> t = {1, 2, 3, 4, 5, 6, 7, 8};  // (B=2, T=4, C=1)
  ssm::shift_target_for_lookahead(t.data(), 2, 4, 1, 1);
  EXPECT_EQ(t, (std::vector<float>{0, 1, 2, 3, 0, 5, 6, 7}));
}

TEST(Trainer, BadConfigNamesTheField) {
  TrainerConfig t;
  t.lr = -1;
  try {
    t.validate();
    FAIL();
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lr"), std::string::npos);
  }
}
