// SSD (Mamba-2) chunked forward and backward on CUDA, fp32 in/out, tf32 (or
// 3xTF32) tensor-core products with fp32 accumulation. DESIGN.md §1 gives the
// math; docs/KERNELS.md the byte / FLOP floors, the design and the timings.
//
// Chunks are padded to QT = 64 slots (the user's Q <= 64 slots hold data, the
// rest are zero: dt = 0 so the decay is 1, x = B = C = 0), and P, N are padded
// to the tile sizes PP in {32, 64}, NP in {32, 64, 128}.
//
// Forward (3 launches):
//   ssd_prep_kernel     dt = softplus(dt_raw + dt_bias), lam = in-chunk cumsum of dt*A
//   ssd_cb_kernel       CB[b,c,g] = C B^T per chunk (shared by the H/G heads of a group)
//   ssd_fwd_kernel      one block per (b, h) walks the chunks in order, the state
//                       S (P x N) in registers: y = intra + inter + D x, S <- update
// Backward (4 launches):
//   ssd_prep_kernel
//   ssd_state_scan_kernel (forward)  S_in of every chunk        -> workspace
//   ssd_state_scan_kernel (reverse)  dS_out of every chunk      -> workspace, dinitial_state
//   ssd_bwd_chunk_kernel  one block per (b, chunk, group) loops over the group's
//                       heads: dx, ddt_raw, dD, dA_log, ddt_bias, and dB, dC summed
//                       over the heads in registers.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "ssd.cuh"
#include "ssd_common.cuh"
#include "cuda_check.cuh"
#include "ssm/common.hpp"

namespace ssm::kernels {
namespace {

using i64 = long long;

struct DevDims {
  int B, T, H, P, G, N, Q, nch;
};

DevDims dev_dims(const SsdDims& d, int Q) { return DevDims{d.B, d.T, d.H, d.P, d.G, d.N, Q, (d.T + Q - 1) / Q}; }

// ============================================================================
// prep: dt and the in-chunk cumulative log decay lam, laid out (B, H, nch, QT)
// grid (nch, B), block 256, dynamic smem QT * H floats
// ============================================================================
__global__ void __launch_bounds__(256)
    ssd_prep_kernel(float* __restrict__ dt_ws, float* __restrict__ lam_ws, const float* __restrict__ dt_raw,
                    const float* __restrict__ A_log, const float* __restrict__ dt_bias, DevDims d) {
  extern __shared__ float s_raw[];  // (Qc, H)
  const int c = blockIdx.x, b = blockIdx.y;
  const int t0 = c * d.Q, Qc = min(d.Q, d.T - t0);
  const float* src = dt_raw + (static_cast<i64>(b) * d.T + t0) * d.H;
  for (int i = threadIdx.x; i < Qc * d.H; i += blockDim.x) s_raw[i] = src[i];
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int h = warp; h < d.H; h += nw) {
    const float A = -expf(A_log[h]), bias = dt_bias[h];
    const int q0 = 2 * lane, q1 = 2 * lane + 1;
    const float d0 = q0 < Qc ? softplus(s_raw[q0 * d.H + h] + bias) : 0.f;
    const float d1 = q1 < Qc ? softplus(s_raw[q1 * d.H + h] + bias) : 0.f;
    const float v0 = d0 * A, v1 = d1 * A, pair = v0 + v1;
    float incl = pair;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float n = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += n;
    }
    const i64 base = ((static_cast<i64>(b) * d.H + h) * d.nch + c) * QT;
    reinterpret_cast<float2*>(dt_ws + base)[lane] = make_float2(d0, d1);
    reinterpret_cast<float2*>(lam_ws + base)[lane] = make_float2(incl - pair + v0, incl);
  }
}

// ============================================================================
// CB[b, c, g][t][s] = sum_n C[t][n] B[s][n]  (zero above the diagonal)
// grid (nch, G, B), block 128
// ============================================================================
template <int NP, bool SPLIT>
__global__ void __launch_bounds__(128) ssd_cb_kernel(float* __restrict__ cb_ws, const float* __restrict__ Bm,
                                                     const float* __restrict__ Cm, DevDims d, bool vec_bc) {
  constexpr int LD = NP + 8;
  extern __shared__ __align__(16) float smem[];
  float* sB = smem;
  float* sC = smem + QT * LD;
  const int c = blockIdx.x, grp = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int t0 = c * d.Q, Qc = min(d.Q, d.T - t0);
  const i64 bcrow = static_cast<i64>(d.G) * d.N;
  const i64 off = (static_cast<i64>(b) * d.T + t0) * bcrow + static_cast<i64>(grp) * d.N;
  load_tile<QT, NP, 128>(sB, LD, Bm + off, bcrow, Qc, d.N, vec_bc);
  load_tile<QT, NP, 128>(sC, LD, Cm + off, bcrow, Qc, d.N, vec_bc);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int r0 = warp * 16 + g;
  float acc[QT / 8][4] = {};
#pragma unroll
  for (int kb = 0; kb < NP / 8; ++kb) {
    const float2 u0 = *reinterpret_cast<const float2*>(sC + r0 * LD + kb * 8 + 2 * q);
    const float2 u1 = *reinterpret_cast<const float2*>(sC + (r0 + 8) * LD + kb * 8 + 2 * q);
    const FragA<SPLIT> a = make_a<SPLIT>(u0.x, u1.x, u0.y, u1.y);
#pragma unroll
    for (int j = 0; j < QT / 8; ++j) {
      if (8 * j > warp * 16 + 15) continue;  // tile entirely above the diagonal
      const float2 v = *reinterpret_cast<const float2*>(sB + (8 * j + g) * LD + kb * 8 + 2 * q);
      mma<SPLIT>(acc[j], a, make_b<SPLIT>(v.x, v.y));
    }
  }
  float* dst = cb_ws + ((static_cast<i64>(b) * d.nch + c) * d.G + grp) * QT * QT;
#pragma unroll
  for (int j = 0; j < QT / 8; ++j) {
    const int s = 8 * j + 2 * q;
    *reinterpret_cast<float2*>(dst + r0 * QT + s) = make_float2(acc[j][0], acc[j][1]);
    *reinterpret_cast<float2*>(dst + (r0 + 8) * QT + s) = make_float2(acc[j][2], acc[j][3]);
  }
}

// ============================================================================
// Segments: a long sequence is cut into K segments of `cps` chunks so that the
// sequential kernels get K x B x H blocks. A pre-pass (ssd_state_scan_kernel
// with seg_out) gives each segment's state from zero and its total log decay;
// a block then starts from the initial state carried through the segments
// before its own, in scan order:  S = S e^{decay_j} + local_j.
// ============================================================================
struct SegInfo {
  int K;    // segments (1: none)
  int cps;  // chunks per segment
};

template <int PP, int NP, int NTN>
__device__ __forceinline__ void segment_start_state(float (&S)[NTN][4], const float* init, const float* seg_in,
                                                    const float* seg_decay, long long bh, int P, int N, int K, int k,
                                                    bool reverse, int pr, int q) {
#pragma unroll
  for (int nt = 0; nt < NTN; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = pr + (i >> 1) * 8, col = nt * 8 + 2 * q + (i & 1);
      S[nt][i] = (init && row < P && col < N) ? init[(bh * P + row) * N + col] : 0.f;
    }
  if (!seg_in) return;
  const int n = reverse ? K - 1 - k : k;
  for (int m = 0; m < n; ++m) {
    const int j = reverse ? K - 1 - m : m;
    const float e = __expf(seg_decay[bh * K + j]);
    const float* src = seg_in + (bh * K + j) * PP * NP;
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = pr + (i >> 1) * 8, col = nt * 8 + 2 * q + (i & 1);
        S[nt][i] = S[nt][i] * e + src[row * NP + col];
      }
  }
}

// ============================================================================
// Fused forward: one block per (b, h), PP/16 warps, warp w owns rows
// p in [16w, 16w+16) of the state S (P x N, registers) and of Y^T (P x QT).
// ============================================================================
struct FwdParams {
  float* y;
  float* final_state;
  const float* x;
  const float* Bm;
  const float* Cm;
  const float* D;
  const float* init;
  const float* dt;         // (B, H, nch, QT)
  const float* lam;        // (B, H, nch, QT)
  const float* cb;         // (B, nch, G, QT, QT)
  const float* seg_in;     // (B, H, K, PP, NP) segment-local end states, or null when K == 1
  const float* seg_decay;  // (B, H, K)
  DevDims d;
  SegInfo seg;
  bool vec_x, vec_bc;
};

template <int PP, int NP>
struct FwdSmem {
  static constexpr int LDX = PP + 8, LDB = NP + 8, LDC = NP + 8, LDM = QT + 4;
  static constexpr int X = 0, Bo = X + QT * LDX, Co = Bo + QT * LDB, Mo = Co + QT * LDC, DT = Mo + QT * LDM,
                       LAM = DT + 2 * QT, TOTAL = LAM + 2 * QT;
  static constexpr size_t bytes = TOTAL * sizeof(float);
};

template <int PP, int NP, bool SPLIT>
__global__ void __launch_bounds__(PP * 2) ssd_fwd_kernel(FwdParams p) {
  using L = FwdSmem<PP, NP>;
  constexpr int NT = PP * 2, NTN = NP / 8, LDX = L::LDX, LDB = L::LDB, LDC = L::LDC, LDM = L::LDM;
  extern __shared__ __align__(16) float smem[];
  float* sX = smem + L::X;
  float* sB = smem + L::Bo;
  float* sC = smem + L::Co;
  float* sM = smem + L::Mo;
  float* sDt = smem + L::DT;
  float* sLam = smem + L::LAM;

  const DevDims& d = p.d;
  const int h = blockIdx.x, b = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int grp = h / (d.H / d.G);
  const int pr = warp * 16 + g;  // rows pr and pr + 8
  const i64 xrow = static_cast<i64>(d.H) * d.P, bcrow = static_cast<i64>(d.G) * d.N;
  const float* xb = p.x + static_cast<i64>(b) * d.T * xrow + static_cast<i64>(h) * d.P;
  float* yb = p.y + static_cast<i64>(b) * d.T * xrow + static_cast<i64>(h) * d.P;
  const float* Bb = p.Bm + static_cast<i64>(b) * d.T * bcrow + static_cast<i64>(grp) * d.N;
  const float* Cb = p.Cm + static_cast<i64>(b) * d.T * bcrow + static_cast<i64>(grp) * d.N;
  const float* dtb = p.dt + (static_cast<i64>(b) * d.H + h) * d.nch * QT;
  const float* lamb = p.lam + (static_cast<i64>(b) * d.H + h) * d.nch * QT;
  const float* cbb = p.cb + (static_cast<i64>(b) * d.nch * d.G + grp) * QT * QT;
  const float Dh = p.D[h];
  const int k_seg = blockIdx.z;
  const int c_begin = k_seg * p.seg.cps, c_end = min(d.nch, c_begin + p.seg.cps);

  float S[NTN][4];
  segment_start_state<PP, NP, NTN>(S, p.init, p.seg_in, p.seg_decay, static_cast<i64>(b) * d.H + h, d.P, d.N, p.seg.K,
                                   k_seg, false, pr, q);

  auto rows_of = [&](int c) { return min(d.Q, d.T - c * d.Q); };
  auto issue_C = [&](int c) {  // C tile and this chunk's dt, lam
    const int t0 = c * d.Q;
    load_tile<QT, NP, NT>(sC, LDC, Cb + t0 * bcrow, bcrow, rows_of(c), d.N, p.vec_bc);
    const int buf = c & 1;
    for (int i = threadIdx.x; i < 32; i += NT) {
      const int k = (i & 15) * 4;
      if (i < 16)
        cp_async16(sDt + buf * QT + k, dtb + static_cast<i64>(c) * QT + k, true);
      else
        cp_async16(sLam + buf * QT + k, lamb + static_cast<i64>(c) * QT + k, true);
    }
  };
  auto issue_CB = [&](int c) {
    load_tile<QT, QT, NT>(sM, LDM, cbb + static_cast<i64>(c) * d.G * QT * QT, QT, QT, QT, true);
  };
  auto issue_X = [&](int c) { load_tile<QT, PP, NT>(sX, LDX, xb + c * d.Q * xrow, xrow, rows_of(c), d.P, p.vec_x); };
  auto issue_B = [&](int c) { load_tile<QT, NP, NT>(sB, LDB, Bb + c * d.Q * bcrow, bcrow, rows_of(c), d.N, p.vec_bc); };

  // Groups in flight, in order: C(c), CB(c), X(c), B(c); each refilled as soon
  // as the previous chunk is done with the buffer.
  issue_C(c_begin);
  cp_async_commit();
  issue_CB(c_begin);
  cp_async_commit();
  issue_X(c_begin);
  cp_async_commit();
  issue_B(c_begin);
  cp_async_commit();

  for (int c = c_begin; c < c_end; ++c) {
    const int t0 = c * d.Q, Qc = rows_of(c), buf = c & 1;
    const float* dt = sDt + buf * QT;
    const float* lam = sLam + buf * QT;
    cp_async_wait<3>();
    __syncthreads();

    // ---- Y^T = (S @ C^T) * exp(lam_t)
    float Y[QT / 8][4];
#pragma unroll
    for (int j = 0; j < QT / 8; ++j) Y[j][0] = Y[j][1] = Y[j][2] = Y[j][3] = 0.f;
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt) {
      const FragA<SPLIT> a = make_a<SPLIT>(S[nt][0], S[nt][2], S[nt][1], S[nt][3]);
#pragma unroll
      for (int j = 0; j < QT / 8; ++j) {
        const float2 v = *reinterpret_cast<const float2*>(sC + (j * 8 + g) * LDC + nt * 8 + 2 * q);
        mma<SPLIT>(Y[j], a, make_b<SPLIT>(v.x, v.y));
      }
    }
#pragma unroll
    for (int j = 0; j < QT / 8; ++j) {
      const float e0 = __expf(lam[j * 8 + 2 * q]), e1 = __expf(lam[j * 8 + 2 * q + 1]);
      Y[j][0] *= e0;
      Y[j][1] *= e1;
      Y[j][2] *= e0;
      Y[j][3] *= e1;
    }
    __syncthreads();  // sC free
    if (c + 1 < c_end) issue_C(c + 1);
    cp_async_commit();
    cp_async_wait<2>();  // CB(c), X(c)
    __syncthreads();

    // ---- M'[t][s] = CB[t][s] exp(lam_t - lam_s) dt_s for s <= t, else 0, on the 36 8x8 tiles
    // (j, kb) with kb <= j (GEMM2 reads no other); half a tile per warp, no divergence.
    for (int i = threadIdx.x; i < 36 * 64; i += NT) {
      const int tile = i >> 6, e = i & 63;
      const int j = static_cast<int>((sqrtf(8.f * tile + 1.f) - 1.f) * 0.5f), kb = tile - j * (j + 1) / 2;
      const int t = j * 8 + (e >> 3), s = kb * 8 + (e & 7);
      float* m = sM + t * LDM + s;
      *m = s <= t ? *m * __expf(lam[t] - lam[s]) * dt[s] : 0.f;
    }
    __syncthreads();

    // ---- Y^T += X^T @ M'^T  (causal: s-block kb feeds t-blocks j >= kb)
#pragma unroll
    for (int kb = 0; kb < QT / 8; ++kb) {
      const float* xk = sX + (kb * 8 + q) * LDX + pr;
      const FragA<SPLIT> a = make_a<SPLIT>(xk[0], xk[8], xk[4 * LDX], xk[4 * LDX + 8]);
#pragma unroll
      for (int j = kb; j < QT / 8; ++j) {
        const float* mk = sM + (j * 8 + g) * LDM + kb * 8 + q;
        mma<SPLIT>(Y[j], a, make_b<SPLIT>(mk[0], mk[4]));
      }
    }
    // ---- + D x, store y
#pragma unroll
    for (int j = 0; j < QT / 8; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = pr + (i >> 1) * 8, t = j * 8 + 2 * q + (i & 1);
        if (t < Qc && row < d.P) yb[(t0 + t) * xrow + row] = Y[j][i] + Dh * sX[t * LDX + row];
      }
    __syncthreads();  // sM free
    if (c + 1 < c_end) issue_CB(c + 1);
    cp_async_commit();
    cp_async_wait<2>();  // B(c)
    __syncthreads();

    // ---- S = exp(lam_end) S + (X * dt * exp(lam_end - lam_s))^T @ B
    const float lam_end = lam[QT - 1];
    const float decay = __expf(lam_end);
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) S[nt][i] *= decay;
#pragma unroll
    for (int kb = 0; kb < QT / 8; ++kb) {
      const int s0 = kb * 8 + q;
      const float w0 = dt[s0] * __expf(lam_end - lam[s0]), w1 = dt[s0 + 4] * __expf(lam_end - lam[s0 + 4]);
      const float* xk = sX + s0 * LDX + pr;
      const FragA<SPLIT> a = make_a<SPLIT>(xk[0] * w0, xk[8] * w0, xk[4 * LDX] * w1, xk[4 * LDX + 8] * w1);
#pragma unroll
      for (int nt = 0; nt < NTN; ++nt) {
        const float* bk = sB + s0 * LDB + nt * 8 + g;
        mma<SPLIT>(S[nt], a, make_b<SPLIT>(bk[0], bk[4 * LDB]));
      }
    }
    __syncthreads();  // sX, sB free
    if (c + 1 < c_end) issue_X(c + 1);
    cp_async_commit();
    if (c + 1 < c_end) issue_B(c + 1);
    cp_async_commit();
  }
  cp_async_wait<0>();

  if (p.final_state && k_seg == p.seg.K - 1) {
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = pr + (i >> 1) * 8, col = nt * 8 + 2 * q + (i & 1);
        if (row < d.P && col < d.N) p.final_state[((static_cast<i64>(b) * d.H + h) * d.P + row) * d.N + col] = S[nt][i];
      }
  }
}

// ============================================================================
// State scan over chunks (backward helpers), one block per (b, h):
//   forward:  store S before chunk c, then S = e^{lam_end} S + sum_s dt_s e^{lam_end - lam_s} x_s B_s^T
//   reverse:  store dS after chunk c, then dS = e^{lam_end} dS + sum_t e^{lam_t} dy_t C_t^T
// states: (B, H, nch, PP, NP), padded entries zero.
// ============================================================================
struct ScanParams {
  float* states;         // (B, H, nch, PP, NP) or null (pre-pass)
  float* final_out;      // (B, H, P, N) or null; written by the segment that ends the scan
  float* seg_out;        // pre-pass: (B, H, K, PP, NP) each segment's end state from zero, else null
  float* seg_decay_out;  // pre-pass: (B, H, K) each segment's total log decay
  const float* seg_in;   // storing pass with K > 1: the pre-pass's seg_out / seg_decay_out
  const float* seg_decay;
  const float* X;     // (B, T, H, P): x or dy
  const float* V;     // (B, T, G, N): B or C
  const float* init;  // (B, H, P, N) or null
  const float* dt;
  const float* lam;
  DevDims d;
  SegInfo seg;
  bool reverse, vec_x, vec_bc;
};

template <int PP, int NP>
struct ScanSmem {
  static constexpr int LDX = PP + 8, LDV = NP + 8;
  static constexpr int STAGE = QT * LDX + QT * LDV + 2 * QT;
  static constexpr size_t bytes = 2 * STAGE * sizeof(float);
};

template <int PP, int NP, bool SPLIT>
__global__ void __launch_bounds__(PP * 2) ssd_state_scan_kernel(ScanParams p) {
  using L = ScanSmem<PP, NP>;
  constexpr int NT = PP * 2, NTN = NP / 8, LDX = L::LDX, LDV = L::LDV;
  extern __shared__ __align__(16) float smem[];
  const DevDims& d = p.d;
  const int h = blockIdx.x, b = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int grp = h / (d.H / d.G);
  const int pr = warp * 16 + g;
  const i64 xrow = static_cast<i64>(d.H) * d.P, bcrow = static_cast<i64>(d.G) * d.N;
  const float* Xb = p.X + static_cast<i64>(b) * d.T * xrow + static_cast<i64>(h) * d.P;
  const float* Vb = p.V + static_cast<i64>(b) * d.T * bcrow + static_cast<i64>(grp) * d.N;
  const i64 bh = static_cast<i64>(b) * d.H + h;
  const float* dtb = p.dt + bh * d.nch * QT;
  const float* lamb = p.lam + bh * d.nch * QT;

  const int k_seg = blockIdx.z;
  const int c_begin = k_seg * p.seg.cps, c_end = min(d.nch, c_begin + p.seg.cps), n_local = c_end - c_begin;
  const bool prepass = p.seg_out != nullptr;

  float S[NTN][4];
  segment_start_state<PP, NP, NTN>(S, prepass ? nullptr : p.init, prepass ? nullptr : p.seg_in, p.seg_decay, bh, d.P,
                                   d.N, p.seg.K, k_seg, p.reverse, pr, q);

  auto chunk_of = [&](int i) { return p.reverse ? c_end - 1 - i : c_begin + i; };
  auto issue = [&](int i) {
    const int c = chunk_of(i), t0 = c * d.Q, Qc = min(d.Q, d.T - t0);
    float* st = smem + (i & 1) * L::STAGE;
    load_tile<QT, PP, NT>(st, LDX, Xb + t0 * xrow, xrow, Qc, d.P, p.vec_x);
    load_tile<QT, NP, NT>(st + QT * LDX, LDV, Vb + t0 * bcrow, bcrow, Qc, d.N, p.vec_bc);
    float* sdt = st + QT * LDX + QT * LDV;
    for (int k = threadIdx.x; k < 32; k += NT) {
      const int o = (k & 15) * 4;
      if (k < 16)
        cp_async16(sdt + o, dtb + static_cast<i64>(c) * QT + o, true);
      else
        cp_async16(sdt + QT + o, lamb + static_cast<i64>(c) * QT + o, true);
    }
  };

  float decay_sum = 0.f;
  issue(0);
  cp_async_commit();
  for (int i = 0; i < n_local; ++i) {
    if (i + 1 < n_local) issue(i + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int c = chunk_of(i);
    const float* sX = smem + (i & 1) * L::STAGE;
    const float* sV = sX + QT * LDX;
    const float* dt = sV + QT * LDV;
    const float* lam = dt + QT;

    if (p.states) {
      float* out = p.states + (bh * d.nch + c) * PP * NP;
#pragma unroll
      for (int nt = 0; nt < NTN; ++nt) {
        const int col = nt * 8 + 2 * q;
        *reinterpret_cast<float2*>(out + pr * NP + col) = make_float2(S[nt][0], S[nt][1]);
        *reinterpret_cast<float2*>(out + (pr + 8) * NP + col) = make_float2(S[nt][2], S[nt][3]);
      }
    }

    const float lam_end = lam[QT - 1];
    decay_sum += lam_end;
    const float decay = __expf(lam_end);
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt)
#pragma unroll
      for (int k = 0; k < 4; ++k) S[nt][k] *= decay;
#pragma unroll
    for (int kb = 0; kb < QT / 8; ++kb) {
      const int s0 = kb * 8 + q;
      float w0, w1;
      if (p.reverse) {
        w0 = __expf(lam[s0]);
        w1 = __expf(lam[s0 + 4]);
      } else {
        w0 = dt[s0] * __expf(lam_end - lam[s0]);
        w1 = dt[s0 + 4] * __expf(lam_end - lam[s0 + 4]);
      }
      const float* xk = sX + s0 * LDX + pr;
      const FragA<SPLIT> a = make_a<SPLIT>(xk[0] * w0, xk[8] * w0, xk[4 * LDX] * w1, xk[4 * LDX + 8] * w1);
#pragma unroll
      for (int nt = 0; nt < NTN; ++nt) {
        const float* vk = sV + s0 * LDV + nt * 8 + g;
        mma<SPLIT>(S[nt], a, make_b<SPLIT>(vk[0], vk[4 * LDV]));
      }
    }
    __syncthreads();  // this stage is refilled next iteration
  }
  cp_async_wait<0>();

  if (prepass) {
    float* out = p.seg_out + (bh * p.seg.K + k_seg) * PP * NP;
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt) {
      const int col = nt * 8 + 2 * q;
      *reinterpret_cast<float2*>(out + pr * NP + col) = make_float2(S[nt][0], S[nt][1]);
      *reinterpret_cast<float2*>(out + (pr + 8) * NP + col) = make_float2(S[nt][2], S[nt][3]);
    }
    if (threadIdx.x == 0) p.seg_decay_out[bh * p.seg.K + k_seg] = decay_sum;
  } else if (p.final_out && k_seg == (p.reverse ? 0 : p.seg.K - 1)) {
#pragma unroll
    for (int nt = 0; nt < NTN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = pr + (i >> 1) * 8, col = nt * 8 + 2 * q + (i & 1);
        if (row < d.P && col < d.N) p.final_out[(bh * d.P + row) * d.N + col] = S[nt][i];
      }
  }
}

// ============================================================================
// Backward of one chunk: one block (8 warps) per (b, chunk, group), looping over
// the group's heads. Per head (L = lam, Le = lam_end, dS = dS_out, S = S_in):
//   dCB_h[t,s] = (dy_t . x_s) dt_s e^{L_t - L_s}   (s <= t), summed over heads
//   ddtx[s]   = sum_{t>=s} CB[t,s] e^{L_t-L_s} dy_t + e^{Le-L_s} dS B_s
//   dC_inter  = e^{L_t} dy_t S,   dB_state = e^{Le-L_s} dt_s x_s dS  (summed over heads)
//   dL        = row sums - column sums of dCB_h * CB, + C . dC_inter, - B . dB_state,
//               and at the last slot sum(B . dB_state) + e^{Le} <dS, S>
//   ddt_s     = x_s . ddtx_s + A sum_{t>=s} dL_t;  dx = dt ddtx + D dy
// Finally dC = dCB @ B + sum dC_inter,  dB = dCB^T @ C + sum dB_state.
// ============================================================================
struct BwdParams {
  float* dx;
  float* ddt_raw;
  float* dA_log;
  float* dBm;
  float* dCm;
  float* dD;
  float* ddt_bias;
  const float* dy;
  const float* x;
  const float* A_log;
  const float* Bm;
  const float* Cm;
  const float* D;
  const float* dt;
  const float* lam;
  const float* states;   // S_in   (B, H, nch, PP, NP)
  const float* dstates;  // dS_out (B, H, nch, PP, NP)
  DevDims d;
  bool vec_x, vec_bc;
  int split_mask;  // 3xTF32 for: 1 CB and dM, 2 ddtx, 4 dC_inter and dB_state, 8 the final dB / dC
};

template <int PP, int NP>
struct BwdSmem {
  static constexpr int LDX = PP + 8, LDB = NP + 8, LDCB = QT + 8, LDS = NP + 4, LDDS = NP + 8;
  static constexpr int Bo = 0, Co = Bo + QT * LDB, CBo = Co + QT * LDB, Xo = CBo + QT * LDCB, DYo = Xo + QT * LDX,
                       So = DYo + QT * LDX, DSo = So + PP * LDS, DTo = DSo + PP * LDDS, LAMo = DTo + QT,
                       DLo = LAMo + QT, DDTo = DLo + QT, TOTAL = DDTo + QT;
  static constexpr size_t bytes = TOTAL * sizeof(float);
};

template <int PP, int NP, int WN, bool SPLIT>
__global__ void __launch_bounds__(128 * WN, (PP <= 32 && NP <= 32) ? 2 : 1) ssd_bwd_chunk_kernel(BwdParams p) {
  using L = BwdSmem<PP, NP>;
  // 4 x WN warps: warp (mt, cg) owns rows [16 mt, 16 mt + 16) of every (QT x .) tile and
  // column group cg of it.
  constexpr int NT = 128 * WN, NPH = NP / (8 * WN), PPH = PP / (8 * WN), NJ = 8 / WN;
  constexpr int LDX = L::LDX, LDB = L::LDB, LDCB = L::LDCB, LDS = L::LDS, LDDS = L::LDDS;
  extern __shared__ __align__(16) float smem[];
  float* sB = smem + L::Bo;
  float* sC = smem + L::Co;
  float* sCB = smem + L::CBo;
  float* sX = smem + L::Xo;
  float* sDy = smem + L::DYo;
  float* sS = smem + L::So;
  float* sdS = smem + L::DSo;
  float* sDt = smem + L::DTo;
  float* sLam = smem + L::LAMo;
  float* sDL = smem + L::DLo;
  float* sDdt = smem + L::DDTo;

  const DevDims& d = p.d;
  const int c = blockIdx.x, grp = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int mt = warp & 3, half = warp >> 2;  // half: the column group
  const int r0 = mt * 16 + g;                 // rows r0 and r0 + 8 of every (QT x .) tile
  const int t0 = c * d.Q, Qc = min(d.Q, d.T - t0);
  const int hpg = d.H / d.G;
  const i64 xrow = static_cast<i64>(d.H) * d.P, bcrow = static_cast<i64>(d.G) * d.N;
  const i64 bc_off = (static_cast<i64>(b) * d.T + t0) * bcrow + static_cast<i64>(grp) * d.N;

  load_tile<QT, NP, NT>(sB, LDB, p.Bm + bc_off, bcrow, Qc, d.N, p.vec_bc);
  load_tile<QT, NP, NT>(sC, LDB, p.Cm + bc_off, bcrow, Qc, d.N, p.vec_bc);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // ---- CB[t][s] = sum_n C[t][n] B[s][n]; warp tiles: rows r0, column tiles half + WN k
  {
    float acc[NJ][4] = {};
    {
      auto gemm = [&](auto tag) {
        constexpr bool SP = decltype(tag)::value;
#pragma unroll
        for (int kb = 0; kb < NP / 8; ++kb) {
          const float2 u0 = *reinterpret_cast<const float2*>(sC + r0 * LDB + kb * 8 + 2 * q);
          const float2 u1 = *reinterpret_cast<const float2*>(sC + (r0 + 8) * LDB + kb * 8 + 2 * q);
          const FragA<SP> a = make_a<SP>(u0.x, u1.x, u0.y, u1.y);
#pragma unroll
          for (int k = 0; k < NJ; ++k) {
            const int j = half + WN * k;
            if (8 * j > mt * 16 + 15) continue;
            const float2 v = *reinterpret_cast<const float2*>(sB + (8 * j + g) * LDB + kb * 8 + 2 * q);
            mma<SP>(acc[k], a, make_b<SP>(v.x, v.y));
          }
        }
      };
      if (SPLIT || (p.split_mask & 1))
        gemm(std::true_type{});
      else
        gemm(std::false_type{});
    }
#pragma unroll
    for (int k = 0; k < NJ; ++k)
#pragma unroll
      for (int i = 0; i < 4; ++i) sCB[(r0 + (i >> 1) * 8) * LDCB + 8 * (half + WN * k) + 2 * q + (i & 1)] = acc[k][i];
  }

  float dCB[NJ][4] = {};     // sum over heads of dCB_h, same tiles as CB
  float dCacc[NPH][4] = {};  // rows r0, column tiles half * NPH + k
  float dBacc[NPH][4] = {};

  auto issue_S = [&](int h) {
    load_tile<PP, NP, NT>(sS, LDS, p.states + ((static_cast<i64>(b) * d.H + h) * d.nch + c) * PP * NP, NP, PP, NP,
                          true);
  };
  auto issue_dS = [&](int h) {
    load_tile<PP, NP, NT>(sdS, LDDS, p.dstates + ((static_cast<i64>(b) * d.H + h) * d.nch + c) * PP * NP, NP, PP, NP,
                          true);
  };
  auto issue_xdy = [&](int h) {
    const i64 x_off = (static_cast<i64>(b) * d.T + t0) * xrow + static_cast<i64>(h) * d.P;
    load_tile<QT, PP, NT>(sX, LDX, p.x + x_off, xrow, Qc, d.P, p.vec_x);
    load_tile<QT, PP, NT>(sDy, LDX, p.dy + x_off, xrow, Qc, d.P, p.vec_x);
  };
  auto issue_dtlam = [&](int h) {
    if (tid < 32) {
      const int o = (tid & 15) * 4;
      const i64 off = ((static_cast<i64>(b) * d.H + h) * d.nch + c) * QT + o;
      if (tid < 16)
        cp_async16(sDt + o, p.dt + off, true);
      else
        cp_async16(sLam + o, p.lam + off, true);
    }
  };

  // Each buffer is refilled with the next head's data as soon as this head is
  // done with it: S after dC_inter, dS after dB_state / ddtx, x and dy after
  // dx, dt and lam after the dt gradients.
  issue_S(grp * hpg);
  issue_dS(grp * hpg);
  issue_xdy(grp * hpg);
  issue_dtlam(grp * hpg);
  cp_async_commit();

  for (int hh = 0; hh < hpg; ++hh) {
    const int h = grp * hpg + hh;
    const bool more = hh + 1 < hpg;
    if (tid < QT) {
      sDL[tid] = 0.f;
      sDdt[tid] = 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();

    const float A = -expf(p.A_log[h]), Dh = p.D[h];
    const float lam_end = sLam[QT - 1];

    // ---- dLe += e^{Le} <dS, S>
    {
      float v = 0.f;
      for (int i = tid; i < PP * NP; i += NT) {
        const int r = i / NP, col = i % NP;
        v += sS[r * LDS + col] * sdS[r * LDDS + col];
      }
      v = warp_sum(v);
      if (lane == 0) atomicAdd(&sDL[QT - 1], __expf(lam_end) * v);
    }

    // ---- dC_inter[t][n] = e^{L_t} sum_p dy[t][p] S[p][n]
    {
      float acc[NPH][4] = {};
      {
        auto gemm = [&](auto tag) {
          constexpr bool SP = decltype(tag)::value;
#pragma unroll
          for (int kb = 0; kb < PP / 8; ++kb) {
            const float2 u0 = *reinterpret_cast<const float2*>(sDy + r0 * LDX + kb * 8 + 2 * q);
            const float2 u1 = *reinterpret_cast<const float2*>(sDy + (r0 + 8) * LDX + kb * 8 + 2 * q);
            const FragA<SP> a = make_a<SP>(u0.x, u1.x, u0.y, u1.y);
#pragma unroll
            for (int k = 0; k < NPH; ++k) {
              const float* sk = sS + (kb * 8 + 2 * q) * LDS + (half * NPH + k) * 8 + g;
              mma<SP>(acc[k], a, make_b<SP>(sk[0], sk[LDS]));
            }
          }
        };
        if (SPLIT || (p.split_mask & 4))
          gemm(std::true_type{});
        else
          gemm(std::false_type{});
      }
      const float e0 = __expf(sLam[r0]), e1 = __expf(sLam[r0 + 8]);
      float d0 = 0.f, d1 = 0.f;
#pragma unroll
      for (int k = 0; k < NPH; ++k) {
        const int col = (half * NPH + k) * 8 + 2 * q;
        acc[k][0] *= e0;
        acc[k][1] *= e0;
        acc[k][2] *= e1;
        acc[k][3] *= e1;
        d0 += acc[k][0] * sC[r0 * LDB + col] + acc[k][1] * sC[r0 * LDB + col + 1];
        d1 += acc[k][2] * sC[(r0 + 8) * LDB + col] + acc[k][3] * sC[(r0 + 8) * LDB + col + 1];
#pragma unroll
        for (int i = 0; i < 4; ++i) dCacc[k][i] += acc[k][i];
      }
      d0 = quad_sum(d0);
      d1 = quad_sum(d1);
      if (q == 0) {
        atomicAdd(&sDL[r0], d0);
        atomicAdd(&sDL[r0 + 8], d1);
      }
    }

    __syncthreads();  // sS free
    if (more) issue_S(h + 1);
    cp_async_commit();

    // ---- dB_state[s][n] = e^{Le - L_s} dt_s sum_p x[s][p] dS[p][n]
    {
      float acc[NPH][4] = {};
      {
        auto gemm = [&](auto tag) {
          constexpr bool SP = decltype(tag)::value;
#pragma unroll
          for (int kb = 0; kb < PP / 8; ++kb) {
            const float2 u0 = *reinterpret_cast<const float2*>(sX + r0 * LDX + kb * 8 + 2 * q);
            const float2 u1 = *reinterpret_cast<const float2*>(sX + (r0 + 8) * LDX + kb * 8 + 2 * q);
            const FragA<SP> a = make_a<SP>(u0.x, u1.x, u0.y, u1.y);
#pragma unroll
            for (int k = 0; k < NPH; ++k) {
              const float* dk = sdS + (kb * 8 + 2 * q) * LDDS + (half * NPH + k) * 8 + g;
              mma<SP>(acc[k], a, make_b<SP>(dk[0], dk[LDDS]));
            }
          }
        };
        if (SPLIT || (p.split_mask & 4))
          gemm(std::true_type{});
        else
          gemm(std::false_type{});
      }
      const float w0 = sDt[r0] * __expf(lam_end - sLam[r0]), w1 = sDt[r0 + 8] * __expf(lam_end - sLam[r0 + 8]);
      float d0 = 0.f, d1 = 0.f;
#pragma unroll
      for (int k = 0; k < NPH; ++k) {
        const int col = (half * NPH + k) * 8 + 2 * q;
        acc[k][0] *= w0;
        acc[k][1] *= w0;
        acc[k][2] *= w1;
        acc[k][3] *= w1;
        d0 += acc[k][0] * sB[r0 * LDB + col] + acc[k][1] * sB[r0 * LDB + col + 1];
        d1 += acc[k][2] * sB[(r0 + 8) * LDB + col] + acc[k][3] * sB[(r0 + 8) * LDB + col + 1];
#pragma unroll
        for (int i = 0; i < 4; ++i) dBacc[k][i] += acc[k][i];
      }
      d0 = quad_sum(d0);
      d1 = quad_sum(d1);
      if (q == 0) {
        atomicAdd(&sDL[r0], -d0);
        atomicAdd(&sDL[r0 + 8], -d1);
      }
      const float tot = warp_sum(q == 0 ? d0 + d1 : 0.f);
      if (lane == 0) atomicAdd(&sDL[QT - 1], tot);
    }

    // ---- ddtx[s][p] = e^{Le - L_s} sum_n B[s][n] dS[p][n] + sum_{t>=s} CB[t][s] e^{L_t - L_s} dy[t][p]
    float acc4[PPH][4] = {};
    {
      {
        auto gemm = [&](auto tag) {
          constexpr bool SP = decltype(tag)::value;
#pragma unroll
          for (int kb = 0; kb < NP / 8; ++kb) {
            const float2 u0 = *reinterpret_cast<const float2*>(sB + r0 * LDB + kb * 8 + 2 * q);
            const float2 u1 = *reinterpret_cast<const float2*>(sB + (r0 + 8) * LDB + kb * 8 + 2 * q);
            const FragA<SP> a = make_a<SP>(u0.x, u1.x, u0.y, u1.y);
#pragma unroll
            for (int k = 0; k < PPH; ++k) {
              const float2 v =
                  *reinterpret_cast<const float2*>(sdS + ((half * PPH + k) * 8 + g) * LDDS + kb * 8 + 2 * q);
              mma<SP>(acc4[k], a, make_b<SP>(v.x, v.y));
            }
          }
        };
        if (SPLIT || (p.split_mask & 2))
          gemm(std::true_type{});
        else
          gemm(std::false_type{});
      }
      const float ls0 = sLam[r0], ls1 = sLam[r0 + 8];
      const float w0 = __expf(lam_end - ls0), w1 = __expf(lam_end - ls1);
#pragma unroll
      for (int k = 0; k < PPH; ++k) {
        acc4[k][0] *= w0;
        acc4[k][1] *= w0;
        acc4[k][2] *= w1;
        acc4[k][3] *= w1;
      }
    }
    __syncthreads();  // sdS free
    if (more) issue_dS(h + 1);
    cp_async_commit();

    // ---- dM[t][s] = dy_t . x_s -> dCB_h, and the intra-chunk dL terms
    {
      float acc[NJ][4] = {};
      {
        auto gemm = [&](auto tag) {
          constexpr bool SP = decltype(tag)::value;
#pragma unroll
          for (int kb = 0; kb < PP / 8; ++kb) {
            const float2 u0 = *reinterpret_cast<const float2*>(sDy + r0 * LDX + kb * 8 + 2 * q);
            const float2 u1 = *reinterpret_cast<const float2*>(sDy + (r0 + 8) * LDX + kb * 8 + 2 * q);
            const FragA<SP> a = make_a<SP>(u0.x, u1.x, u0.y, u1.y);
#pragma unroll
            for (int k = 0; k < NJ; ++k) {
              const int j = half + WN * k;
              if (8 * j > mt * 16 + 15) continue;
              const float2 v = *reinterpret_cast<const float2*>(sX + (8 * j + g) * LDX + kb * 8 + 2 * q);
              mma<SP>(acc[k], a, make_b<SP>(v.x, v.y));
            }
          }
        };
        if (SPLIT || (p.split_mask & 1))
          gemm(std::true_type{});
        else
          gemm(std::false_type{});
      }
      const float l0 = sLam[r0], l1 = sLam[r0 + 8];
      float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
      for (int k = 0; k < NJ; ++k) {
        const int j = half + WN * k;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int s = 8 * j + 2 * q + e;
          const float ls = sLam[s], dts = sDt[s];
          const float v0 = s <= r0 ? acc[k][e] * dts * __expf(l0 - ls) : 0.f;
          const float v1 = s <= r0 + 8 ? acc[k][2 + e] * dts * __expf(l1 - ls) : 0.f;
          dCB[k][e] += v0;
          dCB[k][2 + e] += v1;
          const float G0 = v0 * sCB[r0 * LDCB + s], G1 = v1 * sCB[(r0 + 8) * LDCB + s];
          rs0 += G0;
          rs1 += G1;
          const float cs = column_sum(G0 + G1);
          if (g == 0) atomicAdd(&sDL[s], -cs);
        }
      }
      rs0 = quad_sum(rs0);
      rs1 = quad_sum(rs1);
      if (q == 0) {
        atomicAdd(&sDL[r0], rs0);
        atomicAdd(&sDL[r0 + 8], rs1);
      }
    }

    // ---- ddtx += sum_{t>=s} CB[t][s] e^{L_t - L_s} dy[t][p]; then dx, ddt_direct, dD
    {
      const float ls0 = sLam[r0], ls1 = sLam[r0 + 8];
      {
        auto gemm = [&](auto tag) {
          constexpr bool SP = decltype(tag)::value;
          for (int kb = 2 * mt; kb < QT / 8; ++kb) {
            const int ta = kb * 8 + q, tb = ta + 4;
            const float la = sLam[ta], lb = sLam[tb];
            const float m00 = r0 <= ta ? sCB[ta * LDCB + r0] * __expf(la - ls0) : 0.f;
            const float m10 = r0 + 8 <= ta ? sCB[ta * LDCB + r0 + 8] * __expf(la - ls1) : 0.f;
            const float m01 = r0 <= tb ? sCB[tb * LDCB + r0] * __expf(lb - ls0) : 0.f;
            const float m11 = r0 + 8 <= tb ? sCB[tb * LDCB + r0 + 8] * __expf(lb - ls1) : 0.f;
            const FragA<SP> a = make_a<SP>(m00, m10, m01, m11);
#pragma unroll
            for (int k = 0; k < PPH; ++k) {
              const float* dk = sDy + ta * LDX + (half * PPH + k) * 8 + g;
              mma<SP>(acc4[k], a, make_b<SP>(dk[0], dk[4 * LDX]));
            }
          }
        };
        if (SPLIT || (p.split_mask & 2))
          gemm(std::true_type{});
        else
          gemm(std::false_type{});
      }
      // dx = dt ddtx + D dy; ddt_direct = x . ddtx; dD += dy . x
      float* dxb = p.dx + static_cast<i64>(b) * d.T * xrow + static_cast<i64>(h) * d.P;
      const float dt0 = sDt[r0], dt1 = sDt[r0 + 8];
      float dd0 = 0.f, dd1 = 0.f, dsum = 0.f;
#pragma unroll
      for (int k = 0; k < PPH; ++k)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = (half * PPH + k) * 8 + 2 * q + e;
          const float x0 = sX[r0 * LDX + col], x1 = sX[(r0 + 8) * LDX + col];
          const float y0 = sDy[r0 * LDX + col], y1 = sDy[(r0 + 8) * LDX + col];
          dd0 += x0 * acc4[k][e];
          dd1 += x1 * acc4[k][2 + e];
          dsum += x0 * y0 + x1 * y1;
          if (col < d.P) {
            if (r0 < Qc) dxb[(t0 + r0) * xrow + col] = dt0 * acc4[k][e] + Dh * y0;
            if (r0 + 8 < Qc) dxb[(t0 + r0 + 8) * xrow + col] = dt1 * acc4[k][2 + e] + Dh * y1;
          }
        }
      dd0 = quad_sum(dd0);
      dd1 = quad_sum(dd1);
      if (q == 0) {
        atomicAdd(&sDdt[r0], dd0);
        atomicAdd(&sDdt[r0 + 8], dd1);
      }
      dsum = warp_sum(dsum);
      if (lane == 0) atomicAdd(&p.dD[h], dsum);
    }
    __syncthreads();  // sX, sDy free
    if (more) issue_xdy(h + 1);
    cp_async_commit();

    // ---- ddt_s = ddt_direct_s + A R_s (R = suffix sums of dL); dA_log, ddt_bias
    if (warp == 0) {
      float lo = sDL[lane], hi = sDL[lane + 32];
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float a = __shfl_down_sync(0xffffffffu, lo, o);
        const float bb = __shfl_down_sync(0xffffffffu, hi, o);
        if (lane + o < 32) {
          lo += a;
          hi += bb;
        }
      }
      lo += __shfl_sync(0xffffffffu, hi, 0);
      float dA = 0.f, dbias = 0.f;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int s = lane + 32 * e;
        const float R = e ? hi : lo, dts = sDt[s];
        dA += dts * R;
        const float v = (sDdt[s] + A * R) * -expm1f(-dts);  // sigmoid(z) = 1 - e^{-softplus(z)}
        if (s < Qc) {
          p.ddt_raw[(static_cast<i64>(b) * d.T + t0 + s) * d.H + h] = v;
          dbias += v;
        }
      }
      dA = warp_sum(dA);
      dbias = warp_sum(dbias);
      if (lane == 0) {
        atomicAdd(&p.dA_log[h], dA * A);
        atomicAdd(&p.ddt_bias[h], dbias);
      }
    }
    __syncthreads();  // sDt, sLam, sDL, sDdt free
    if (more) issue_dtlam(h + 1);
    cp_async_commit();
  }

  // ---- dC = dCacc + dCB @ B;  dB = dBacc + dCB^T @ C
#pragma unroll
  for (int k = 0; k < NJ; ++k)
#pragma unroll
    for (int i = 0; i < 4; ++i) sCB[(r0 + (i >> 1) * 8) * LDCB + 8 * (half + WN * k) + 2 * q + (i & 1)] = dCB[k][i];
  __syncthreads();
  {
    auto gemm = [&](auto tag) {
      constexpr bool SP = decltype(tag)::value;
      for (int kb = 0; kb <= 2 * mt + 1; ++kb) {
        const float* ak = sCB + r0 * LDCB + kb * 8 + q;
        const FragA<SP> a = make_a<SP>(ak[0], ak[8 * LDCB], ak[4], ak[8 * LDCB + 4]);
#pragma unroll
        for (int k = 0; k < NPH; ++k) {
          const float* bk = sB + (kb * 8 + q) * LDB + (half * NPH + k) * 8 + g;
          mma<SP>(dCacc[k], a, make_b<SP>(bk[0], bk[4 * LDB]));
        }
      }
    };
    if (SPLIT || (p.split_mask & 8))
      gemm(std::true_type{});
    else
      gemm(std::false_type{});
  }
  {
    auto gemm = [&](auto tag) {
      constexpr bool SP = decltype(tag)::value;
      for (int kb = 2 * mt; kb < QT / 8; ++kb) {
        const float* ak = sCB + (kb * 8 + q) * LDCB + r0;
        const FragA<SP> a = make_a<SP>(ak[0], ak[8], ak[4 * LDCB], ak[4 * LDCB + 8]);
#pragma unroll
        for (int k = 0; k < NPH; ++k) {
          const float* ck = sC + (kb * 8 + q) * LDB + (half * NPH + k) * 8 + g;
          mma<SP>(dBacc[k], a, make_b<SP>(ck[0], ck[4 * LDB]));
        }
      }
    };
    if (SPLIT || (p.split_mask & 8))
      gemm(std::true_type{});
    else
      gemm(std::false_type{});
  }
#pragma unroll
  for (int k = 0; k < NPH; ++k)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = r0 + (i >> 1) * 8, n = (half * NPH + k) * 8 + 2 * q + (i & 1);
      if (t < Qc && n < d.N) {
        const i64 o = bc_off + t * bcrow + n;
        p.dCm[o] = dCacc[k][i];
        p.dBm[o] = dBacc[k][i];
      }
    }
}

// ============================================================================
// host side
// ============================================================================
void check_launch(const char* what) { cuda_check_launch("ssd cuda", what); }

template <typename K>
void set_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
               "ssd cuda: cannot raise shared memory to " + std::to_string(bytes) + " bytes");
  }
}

size_t align256(size_t n) { return (n + 255) / 256 * 256; }
int pad_p(int P) { return P <= 32 ? 32 : 64; }
int pad_n(int N) { return N <= 32 ? 32 : N <= 64 ? 64 : 128; }
bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

int sm_count() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return 132;
  }
  return n;
}

// Most segments any launch may use (sizes the workspace): enough for 8 blocks
// per SM, at most 32, and segments of at least 4 chunks.
int max_segments(const DevDims& dd) {
  const long long bh = static_cast<long long>(dd.B) * dd.H;
  long long k = 8LL * sm_count() / bh;
  k = std::min<long long>(k, 32);
  k = std::min<long long>(k, dd.nch / 4);
  return static_cast<int>(std::max<long long>(k, 1));
}

// Segments for a sequential kernel: as many as fill the resident blocks of the
// GPU (one wave), within max_segments.
template <typename Kern>
SegInfo choose_segments(Kern kernel, int threads, size_t smem, const DevDims& dd) {
  int per_sm = 1;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) != cudaSuccess) {
    cudaGetLastError();
    per_sm = 1;
  }
  const long long bh = static_cast<long long>(dd.B) * dd.H;
  long long k = static_cast<long long>(std::max(per_sm, 1)) * sm_count() / bh;
  k = std::max<long long>(1, std::min<long long>(k, max_segments(dd)));
  SegInfo s;
  s.cps = static_cast<int>((dd.nch + k - 1) / k);
  s.K = (dd.nch + s.cps - 1) / s.cps;  // every segment non-empty
  return s;
}

// Workspace carving, shared by the size functions and the launches.
struct FwdWs {
  float *dt, *lam, *cb, *seg, *seg_decay;
  size_t bytes;
};
struct BwdWs {
  float *dt, *lam, *states, *dstates, *seg, *seg_decay;
  size_t bytes;
};

FwdWs carve_fwd(const DevDims& dd, int P, int N, void* base) {
  char* p = static_cast<char*>(base);
  size_t off = 0;
  auto take = [&](size_t n_floats) {
    float* r = reinterpret_cast<float*>(p + off);
    off += align256(n_floats * sizeof(float));
    return r;
  };
  const size_t per_head = static_cast<size_t>(dd.B) * dd.H * dd.nch * QT;
  const int K = max_segments(dd);
  FwdWs w;
  w.dt = take(per_head);
  w.lam = take(per_head);
  w.cb = take(static_cast<size_t>(dd.B) * dd.nch * dd.G * QT * QT);
  w.seg = take(static_cast<size_t>(dd.B) * dd.H * K * pad_p(P) * pad_n(N));
  w.seg_decay = take(static_cast<size_t>(dd.B) * dd.H * K);
  w.bytes = off;
  return w;
}

BwdWs carve_bwd(const DevDims& dd, int P, int N, void* base) {
  char* p = static_cast<char*>(base);
  size_t off = 0;
  auto take = [&](size_t n_floats) {
    float* r = reinterpret_cast<float*>(p + off);
    off += align256(n_floats * sizeof(float));
    return r;
  };
  const size_t per_head = static_cast<size_t>(dd.B) * dd.H * dd.nch * QT;
  const size_t st = static_cast<size_t>(dd.B) * dd.H * dd.nch * pad_p(P) * pad_n(N);
  const int K = max_segments(dd);
  BwdWs w;
  w.dt = take(per_head);
  w.lam = take(per_head);
  w.states = take(st);
  w.dstates = take(st);
  w.seg = take(static_cast<size_t>(dd.B) * dd.H * K * pad_p(P) * pad_n(N));
  w.seg_decay = take(static_cast<size_t>(dd.B) * dd.H * K);
  w.bytes = off;
  return w;
}

void launch_prep(float* dt_ws, float* lam_ws, const float* dt_raw, const float* A_log, const float* dt_bias,
                 const DevDims& dd, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(QT) * dd.H * sizeof(float);
  set_smem(ssd_prep_kernel, smem);
  ssd_prep_kernel<<<dim3(dd.nch, dd.B), 256, smem, stream>>>(dt_ws, lam_ws, dt_raw, A_log, dt_bias, dd);
  check_launch("ssd_prep_kernel");
}

// One state scan (forward over x, B or reverse over dy, C): with K > 1 segments,
// a pre-pass of segment-local states first.
template <int PP, int NP, bool SPLIT>
void launch_scan(ScanParams p, const DevDims& dd, float* seg, float* seg_decay, cudaStream_t stream) {
  const size_t smem = ScanSmem<PP, NP>::bytes;
  set_smem(ssd_state_scan_kernel<PP, NP, SPLIT>, smem);
  p.seg = choose_segments(ssd_state_scan_kernel<PP, NP, SPLIT>, PP * 2, smem, dd);
  const dim3 grid(dd.H, dd.B, p.seg.K);
  if (p.seg.K > 1) {
    ScanParams pre = p;
    pre.states = nullptr;
    pre.final_out = nullptr;
    pre.seg_out = seg;
    pre.seg_decay_out = seg_decay;
    pre.seg_in = nullptr;
    pre.seg_decay = nullptr;
    ssd_state_scan_kernel<PP, NP, SPLIT><<<grid, PP * 2, smem, stream>>>(pre);
    check_launch("ssd_state_scan_kernel (segment pre-pass)");
    p.seg_in = seg;
    p.seg_decay = seg_decay;
  }
  ssd_state_scan_kernel<PP, NP, SPLIT><<<grid, PP * 2, smem, stream>>>(p);
  check_launch("ssd_state_scan_kernel");
}

template <int PP, int NP, bool SPLIT>
void fwd_tiles(const SsdFwdArgs& a, const DevDims& dd, const FwdWs& w, bool vec_x, bool vec_bc, cudaStream_t stream) {
  const size_t cb_smem = 2 * QT * (NP + 8) * sizeof(float);
  set_smem(ssd_cb_kernel<NP, SPLIT>, cb_smem);
  ssd_cb_kernel<NP, SPLIT><<<dim3(dd.nch, dd.G, dd.B), 128, cb_smem, stream>>>(w.cb, a.Bm, a.Cm, dd, vec_bc);
  check_launch("ssd_cb_kernel");

  const size_t smem = FwdSmem<PP, NP>::bytes;
  set_smem(ssd_fwd_kernel<PP, NP, SPLIT>, smem);
  FwdParams p{a.y, a.final_state,      a.x,   a.Bm,  a.Cm, a.D, a.initial_state, w.dt, w.lam, w.cb, nullptr, nullptr,
              dd,  SegInfo{1, dd.nch}, vec_x, vec_bc};
  p.seg = choose_segments(ssd_fwd_kernel<PP, NP, SPLIT>, PP * 2, smem, dd);
  if (p.seg.K > 1) {
    ScanParams pre{nullptr, nullptr, w.seg, w.seg_decay, nullptr, nullptr, a.x,   a.Bm,
                   nullptr, w.dt,    w.lam, dd,          p.seg,   false,   vec_x, vec_bc};
    const size_t scan_smem = ScanSmem<PP, NP>::bytes;
    set_smem(ssd_state_scan_kernel<PP, NP, SPLIT>, scan_smem);
    ssd_state_scan_kernel<PP, NP, SPLIT><<<dim3(dd.H, dd.B, p.seg.K), PP * 2, scan_smem, stream>>>(pre);
    check_launch("ssd_state_scan_kernel (forward segment pre-pass)");
    p.seg_in = w.seg;
    p.seg_decay = w.seg_decay;
  }
  ssd_fwd_kernel<PP, NP, SPLIT><<<dim3(dd.H, dd.B, p.seg.K), PP * 2, smem, stream>>>(p);
  check_launch("ssd_fwd_kernel");
}

template <int PP, int NP, bool SPLIT>
void bwd_tiles(const SsdBwdArgs& a, const DevDims& dd, const BwdWs& w, bool vec_x, bool vec_bc, cudaStream_t stream) {
  ScanParams fwd{
      w.states,           nullptr, nullptr, nullptr, nullptr, nullptr, a.in.x, a.in.Bm, a.in.initial_state, w.dt, w.lam, dd,
      SegInfo{1, dd.nch}, false,   vec_x,   vec_bc};
  launch_scan<PP, NP, SPLIT>(fwd, dd, w.seg, w.seg_decay, stream);
  ScanParams rev{
      w.dstates, a.dinitial_state,   nullptr, nullptr, nullptr, nullptr, a.dy, a.in.Cm, a.dfinal_state, w.dt, w.lam,
      dd,        SegInfo{1, dd.nch}, true,    vec_x,   vec_bc};
  launch_scan<PP, NP, SPLIT>(rev, dd, w.seg, w.seg_decay, stream);

  BwdParams p{a.dx, a.ddt_raw, a.dA_log, a.dBm, a.dCm,    a.dD,      a.ddt_bias, a.dy,  a.in.x,    a.in.A_log,     a.in.Bm,
              a.in.Cm, a.in.D,       w.dt,     w.lam, w.states, w.dstates, dd,         vec_x, vec_bc, a.split_mask};
  // 8 warps (16 were tried for the wide tiles: no faster, v4 in docs/KERNELS.md)
  constexpr int WN = 2;
  const size_t smem = BwdSmem<PP, NP>::bytes;
  set_smem(ssd_bwd_chunk_kernel<PP, NP, WN, SPLIT>, smem);
  ssd_bwd_chunk_kernel<PP, NP, WN, SPLIT><<<dim3(dd.nch, dd.G, dd.B), 128 * WN, smem, stream>>>(p);
  check_launch("ssd_bwd_chunk_kernel");
}

// Expands to CALL(PP, NP) for the padded tile sizes of (P, N).
#define SSD_DISPATCH(P, N, CALL)              \
  do {                                        \
    const int pp_ = pad_p(P), np_ = pad_n(N); \
    if (pp_ == 32) {                          \
      if (np_ == 32)                          \
        CALL(32, 32);                         \
      else if (np_ == 64)                     \
        CALL(32, 64);                         \
      else                                    \
        CALL(32, 128);                        \
    } else {                                  \
      if (np_ == 32)                          \
        CALL(64, 32);                         \
      else if (np_ == 64)                     \
        CALL(64, 64);                         \
      else                                    \
        CALL(64, 128);                        \
    }                                         \
  } while (0)

}  // namespace

size_t ssd_fwd_workspace_bytes(const SsdDims& d, int Q) { return carve_fwd(dev_dims(d, Q), d.P, d.N, nullptr).bytes; }

size_t ssd_bwd_workspace_bytes(const SsdDims& d, int Q) { return carve_bwd(dev_dims(d, Q), d.P, d.N, nullptr).bytes; }

void ssd_fwd_launch(const SsdFwdArgs& a, void* workspace, cudaStream_t stream) {
  const DevDims dd = dev_dims(a.d, a.Q);
  const FwdWs w = carve_fwd(dd, a.d.P, a.d.N, workspace);
  const bool vec_x = a.d.P % 4 == 0 && aligned16(a.x) && aligned16(a.y);
  const bool vec_bc = a.d.N % 4 == 0 && aligned16(a.Bm) && aligned16(a.Cm);
  launch_prep(w.dt, w.lam, a.dt_raw, a.A_log, a.dt_bias, dd, stream);
#define SSD_FWD(PP, NP)                                               \
  (a.split ? fwd_tiles<PP, NP, true>(a, dd, w, vec_x, vec_bc, stream) \
           : fwd_tiles<PP, NP, false>(a, dd, w, vec_x, vec_bc, stream))
  SSD_DISPATCH(a.d.P, a.d.N, SSD_FWD);
#undef SSD_FWD
}

void ssd_bwd_launch(const SsdBwdArgs& a, void* workspace, cudaStream_t stream) {
  const DevDims dd = dev_dims(a.in.d, a.in.Q);
  const BwdWs w = carve_bwd(dd, a.in.d.P, a.in.d.N, workspace);
  const bool vec_x = a.in.d.P % 4 == 0 && aligned16(a.in.x) && aligned16(a.dy) && aligned16(a.dx);
  const bool vec_bc = a.in.d.N % 4 == 0 && aligned16(a.in.Bm) && aligned16(a.in.Cm);
  launch_prep(w.dt, w.lam, a.in.dt_raw, a.in.A_log, a.in.dt_bias, dd, stream);
#define SSD_BWD(PP, NP)                                               \
  (a.split ? bwd_tiles<PP, NP, true>(a, dd, w, vec_x, vec_bc, stream) \
           : bwd_tiles<PP, NP, false>(a, dd, w, vec_x, vec_bc, stream))
  SSD_DISPATCH(a.in.d.P, a.in.d.N, SSD_BWD);
#undef SSD_BWD
}

}  // namespace ssm::kernels
