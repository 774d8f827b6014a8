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

// Clean: a few harmonics of a random fundamental with a slow amplitude
// envelope. Noisy: clean plus white noise. Deterministic in (seed, step, item).
class HarmonicDenoising : public ssm::BatchSource {
 public:
  explicit HarmonicDenoising(double noise_std) : noise_std_(noise_std) {}
  void batch(float* in, float* target, int B, int T, uint64_t seed, int64_t step) override {
    for (int b = 0; b < B; ++b) {
      std::mt19937_64 rng(seed * 1000003u + static_cast<uint64_t>(step) * 131u + b);
      std::uniform_real_distribution<double> u(0, 1);
      std::normal_distribution<double> g(0, noise_std_);
      const double f0 = 0.01 + 0.03 * u(rng);  // cycles per sample
      double amp[3], phase[3];
      for (int k = 0; k < 3; ++k) amp[k] = (0.2 + 0.3 * u(rng)) / (k + 1), phase[k] = 2 * M_PI * u(rng);
      const double env_f = 0.001 + 0.002 * u(rng);
      for (int t = 0; t < T; ++t) {
        double s = 0;
        for (int k = 0; k < 3; ++k) s += amp[k] * std::sin(2 * M_PI * f0 * (k + 1) * t + phase[k]);
        s *= 0.75 + 0.25 * std::sin(2 * M_PI * env_f * t);
        target[static_cast<size_t>(b) * T + t] = static_cast<float>(s);
        in[static_cast<size_t>(b) * T + t] = static_cast<float>(s + g(rng));
      }
    }
  }

 private:
  double noise_std_;
};

ModelConfig tiny_denoiser(BlockKind kind) { return ssm::testing::small_model_config(kind, 32); }

TrainerConfig short_run(int64_t steps) {
  TrainerConfig t;
  t.steps = steps;
  t.batch = 4;
  t.segment = 512;
  t.lr = 2e-2;
  t.min_lr = 1e-4;
  t.warmup = 10;
  t.l1_weight = 0;
  t.l2_weight = 1;
  t.stft_weight = 0;
  t.seed = 42;
  return t;
}

}  // namespace

class TrainerByKind : public ::testing::TestWithParam<BlockKind> {};

TEST_P(TrainerByKind, TinyModelLearnsToDenoise) {
  Model model(tiny_denoiser(GetParam()));
  model.init(7);
  const TrainerConfig tc = short_run(300);
  Trainer trainer(model, tc);
  HarmonicDenoising data(0.1);
  // Held-out validation batch: a seed the training batches never use.
  const int VB = 8, VT = 1024;
  std::vector<float> vin(VB * VT), vtarget(VB * VT);
  data.batch(vin.data(), vtarget.data(), VB, VT, /*seed=*/999, 0);
  const double before = trainer.evaluate(vin.data(), vtarget.data(), VB, VT);
  for (int i = 0; i < tc.steps; ++i) trainer.step(data);
  const double after = trainer.evaluate(vin.data(), vtarget.data(), VB, VT);
  // The identity (passing the noisy input through) scores noise_std^2 = 0.01.
  double identity = 0;
  for (int i = 0; i < VB * VT; ++i) identity += (vin[i] - vtarget[i]) * (vin[i] - vtarget[i]);
  identity /= VB * VT;
  std::printf("validation L2: %.5f -> %.5f (identity %.5f)\n", before, after, identity);
  EXPECT_LT(after, before / 10);
  EXPECT_LT(after, identity / 2);  // it removes noise, not just learns to copy
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
