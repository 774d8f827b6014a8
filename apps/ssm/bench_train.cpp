// `ssm bench train`: one whole training step (batch upload, forward, losses,
// backward, clipping, AdamW) of a model on the CPU or the GPU, on a fixed
// synthetic batch so the data pipeline is not part of the number.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ssm/cuda.hpp"
#include "ssm/trainer.hpp"

namespace ssm::cli {

namespace {

// The same (noisy, clean) batch every step: a sum of sines plus white noise.
class FixedBatch : public BatchSource {
 public:
  FixedBatch(int B, int T, int in_channels, int out_channels) {
    std::mt19937 rng(1);
    std::normal_distribution<float> g(0.0f, 0.05f);
    in_.resize(static_cast<size_t>(B) * T * in_channels);
    target_.resize(static_cast<size_t>(B) * T * out_channels);
    for (size_t i = 0; i < target_.size(); ++i) target_[i] = 0.3f * std::sin(0.05f * static_cast<float>(i % 16000));
    for (size_t i = 0; i < in_.size(); ++i) in_[i] = target_[i % target_.size()] + g(rng);
  }
  void batch(float* in, float* target, int, int, uint64_t, int64_t) override {
    std::copy(in_.begin(), in_.end(), in);
    std::copy(target_.begin(), target_.end(), target);
  }

 private:
  std::vector<float> in_, target_;
};

}  // namespace

void add_bench_train(CLI::App& bench) {
  auto* cmd = bench.add_subcommand("train", "One training step (forward, losses, backward, AdamW), CPU or GPU");
  static std::string config_path;
  static std::string device = "cuda";
  static int batch = 32, segment = 16000, repeats = 20, warmup = 3, gpus = 1;
  static double stft_weight = 1.0, l1_weight = 1.0;
  cmd->add_option("--model", config_path, "model config (.json); default: the default denoiser architecture");
  cmd->add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--batch", batch, "B, per GPU with --gpus")->check(CLI::PositiveNumber);
  cmd->add_option("--gpus", gpus, "GPUs sharing each step, data-parallel (the global batch is gpus x B)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--segment", segment, "T, samples per item")->check(CLI::PositiveNumber);
  cmd->add_option("--repeats", repeats, "timed steps (median reported)")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  cmd->add_option("--stft-weight", stft_weight, "weight of the multi-resolution STFT loss (0: off)");
  cmd->add_option("--l1-weight", l1_weight, "weight of the sample L1 loss (0: off)");
  cmd->callback([] {
    Model model(config_path.empty() ? ModelConfig{} : ModelConfig::from_file(config_path));
    model.init(1);
    TrainerConfig tc;
    tc.steps = warmup + repeats;
    tc.batch = batch;
    tc.segment = segment;
    tc.warmup = 0;
    tc.l1_weight = l1_weight;
    tc.stft_weight = stft_weight;
    tc.device = device;
    tc.gpus = gpus;
    Trainer trainer(model, tc);
    const ModelConfig& c = model.config();
    const int global = tc.global_batch();
    FixedBatch data(global, segment, c.in_channels, c.out_channels);
    std::printf("model: %s block, D=%d L=%d E=%d N=%d, %zu parameters; B=%d T=%d; losses: L1 x %.2g + MR-STFT x %.2g\n",
                block_kind_name(c.block), c.d_model, c.n_layers, c.inner(), c.d_state, model.num_params(), global,
                segment, l1_weight, stft_weight);
    std::printf("device: %s%s\n", device == "cuda" ? cuda_device_description().c_str() : "cpu",
                gpus > 1 ? (", " + std::to_string(gpus) + " GPUs, " + std::to_string(batch) + " items each").c_str() : "");
    for (int i = 0; i < warmup; ++i) trainer.step(data);
    std::vector<double> ms(repeats);
    double loss = 0;
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      loss = trainer.step(data).loss;  // returns after the host has the loss: a synchronised step
      ms[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[repeats / 2];
    std::printf("train step: median %.2f ms (min %.2f, max %.2f) over %d steps, %.2f M samples/s, last loss %.4f\n",
                med, ms.front(), ms.back(), repeats, static_cast<double>(global) * segment / med / 1e3, loss);
  });
}

}  // namespace ssm::cli
