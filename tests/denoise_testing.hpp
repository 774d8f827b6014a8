// Helpers of the denoiser's entry-point tests: small seeded models (quick to
// run, with a lookahead where alignment is tested) and signal correlation.
#pragma once
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>

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
