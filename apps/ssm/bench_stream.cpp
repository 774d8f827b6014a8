// `ssm bench stream`: the recurrent mode on one core, per sample and in
// blocks, for a model (the default architecture when none is given), with the
// floor: the model's FLOPs per sample over the core's measured peak.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "commands.hpp"
#include "ssm/blas.hpp"
#include "ssm/model.hpp"

namespace ssm::cli {

namespace {

// Peak single-precision FLOP/s of one core through the tuned BLAS on a
// cache-resident matrix product: the practical ceiling for this code.
double measured_core_peak() {
  const int n = 256;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  double best = 0;
  for (int r = 0; r < 20; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

// Median microseconds per sample over `repeats` passes of `signal`.
double us_per_sample(Stream& s, const std::vector<float>& signal, int block, int repeats) {
  std::vector<float> out(signal.size());
  std::vector<double> t(repeats);
  for (int r = 0; r < repeats; ++r) {
    s.reset();
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < signal.size(); i += block) {
      const size_t n = std::min<size_t>(block, signal.size() - i);
      s.process(signal.data() + i, out.data() + i, n);
    }
    t[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e6 / signal.size();
  }
  std::nth_element(t.begin(), t.begin() + repeats / 2, t.end());
  return t[repeats / 2];
}

}  // namespace

void add_bench_stream(CLI::App& bench) {
  auto* cmd = bench.add_subcommand("stream", "CPU, one core: recurrent mode per sample and in blocks");
  static std::string model_path;
  static double seconds = 2.0;
  static int repeats = 5;
  static std::vector<int> blocks{1, 64};
  cmd->add_option("--model", model_path, "model (.safetensors) or config (.json); default: the default architecture");
  cmd->add_option("--seconds", seconds, "signal length at the model rate")->check(CLI::PositiveNumber);
  cmd->add_option("--repeats", repeats, "timed passes (median reported)")->check(CLI::PositiveNumber);
  cmd->add_option("--block", blocks, "block sizes to time");
  cmd->callback([] {
    Model model = model_path.empty() ? Model(ModelConfig{})
                  : model_path.ends_with(".json") ? Model(ModelConfig::from_file(model_path))
                                                  : Model::load(model_path);
    if (model_path.empty() || model_path.ends_with(".json")) model.init(1);
    blas_set_threads(1);
    const ModelConfig& c = model.config();
    std::vector<float> signal(static_cast<size_t>(seconds * c.sample_rate) * c.in_channels);
    std::mt19937 rng(1);
    std::normal_distribution<float> g(0.0f, 0.1f);
    for (auto& v : signal) v = g(rng);
    const double flops = model_flops_per_step(c) / c.frame;  // per sample
    const double peak = measured_core_peak();
    std::printf("model: %s block, D=%d L=%d E=%d N=%d, %zu parameters, %.0f FLOPs per sample\n",
                block_kind_name(c.block), c.d_model, c.n_layers, c.inner(), c.d_state, model.num_params(), flops);
    if (c.hybrid())
      std::printf("hybrid: %d attention layers (one after every %d SSM layers), window %d, %d heads of %d\n",
                  c.attention_layers(), c.attention_every, c.attention_window, c.attention_heads, c.attn_head_dim());
    if (c.frame > 1) std::printf("frames of %d samples: one model step per frame\n", c.frame);
    std::printf("one core: measured peak %.1f GFLOP/s (BLAS sgemm 256^3) -> floor %.2f us per sample\n",
                peak / 1e9, flops / peak * 1e6);
    std::printf("real time at %d Hz: %.1f us per sample\n", c.sample_rate, 1e6 / c.sample_rate);
    for (int b : blocks) {
      Stream s(model, std::max(b, 1));
      us_per_sample(s, signal, b, 1);  // warm-up
      const double us = us_per_sample(s, signal, b, repeats);
      std::printf("block %5d: %7.2f us per sample  (%.1f GFLOP/s, %.1fx real time)\n", b, us, flops / us / 1e3,
                  1e6 / c.sample_rate / us);
    }
  });
}

}  // namespace ssm::cli
