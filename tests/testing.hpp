// Helpers shared by the tests: seeded random buffers, the norm-wise relative
// error of DESIGN.md §2, central finite differences in fp64, a scratch
// folder per test, and the message of an expected error.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ssm/common.hpp"

namespace ssm::testing {

// Runs f and returns the ssm::Error message it throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "";
}

// A fresh folder for the running test (named after it and the process),
// removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() / ("ssm_" + std::string(info->test_suite_name()) + "_" +
                                                      info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& rel) const { return (path_ / rel).string(); }

 private:
  std::filesystem::path path_;
};

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
