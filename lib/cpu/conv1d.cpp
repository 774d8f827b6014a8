// Causal depthwise conv1d on the CPU. Rows (b, t) run in parallel; the inner
// loops run over contiguous channels, with the weight transposed to (K, C) so
// that they vectorise.
#include "ssm/conv1d.hpp"

#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

namespace ssm {

namespace {

void check_ptr(const void* p, const char* name) {
  if (!p) fail(std::string("conv1d: ") + name + " must not be null");
}

// weight (C, K) -> (K, C)
template <typename Real>
std::vector<Real> transpose_weight(const Real* weight, int C, int K) {
  std::vector<Real> wt(size_t(K) * C);  // (K, C)
  for (int c = 0; c < C; ++c)
    for (int k = 0; k < K; ++k) wt[size_t(k) * C + c] = weight[size_t(c) * K + k];
  return wt;
}

// Input row s of stream b in the sequence [initial_tail, x]; s in [-(K-1), T).
// Null when it lies in an absent tail (zeros).
template <typename Real>
const Real* input_row(const Real* x, const Real* initial_tail, const Conv1dDims& d, int b, int s) {
  if (s >= 0) return x + (size_t(b) * d.T + s) * d.C;
  if (!initial_tail) return nullptr;
  return initial_tail + (size_t(b) * (d.K - 1) + s + d.K - 1) * d.C;
}

// dst[c] += w[c] * src[c]
template <typename Real>
inline void axpy_rows(Real* __restrict dst, const Real* __restrict w, const Real* __restrict src, int C) {
  for (int c = 0; c < C; ++c) dst[c] += w[c] * src[c];
}

// Below this many multiply-adds (B * T * C * K) a thread team costs more than it saves.
inline int team_size(const Conv1dDims& d) {
  const double work = double(d.B) * d.T * d.C * d.K;
  return work < double(1 << 16) ? 1 : omp_get_max_threads();
}

}  // namespace

void conv1d_check_dims(const Conv1dDims& d) {
  auto pos = [](int v, const char* name) {
    if (v < 1) fail(std::string("conv1d: Conv1dDims.") + name + " must be >= 1, got " + std::to_string(v));
  };
  pos(d.B, "B");
  pos(d.T, "T");
  pos(d.C, "C");
  pos(d.K, "K");
}

template <typename Real>
void conv1d_forward(Real* y, Real* final_tail, const Real* x, const Real* weight, const Real* bias,
                    const Real* initial_tail, const Conv1dDims& d) {
  conv1d_check_dims(d);
  check_ptr(y, "y");
  check_ptr(x, "x");
  check_ptr(weight, "weight");
  const int T = d.T, C = d.C, K = d.K, K1 = K - 1;
  const std::vector<Real> wt = transpose_weight(weight, C, K);  // (K, C)
  const long rows = long(d.B) * T;
#pragma omp parallel for schedule(static) num_threads(team_size(d))
  for (long r = 0; r < rows; ++r) {
    const int b = int(r / T), t = int(r % T);
    Real* yr = y + size_t(r) * C;
    if (bias)
      std::copy(bias, bias + C, yr);
    else
      std::fill(yr, yr + C, Real(0));
    for (int k = 0; k < K; ++k)
      if (const Real* p = input_row(x, initial_tail, d, b, t - K1 + k)) axpy_rows(yr, wt.data() + size_t(k) * C, p, C);
  }
  // After y: final_tail may alias initial_tail. Row j reads row j + T >= j of
  // the old tail, so an ascending copy never reads a row it already wrote.
  if (final_tail)
    for (int b = 0; b < d.B; ++b)
      for (int j = 0; j < K1; ++j) {
        Real* dst = final_tail + (size_t(b) * K1 + j) * C;
        if (const Real* p = input_row(x, initial_tail, d, b, T - K1 + j))
          std::copy(p, p + C, dst);
        else
          std::fill(dst, dst + C, Real(0));
      }
}

template <typename Real>
void conv1d_backward(Real* dx, Real* dweight, Real* dbias, Real* dinitial_tail, const Real* dy,
                     const Real* dfinal_tail, const Real* x, const Real* weight, const Real* initial_tail,
                     const Conv1dDims& d) {
  conv1d_check_dims(d);
  check_ptr(dx, "dx");
  check_ptr(dweight, "dweight");
  check_ptr(dy, "dy");
  check_ptr(x, "x");
  check_ptr(weight, "weight");
  const int T = d.T, C = d.C, K = d.K, K1 = K - 1;
  const std::vector<Real> wt = transpose_weight(weight, C, K);  // (K, C)
  const long rows = long(d.B) * T;
  const int nthreads = team_size(d);
  std::vector<std::vector<Real>> dparam(nthreads);  // per thread: dweight^T (K, C), dbias (C)

#pragma omp parallel num_threads(nthreads)
  {
    std::vector<Real>& dp = dparam[omp_get_thread_num()];
    dp.assign(size_t(K + 1) * C, Real(0));
    Real* dwt = dp.data();                 // (K, C)
    Real* db = dwt + size_t(K) * C;        // (C)
#pragma omp for schedule(static)
    for (long r = 0; r < rows; ++r) {
      const int b = int(r / T), s = int(r % T);
      Real* dxr = dx + size_t(r) * C;
      std::fill(dxr, dxr + C, Real(0));
      // x[s] feeds y[s + K-1-k] through weight k.
      for (int k = 0; k < K; ++k) {
        const int t = s + K1 - k;
        if (t < T) axpy_rows(dxr, wt.data() + size_t(k) * C, dy + (size_t(b) * T + t) * C, C);
      }
      if (dfinal_tail && s >= T - K1) {
        const Real* g = dfinal_tail + (size_t(b) * K1 + s - (T - K1)) * C;
        for (int c = 0; c < C; ++c) dxr[c] += g[c];
      }
      // Output row s reads inputs s-K+1 .. s.
      const Real* dyr = dy + size_t(r) * C;
      for (int k = 0; k < K; ++k)
        if (const Real* p = input_row(x, initial_tail, d, b, s - K1 + k)) axpy_rows(dwt + size_t(k) * C, dyr, p, C);
      for (int c = 0; c < C; ++c) db[c] += dyr[c];
    }
  }

  if (dinitial_tail)
    for (int b = 0; b < d.B; ++b)
      for (int j = 0; j < K1; ++j) {
        // Tail row j is input s = j - (K-1); it feeds y[j - k].
        Real* g = dinitial_tail + (size_t(b) * K1 + j) * C;
        std::fill(g, g + C, Real(0));
        for (int k = 0; k <= j && k < K; ++k)
          if (j - k < T) axpy_rows(g, wt.data() + size_t(k) * C, dy + (size_t(b) * T + j - k) * C, C);
        if (dfinal_tail && j >= T) {
          const Real* f = dfinal_tail + (size_t(b) * K1 + j - T) * C;
          for (int c = 0; c < C; ++c) g[c] += f[c];
        }
      }

  // Fixed order over threads, so a given thread count gives the same bits every run.
  for (const auto& dp : dparam) {
    if (dp.empty()) continue;
    for (int c = 0; c < C; ++c)
      for (int k = 0; k < K; ++k) dweight[size_t(c) * K + k] += dp[size_t(k) * C + c];
    if (dbias)
      for (int c = 0; c < C; ++c) dbias[c] += dp[size_t(K) * C + c];
  }
}

template <typename Real>
void conv1d_step(Real* y, Real* tail, const Real* x, const Real* weight, const Real* bias, const Conv1dDims& d) {
  Conv1dDims d1 = d;
  d1.T = 1;
  conv1d_check_dims(d1);
  check_ptr(y, "y");
  check_ptr(x, "x");
  check_ptr(weight, "weight");
  const int C = d.C, K = d.K, K1 = K - 1;
  if (K1 > 0) check_ptr(tail, "tail");
  for (int b = 0; b < d.B; ++b) {
    Real* yb = y + size_t(b) * C;
    const Real* xb = x + size_t(b) * C;
    Real* tb = tail ? tail + size_t(b) * K1 * C : nullptr;  // (K-1, C)
    // Same summation order per channel as conv1d_forward, so a step loop
    // matches it; channels innermost so the loops run along the tail's rows.
    for (int c = 0; c < C; ++c) yb[c] = bias ? bias[c] : Real(0);
    for (int k = 0; k < K1; ++k) {
      const Real* tk = tb + size_t(k) * C;
      for (int c = 0; c < C; ++c) yb[c] += weight[size_t(c) * K + k] * tk[c];
    }
    for (int c = 0; c < C; ++c) yb[c] += weight[size_t(c) * K + K1] * xb[c];
    if (K1 > 0) {
      std::copy(tb + C, tb + size_t(K1) * C, tb);
      std::copy(xb, xb + C, tb + size_t(K1 - 1) * C);
    }
  }
}

#define SSM_INSTANTIATE(Real)                                                                                    \
  template void conv1d_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*,          \
                                     const Conv1dDims&);                                                        \
  template void conv1d_backward<Real>(Real*, Real*, Real*, Real*, const Real*, const Real*, const Real*,        \
                                      const Real*, const Real*, const Conv1dDims&);                             \
  template void conv1d_step<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Conv1dDims&);
SSM_INSTANTIATE(float)
SSM_INSTANTIATE(double)
#undef SSM_INSTANTIATE

}  // namespace ssm
