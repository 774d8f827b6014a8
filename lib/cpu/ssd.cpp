// SSD (Mamba-2 selective SSM) on the CPU: the sequential reference, one
// streaming step, and the chunked algorithm with its exact backward.
//
// Chunked layout of the work: one task per (batch, group, slice of the
// group's heads). A task walks its chunks in order (reverse order in the
// backward) and carries the (P, N) states of its heads, so the scan across
// chunks needs no separate pass; C·B^T of a chunk is computed once per task
// and shared by its heads, and the state products of all its heads are one
// matmul. Heads are sliced only when B·G alone cannot keep every thread busy.
// Matmuls go through ssm::gemm with leading dimensions that read the strided
// (B, T, H, P) / (B, T, G, N) rows in place.
#include "ssm/ssd.hpp"
#include "fast_math.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ssm/blas.hpp"

namespace ssm {
namespace {

// The hot loops of the chunked tasks also get an AVX2/FMA build on x86-64,
// picked at load time (SSM_SIMD_CLONES); the math helpers of fast_math.hpp
// are forced inline so that they are compiled into each build.

void require_ptr(const void* p, const char* name) {
  if (!p) fail(std::string("ssd: ") + name + " must not be null");
}

// The inputs every entry point reads.
void require_inputs(const void* x, const void* dt_raw, const void* A_log, const void* Bm, const void* Cm, const void* D,
                    const void* dt_bias) {
  require_ptr(x, "x");
  require_ptr(dt_raw, "dt_raw");
  require_ptr(A_log, "A_log");
  require_ptr(Bm, "B");
  require_ptr(Cm, "C");
  require_ptr(D, "D");
  require_ptr(dt_bias, "dt_bias");
}

// The gradient buffers the backward functions write, and dy.
void require_grads(const void* dx, const void* ddt_raw, const void* dA_log, const void* dBm, const void* dCm,
                   const void* dD, const void* ddt_bias, const void* dy) {
  require_ptr(dx, "dx");
  require_ptr(ddt_raw, "ddt_raw");
  require_ptr(dA_log, "dA_log");
  require_ptr(dBm, "dB");
  require_ptr(dCm, "dC");
  require_ptr(dD, "dD");
  require_ptr(ddt_bias, "ddt_bias");
  require_ptr(dy, "dy");
}

void check_chunk(int Q) { require(Q >= 1, "ssd: chunk length Q must be >= 1, got " + std::to_string(Q)); }

// BLAS calls run inside OpenMP tasks, so BLAS itself must stay
// single-threaded for the duration; the caller's setting is restored.
class BlasSingleThreaded {
 public:
  BlasSingleThreaded() : prev_(openblas_get_num_threads()) { blas_set_threads(1); }
  ~BlasSingleThreaded() { blas_set_threads(prev_); }
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int prev_;
};

// The split of the work into (batch, group, head slice) tasks.
struct Tasks {
  int threads;  // OpenMP threads worth using
  int slices;   // head slices per group
  int count;    // B * G * slices

  explicit Tasks(const SsdDims& d) {
    const int hpg = d.H / d.G;
    // Below ~64k state updates a parallel region costs more than it saves.
    const double work = double(d.B) * d.T * d.H * d.P * d.N;
    threads = (omp_in_parallel() || work < 65536.0) ? 1 : omp_get_max_threads();
    const int want = (threads + d.B * d.G - 1) / (d.B * d.G);
    slices = std::clamp(want, 1, hpg);
    count = d.B * d.G * slices;
  }
  // Task k covers batch b, group g and heads [h0, h1).
  void at(const SsdDims& d, int k, int& b, int& g, int& h0, int& h1) const {
    const int hpg = d.H / d.G;
    b = k / (d.G * slices);
    g = (k / slices) % d.G;
    const int s = k % slices;
    h0 = g * hpg + s * hpg / slices;
    h1 = g * hpg + (s + 1) * hpg / slices;
  }
};

// Triangular products on an (L, L) lower-triangular matrix, done by row
// blocks of kTri so that the zero upper triangle is mostly skipped. Entries
// above the diagonal inside each (kTri, kTri) diagonal block are read and
// must be zero (lower_mm, lower_tmm) or are written with junk (lower_abt).
constexpr int kTri = 16;

// out(L, n) = Lm(L, L) @ R(L, n) + beta * out
template <typename Real>
void lower_mm(int L, int n, const Real* Lm, int ldl, const Real* R, int ldr, Real beta, Real* out, int ldo) {
  for (int i0 = 0; i0 < L; i0 += kTri) {
    const int i1 = std::min(L, i0 + kTri);
    gemm<Real>(false, false, i1 - i0, n, i1, Real(1), Lm + size_t(i0) * ldl, ldl, R, ldr, beta, out + size_t(i0) * ldo,
               ldo);
  }
}

// out(L, n) = Lm(L, L)^T @ R(L, n) + beta * out
template <typename Real>
void lower_tmm(int L, int n, const Real* Lm, int ldl, const Real* R, int ldr, Real beta, Real* out, int ldo) {
  for (int j0 = 0; j0 < L; j0 += kTri) {
    const int j1 = std::min(L, j0 + kTri);
    gemm<Real>(true, false, j1 - j0, n, L - j0, Real(1), Lm + size_t(j0) * ldl + j0, ldl, R + size_t(j0) * ldr, ldr,
               beta, out + size_t(j0) * ldo, ldo);
  }
}

// Lower triangle of out(L, L) = A(L, k) @ Bt(L, k)^T.
template <typename Real>
void lower_abt(int L, int k, const Real* A, int lda, const Real* Bt, int ldb, Real* out, int ldo) {
  for (int i0 = 0; i0 < L; i0 += kTri) {
    const int i1 = std::min(L, i0 + kTri);
    gemm<Real>(false, true, i1 - i0, i1, k, Real(1), A + size_t(i0) * lda, lda, Bt, ldb, Real(0),
               out + size_t(i0) * ldo, ldo);
  }
}

// out[j] = exp(li - lam[j]) for j < n, all j <= i so the exponent is <= 0.
// Two plain passes so that both vectorise (double -> float, then exp).
template <typename Real>
SSM_ALWAYS_INLINE void decay_row(int n, double li, const double* __restrict lam, Real* __restrict out) {
  for (int j = 0; j < n; ++j) out[j] = Real(li - lam[j]);
  for (int j = 0; j < n; ++j) out[j] = decay_exp(out[j]);
}

// sum_k a[k] b[k], vectorised with lane-wise partial sums.
template <typename Real>
SSM_ALWAYS_INLINE Real dot(size_t n, const Real* __restrict a, const Real* __restrict b) {
  Real s = 0;
#pragma omp simd reduction(+ : s)
  for (size_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

// End (exclusive) of the kTri diagonal block holding row i, capped at L.
SSM_ALWAYS_INLINE int block_end(int i, int L) { return std::min(L, (i / kTri + 1) * kTri); }

// Cumulative log decay of one chunk of one head. Kept in double: differences
// Lambda[t] - Lambda[s] of long chunks would otherwise cancel badly in float.
template <typename Real>
SSM_ALWAYS_INLINE void chunk_lambda(int L,
                                    const Real* dtv,  // (L)
                                    double A,
                                    double* lam) {  // (L)
  double acc = 0;
  for (int i = 0; i < L; ++i) {
    acc += double(dtv[i]) * A;
    lam[i] = acc;
  }
}

// The decays the state terms of a chunk use:
//   el[i] = exp(Lambda[i])                from the chunk start to step i
//   ew[j] = exp(Lambda[L-1] - Lambda[j])  from step j to the chunk end
//   w[j]  = ew[j] * dt[j]
template <typename Real>
SSM_ALWAYS_INLINE void chunk_state_decays(int L, const double* lam, const Real* dtv,  // (L) each
                                          Real* el, Real* ew, Real* w) {              // (L) each
  const double last = lam[L - 1];
  for (int j = 0; j < L; ++j) {
    el[j] = decay_exp(Real(lam[j]));
    ew[j] = decay_exp(Real(last - lam[j]));
    w[j] = ew[j] * dtv[j];
  }
}

// M[i, j] = CB[i, j] exp(Lambda[i] - Lambda[j]) dt[j] for j <= i, zero above
// the diagonal inside the diagonal blocks (read by the triangular products).
template <typename Real>
SSM_ALWAYS_INLINE void build_decay_matrix(int L, const Real* CB, int ld, const double* lam, const Real* dtv, Real* M) {
  for (int i = 0; i < L; ++i) {
    Real* __restrict Mi = M + size_t(i) * ld;
    const Real* __restrict CBi = CB + size_t(i) * ld;
    const Real* __restrict dt = dtv;
    // Only s <= t: the exponent is <= 0 and cannot overflow.
    decay_row(i + 1, lam[i], lam, Mi);
    for (int j = 0; j <= i; ++j) Mi[j] *= CBi[j] * dt[j];
    for (int j = i + 1, je = block_end(i, L); j < je; ++j) Mi[j] = 0;
  }
}

// One task of the chunked forward: batch b, group g, heads [h0, h1). The
// heads of a task are adjacent in (H, P) rows, so the state products of all
// of them are single matmuls over nh·P columns.
template <typename Real>
SSM_SIMD_CLONES void chunked_forward_task(Real* y, Real* final_state, const Real* x, const Real* dt_raw,
                                          const Real* A_log, const Real* Bm, const Real* Cm, const Real* D,
                                          const Real* dt_bias, const Real* initial_state, const SsdDims& d, int Q,
                                          int b, int g, int h0, int h1) {
  const int T = d.T, H = d.H, P = d.P, G = d.G, N = d.N, nh = h1 - h0;
  const int HP = H * P, GN = G * N, nP = nh * P, Qe = std::min(Q, T);
  const size_t PN = size_t(P) * N;
  std::vector<Real> CB(size_t(Qe) * Qe);             // (Q, Q)  C·B^T of the chunk, lower triangle
  std::vector<Real> M(size_t(Qe) * Qe);              // (Q, Q)  CB ⊙ decay ⊙ dt, lower triangle
  std::vector<Real> Z(size_t(Qe) * nP);              // (Q, nh·P)  C @ S^T
  std::vector<Real> Xw(size_t(Qe) * nP);             // (Q, nh·P)  w ⊙ X
  std::vector<Real> S(nh * PN);                      // (nh·P, N)  carried states
  std::vector<Real> dtv(Qe), el(Qe), ew(Qe), w(Qe);  // (Q)
  std::vector<double> lam(Qe);                       // (Q)
  bool have_state = initial_state != nullptr;
  if (have_state) std::copy_n(initial_state + (size_t(b) * H + h0) * PN, nh * PN, S.data());

  for (int t0 = 0; t0 < T; t0 += Q) {
    const int L = std::min(Q, T - t0);
    const Real* Cc = Cm + (size_t(b) * T + t0) * GN + size_t(g) * N;  // (L, N) ld GN
    const Real* Bc = Bm + (size_t(b) * T + t0) * GN + size_t(g) * N;  // (L, N) ld GN
    const Real* xc = x + (size_t(b) * T + t0) * HP + size_t(h0) * P;  // (L, nh·P) ld HP
    Real* yc = y + (size_t(b) * T + t0) * HP + size_t(h0) * P;        // (L, nh·P) ld HP
    lower_abt(L, N, Cc, GN, Bc, GN, CB.data(), Qe);
    if (have_state) gemm<Real>(false, true, L, nP, N, Real(1), Cc, GN, S.data(), N, Real(0), Z.data(), nP);
    for (int hh = 0; hh < nh; ++hh) {
      const int h = h0 + hh;
      const Real* dtr = dt_raw + (size_t(b) * T + t0) * H + h;  // (L) stride H
      const Real bias = dt_bias[h];
      for (int i = 0; i < L; ++i) dtv[i] = fast_softplus(dtr[size_t(i) * H] + bias);
      chunk_lambda(L, dtv.data(), -std::exp(double(A_log[h])), lam.data());
      chunk_state_decays(L, lam.data(), dtv.data(), el.data(), ew.data(), w.data());
      build_decay_matrix(L, CB.data(), Qe, lam.data(), dtv.data(), M.data());
      // y = M @ X + exp(Lambda) ⊙ (C @ S^T) + D x
      lower_mm(L, P, M.data(), Qe, xc + size_t(hh) * P, HP, Real(0), yc + size_t(hh) * P, HP);
      const Real Dh = D[h];
      for (int i = 0; i < L; ++i) {
        Real* __restrict yi = yc + size_t(i) * HP + size_t(hh) * P;
        const Real* __restrict xi = xc + size_t(i) * HP + size_t(hh) * P;
        const Real* __restrict zi = Z.data() + size_t(i) * nP + size_t(hh) * P;
        Real* __restrict xwi = Xw.data() + size_t(i) * nP + size_t(hh) * P;
        const Real e = el[i], wi = w[i];
        if (have_state)
          for (int p = 0; p < P; ++p) yi[p] += e * zi[p] + Dh * xi[p];
        else
          for (int p = 0; p < P; ++p) yi[p] += Dh * xi[p];
        for (int p = 0; p < P; ++p) xwi[p] = wi * xi[p];
      }
      // S = exp(Lambda[L-1]) S + (w ⊙ X)^T @ B, the matmul for all heads below.
      Real* __restrict Sh = S.data() + hh * PN;
      const Real e_last = el[L - 1];
      for (size_t k = 0; k < PN; ++k) Sh[k] *= e_last;
    }
    gemm<Real>(true, false, nP, N, L, Real(1), Xw.data(), nP, Bc, GN, Real(1), S.data(), N);
    have_state = true;
  }
  if (final_state) std::copy_n(S.data(), nh * PN, final_state + (size_t(b) * H + h0) * PN);
}

// Per-task sums of the parameter gradients, added to the outputs after the
// parallel region (heads of a task are shared with other batch entries).
struct ParamGrads {
  std::vector<double> dA_log, dD, ddt_bias;  // (nh) each
};

// One task of the chunked backward (same split as the forward). A forward
// sweep recomputes the state entering every chunk; the reverse sweep then
// carries dS, the gradient w.r.t. the state leaving the current chunk.
template <typename Real>
SSM_SIMD_CLONES void chunked_backward_task(Real* dx, Real* ddt_raw,
                                           Real* dB_out,  // (T, N) ld ld_out
                                           Real* dC_out,  // (T, N) ld ld_out
                                           int ld_out, ParamGrads& pg, Real* dinitial_state, const Real* dy,
                                           const Real* dfinal_state, const Real* x, const Real* dt_raw,
                                           const Real* A_log, const Real* Bm, const Real* Cm, const Real* D,
                                           const Real* dt_bias, const Real* initial_state, const SsdDims& d, int Q,
                                           int b, int g, int h0, int h1) {
  const int T = d.T, H = d.H, P = d.P, G = d.G, N = d.N, nh = h1 - h0;
  const int HP = H * P, GN = G * N, nP = nh * P, Qe = std::min(Q, T);
  const int nc = (T + Q - 1) / Q;
  const size_t PN = size_t(P) * N, SN = nh * PN;
  // The large buffers are written before they are read: no zero fill.
  // dt_all, sig_all: (nh, T)  softplus(dt_raw + dt_bias) and its derivative
  // states: (nc + 1, nh·P, N)  the state entering each chunk, then the final one
  const auto dt_all = std::make_unique_for_overwrite<Real[]>(size_t(nh) * T);
  const auto sig_all = std::make_unique_for_overwrite<Real[]>(size_t(nh) * T);
  const auto states = std::make_unique_for_overwrite<Real[]>((nc + 1) * SN);
  std::vector<Real> dS(SN);                // (nh·P, N)  gradient w.r.t. the state leaving the chunk
  std::vector<Real> CB(size_t(Qe) * Qe);   // (Q, Q)  C·B^T, lower triangle
  std::vector<Real> M(size_t(Qe) * Qe);    // (Q, Q)  CB ⊙ decay ⊙ dt
  std::vector<Real> dM(size_t(Qe) * Qe);   // (Q, Q)  dY @ X^T, lower triangle
  std::vector<Real> dCB(size_t(Qe) * Qe);  // (Q, Q)  gradient w.r.t. CB, summed over the task's heads
  std::vector<Real> W(size_t(Qe) * N);     // (Q, N)  dY @ S_in of one head
  std::vector<Real> V(size_t(Qe) * nP);    // (Q, nh·P)  B @ dS^T
  std::vector<Real> Xw(size_t(Qe) * nP);   // (Q, nh·P)  w ⊙ X
  std::vector<Real> dYe(size_t(Qe) * nP);  // (Q, nh·P)  exp(Lambda) ⊙ dY
  std::vector<Real> el(Qe), ew(Qe), w(Qe), ddt_dir(Qe), erow(Qe);  // (Q)
  std::vector<double> colG(Qe);                                    // (Q)
  std::vector<Real> e_last(nh);                                    // (nh)
  std::vector<double> lam(Qe), dlam(Qe);                           // (Q)

  for (int hh = 0; hh < nh; ++hh) {
    const Real bias = dt_bias[h0 + hh];
    const Real* dtr = dt_raw + size_t(b) * T * H + h0 + hh;  // (T) stride H
    Real* __restrict dth = dt_all.get() + size_t(hh) * T;
    Real* __restrict sgh = sig_all.get() + size_t(hh) * T;
    for (int t = 0; t < T; ++t) {
      const Real z = dtr[size_t(t) * H] + bias;
      dth[t] = fast_softplus(z);
      sgh[t] = fast_sigmoid(z);
    }
  }

  // Forward sweep: the state entering every chunk.
  if (initial_state)
    std::copy_n(initial_state + (size_t(b) * H + h0) * PN, SN, states.get());
  else
    std::fill_n(states.get(), SN, Real(0));
  for (int c = 0; c < nc; ++c) {
    const int t0 = c * Q, L = std::min(Q, T - t0);
    const Real* Bc = Bm + (size_t(b) * T + t0) * GN + size_t(g) * N;  // (L, N) ld GN
    const Real* xc = x + (size_t(b) * T + t0) * HP + size_t(h0) * P;  // (L, nh·P) ld HP
    const Real* cur = states.get() + c * SN;
    Real* next = states.get() + (c + 1) * SN;
    for (int hh = 0; hh < nh; ++hh) {
      const Real* dtv = dt_all.get() + size_t(hh) * T + t0;
      chunk_lambda(L, dtv, -std::exp(double(A_log[h0 + hh])), lam.data());
      chunk_state_decays(L, lam.data(), dtv, el.data(), ew.data(), w.data());
      for (int j = 0; j < L; ++j) {
        Real* __restrict xwj = Xw.data() + size_t(j) * nP + size_t(hh) * P;
        const Real* __restrict xj = xc + size_t(j) * HP + size_t(hh) * P;
        for (int p = 0; p < P; ++p) xwj[p] = w[j] * xj[p];
      }
      for (size_t k = 0; k < PN; ++k) next[hh * PN + k] = el[L - 1] * cur[hh * PN + k];
    }
    gemm<Real>(true, false, nP, N, L, Real(1), Xw.data(), nP, Bc, GN, Real(1), next, N);
  }

  if (dfinal_state)
    std::copy_n(dfinal_state + (size_t(b) * H + h0) * PN, SN, dS.data());
  else
    std::fill(dS.begin(), dS.end(), Real(0));
  pg.dA_log.assign(nh, 0.0);
  pg.dD.assign(nh, 0.0);
  pg.ddt_bias.assign(nh, 0.0);

  // Reverse sweep.
  for (int c = nc - 1; c >= 0; --c) {
    const int t0 = c * Q, L = std::min(Q, T - t0);
    const bool state_in = c > 0 || initial_state != nullptr;
    const Real* Cc = Cm + (size_t(b) * T + t0) * GN + size_t(g) * N;    // (L, N) ld GN
    const Real* Bc = Bm + (size_t(b) * T + t0) * GN + size_t(g) * N;    // (L, N) ld GN
    const Real* xc = x + (size_t(b) * T + t0) * HP + size_t(h0) * P;    // (L, nh·P) ld HP
    const Real* dyc = dy + (size_t(b) * T + t0) * HP + size_t(h0) * P;  // (L, nh·P) ld HP
    Real* dxc = dx + (size_t(b) * T + t0) * HP + size_t(h0) * P;        // (L, nh·P) ld HP
    Real* dCc = dC_out + size_t(t0) * ld_out;                           // (L, N) ld ld_out
    Real* dBc = dB_out + size_t(t0) * ld_out;                           // (L, N) ld ld_out
    const Real* S_in = states.get() + c * SN;                           // (nh·P, N)
    const Real* S_out = S_in + SN;                                      // (nh·P, N)
    for (int i = 0; i < L; ++i) {
      std::fill_n(dCc + size_t(i) * ld_out, N, Real(0));
      std::fill_n(dBc + size_t(i) * ld_out, N, Real(0));
    }
    lower_abt(L, N, Cc, GN, Bc, GN, CB.data(), Qe);
    std::fill(dCB.begin(), dCB.end(), Real(0));
    gemm<Real>(false, true, L, nP, N, Real(1), Bc, GN, dS.data(), N, Real(0), V.data(), nP);

    for (int hh = 0; hh < nh; ++hh) {
      const int h = h0 + hh;
      const double A = -std::exp(double(A_log[h]));
      const Real* dtv = dt_all.get() + size_t(hh) * T + t0;  // (L)
      const Real* xh = xc + size_t(hh) * P;                  // (L, P) ld HP
      const Real* dyh = dyc + size_t(hh) * P;                // (L, P) ld HP
      Real* dxh = dxc + size_t(hh) * P;                      // (L, P) ld HP
      chunk_lambda(L, dtv, A, lam.data());
      chunk_state_decays(L, lam.data(), dtv, el.data(), ew.data(), w.data());
      e_last[hh] = el[L - 1];
      std::fill_n(dlam.begin(), L, 0.0);
      std::fill_n(colG.begin(), L, 0.0);

      // Intra-chunk part: y = M @ X, M = CB ⊙ exp(Lambda_i - Lambda_j) ⊙ dt_j.
      lower_abt(L, P, dyh, HP, xh, HP, dM.data(), Qe);
      for (int i = 0; i < L; ++i) {
        Real* __restrict Mi = M.data() + size_t(i) * Qe;
        const Real* __restrict CBi = CB.data() + size_t(i) * Qe;
        const Real* __restrict dMi = dM.data() + size_t(i) * Qe;
        Real* __restrict dCBi = dCB.data() + size_t(i) * Qe;
        Real* __restrict Ei = erow.data();
        double* __restrict col = colG.data();
        const Real* __restrict dt = dtv;
        decay_row(i + 1, lam[i], lam.data(), Ei);
        double row = 0;
#pragma omp simd reduction(+ : row)
        for (int j = 0; j <= i; ++j) {
          const Real m = CBi[j] * Ei[j] * dt[j];
          const Real ge = dMi[j] * Ei[j];
          Mi[j] = m;
          dCBi[j] += ge * dt[j];
          const Real gcb = ge * CBi[j];  // d loss / d dt_j through the explicit factor
          col[j] += gcb;
          row += double(gcb) * dt[j];  // = dM ⊙ M: d loss / d (Lambda_i - Lambda_j)
        }
        for (int j = i + 1, je = block_end(i, L); j < je; ++j) Mi[j] = 0;
        dlam[i] += row;
      }
      for (int j = 0; j < L; ++j) {
        ddt_dir[j] = Real(colG[j]);
        dlam[j] -= double(dtv[j]) * colG[j];
      }
      lower_tmm(L, P, M.data(), Qe, dyh, HP, Real(0), dxh, HP);

      // D skip and the state terms: S_out = exp(Lambda_last) S_in + sum_j w_j outer(x_j, B_j).
      const Real Dh = D[h];
      double dD = 0;
      for (int j = 0; j < L; ++j) {
        const Real* __restrict xj = xh + size_t(j) * HP;
        const Real* __restrict dyj = dyh + size_t(j) * HP;
        Real* __restrict dxj = dxh + size_t(j) * HP;
        const Real* __restrict vj = V.data() + size_t(j) * nP + size_t(hh) * P;  // dS_out B_j
        Real* __restrict xwj = Xw.data() + size_t(j) * nP + size_t(hh) * P;
        Real* __restrict dyej = dYe.data() + size_t(j) * nP + size_t(hh) * P;
        const Real wj = w[j], ej = el[j];
        for (int p = 0; p < P; ++p) {
          dxj[p] += Dh * dyj[p] + wj * vj[p];
          xwj[p] = wj * xj[p];
          dyej[p] = ej * dyj[p];
        }
        dD += dot(P, xj, dyj);
        const Real r = dot(P, xj, vj);
        ddt_dir[j] += ew[j] * r;
        dlam[j] -= double(wj * r);
      }
      pg.dD[hh] += dD;
      dlam[L - 1] += dot(PN, dS.data() + hh * PN, S_out + hh * PN);
      if (state_in) {
        // W = dY @ S_in: dC_i += exp(Lambda_i) W_i, dLambda_i += exp(Lambda_i) W_i · C_i.
        gemm<Real>(false, false, L, N, P, Real(1), dyh, HP, S_in + hh * PN, N, Real(0), W.data(), N);
        for (int i = 0; i < L; ++i) {
          const Real* __restrict Wi = W.data() + size_t(i) * N;
          Real* __restrict dCi = dCc + size_t(i) * ld_out;
          const Real ei = el[i];
          for (int n = 0; n < N; ++n) dCi[n] += ei * Wi[n];
          dlam[i] += double(ei * dot(N, Wi, Cc + size_t(i) * GN));
        }
      }

      // Lambda = cumsum(dt * A): back through the cumulative sum, A and softplus.
      const Real* sig = sig_all.get() + size_t(hh) * T + t0;  // (L)
      double acc = 0, dA = 0, dbias = 0;
      for (int j = L - 1; j >= 0; --j) {
        acc += dlam[j];
        const double ddt = double(ddt_dir[j]) + A * acc;
        dA += double(dtv[j]) * acc;
        const Real gz = Real(ddt) * sig[j];
        ddt_raw[(size_t(b) * T + t0 + j) * H + h] = gz;
        dbias += gz;
      }
      pg.dA_log[hh] += dA * A;  // dA/dA_log = A
      pg.ddt_bias[hh] += dbias;
    }

    // Matmuls over all heads of the task (K = nh·P sums over heads). The
    // inter-chunk term y_i += exp(Lambda_i) S_in C_i gives dS_in below.
    gemm<Real>(false, false, L, N, nP, Real(1), Xw.data(), nP, dS.data(), N, Real(1), dBc, ld_out);
    // dS_in = exp(Lambda_last) dS_out + (exp(Lambda) ⊙ dY)^T @ C
    for (int hh = 0; hh < nh; ++hh)
      for (size_t k = 0; k < PN; ++k) dS[hh * PN + k] *= e_last[hh];
    gemm<Real>(true, false, nP, N, L, Real(1), dYe.data(), nP, Cc, GN, Real(1), dS.data(), N);
    // CB = C @ B^T: dC += dCB @ B, dB += dCB^T @ C.
    lower_mm(L, N, dCB.data(), Qe, Bc, GN, Real(1), dCc, ld_out);
    lower_tmm(L, N, dCB.data(), Qe, Cc, GN, Real(1), dBc, ld_out);
  }
  if (dinitial_state) std::copy_n(dS.data(), SN, dinitial_state + (size_t(b) * H + h0) * PN);
}

}  // namespace

void ssd_check_dims(const SsdDims& d) {
  // Messages are built only on failure: ssd_step calls this per sample.
  const auto positive = [](int v, const char* name) {
    if (v < 1) fail(std::string("ssd: dims.") + name + " must be >= 1, got " + std::to_string(v));
  };
  positive(d.B, "B");
  positive(d.T, "T");
  positive(d.H, "H");
  positive(d.P, "P");
  positive(d.G, "G");
  positive(d.N, "N");
  if (d.H % d.G != 0)
    fail("ssd: dims.H (" + std::to_string(d.H) + ") must be a multiple of dims.G (" + std::to_string(d.G) + ")");
}

template <typename Real>
void ssd_reference_forward(Real* y, Real* final_state, const Real* x, const Real* dt_raw, const Real* A_log,
                           const Real* Bm, const Real* Cm, const Real* D, const Real* dt_bias,
                           const Real* initial_state, const SsdDims& d) {
  ssd_check_dims(d);
  require_ptr(y, "y");
  require_inputs(x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  const int T = d.T, H = d.H, P = d.P, G = d.G, N = d.N, hpg = H / G;
  std::vector<Real> S(size_t(P) * N);  // (P, N)
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / hpg;
      const Real A = -std::exp(A_log[h]);
      if (initial_state)
        std::copy_n(initial_state + (size_t(b) * H + h) * P * N, size_t(P) * N, S.begin());
      else
        std::fill(S.begin(), S.end(), Real(0));
      for (int t = 0; t < T; ++t) {
        const size_t bt = size_t(b) * T + t;
        const Real dt = softplus<Real>(dt_raw[bt * H + h] + dt_bias[h]);
        const Real a = std::exp(dt * A);
        const Real* xt = x + (bt * H + h) * P;
        const Real* Bt = Bm + (bt * G + g) * N;
        const Real* Ct = Cm + (bt * G + g) * N;
        Real* yt = y + (bt * H + h) * P;
        for (int p = 0; p < P; ++p) {
          Real acc = 0;
          for (int n = 0; n < N; ++n) {
            Real& s = S[size_t(p) * N + n];
            s = a * s + dt * xt[p] * Bt[n];
            acc += s * Ct[n];
          }
          yt[p] = acc + D[h] * xt[p];
        }
      }
      if (final_state) std::copy(S.begin(), S.end(), final_state + (size_t(b) * H + h) * P * N);
    }
}

template <typename Real>
void ssd_reference_backward(Real* dx, Real* ddt_raw, Real* dA_log, Real* dBm, Real* dCm, Real* dD, Real* ddt_bias,
                            Real* dinitial_state, const Real* dy, const Real* dfinal_state, const Real* x,
                            const Real* dt_raw, const Real* A_log, const Real* Bm, const Real* Cm, const Real* D,
                            const Real* dt_bias, const Real* initial_state, const SsdDims& d) {
  ssd_check_dims(d);
  require_grads(dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dy);
  require_inputs(x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  const int T = d.T, H = d.H, P = d.P, G = d.G, N = d.N, hpg = H / G;
  const size_t PN = size_t(P) * N;
  std::fill_n(dBm, size_t(d.B) * T * G * N, Real(0));
  std::fill_n(dCm, size_t(d.B) * T * G * N, Real(0));
  std::vector<Real> S((size_t(T) + 1) * PN);  // (T + 1, P, N) state before step t at index t
  std::vector<Real> dS(PN);                   // (P, N)
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / hpg;
      const Real A = -std::exp(A_log[h]);
      if (initial_state)
        std::copy_n(initial_state + (size_t(b) * H + h) * PN, PN, S.begin());
      else
        std::fill_n(S.begin(), PN, Real(0));
      for (int t = 0; t < T; ++t) {
        const size_t bt = size_t(b) * T + t;
        const Real dt = softplus<Real>(dt_raw[bt * H + h] + dt_bias[h]);
        const Real a = std::exp(dt * A);
        const Real* xt = x + (bt * H + h) * P;
        const Real* Bt = Bm + (bt * G + g) * N;
        for (int p = 0; p < P; ++p)
          for (int n = 0; n < N; ++n) S[(t + 1) * PN + p * N + n] = a * S[t * PN + p * N + n] + dt * xt[p] * Bt[n];
      }
      if (dfinal_state)
        std::copy_n(dfinal_state + (size_t(b) * H + h) * PN, PN, dS.begin());
      else
        std::fill(dS.begin(), dS.end(), Real(0));
      for (int t = T - 1; t >= 0; --t) {
        const size_t bt = size_t(b) * T + t;
        const Real z = dt_raw[bt * H + h] + dt_bias[h];
        const Real dt = softplus<Real>(z);
        const Real a = std::exp(dt * A);
        const Real* xt = x + (bt * H + h) * P;
        const Real* Bt = Bm + (bt * G + g) * N;
        const Real* Ct = Cm + (bt * G + g) * N;
        const Real* dyt = dy + (bt * H + h) * P;
        const Real* St = S.data() + (t + 1) * PN;
        const Real* Sprev = S.data() + t * PN;
        Real* dxt = dx + (bt * H + h) * P;
        Real* dBt = dBm + (bt * G + g) * N;
        Real* dCt = dCm + (bt * G + g) * N;
        // y_t = S_t C_t + D x_t
        for (int p = 0; p < P; ++p) {
          dD[h] += xt[p] * dyt[p];
          for (int n = 0; n < N; ++n) {
            dS[p * N + n] += dyt[p] * Ct[n];
            dCt[n] += St[p * N + n] * dyt[p];
          }
        }
        // S_t = a S_{t-1} + dt outer(x_t, B_t)
        Real ddt = 0, da = 0;
        for (int p = 0; p < P; ++p) {
          Real dSB = 0;
          for (int n = 0; n < N; ++n) {
            dSB += dS[p * N + n] * Bt[n];
            dBt[n] += dt * dS[p * N + n] * xt[p];
            da += dS[p * N + n] * Sprev[p * N + n];
          }
          dxt[p] = D[h] * dyt[p] + dt * dSB;
          ddt += xt[p] * dSB;
        }
        for (auto& v : dS) v *= a;
        // a = exp(dt A), A = -exp(A_log), dt = softplus(z)
        ddt += da * a * A;
        dA_log[h] += da * a * dt * A;
        const Real gz = ddt * sigmoid<Real>(z);
        ddt_raw[bt * H + h] = gz;
        ddt_bias[h] += gz;
      }
      if (dinitial_state) std::copy(dS.begin(), dS.end(), dinitial_state + (size_t(b) * H + h) * PN);
    }
}

template <typename Real>
void ssd_chunked_forward(Real* y, Real* final_state, const Real* x, const Real* dt_raw, const Real* A_log,
                         const Real* Bm, const Real* Cm, const Real* D, const Real* dt_bias, const Real* initial_state,
                         const SsdDims& d, int Q) {
  ssd_check_dims(d);
  check_chunk(Q);
  require_ptr(y, "y");
  require_inputs(x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  const Tasks tasks(d);
  BlasSingleThreaded single;
#pragma omp parallel for schedule(dynamic, 1) num_threads(tasks.threads) if (tasks.threads > 1)
  for (int k = 0; k < tasks.count; ++k) {
    int b, g, h0, h1;
    tasks.at(d, k, b, g, h0, h1);
    chunked_forward_task(y, final_state, x, dt_raw, A_log, Bm, Cm, D, dt_bias, initial_state, d, Q, b, g, h0, h1);
  }
}

template <typename Real>
void ssd_chunked_backward(Real* dx, Real* ddt_raw, Real* dA_log, Real* dBm, Real* dCm, Real* dD, Real* ddt_bias,
                          Real* dinitial_state, const Real* dy, const Real* dfinal_state, const Real* x,
                          const Real* dt_raw, const Real* A_log, const Real* Bm, const Real* Cm, const Real* D,
                          const Real* dt_bias, const Real* initial_state, const SsdDims& d, int Q) {
  ssd_check_dims(d);
  check_chunk(Q);
  require_grads(dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dy);
  require_inputs(x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  const int T = d.T, G = d.G, N = d.N;
  const Tasks tasks(d);
  // With heads sliced, several tasks add into the same dB / dC rows: each
  // slice gets its own (T, N) buffer, summed afterwards.
  std::vector<Real> part(tasks.slices > 1 ? size_t(tasks.count) * T * N : 0);  // (tasks, T, N) x2
  std::vector<Real> partC(part.size());
  std::vector<ParamGrads> pg(tasks.count);
  {
    BlasSingleThreaded single;
#pragma omp parallel for schedule(dynamic, 1) num_threads(tasks.threads) if (tasks.threads > 1)
    for (int k = 0; k < tasks.count; ++k) {
      int b, g, h0, h1;
      tasks.at(d, k, b, g, h0, h1);
      Real* dBo = tasks.slices > 1 ? part.data() + size_t(k) * T * N : dBm + size_t(b) * T * G * N + size_t(g) * N;
      Real* dCo = tasks.slices > 1 ? partC.data() + size_t(k) * T * N : dCm + size_t(b) * T * G * N + size_t(g) * N;
      const int ld = tasks.slices > 1 ? N : G * N;
      chunked_backward_task(dx, ddt_raw, dBo, dCo, ld, pg[k], dinitial_state, dy, dfinal_state, x, dt_raw, A_log, Bm,
                            Cm, D, dt_bias, initial_state, d, Q, b, g, h0, h1);
    }
  }
  if (tasks.slices > 1) {
    for (int b = 0; b < d.B; ++b)
      for (int g = 0; g < G; ++g)
        for (int t = 0; t < T; ++t) {
          Real* dBt = dBm + ((size_t(b) * T + t) * G + g) * N;
          Real* dCt = dCm + ((size_t(b) * T + t) * G + g) * N;
          std::fill_n(dBt, N, Real(0));
          std::fill_n(dCt, N, Real(0));
          for (int s = 0; s < tasks.slices; ++s) {
            const size_t k = (size_t(b) * G + g) * tasks.slices + s;
            for (int n = 0; n < N; ++n) {
              dBt[n] += part[(k * T + t) * N + n];
              dCt[n] += partC[(k * T + t) * N + n];
            }
          }
        }
  }
  for (int k = 0; k < tasks.count; ++k) {
    int b, g, h0, h1;
    tasks.at(d, k, b, g, h0, h1);
    for (int h = h0; h < h1; ++h) {
      dA_log[h] += Real(pg[k].dA_log[h - h0]);
      dD[h] += Real(pg[k].dD[h - h0]);
      ddt_bias[h] += Real(pg[k].ddt_bias[h - h0]);
    }
  }
}

namespace {

// One head of one stream: S = a S + dt x B^T, y = S C + D x. The inner
// loops vectorise (the dot product as a SIMD reduction); an x86-64-v3 clone
// is picked at load time where the CPU has it.
template <typename Real>
SSM_SIMD_CLONES void ssd_step_head(Real* yt, Real* S, const Real* xt, const Real* Bt, const Real* Ct, Real a, Real dt,
                                   Real Dh, int P, int N) {
  for (int p = 0; p < P; ++p) {
    const Real dx = dt * xt[p];
    Real* Sp = S + size_t(p) * N;
    Real acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int n = 0; n < N; ++n) {
      const Real s = a * Sp[n] + dx * Bt[n];
      Sp[n] = s;
      acc += s * Ct[n];
    }
    yt[p] = acc + Dh * xt[p];
  }
}

}  // namespace

template <typename Real>
void ssd_step(Real* y, Real* state, const Real* x, const Real* dt_raw, const Real* A_log, const Real* Bm,
              const Real* Cm, const Real* D, const Real* dt_bias, const SsdDims& d) {
  SsdDims one = d;
  one.T = 1;
  ssd_check_dims(one);
  require_ptr(y, "y");
  require_ptr(state, "state");
  require_inputs(x, dt_raw, A_log, Bm, Cm, D, dt_bias);
  const int H = d.H, P = d.P, G = d.G, N = d.N, hpg = H / G;
  // Plain loops, no threads: this is the low-latency path (B·H·P·N work).
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / hpg;
      const Real dt = softplus<Real>(dt_raw[size_t(b) * H + h] + dt_bias[h]);
      const Real a = std::exp(dt * -std::exp(A_log[h]));
      ssd_step_head(y + (size_t(b) * H + h) * P, state + (size_t(b) * H + h) * P * N, x + (size_t(b) * H + h) * P,
                    Bm + (size_t(b) * G + g) * N, Cm + (size_t(b) * G + g) * N, a, dt, D[h], P, N);
    }
}

#define SSM_SSD_INSTANTIATE(Real)                                                                                    \
  template void ssd_reference_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*,        \
                                            const Real*, const Real*, const Real*, const Real*, const SsdDims&);     \
  template void ssd_reference_backward<Real>(Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*, const Real*,    \
                                             const Real*, const Real*, const Real*, const Real*, const Real*,        \
                                             const Real*, const Real*, const Real*, const Real*, const SsdDims&);    \
  template void ssd_chunked_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*,          \
                                          const Real*, const Real*, const Real*, const Real*, const SsdDims&, int);  \
  template void ssd_chunked_backward<Real>(Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*, const Real*,      \
                                           const Real*, const Real*, const Real*, const Real*, const Real*,          \
                                           const Real*, const Real*, const Real*, const Real*, const SsdDims&, int); \
  template void ssd_step<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*, const Real*,        \
                               const Real*, const Real*, const SsdDims&);

SSM_SSD_INSTANTIATE(float)
SSM_SSD_INSTANTIATE(double)

}  // namespace ssm
