// RMSNorm, gated RMSNorm, SiLU, softplus and linear against fp64 plain-loop
// references, their backwards against central finite differences, and the
// float versions against double.
#include <ssm/blas.hpp>
#include <ssm/layers.hpp>

#include <cmath>
#include <vector>

#include "testing.hpp"

namespace {

using ssm::testing::cast_vector;
using ssm::testing::numeric_gradient;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using ssm::testing::weighted_sum;
using vec = std::vector<double>;

// Gated (z non-empty) or plain RMSNorm over G column groups, plain loops.
vec ref_norm(const vec& x, const vec& z, const vec& w, int R, int C, int G, double eps) {
  const int m = C / G;
  vec y(x.size());
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) {
      vec v(m);
      double ss = 0;
      for (int c = 0; c < m; ++c) {
        const int i = r * C + g * m + c;
        v[c] = z.empty() ? x[i] : x[i] * z[i] / (1 + std::exp(-z[i]));
        ss += v[c] * v[c];
      }
      const double rs = 1 / std::sqrt(ss / m + eps);
      for (int c = 0; c < m; ++c) y[r * C + g * m + c] = v[c] * rs * w[g * m + c];
    }
  return y;
}

vec ref_linear(const vec& x, const vec& W, const vec* bias, int R, int I, int O) {
  vec y(R * O);
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) {
      double s = bias ? (*bias)[o] : 0.0;
      for (int i = 0; i < I; ++i) s += x[r * I + i] * W[o * I + i];
      y[r * O + o] = s;
    }
  return y;
}

// Subtracts the starting values from a gradient that accumulates (+=).
vec minus(vec a, const vec& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
  return a;
}

TEST(Layers, RmsNormForwardAndBackward) {
  const double eps = 1e-5;
  {  // forward against the reference, and rstd
    const int R = 7, C = 12;
    const auto x = random_vector(R * C, 1), w = random_vector(C, 2, 0.5, 1.5);
    vec y(R * C), rstd(R);
    ssm::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), R, C, eps);
    EXPECT_LE(rel_error(y, ref_norm(x, {}, w, R, C, 1, eps)), 1e-14);
    for (int r = 0; r < R; ++r) {
      double ss = 0;
      for (int c = 0; c < C; ++c) ss += x[r * C + c] * x[r * C + c];
      EXPECT_NEAR(rstd[r], 1 / std::sqrt(ss / C + eps), 1e-12);
    }
  }
  // Finite differences (small shape).
  const int R = 3, C = 5;
  auto x = random_vector(R * C, 3), w = random_vector(C, 4, 0.5, 1.5);
  const auto g = random_vector(R * C, 5);
  auto loss = [&] {
    vec y(R * C), rstd(R);
    ssm::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), R, C, eps);
    return weighted_sum(y, g);
  };
  const auto gx = numeric_gradient(loss, x), gw = numeric_gradient(loss, w);
  vec y(R * C), rstd(R), dx(R * C, 7.0);
  const auto dw0 = random_vector(C, 6);
  auto dw = dw0;
  ssm::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), R, C, eps);
  ssm::rmsnorm_backward(dx.data(), dw.data(), g.data(), rstd.data(), x.data(), w.data(), R, C);
  EXPECT_LE(rel_error(dx, gx), 1e-6);
  EXPECT_LE(rel_error(minus(dw, dw0), gw), 1e-6);
  std::printf("[ measured ] rmsnorm FD: dx %.2e dweight %.2e\n", rel_error(dx, gx), rel_error(minus(dw, dw0), gw));
}

TEST(Layers, GatedRmsNormForwardAndBackward) {
  const double eps = 1e-5;
  for (int G : {1, 2, 3}) {
    {
      const int R = 9, C = 24;
      const auto x = random_vector(R * C, 10 + G), z = random_vector(R * C, 20 + G, -4, 4);
      const auto w = random_vector(C, 30 + G, 0.5, 1.5);
      vec y(R * C), rstd(R * G);
      ssm::gated_rmsnorm_forward(y.data(), rstd.data(), x.data(), z.data(), w.data(), R, C, G, eps);
      EXPECT_LE(rel_error(y, ref_norm(x, z, w, R, C, G, eps)), 1e-14) << "G = " << G;
    }
    const int R = 2, C = 6;
    auto x = random_vector(R * C, 40 + G), z = random_vector(R * C, 50 + G, -3, 3);
    auto w = random_vector(C, 60 + G, 0.5, 1.5);
    const auto g = random_vector(R * C, 70 + G);
    auto loss = [&] {
      vec y(R * C), rstd(R * G);
      ssm::gated_rmsnorm_forward(y.data(), rstd.data(), x.data(), z.data(), w.data(), R, C, G, eps);
      return weighted_sum(y, g);
    };
    const auto gx = numeric_gradient(loss, x), gz = numeric_gradient(loss, z), gw = numeric_gradient(loss, w);
    vec y(R * C), rstd(R * G), dx(R * C), dz(R * C);
    const auto dw0 = random_vector(C, 80 + G);
    auto dw = dw0;
    ssm::gated_rmsnorm_forward(y.data(), rstd.data(), x.data(), z.data(), w.data(), R, C, G, eps);
    ssm::gated_rmsnorm_backward(dx.data(), dz.data(), dw.data(), g.data(), rstd.data(), x.data(), z.data(), w.data(),
                                R, C, G);
    EXPECT_LE(rel_error(dx, gx), 1e-6) << "G = " << G;
    EXPECT_LE(rel_error(dz, gz), 1e-6) << "G = " << G;
    EXPECT_LE(rel_error(minus(dw, dw0), gw), 1e-6) << "G = " << G;
    std::printf("[ measured ] gated rmsnorm G=%d FD: dx %.2e dz %.2e dweight %.2e\n", G, rel_error(dx, gx),
                rel_error(dz, gz), rel_error(minus(dw, dw0), gw));
  }
}

TEST(Layers, NormsInFloatMatchDouble) {
  // Large enough to take the multi-threaded paths.
  const int R = 1024, C = 64, G = 2;
  const auto xf = random_vector<float>(R * C, 91), zf = random_vector<float>(R * C, 92, -4, 4);
  const auto wf = random_vector<float>(C, 93, 0.5, 1.5), gf = random_vector<float>(R * C, 94);
  const auto x = cast_vector<double>(xf), z = cast_vector<double>(zf), w = cast_vector<double>(wf);
  const auto g = cast_vector<double>(gf);
  auto run = [&](const auto& xx, const auto& zz, const auto& ww, const auto& gg, bool gated) {
    using Real = typename std::decay_t<decltype(xx)>::value_type;
    std::vector<Real> y(R * C), rstd(R * G), dx(R * C), dz(R * C), dw(C, Real(0));
    if (gated) {
      ssm::gated_rmsnorm_forward(y.data(), rstd.data(), xx.data(), zz.data(), ww.data(), R, C, G, 1e-5);
      ssm::gated_rmsnorm_backward(dx.data(), dz.data(), dw.data(), gg.data(), rstd.data(), xx.data(), zz.data(),
                                  ww.data(), R, C, G);
    } else {
      ssm::rmsnorm_forward(y.data(), rstd.data(), xx.data(), ww.data(), R, C, 1e-5);
      ssm::rmsnorm_backward(dx.data(), dw.data(), gg.data(), rstd.data(), xx.data(), ww.data(), R, C);
      dz.assign(R * C, Real(0));
    }
    return std::vector<std::vector<Real>>{y, dx, dz, dw};
  };
  for (bool gated : {false, true}) {
    const auto rf = run(xf, zf, wf, gf, gated);
    const auto rd = run(x, z, w, g, gated);
    const auto ref = ref_norm(x, gated ? z : vec{}, w, R, C, gated ? G : 1, 1e-5);
    EXPECT_LE(rel_error(rd[0], ref), 1e-14);
    std::printf("[ measured ] %s fp32 vs fp64: y %.1e dx %.1e dz %.1e dweight %.1e\n", gated ? "gated rmsnorm" : "rmsnorm",
                rel_error(rf[0], rd[0]), rel_error(rf[1], rd[1]), rel_error(rf[2], rd[2]), rel_error(rf[3], rd[3]));
    for (size_t i = 0; i < rf.size(); ++i) EXPECT_LE(rel_error(rf[i], rd[i]), 1e-5) << "output " << i;
  }
}

TEST(Layers, SiluAndSoftplus) {
  const int n = 40;
  auto x = random_vector(n, 100, -8, 8);
  vec y(n);
  ssm::silu_forward(y.data(), x.data(), n);
  vec ref(n);
  for (int i = 0; i < n; ++i) ref[i] = static_cast<double>(x[i] / (1 + expl(-static_cast<long double>(x[i]))));
  EXPECT_LE(rel_error(y, ref), 1e-15);
  ssm::softplus_forward(y.data(), x.data(), n);
  for (int i = 0; i < n; ++i) ref[i] = static_cast<double>(log1pl(expl(static_cast<long double>(x[i]))));
  EXPECT_LE(rel_error(y, ref), 1e-15);

  const auto g = random_vector(n, 101);
  for (bool softplus : {false, true}) {
    auto loss = [&] {
      vec out(n);
      (softplus ? ssm::softplus_forward<double> : ssm::silu_forward<double>)(out.data(), x.data(), n);
      return weighted_sum(out, g);
    };
    const auto gx = numeric_gradient(loss, x);
    vec dx(n);
    (softplus ? ssm::softplus_backward<double> : ssm::silu_backward<double>)(dx.data(), g.data(), x.data(), n);
    EXPECT_LE(rel_error(dx, gx), 1e-6) << (softplus ? "softplus" : "silu");
  }

  // float against double, on a size that takes the multi-threaded path.
  const long big = 1 << 16;
  const auto xf = random_vector<float>(big, 102, -10, 10), gf = random_vector<float>(big, 103);
  const auto xd = cast_vector<double>(xf), gd = cast_vector<double>(gf);
  std::vector<float> of(big), df(big);
  vec od(big), dd(big);
  for (bool softplus : {false, true}) {
    (softplus ? ssm::softplus_forward<float> : ssm::silu_forward<float>)(of.data(), xf.data(), big);
    (softplus ? ssm::softplus_forward<double> : ssm::silu_forward<double>)(od.data(), xd.data(), big);
    (softplus ? ssm::softplus_backward<float> : ssm::silu_backward<float>)(df.data(), gf.data(), xf.data(), big);
    (softplus ? ssm::softplus_backward<double> : ssm::silu_backward<double>)(dd.data(), gd.data(), xd.data(), big);
    EXPECT_LE(rel_error(of, od), 1e-6);
    EXPECT_LE(rel_error(df, dd), 1e-6);
  }
}

// y = x * sigmoid(g): the value against long double, both gradients against
// central differences.
TEST(Layers, SigmoidGate) {
  const int n = 40;
  auto x = random_vector(n, 110, -3, 3), gl = random_vector(n, 111, -8, 8);
  vec y(n), ref(n);
  ssm::sigmoid_gate_forward(y.data(), x.data(), gl.data(), n);
  for (int i = 0; i < n; ++i)
    ref[i] = static_cast<double>(x[i] / (1 + expl(-static_cast<long double>(gl[i]))));
  EXPECT_LE(rel_error(y, ref), 1e-15);
  const auto dy = random_vector(n, 112);
  auto loss = [&] {
    vec out(n);
    ssm::sigmoid_gate_forward(out.data(), x.data(), gl.data(), n);
    return weighted_sum(out, dy);
  };
  const auto gx = numeric_gradient(loss, x);
  const auto gg = numeric_gradient(loss, gl);
  vec dx(n), dg(n), dg_only(n);
  ssm::sigmoid_gate_backward(dx.data(), dg.data(), dy.data(), x.data(), gl.data(), n);
  EXPECT_LE(rel_error(dx, gx), 1e-6);
  EXPECT_LE(rel_error(dg, gg), 1e-6);
  ssm::sigmoid_gate_backward<double>(nullptr, dg_only.data(), dy.data(), x.data(), gl.data(), n);
  EXPECT_EQ(dg_only, dg);
}

// log(a^2 + b^2 + eps) per pair: the value against long double, the
// gradient against central differences.
TEST(Layers, LogPower) {
  const int n = 30;
  const double eps = 1e-6;
  auto x = random_vector(2 * n, 113, -2, 2);
  vec y(n), ref(n);
  ssm::log_power_forward(y.data(), x.data(), n, eps);
  for (int i = 0; i < n; ++i) {
    const long double a = x[2 * i], b = x[2 * i + 1];
    ref[i] = static_cast<double>(logl(a * a + b * b + eps));
  }
  EXPECT_LE(rel_error(y, ref), 1e-15);
  const auto dy = random_vector(n, 114);
  auto loss = [&] {
    vec out(n);
    ssm::log_power_forward(out.data(), x.data(), n, eps);
    return weighted_sum(out, dy);
  };
  const auto gx = numeric_gradient(loss, x);
  vec dx(2 * n);
  ssm::log_power_backward(dx.data(), dy.data(), x.data(), n, eps);
  EXPECT_LE(rel_error(dx, gx), 1e-6);
}

// The window of the last W frames against its definition written out, the
// tail carried across a split, and the fold against central differences.
TEST(Layers, Unfold) {
  const int B = 2, T = 7, C = 3, W = 4;
  const auto x = random_vector(B * T * C, 115);
  vec y(static_cast<size_t>(B) * T * W * C);
  ssm::unfold_forward<double>(y.data(), nullptr, x.data(), nullptr, B, T, C, W);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < W; ++j)
        for (int c = 0; c < C; ++c) {
          const int tau = t - (W - 1 - j);
          const double want = tau >= 0 ? x[(b * T + tau) * C + c] : 0.0;
          ASSERT_EQ(y[((b * T + t) * W + j) * C + c], want) << b << " " << t << " " << j << " " << c;
        }
  // Steps [0, 3) then [3, 7) with the tail between them give the whole.
  const int T1 = 3, T2 = T - T1;
  vec x1, x2;
  for (int b = 0; b < B; ++b) {
    x1.insert(x1.end(), x.begin() + b * T * C, x.begin() + (b * T + T1) * C);
    x2.insert(x2.end(), x.begin() + (b * T + T1) * C, x.begin() + (b + 1) * T * C);
  }
  vec y1(static_cast<size_t>(B) * T1 * W * C), y2(static_cast<size_t>(B) * T2 * W * C);
  vec tail(static_cast<size_t>(B) * (W - 1) * C);
  ssm::unfold_forward<double>(y1.data(), tail.data(), x1.data(), nullptr, B, T1, C, W);
  ssm::unfold_forward<double>(y2.data(), nullptr, x2.data(), tail.data(), B, T2, C, W);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int k = 0; k < W * C; ++k) {
        const double got = t < T1 ? y1[(b * T1 + t) * W * C + k] : y2[(b * T2 + t - T1) * W * C + k];
        ASSERT_EQ(got, y[(b * T + t) * W * C + k]) << b << " " << t << " " << k;
      }
  const auto dy = random_vector(y.size(), 116);
  auto xv = x;
  auto loss = [&] {
    vec out(y.size());
    ssm::unfold_forward<double>(out.data(), nullptr, xv.data(), nullptr, B, T, C, W);
    return weighted_sum(out, dy);
  };
  const auto gx = numeric_gradient(loss, xv);
  vec dx(x.size());
  ssm::unfold_backward(dx.data(), dy.data(), B, T, C, W);
  EXPECT_LE(rel_error(dx, gx), 1e-8);
}

template <typename Real>
void check_extremes() {
  const std::vector<Real> x = {-1e30, -1000, -100, -30, 0, 30, 100, 1000, 1e30};
  const long n = x.size();
  std::vector<Real> sp(n), dsp(n), si(n), dsi(n), ones(n, Real(1));
  ssm::softplus_forward(sp.data(), x.data(), n);
  ssm::softplus_backward(dsp.data(), ones.data(), x.data(), n);
  ssm::silu_forward(si.data(), x.data(), n);
  ssm::silu_backward(dsi.data(), ones.data(), x.data(), n);
  for (long i = 0; i < n; ++i) {
    EXPECT_TRUE(std::isfinite(sp[i]) && std::isfinite(dsp[i]) && std::isfinite(si[i]) && std::isfinite(dsi[i]))
        << "x = " << x[i];
    EXPECT_GE(sp[i], Real(0));
    EXPECT_GE(dsp[i], Real(0));
    EXPECT_LE(dsp[i], Real(1));
  }
  EXPECT_EQ(sp[7], Real(1000));     // softplus(x) = x for large x, no overflow
  EXPECT_EQ(sp[8], Real(1e30));
  EXPECT_EQ(sp[0], Real(0));
  EXPECT_NEAR(sp[3] / std::exp(Real(-30)), 1.0, 1e-6);  // the tail is not lost to 1 + tiny
  EXPECT_NEAR(sp[4], std::log(Real(2)), 1e-7);
  EXPECT_EQ(dsp[7], Real(1));
  EXPECT_EQ(si[7], Real(1000));
  EXPECT_NEAR(si[1], Real(0), Real(1e-30));  // -1000 * e^-1000: zero for any later sum
  EXPECT_EQ(dsi[7], Real(1));
}

TEST(Layers, ExtremeInputsStayFinite) {
  check_extremes<float>();
  check_extremes<double>();
}

TEST(Layers, LinearForwardAndBackward) {
  {  // against the reference on a BLAS-sized shape, with and without bias
    const int R = 64, I = 48, O = 40;
    const auto x = random_vector(R * I, 200), W = random_vector(O * I, 201), b = random_vector(O, 202);
    vec y(R * O);
    ssm::linear_forward(y.data(), x.data(), W.data(), b.data(), R, I, O);
    EXPECT_LE(rel_error(y, ref_linear(x, W, &b, R, I, O)), 1e-14);
    ssm::linear_forward(y.data(), x.data(), W.data(), nullptr, R, I, O);
    EXPECT_LE(rel_error(y, ref_linear(x, W, nullptr, R, I, O)), 1e-14);

    // float against double, forward and backward
    const auto xf = cast_vector<float>(x), Wf = cast_vector<float>(W), bf = cast_vector<float>(b);
    const auto gf = random_vector<float>(R * O, 203);
    std::vector<float> yf(R * O), dxf(R * I), dWf(O * I, 0.f), dbf(O, 0.f);
    ssm::linear_forward(yf.data(), xf.data(), Wf.data(), bf.data(), R, I, O);
    ssm::linear_backward(dxf.data(), dWf.data(), dbf.data(), gf.data(), xf.data(), Wf.data(), R, I, O);
    const auto xd = cast_vector<double>(xf), Wd = cast_vector<double>(Wf), bd = cast_vector<double>(bf);
    const auto gd = cast_vector<double>(gf);
    vec yd(R * O), dxd(R * I), dWd(O * I, 0.0), dbd(O, 0.0);
    ssm::linear_forward(yd.data(), xd.data(), Wd.data(), bd.data(), R, I, O);
    ssm::linear_backward(dxd.data(), dWd.data(), dbd.data(), gd.data(), xd.data(), Wd.data(), R, I, O);
    EXPECT_LE(rel_error(yf, yd), 1e-6);
    EXPECT_LE(rel_error(dxf, dxd), 1e-6);
    EXPECT_LE(rel_error(dWf, dWd), 1e-6);
    EXPECT_LE(rel_error(dbf, dbd), 1e-6);
  }
  // Finite differences (small shape).
  const int R = 3, I = 4, O = 5;
  auto x = random_vector(R * I, 210), W = random_vector(O * I, 211), b = random_vector(O, 212);
  const auto g = random_vector(R * O, 213);
  auto loss = [&] {
    vec y(R * O);
    ssm::linear_forward(y.data(), x.data(), W.data(), b.data(), R, I, O);
    return weighted_sum(y, g);
  };
  const auto gx = numeric_gradient(loss, x), gW = numeric_gradient(loss, W), gb = numeric_gradient(loss, b);
  const auto dW0 = random_vector(O * I, 214), db0 = random_vector(O, 215);
  vec dx(R * I, 5.0), dW = dW0, db = db0;
  ssm::linear_backward(dx.data(), dW.data(), db.data(), g.data(), x.data(), W.data(), R, I, O);
  EXPECT_LE(rel_error(dx, gx), 1e-6);
  EXPECT_LE(rel_error(minus(dW, dW0), gW), 1e-6);
  EXPECT_LE(rel_error(minus(db, db0), gb), 1e-6);
  std::printf("[ measured ] linear FD: dx %.2e dW %.2e dbias %.2e\n", rel_error(dx, gx), rel_error(minus(dW, dW0), gW),
              rel_error(minus(db, db0), gb));
  // Optional gradients may be skipped.
  vec dW2 = dW0;
  ssm::linear_backward(nullptr, dW2.data(), nullptr, g.data(), x.data(), W.data(), R, I, O);
  EXPECT_LE(rel_error(minus(dW2, dW0), gW), 1e-6);
  // A fixed weight: dx alone.
  vec dx3(R * I, 5.0);
  ssm::linear_backward(dx3.data(), static_cast<double*>(nullptr), nullptr, g.data(), x.data(), W.data(), R, I, O);
  EXPECT_LE(rel_error(dx3, gx), 1e-6);
}

TEST(Layers, BadArgumentsThrow) {
  vec a(12), b(12), c(12), d(12);
  EXPECT_THROW(ssm::rmsnorm_forward(a.data(), b.data(), c.data(), d.data(), 0, 4, 1e-5), ssm::Error);
  EXPECT_THROW(ssm::rmsnorm_forward(a.data(), b.data(), c.data(), d.data(), 3, 4, -1.0), ssm::Error);
  EXPECT_THROW(ssm::gated_rmsnorm_forward(a.data(), b.data(), c.data(), d.data(), d.data(), 2, 6, 4, 1e-5),
               ssm::Error);
  EXPECT_THROW(ssm::gated_rmsnorm_forward<double>(a.data(), b.data(), c.data(), nullptr, d.data(), 2, 6, 2, 1e-5),
               ssm::Error);
  EXPECT_THROW(ssm::silu_forward<double>(nullptr, a.data(), 3), ssm::Error);
  EXPECT_THROW(ssm::softplus_forward(a.data(), b.data(), -1), ssm::Error);
  EXPECT_THROW(ssm::linear_forward(a.data(), b.data(), c.data(), nullptr, 3, 0, 4), ssm::Error);
  EXPECT_THROW(ssm::linear_backward<double>(a.data(), b.data(), nullptr, nullptr, c.data(), d.data(), 3, 2, 2), ssm::Error);
}

}  // namespace

namespace {

// gemm against an fp64 loop for every row count around the switch from
// matrix-vector products to a matrix product, both layouts of B, strided
// rows, alpha and beta: C = alpha op(A) op(B) + beta C.
TEST(Blas, GemmMatchesLoopsForFewAndManyRows) {
  const int N = 37, K = 29, lda = K + 3, ldc = N + 5;
  for (int M = 1; M <= 9; ++M)
    for (bool transB : {false, true}) {
      const int ldb = transB ? K + 2 : N + 2;
      const auto A = random_vector<float>(static_cast<size_t>(M) * lda, 100 + M);
      const auto B = random_vector<float>(static_cast<size_t>(transB ? N : K) * ldb, 200 + M);
      auto C = random_vector<float>(static_cast<size_t>(M) * ldc, 300 + M);
      std::vector<double> want(C.begin(), C.end());
      const float alpha = 0.7f, beta = -0.4f;
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double s = 0;
          for (int k = 0; k < K; ++k)
            s += double(A[i * lda + k]) * (transB ? B[j * ldb + k] : B[k * ldb + j]);
          want[i * ldc + j] = alpha * s + beta * want[i * ldc + j];
        }
      ssm::gemm<float>(false, transB, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      double worst = 0;
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) worst = std::max(worst, std::abs(C[i * ldc + j] - want[i * ldc + j]));
      EXPECT_LE(worst, 1e-5) << "M " << M << " transB " << transB;
      // The padding between rows is not written.
      for (int i = 0; i < M; ++i)
        for (int j = N; j < ldc; ++j) EXPECT_EQ(double(C[i * ldc + j]), want[i * ldc + j]) << "pad M " << M;
    }
}

}  // namespace
