// Helpers shared by the tests: seeded random buffers, the norm-wise relative
// error of DESIGN.md §2, and central finite differences in fp64.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace ssm::testing {

template <typename Real = double>
std::vector<Real> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<Real> v(n);
  for (auto& e : v) e = static_cast<Real>(u(rng));
  return v;
}

template <typename To, typename From>
std::vector<To> cast_vector(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// ||out - ref|| / ||ref||, computed in double; NaN anywhere gives +inf so it never passes.
template <typename A, typename B>
double rel_error(const A* out, const B* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double o = static_cast<double>(out[i]), r = static_cast<double>(ref[i]);
    if (!std::isfinite(o) || !std::isfinite(r)) return INFINITY;
    num += (o - r) * (o - r);
    den += r * r;
  }
  if (den == 0) return num == 0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

template <typename A, typename B>
double rel_error(const std::vector<A>& out, const std::vector<B>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  return rel_error(out.data(), ref.data(), std::min(out.size(), ref.size()));
}

// Central finite differences of a scalar loss with respect to every element of
// `param` (perturbed in place and restored). Returns the numeric gradient.
inline std::vector<double> numeric_gradient(const std::function<double()>& loss, std::vector<double>& param,
                                            double eps = 1e-5) {
  std::vector<double> g(param.size());
  for (size_t i = 0; i < param.size(); ++i) {
    const double keep = param[i];
    param[i] = keep + eps;
    const double up = loss();
    param[i] = keep - eps;
    const double down = loss();
    param[i] = keep;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

// The usual scalar loss for gradient checks: sum(w * out) with fixed random w,
// so that dL/dout = w.
inline double weighted_sum(const std::vector<double>& out, const std::vector<double>& w) {
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += out[i] * w[i];
  return s;
}

}  // namespace ssm::testing
