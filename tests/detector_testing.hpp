// Generated series with a known answer, shared by the detector's tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace ssm::testing {

// A drift from 20 to 80 over `len` values (then flat), 3000 values, with
// Gaussian noise of `sd` and, with q > 0, quantised to steps of q: no
// anomaly anywhere.
inline std::vector<double> drift_series(double sd, double len, double q, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, sd);
  std::vector<double> x(3000);
  for (size_t t = 0; t < x.size(); ++t) {
    x[t] = std::min(80.0, 20 + 60.0 * t / len) + noise(rng);
    if (q > 0) x[t] = std::round(x[t] / q) * q;
  }
  return x;
}

// A filling disk: 20 -> 80 over `jump` values with noise of 0.3 and
// quantisation to 0.1, then a jump of 30 (about 100 sd of the noise) for
// the last 200 values.
inline std::vector<double> filling_disk(size_t jump = 3000) {
  std::mt19937_64 rng(12);
  std::normal_distribution<double> noise(0, 0.3);
  std::vector<double> x(jump + 200);
  for (size_t t = 0; t < x.size(); ++t)
    x[t] = std::round((20 + 60.0 * std::min(t, jump) / jump + noise(rng) + (t >= jump ? 30 : 0)) * 10) / 10;
  return x;
}

}  // namespace ssm::testing
