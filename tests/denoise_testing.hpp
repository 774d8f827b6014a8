// Helpers of the denoiser's entry-point tests: small seeded models (quick to
// run, with a lookahead where alignment is tested), a model of known gain,
// a tone's amplitude and signal correlation.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ssm/model.hpp"

namespace ssm::testing {

// The programs and material under test (paths given by the build).
inline const std::string kSsm = SSM_BINARY_DIR "/apps/ssm";
inline const std::string kNoisy = SSM_SOURCE_DIR "/samples/noisy_speech.flac";

// A file name in the temp folder unique to this test process.
inline std::filesystem::path temp_file(const std::string& test, const std::string& name) {
  return std::filesystem::temp_directory_path() / ("ssm_test_" + test + "_" + std::to_string(getpid()) + "_" + name);
}

// D=16, L=2, P=16, N=8 (d = 0 unless given); `width` 8 gives a tinier one
// (L=1, N=4); `frame` > 1 reads that many samples per step.
inline Model small_model(uint64_t seed, int lookahead = 0, int width = 16, int frame = 1) {
  ModelConfig c;
  c.d_model = width;
  c.n_layers = width >= 16 ? 2 : 1;
  c.head_dim = width;
  c.d_state = width >= 16 ? 8 : 4;
  c.lookahead = lookahead;
  c.frame = frame;
  Model m(c);
  m.init(seed);
  return m;
}

// The same, saved to `path` (which is returned) for the programs under test.
inline std::string save_small_model(const std::string& path, uint64_t seed, int lookahead = 0, int width = 16,
                                    int frame = 1) {
  small_model(seed, lookahead, width, frame).save(path);
  return path;
}

// A model whose output is its input times a known factor, `frame` - 1
// samples late (its latency): a masking head of `frame` bins whose analysis
// and synthesis are the identity and whose mask is sigmoid(bias) for every
// bin (head weights 0). Its weights are set, not trained: the carry can be
// checked against an attenuation known in advance. Returns the factor it
// applies (the library's sigmoid is an approximation) in `scale`.
inline Model scaling_model(float logit, float* scale, int frame = 4) {
  ModelConfig c;
  c.d_model = 8;
  c.n_layers = 1;
  c.head_dim = 8;
  c.d_state = 4;
  c.frame = frame;
  c.mask_bins = frame;
  Model m(c);
  m.init(1);
  auto& p = m.params();
  float* analysis = p.at("analysis.weight");    // (F, F)
  float* synthesis = p.at("synthesis.weight");  // (F, F)
  for (int i = 0; i < frame; ++i)
    for (int j = 0; j < frame; ++j) analysis[i * frame + j] = synthesis[i * frame + j] = i == j ? 1.0f : 0.0f;
  std::fill_n(p.at("head.weight"), m.table().numel("head.weight"), 0.0f);
  std::fill_n(p.at("head.bias"), frame, logit);
  // The factor: one frame of ones through the model.
  Stream s(m, frame);
  std::vector<float> ones(2 * frame, 1.0f), out(2 * frame);
  s.process(ones.data(), out.data(), ones.size());
  *scale = out.back();
  return m;
}

// The amplitude of the `hz` component of x[from, from + n) at `rate`, by
// Goertzel's recurrence over a Hann window (coherent gain 1/2).
inline double tone_amplitude(const std::vector<float>& x, size_t from, size_t n, int rate, double hz) {
  const double w = 2 * M_PI * hz / rate;
  double s1 = 0, s2 = 0;
  for (size_t t = 0; t < n; ++t) {
    const double hann = 0.5 - 0.5 * std::cos(2 * M_PI * t / n);
    const double s0 = hann * x[from + t] + 2 * std::cos(w) * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const double re = s1 - s2 * std::cos(w), im = s2 * std::sin(w);
  return 4 * std::sqrt(re * re + im * im) / n;
}

// Normalised correlation of a and b (n samples each), computed in double.
inline double correlation(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb + 1e-30);
}

}  // namespace ssm::testing
