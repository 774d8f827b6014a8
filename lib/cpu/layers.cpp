#include "ssm/layers.hpp"

#include "fast_math.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ssm/blas.hpp"

namespace ssm {

namespace {

// Elementwise loops below this size stay on one thread (thread start-up
// would cost more than the work).
constexpr long kParallelMin = 1 << 15;


// The checks build their messages only on failure: these run on the
// per-sample streaming path.
void check_rows(const char* fn, int R, int C, int G) {
  if (R < 1) fail(std::string(fn) + ": rows R must be >= 1, got " + std::to_string(R));
  if (C < 1) fail(std::string(fn) + ": columns C must be >= 1, got " + std::to_string(C));
  if (G < 1 || C % G != 0)
    fail(std::string(fn) + ": groups G must be >= 1 and divide C = " + std::to_string(C) + ", got G = " +
         std::to_string(G));
}

void check_ptrs(const char* fn, std::initializer_list<std::pair<const char*, const void*>> bufs) {
  for (const auto& [name, p] : bufs)
    if (!p) fail(std::string(fn) + ": " + name + " is null");
}

// Input of the normalisation: x, or x * silu(z) when gated.
template <typename Real>
inline double norm_input(const Real* x, const Real* z, long i) {
  const double xv = x[i];
  if (!z) return xv;
  // The gate in the caller's precision (float exp for float): this runs per sample when streaming.
  const Real zv = z[i];
  return xv * static_cast<double>(zv * fast_sigmoid(zv));
}

// One group of one row: y = v * rstd * w with v = x or x * silu(z). v is
// formed once into y, then scaled; the loops vectorise (x86-64-v3 clone
// where available). Returns the rstd it used.
template <typename Real>
SSM_SIMD_CLONES Real norm_group(Real* y, const Real* x, const Real* z, const Real* w, int m, double eps) {
  if (z) {
    for (int c = 0; c < m; ++c) y[c] = x[c] * (z[c] * fast_sigmoid(z[c]));
  } else {
    for (int c = 0; c < m; ++c) y[c] = x[c];
  }
  double ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int c = 0; c < m; ++c) ss += static_cast<double>(y[c]) * y[c];
  // The saved (rounded) rstd is the one the output uses, so the backward
  // differentiates exactly what the forward computed.
  const Real rs = static_cast<Real>(1.0 / std::sqrt(ss / m + eps));
  for (int c = 0; c < m; ++c) y[c] = y[c] * rs * w[c];
  return rs;
}

// RMSNorm of each of the G column groups of every row, optionally gated.
template <typename Real>
void norm_forward(Real* y, Real* rstd, const Real* x, const Real* z, const Real* weight, int R, int C, int G,
                  double eps) {
  const int m = C / G;
#pragma omp parallel for schedule(static) if (static_cast<long>(R) * C >= kParallelMin)
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) {
      const long base = static_cast<long>(r) * C + static_cast<long>(g) * m;
      rstd[static_cast<long>(r) * G + g] =
          norm_group(y + base, x + base, z ? z + base : nullptr, weight + static_cast<long>(g) * m, m, eps);
    }
}

template <typename Real>
void norm_backward(Real* dx, Real* dz, Real* dweight, const Real* dy, const Real* rstd, const Real* x, const Real* z,
                   const Real* weight, int R, int C, int G) {
  const int m = C / G;
  std::vector<double> dw_total(C, 0.0);  // (C)
#pragma omp parallel if (static_cast<long>(R) * C >= kParallelMin)
  {
    std::vector<double> dw(C, 0.0);  // (C) this thread's share of dweight
#pragma omp for schedule(static)
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) {
        const long base = static_cast<long>(r) * C + static_cast<long>(g) * m;
        const double rs = rstd[static_cast<long>(r) * G + g];
        double dot = 0;  // sum_c weight * dy * input
        for (int c = 0; c < m; ++c) {
          const double v = norm_input(x, z, base + c), wdy = static_cast<double>(weight[g * m + c]) * dy[base + c];
          dot += wdy * v;
          dw[g * m + c] += dy[base + c] * v * rs;
        }
        const double k = rs * rs * rs * dot / m;
        for (int c = 0; c < m; ++c) {
          const long i = base + c;
          const double v = norm_input(x, z, i);
          const double dv = rs * weight[g * m + c] * dy[i] - k * v;
          if (!z) {
            dx[i] = static_cast<Real>(dv);
          } else {
            const double zv = z[i], s = fast_sigmoid(zv);
            dx[i] = static_cast<Real>(dv * zv * s);
            dz[i] = static_cast<Real>(dv * x[i] * s * (1.0 + zv * (1.0 - s)));
          }
        }
      }
#pragma omp critical
    for (int c = 0; c < C; ++c) dw_total[c] += dw[c];
  }
  for (int c = 0; c < C; ++c) dweight[c] += static_cast<Real>(dw_total[c]);
}

}  // namespace

template <typename Real>
void rmsnorm_forward(Real* y, Real* rstd, const Real* x, const Real* weight, int R, int C, double eps) {
  check_rows("rmsnorm_forward", R, C, 1);
  check_ptrs("rmsnorm_forward", {{"y", y}, {"rstd", rstd}, {"x", x}, {"weight", weight}});
  require(eps >= 0 && std::isfinite(eps), "rmsnorm_forward: eps must be finite and >= 0");
  norm_forward(y, rstd, x, static_cast<const Real*>(nullptr), weight, R, C, 1, eps);
}

template <typename Real>
void rmsnorm_backward(Real* dx, Real* dweight, const Real* dy, const Real* rstd, const Real* x, const Real* weight,
                      int R, int C) {
  check_rows("rmsnorm_backward", R, C, 1);
  check_ptrs("rmsnorm_backward",
             {{"dx", dx}, {"dweight", dweight}, {"dy", dy}, {"rstd", rstd}, {"x", x}, {"weight", weight}});
  norm_backward(dx, static_cast<Real*>(nullptr), dweight, dy, rstd, x, static_cast<const Real*>(nullptr), weight, R,
                C, 1);
}

template <typename Real>
void gated_rmsnorm_forward(Real* y, Real* rstd, const Real* x, const Real* z, const Real* weight, int R, int C, int G,
                           double eps) {
  check_rows("gated_rmsnorm_forward", R, C, G);
  check_ptrs("gated_rmsnorm_forward", {{"y", y}, {"rstd", rstd}, {"x", x}, {"z", z}, {"weight", weight}});
  require(eps >= 0 && std::isfinite(eps), "gated_rmsnorm_forward: eps must be finite and >= 0");
  norm_forward(y, rstd, x, z, weight, R, C, G, eps);
}

template <typename Real>
void gated_rmsnorm_backward(Real* dx, Real* dz, Real* dweight, const Real* dy, const Real* rstd, const Real* x,
                            const Real* z, const Real* weight, int R, int C, int G) {
  check_rows("gated_rmsnorm_backward", R, C, G);
  check_ptrs("gated_rmsnorm_backward", {{"dx", dx}, {"dz", dz}, {"dweight", dweight}, {"dy", dy}, {"rstd", rstd},
                                        {"x", x}, {"z", z}, {"weight", weight}});
  norm_backward(dx, dz, dweight, dy, rstd, x, z, weight, R, C, G);
}

template <typename Real>
SSM_SIMD_CLONES void silu_range(Real* y, const Real* x, long n) {
  for (long i = 0; i < n; ++i) y[i] = x[i] * fast_sigmoid(x[i]);
}

template <typename Real>
void silu_forward(Real* y, const Real* x, long n) {
  require(n >= 0, "silu_forward: n must be >= 0");
  if (n > 0) check_ptrs("silu_forward", {{"y", y}, {"x", x}});
  if (n < kParallelMin) return silu_range(y, x, n);
  const int teams = omp_get_max_threads();
#pragma omp parallel for schedule(static)
  for (int t = 0; t < teams; ++t) {
    const long lo = n * t / teams, hi = n * (t + 1) / teams;
    silu_range(y + lo, x + lo, hi - lo);
  }
}

template <typename Real>
void silu_backward(Real* dx, const Real* dy, const Real* x, long n) {
  require(n >= 0, "silu_backward: n must be >= 0");
  if (n > 0) check_ptrs("silu_backward", {{"dx", dx}, {"dy", dy}, {"x", x}});
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (long i = 0; i < n; ++i) {
    const Real s = fast_sigmoid(x[i]);
    dx[i] = dy[i] * s * (Real(1) + x[i] * (Real(1) - s));
  }
}

template <typename Real>
void sigmoid_gate_forward(Real* y, const Real* x, const Real* g, long n) {
  require(n >= 0, "sigmoid_gate_forward: n must be >= 0");
  if (n > 0) check_ptrs("sigmoid_gate_forward", {{"y", y}, {"x", x}, {"g", g}});
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (long i = 0; i < n; ++i) y[i] = x[i] * fast_sigmoid(g[i]);
}

template <typename Real>
void sigmoid_gate_backward(Real* dx, Real* dg, const Real* dy, const Real* x, const Real* g, long n) {
  require(n >= 0, "sigmoid_gate_backward: n must be >= 0");
  if (n > 0) check_ptrs("sigmoid_gate_backward", {{"dg", dg}, {"dy", dy}, {"x", x}, {"g", g}});
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (long i = 0; i < n; ++i) {
    const Real s = fast_sigmoid(g[i]);
    if (dx) dx[i] = dy[i] * s;
    dg[i] = dy[i] * x[i] * s * (Real(1) - s);
  }
}

template <typename Real>
void log_power_forward(Real* y, const Real* x, long n, double eps) {
  require(n >= 0 && eps > 0, "log_power_forward: n must be >= 0 and eps > 0");
  if (n > 0) check_ptrs("log_power_forward", {{"y", y}, {"x", x}});
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (long i = 0; i < n; ++i) {
    const Real a = x[2 * i], b = x[2 * i + 1];
    y[i] = std::log(a * a + b * b + static_cast<Real>(eps));
  }
}

template <typename Real>
void log_power_backward(Real* dx, const Real* dy, const Real* x, long n, double eps) {
  require(n >= 0 && eps > 0, "log_power_backward: n must be >= 0 and eps > 0");
  if (n > 0) check_ptrs("log_power_backward", {{"dx", dx}, {"dy", dy}, {"x", x}});
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (long i = 0; i < n; ++i) {
    const Real a = x[2 * i], b = x[2 * i + 1];
    const Real g = Real(2) * dy[i] / (a * a + b * b + static_cast<Real>(eps));
    dx[2 * i] = g * a;
    dx[2 * i + 1] = g * b;
  }
}

namespace {
void check_unfold(const char* fn, int B, int T, int C, int W) {
  if (B < 1 || T < 1 || C < 1 || W < 1)
    fail(std::string(fn) + ": B, T, C, W must be >= 1, got B = " + std::to_string(B) + ", T = " + std::to_string(T) +
         ", C = " + std::to_string(C) + ", W = " + std::to_string(W));
}
}  // namespace

template <typename Real>
void unfold_forward(Real* y, Real* next_tail, const Real* x, const Real* tail, int B, int T, int C, int W) {
  const char* fn = "unfold_forward";
  check_unfold(fn, B, T, C, W);
  check_ptrs(fn, {{"y", y}, {"x", x}});
  // Frame tau of batch b: x for tau >= 0, the tail (or zeros) before.
  auto frame = [&](int b, long tau, int c) -> Real {
    if (tau >= 0) return x[(static_cast<long>(b) * T + tau) * C + c];
    return tail ? tail[(static_cast<long>(b) * (W - 1) + tau + W - 1) * C + c] : Real(0);
  };
#pragma omp parallel for schedule(static) if (static_cast<long>(B) * T * W * C >= kParallelMin)
  for (long bt = 0; bt < static_cast<long>(B) * T; ++bt) {
    const int b = static_cast<int>(bt / T);
    const long t = bt % T;
    Real* row = y + bt * W * C;
    for (int j = 0; j < W; ++j)
      for (int c = 0; c < C; ++c) row[j * C + c] = frame(b, t - (W - 1 - j), c);
  }
  if (!next_tail) return;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < W - 1; ++i)
      for (int c = 0; c < C; ++c)
        next_tail[(static_cast<long>(b) * (W - 1) + i) * C + c] = frame(b, static_cast<long>(T) - (W - 1) + i, c);
}

template <typename Real>
void unfold_backward(Real* dx, const Real* dy, int B, int T, int C, int W) {
  const char* fn = "unfold_backward";
  check_unfold(fn, B, T, C, W);
  check_ptrs(fn, {{"dx", dx}, {"dy", dy}});
#pragma omp parallel for schedule(static) if (static_cast<long>(B) * T * W * C >= kParallelMin)
  for (long bt = 0; bt < static_cast<long>(B) * T; ++bt) {
    const long t = bt % T;
    for (int c = 0; c < C; ++c) {
      Real s = 0;
      // Frame t sits at window slot j of step t + (W - 1 - j).
      for (int j = 0; j < W; ++j) {
        const long u = t + (W - 1 - j);
        if (u < T) s += dy[((bt - t + u) * W + j) * C + c];
      }
      dx[bt * C + c] = s;
    }
  }
}

template <typename Real>
void softplus_forward(Real* y, const Real* x, long n) {
  require(n >= 0, "softplus_forward: n must be >= 0");
  if (n > 0) check_ptrs("softplus_forward", {{"y", y}, {"x", x}});
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (long i = 0; i < n; ++i) y[i] = std::max(x[i], Real(0)) + std::log1p(std::exp(-std::abs(x[i])));
}

template <typename Real>
void softplus_backward(Real* dx, const Real* dy, const Real* x, long n) {
  require(n >= 0, "softplus_backward: n must be >= 0");
  if (n > 0) check_ptrs("softplus_backward", {{"dx", dx}, {"dy", dy}, {"x", x}});
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (long i = 0; i < n; ++i) dx[i] = dy[i] * fast_sigmoid(x[i]);
}

template <typename Real>
void linear_forward(Real* y, const Real* x, const Real* W, const std::type_identity_t<Real>* bias, int R, int I,
                    int O) {
  const char* fn = "linear_forward";
  if (R < 1 || I < 1 || O < 1)
    fail(std::string(fn) + ": R, I, O must be >= 1, got R = " + std::to_string(R) + ", I = " + std::to_string(I) +
         ", O = " + std::to_string(O));
  check_ptrs(fn, {{"y", y}, {"x", x}, {"W", W}});
  gemm<Real>(false, true, R, O, I, Real(1), x, I, W, I, Real(0), y, O);
  if (!bias) return;
#pragma omp parallel for schedule(static) if (static_cast<long>(R) * O >= kParallelMin)
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) y[static_cast<long>(r) * O + o] += bias[o];
}

template <typename Real>
void linear_backward(std::type_identity_t<Real>* dx, Real* dW, std::type_identity_t<Real>* dbias, const Real* dy,
                     const Real* x, const Real* W, int R, int I, int O) {
  const char* fn = "linear_backward";
  if (R < 1 || I < 1 || O < 1)
    fail(std::string(fn) + ": R, I, O must be >= 1, got R = " + std::to_string(R) + ", I = " + std::to_string(I) +
         ", O = " + std::to_string(O));
  check_ptrs(fn, {{"dy", dy}, {"x", x}, {"W", W}});
  if (dx) gemm<Real>(false, false, R, I, O, Real(1), dy, O, W, I, Real(0), dx, I);
  if (dW) gemm<Real>(true, false, O, I, R, Real(1), dy, O, x, I, Real(1), dW, I);
  if (!dbias) return;
#pragma omp parallel for schedule(static) if (static_cast<long>(R) * O >= kParallelMin)
  for (int o = 0; o < O; ++o) {
    double s = 0;
    for (int r = 0; r < R; ++r) s += dy[static_cast<long>(r) * O + o];
    dbias[o] += static_cast<Real>(s);
  }
}

#define SSM_INSTANTIATE(Real)                                                                                     \
  template void rmsnorm_forward<Real>(Real*, Real*, const Real*, const Real*, int, int, double);                 \
  template void rmsnorm_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*, int, int); \
  template void gated_rmsnorm_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int, int, int,     \
                                            double);                                                             \
  template void gated_rmsnorm_backward<Real>(Real*, Real*, Real*, const Real*, const Real*, const Real*,           \
                                             const Real*, const Real*, int, int, int);                           \
  template void silu_forward<Real>(Real*, const Real*, long);                                                    \
  template void silu_backward<Real>(Real*, const Real*, const Real*, long);                                      \
  template void sigmoid_gate_forward<Real>(Real*, const Real*, const Real*, long);                               \
  template void sigmoid_gate_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, long);          \
  template void log_power_forward<Real>(Real*, const Real*, long, double);                                       \
  template void log_power_backward<Real>(Real*, const Real*, const Real*, long, double);                         \
  template void unfold_forward<Real>(Real*, Real*, const Real*, const Real*, int, int, int, int);                \
  template void unfold_backward<Real>(Real*, const Real*, int, int, int, int);                                   \
  template void softplus_forward<Real>(Real*, const Real*, long);                                                \
  template void softplus_backward<Real>(Real*, const Real*, const Real*, long);                                  \
  template void linear_forward<Real>(Real*, const Real*, const Real*, const Real*, int, int, int);               \
  template void linear_backward<Real>(Real*, Real*, Real*, const Real*, const Real*, const Real*, int, int, int);
SSM_INSTANTIATE(float)
SSM_INSTANTIATE(double)
#undef SSM_INSTANTIATE

}  // namespace ssm
