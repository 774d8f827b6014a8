// Selective scan (Mamba-1, S6) on the CPU: the plain-loop reference, the
// blocked scan and its backward, and the streaming step.
#include "ssm/selective_scan.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "fast_math.hpp"

namespace ssm {

namespace {

// softplus (fast_math.hpp) never exponentiates a large positive number; nor
// does this sigmoid, which keeps the tail for very negative v.
template <typename Real>
inline Real stable_sigmoid(Real v) {
  if (v >= Real(0)) return Real(1) / (Real(1) + std::exp(-v));
  const Real e = std::exp(v);
  return e / (Real(1) + e);
}

template <typename Real>
inline Real silu(Real v) {
  return v * stable_sigmoid(v);
}

// Channels handled together by one task of the blocked scan: their x / y /
// dt values share cache lines and their state (W, N) stays in L1.
constexpr int kTile = 16;

void check_block(int Q) {
  if (Q < 1) fail("selective_scan: block length Q must be >= 1, got " + std::to_string(Q));
}

void check_ptr(const void* p, const char* name) {
  if (!p) fail(std::string("selective_scan: ") + name + " must not be null");
}

template <typename Real>
void check_forward_ptrs(const Real* y, const Real* x, const Real* dt_raw, const Real* A_log, const Real* Bm,
                        const Real* Cm, const Real* D, const Real* dt_bias) {
  check_ptr(y, "y");
  check_ptr(x, "x");
  check_ptr(dt_raw, "dt_raw");
  check_ptr(A_log, "A_log");
  check_ptr(Bm, "Bm");
  check_ptr(Cm, "Cm");
  check_ptr(D, "D");
  check_ptr(dt_bias, "dt_bias");
}

inline int num_blocks(int T, int Q) { return (T + Q - 1) / Q; }

// Below this many state updates (B * T * E * N) a thread team costs more than
// it saves; never start more threads than there are tasks.
constexpr double kParallelWork = 1 << 15;

inline int team_size(long ntasks, const ScanDims& d) {
  const double work = double(d.B) * d.T * d.E * d.N;
  if (work < kParallelWork) return 1;
  return int(std::max(1L, std::min<long>(ntasks, omp_get_max_threads())));
}

// Forward over all time for channels [e0, e0 + W) of batch b, block by block,
// the state carried across blocks. Writes y when non-null and the state at
// the start of every block when ckpt is non-null.
template <typename Real>
void scan_tile_forward(Real* y,            // (B, T, E) or null
                       Real* final_state,  // (B, E, N) or null
                       Real* ckpt,         // (B, nblk, E, N) or null
                       const Real* x, const Real* dt_raw, const Real* A_log, const Real* Bm, const Real* Cm,
                       const Real* D, const Real* dt_bias, const Real* z, const Real* initial_state,
                       const ScanDims& d, int Q, int b, int e0, int W,
                       Real* S,    // (W, N) scratch
                       Real* A,    // (W, N) scratch
                       Real* dtb)  // (Q, W) scratch
{
  const int T = d.T, E = d.E, G = d.G, N = d.N, epg = E / G, nblk = num_blocks(T, Q);
  for (int w = 0; w < W; ++w)
    for (int n = 0; n < N; ++n) {
      const size_t i = size_t(e0 + w) * N + n;
      A[size_t(w) * N + n] = -std::exp(A_log[i]);
      S[size_t(w) * N + n] = initial_state ? initial_state[size_t(b) * E * N + i] : Real(0);
    }
  for (int c = 0; c < nblk; ++c) {
    const int t0 = c * Q, L = std::min(Q, T - t0);
    if (ckpt) std::copy(S, S + size_t(W) * N, ckpt + ((size_t(b) * nblk + c) * E + e0) * N);
    // dt for the whole block first: a short contiguous pass, out of the recurrence.
    for (int t = 0; t < L; ++t) {
      const Real* dr = dt_raw + (size_t(b) * T + t0 + t) * E + e0;
      for (int w = 0; w < W; ++w) dtb[size_t(t) * W + w] = softplus(dr[w] + dt_bias[e0 + w]);
    }
    for (int t = 0; t < L; ++t) {
      const size_t row = size_t(b) * T + t0 + t;
      const Real* xr = x + row * E + e0;
      const Real* Br = Bm + row * G * N;
      const Real* Cr = Cm + row * G * N;
      for (int w = 0; w < W; ++w) {
        const int g = (e0 + w) / epg;
        const Real dt = dtb[size_t(t) * W + w], bx = dt * xr[w];
        const Real* Bg = Br + size_t(g) * N;
        const Real* Cg = Cr + size_t(g) * N;
        Real* s = S + size_t(w) * N;
        const Real* a = A + size_t(w) * N;
        Real acc = 0;
        for (int n = 0; n < N; ++n) {
          s[n] = std::exp(dt * a[n]) * s[n] + bx * Bg[n];
          acc += s[n] * Cg[n];
        }
        if (y) {
          Real v = acc + D[e0 + w] * xr[w];
          if (z) v *= silu(z[row * E + e0 + w]);
          y[row * E + e0 + w] = v;
        }
      }
    }
  }
  if (final_state) std::copy(S, S + size_t(W) * N, final_state + (size_t(b) * E + e0) * N);
}

}  // namespace

void selective_scan_check_dims(const ScanDims& d) {
  auto pos = [](int v, const char* name) {
    if (v < 1) fail(std::string("selective_scan: ScanDims.") + name + " must be >= 1, got " + std::to_string(v));
  };
  pos(d.B, "B");
  pos(d.T, "T");
  pos(d.E, "E");
  pos(d.G, "G");
  pos(d.N, "N");
  if (d.E % d.G != 0)
    fail("selective_scan: ScanDims.E (" + std::to_string(d.E) + ") must be a multiple of G (" + std::to_string(d.G) +
         ")");
}

template <typename Real>
void selective_scan_reference_forward(Real* y, Real* final_state, const Real* x, const Real* dt_raw,
                                      const Real* A_log, const Real* Bm, const Real* Cm, const Real* D,
                                      const Real* dt_bias, const Real* z, const Real* initial_state,
                                      const ScanDims& d) {
  selective_scan_check_dims(d);
  check_forward_ptrs(y, x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  const int B = d.B, T = d.T, E = d.E, G = d.G, N = d.N, epg = E / G;
  std::vector<Real> S(N);  // (N)
  for (int b = 0; b < B; ++b)
    for (int e = 0; e < E; ++e) {
      const int g = e / epg;
      for (int n = 0; n < N; ++n) S[n] = initial_state ? initial_state[(size_t(b) * E + e) * N + n] : Real(0);
      for (int t = 0; t < T; ++t) {
        const size_t i = (size_t(b) * T + t) * E + e;
        const size_t bc = ((size_t(b) * T + t) * G + g) * N;
        const Real dt = softplus(dt_raw[i] + dt_bias[e]);
        const Real bx = dt * x[i];
        Real acc = 0;
        for (int n = 0; n < N; ++n) {
          const Real a = std::exp(dt * -std::exp(A_log[size_t(e) * N + n]));
          S[n] = a * S[n] + bx * Bm[bc + n];
          acc += S[n] * Cm[bc + n];
        }
        Real v = acc + D[e] * x[i];
        if (z) v *= silu(z[i]);
        y[i] = v;
      }
      if (final_state)
        for (int n = 0; n < N; ++n) final_state[(size_t(b) * E + e) * N + n] = S[n];
    }
}

template <typename Real>
void selective_scan_blocked_forward(Real* y, Real* final_state, const Real* x, const Real* dt_raw,
                                    const Real* A_log, const Real* Bm, const Real* Cm, const Real* D,
                                    const Real* dt_bias, const Real* z, const Real* initial_state,
                                    const ScanDims& d, int Q) {
  selective_scan_check_dims(d);
  check_block(Q);
  check_forward_ptrs(y, x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  const int ntiles = (d.E + kTile - 1) / kTile;
  const long ntasks = long(d.B) * ntiles;
#pragma omp parallel num_threads(team_size(ntasks, d))
  {
    std::vector<Real> S(size_t(kTile) * d.N), A(size_t(kTile) * d.N), dtb(size_t(kTile) * std::min(Q, d.T));
#pragma omp for schedule(static)
    for (long task = 0; task < ntasks; ++task) {
      const int b = int(task / ntiles), e0 = int(task % ntiles) * kTile, W = std::min(kTile, d.E - e0);
      scan_tile_forward(y, final_state, static_cast<Real*>(nullptr), x, dt_raw, A_log, Bm, Cm, D, dt_bias, z,
                        initial_state, d, Q, b, e0, W, S.data(), A.data(), dtb.data());
    }
  }
}

template <typename Real>
void selective_scan_backward(Real* dx, Real* ddt_raw, Real* dA_log, Real* dBm, Real* dCm, Real* dD, Real* ddt_bias,
                             Real* dz, Real* dinitial_state, const Real* dy, const Real* dfinal_state, const Real* x,
                             const Real* dt_raw, const Real* A_log, const Real* Bm, const Real* Cm, const Real* D,
                             const Real* dt_bias, const Real* z, const Real* initial_state, const ScanDims& d,
                             int Q) {
  selective_scan_check_dims(d);
  check_block(Q);
  check_forward_ptrs(dy, x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  check_ptr(dx, "dx");
  check_ptr(ddt_raw, "ddt_raw");
  check_ptr(dA_log, "dA_log");
  check_ptr(dBm, "dBm");
  check_ptr(dCm, "dCm");
  check_ptr(dD, "dD");
  check_ptr(ddt_bias, "ddt_bias");
  const int B = d.B, T = d.T, E = d.E, G = d.G, N = d.N, epg = E / G;
  const int nblk = num_blocks(T, Q), ntiles = (E + kTile - 1) / kTile, Lmax = std::min(Q, T);
  const long ntile_tasks = long(B) * ntiles;
  const long nblock_tasks = long(B) * G * nblk;

  // Pass 1: the state at the start of every block.
  // Pass 2: the gradient reaching the end of every block from later blocks,
  //         dS_in = a[t+1] * dL/dS[t] (dfinal_state for the last block). It
  //         needs no states, only decays, C and the gated dy.
  // Pass 3: per (batch, group, block), recompute the block's states from its
  //         checkpoint and run the reverse recurrence through it. One task owns
  //         the rows (t, g) of dBm / dCm, so channels of a group never race.
  std::vector<Real> S_ckpt(size_t(B) * nblk * E * N);   // (B, nblk, E, N)
  std::vector<Real> dS_ckpt(size_t(B) * nblk * E * N);  // (B, nblk, E, N)
  const int nthreads = team_size(std::max(ntile_tasks, nblock_tasks), d);
  std::vector<std::vector<Real>> dparam(nthreads);  // per thread: dA_log (E, N), dD (E), ddt_bias (E)

#pragma omp parallel num_threads(nthreads)
  {
    std::vector<Real> S(size_t(kTile) * N), A(size_t(kTile) * N), dtb(size_t(kTile) * Lmax);
#pragma omp for schedule(static)
    for (long task = 0; task < ntile_tasks; ++task) {
      const int b = int(task / ntiles), e0 = int(task % ntiles) * kTile, W = std::min(kTile, E - e0);
      scan_tile_forward(static_cast<Real*>(nullptr), static_cast<Real*>(nullptr), S_ckpt.data(), x, dt_raw, A_log,
                        Bm, Cm, D, dt_bias, z, initial_state, d, Q, b, e0, W, S.data(), A.data(), dtb.data());
    }

    Real* dS = S.data();  // (W, N), reused
#pragma omp for schedule(static)
    for (long task = 0; task < ntile_tasks; ++task) {
      const int b = int(task / ntiles), e0 = int(task % ntiles) * kTile, W = std::min(kTile, E - e0);
      for (int w = 0; w < W; ++w)
        for (int n = 0; n < N; ++n) {
          const size_t i = size_t(e0 + w) * N + n;
          A[size_t(w) * N + n] = -std::exp(A_log[i]);
          dS[size_t(w) * N + n] = dfinal_state ? dfinal_state[size_t(b) * E * N + i] : Real(0);
        }
      for (int c = nblk - 1; c >= 0; --c) {
        const int t0 = c * Q, L = std::min(Q, T - t0);
        std::copy(dS, dS + size_t(W) * N, dS_ckpt.data() + ((size_t(b) * nblk + c) * E + e0) * N);
        for (int t = L - 1; t >= 0; --t) {
          const size_t row = size_t(b) * T + t0 + t;
          const Real* Cr = Cm + row * G * N;
          for (int w = 0; w < W; ++w) {
            const size_t i = row * E + e0 + w;
            const Real dt = softplus(dt_raw[i] + dt_bias[e0 + w]);
            const Real gz = z ? dy[i] * silu(z[i]) : dy[i];
            const Real* Cg = Cr + size_t((e0 + w) / epg) * N;
            Real* s = dS + size_t(w) * N;
            const Real* a = A.data() + size_t(w) * N;
            for (int n = 0; n < N; ++n) s[n] = std::exp(dt * a[n]) * (s[n] + gz * Cg[n]);
          }
        }
      }
      if (dinitial_state) std::copy(dS, dS + size_t(W) * N, dinitial_state + (size_t(b) * E + e0) * N);
    }

    std::vector<Real>& dp = dparam[omp_get_thread_num()];
    dp.assign(size_t(E) * N + 2 * size_t(E), Real(0));
    Real* dA_p = dp.data();           // (E, N)
    Real* dD_p = dA_p + size_t(E) * N;  // (E)
    Real* ddtb_p = dD_p + E;            // (E)
    std::vector<Real> Sb(size_t(Lmax + 1) * N);  // (Q + 1, N) states S[t0-1 .. t0+L-1]
    std::vector<Real> ab(size_t(Lmax) * N);      // (Q, N) decays
    std::vector<Real> dtv(Lmax);                 // (Q)
    std::vector<Real> dBb(size_t(Lmax) * N), dCb(size_t(Lmax) * N);  // (Q, N) this group's rows
    std::vector<Real> Ae(N), g_S(N);             // (N)
#pragma omp for schedule(static)
    for (long task = 0; task < nblock_tasks; ++task) {
      const int c = int(task % nblk), g = int((task / nblk) % G), b = int(task / (long(nblk) * G));
      const int t0 = c * Q, L = std::min(Q, T - t0);
      std::fill(dBb.begin(), dBb.end(), Real(0));
      std::fill(dCb.begin(), dCb.end(), Real(0));
      for (int e = g * epg; e < (g + 1) * epg; ++e) {
        for (int n = 0; n < N; ++n) Ae[n] = -std::exp(A_log[size_t(e) * N + n]);
        const Real* ck = S_ckpt.data() + ((size_t(b) * nblk + c) * E + e) * N;
        std::copy(ck, ck + N, Sb.begin());
        for (int t = 0; t < L; ++t) {
          const size_t row = size_t(b) * T + t0 + t, i = row * E + e;
          const Real dt = softplus(dt_raw[i] + dt_bias[e]), bx = dt * x[i];
          const Real* Bg = Bm + (row * G + g) * N;
          dtv[t] = dt;
          const Real* sp = Sb.data() + size_t(t) * N;
          Real* sn = Sb.data() + size_t(t + 1) * N;
          Real* a = ab.data() + size_t(t) * N;
          for (int n = 0; n < N; ++n) {
            a[n] = std::exp(dt * Ae[n]);
            sn[n] = a[n] * sp[n] + bx * Bg[n];
          }
        }
        const Real* hk = dS_ckpt.data() + ((size_t(b) * nblk + c) * E + e) * N;
        std::copy(hk, hk + N, g_S.begin());
        for (int t = L - 1; t >= 0; --t) {
          const size_t row = size_t(b) * T + t0 + t, i = row * E + e;
          const Real* Bg = Bm + (row * G + g) * N;
          const Real* Cg = Cm + (row * G + g) * N;
          const Real* sp = Sb.data() + size_t(t) * N;
          const Real* sn = Sb.data() + size_t(t + 1) * N;
          const Real* a = ab.data() + size_t(t) * N;
          const Real xv = x[i], dt = dtv[t];
          Real gz = dy[i];
          if (z) {
            Real yp = D[e] * xv;
            for (int n = 0; n < N; ++n) yp += sn[n] * Cg[n];
            const Real sg = stable_sigmoid(z[i]);
            if (dz) dz[i] = dy[i] * yp * sg * (Real(1) + z[i] * (Real(1) - sg));
            gz = dy[i] * z[i] * sg;
          }
          dD_p[e] += gz * xv;
          Real dxv = gz * D[e], ddt = 0;
          Real* dBr = dBb.data() + size_t(t) * N;
          Real* dCr = dCb.data() + size_t(t) * N;
          Real* dA_e = dA_p + size_t(e) * N;
          for (int n = 0; n < N; ++n) {
            const Real gs = g_S[n] + gz * Cg[n];  // dL/dS[t]
            dCr[n] += gz * sn[n];
            dBr[n] += gs * dt * xv;
            dxv += gs * dt * Bg[n];
            const Real q = gs * a[n] * sp[n];  // through the decay
            ddt += q * Ae[n] + gs * Bg[n] * xv;
            dA_e[n] += q * dt * Ae[n];  // dA/dA_log = A
            g_S[n] = a[n] * gs;
          }
          dx[i] = dxv;
          const Real ddr = ddt * stable_sigmoid(dt_raw[i] + dt_bias[e]);
          ddt_raw[i] = ddr;
          ddtb_p[e] += ddr;
        }
      }
      for (int t = 0; t < L; ++t) {
        const size_t o = ((size_t(b) * T + t0 + t) * G + g) * N;
        std::copy(dBb.begin() + size_t(t) * N, dBb.begin() + size_t(t + 1) * N, dBm + o);
        std::copy(dCb.begin() + size_t(t) * N, dCb.begin() + size_t(t + 1) * N, dCm + o);
      }
    }
  }
  // Fixed order over threads, so a given thread count gives the same bits every run.
  for (const auto& dp : dparam) {
    if (dp.empty()) continue;
    for (size_t i = 0; i < size_t(E) * N; ++i) dA_log[i] += dp[i];
    for (int e = 0; e < E; ++e) {
      dD[e] += dp[size_t(E) * N + e];
      ddt_bias[e] += dp[size_t(E) * N + E + e];
    }
  }
}

namespace {

// One channel of the streaming step: s[n] = exp(dt A[n]) s[n] + bx B[n] with
// A = -exp(A_log), returns sum_n s[n] C[n]. The decays are computed a chunk
// at a time in a separate pass with the branch-free exponentials, so that
// pass vectorises (two exps per state element were most of the step's time).
template <typename Real>
SSM_SIMD_CLONES Real scan_step_channel(Real* __restrict s, const Real* __restrict A_log, const Real* __restrict Bg,
                                       const Real* __restrict Cg, Real dt, Real bx, int N) {
  constexpr int kChunk = 64;
  Real decay[kChunk];  // (kChunk)
  Real acc = 0;
  for (int n0 = 0; n0 < N; n0 += kChunk) {
    const int w = std::min(kChunk, N - n0);
    for (int j = 0; j < w; ++j) decay[j] = decay_exp(-dt * exp_bounded(A_log[n0 + j]));
    for (int j = 0; j < w; ++j) {
      const Real sj = decay[j] * s[n0 + j] + bx * Bg[n0 + j];
      s[n0 + j] = sj;
      acc += sj * Cg[n0 + j];
    }
  }
  return acc;
}

}  // namespace

template <typename Real>
void selective_scan_step(Real* y, Real* state, const Real* x, const Real* dt_raw, const Real* A_log, const Real* Bm,
                         const Real* Cm, const Real* D, const Real* dt_bias, const Real* z, const ScanDims& d) {
  ScanDims d1 = d;
  d1.T = 1;
  selective_scan_check_dims(d1);
  check_forward_ptrs(y, x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  check_ptr(state, "state");
  const int B = d.B, E = d.E, G = d.G, N = d.N, epg = E / G;
  for (int b = 0; b < B; ++b)
    for (int e = 0; e < E; ++e) {
      const size_t i = size_t(b) * E + e;
      const Real* Bg = Bm + (size_t(b) * G + e / epg) * N;
      const Real* Cg = Cm + (size_t(b) * G + e / epg) * N;
      const Real* Al = A_log + size_t(e) * N;
      Real* s = state + i * N;
      const Real dt = softplus(dt_raw[i] + dt_bias[e]), bx = dt * x[i];
      Real v = scan_step_channel(s, Al, Bg, Cg, dt, bx, N) + D[e] * x[i];
      if (z) v *= silu(z[i]);
      y[i] = v;
    }
}

#define SSM_INSTANTIATE(Real)                                                                                       \
  template void selective_scan_reference_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*,        \
                                                       const Real*, const Real*, const Real*, const Real*,         \
                                                       const Real*, const Real*, const ScanDims&);                 \
  template void selective_scan_blocked_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*,          \
                                                     const Real*, const Real*, const Real*, const Real*,           \
                                                     const Real*, const Real*, const ScanDims&, int);              \
  template void selective_scan_backward<Real>(Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*,       \
                                              const Real*, const Real*, const Real*, const Real*, const Real*,     \
                                              const Real*, const Real*, const Real*, const Real*, const Real*,     \
                                              const Real*, const ScanDims&, int);                                  \
  template void selective_scan_step<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*,        \
                                          const Real*, const Real*, const Real*, const Real*, const ScanDims&);
SSM_INSTANTIATE(float)
SSM_INSTANTIATE(double)
#undef SSM_INSTANTIATE

}  // namespace ssm
