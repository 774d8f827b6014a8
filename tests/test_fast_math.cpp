// The branch-free exponentials of lib/cpu/fast_math.hpp against std::exp in
// double: relative error within a few float ulp over their whole range.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "../lib/cpu/fast_math.hpp"

namespace {

double rel(double a, double b) { return std::abs(a - b) / std::abs(b); }

TEST(FastMath, DecayExpMatchesExpForNonPositiveArguments) {
  double worst = 0;
  for (double x = -86.9; x <= 0; x += 1e-3)
    worst = std::max(worst, rel(ssm::decay_exp(float(x)), std::exp(double(float(x)))));
  EXPECT_LT(worst, 5e-7);
  EXPECT_EQ(ssm::decay_exp(0.0f), 1.0f);
  // Below -87: clamped to e^-87, never a denormal or NaN.
  EXPECT_NEAR(ssm::decay_exp(-1000.0f), std::exp(-87.0), 1e-40);
}

TEST(FastMath, DecayExpOfNanIsNan) {
  // A NaN reached the float-to-integer conversion of 2^k (undefined; UBSan
  // stops there) when a restored detector state fed the forecaster a NaN.
  EXPECT_TRUE(std::isnan(ssm::decay_exp(std::numeric_limits<float>::quiet_NaN())));
}

TEST(FastMath, ExpBoundedMatchesExpForEitherSign) {
  double worst = 0;
  for (double x = -86.9; x <= 86.9; x += 1e-3)
    worst = std::max(worst, rel(ssm::exp_bounded(float(x)), std::exp(double(float(x)))));
  EXPECT_LT(worst, 6e-7);
  EXPECT_EQ(ssm::exp_bounded(0.0f), 1.0f);
  EXPECT_EQ(ssm::exp_bounded(-0.0f), 1.0f);
  EXPECT_EQ(ssm::exp_bounded(2.5), std::exp(2.5));  // double: the library's exp
}

}  // namespace
