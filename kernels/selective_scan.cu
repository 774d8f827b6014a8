// Selective scan (Mamba-1, S6) forward and backward on CUDA, fp32 in, out and
// throughout. DESIGN.md §1 gives the math, ssm/selective_scan.hpp the
// conventions.
//
// Every (b, e, n) is its own linear recurrence s[t] = a[t] s[t-1] + u[t] with
// a = exp(dt A): one exp per (step, channel, state) is the cost floor, so every
// kernel below takes that exp once per element and pass.
//
// The time-parallel piece, a "span": one warp scans 8 channels x 32 steps.
// Lane (c, j) = (lane % 8, lane / 8) holds steps [8j, 8j + 8) of channel c. Per
// state n a lane scans its 8 steps from zero (local state and decay product),
// the 4 sub-blocks of a channel combine by a 2-level shuffle scan, and each
// lane then adds (decay product) x (state entering its sub-block). Eight
// channels per row of lanes make B[t, n] / C[t, n] one shared-memory broadcast
// per 4 steps, and the global rows of x, dt, y 32-byte sectors.
//
// Forward, 1 launch: scan_fwd_kernel, one block per (b, 8 channels) walks the
//   spans in order with the state carried in shared memory; its warps split the
//   N states and add their parts of y in shared memory.
// Backward, 7 launches, every span in parallel (the recurrence runs forward for
// the states and backward for their gradient, so neither direction can walk):
//   scan_bwd_agg_kernel      per (b, span, e), sequential over the span: the
//                            span's end state from zero and the gradient it
//                            sends back from zero (one forward sweep)
//   scan_bwd_combine_kernel  per (b, n, e) over the spans: the state entering
//                            and the gradient leaving each span, dinitial_state
//   scan_bwd_grad_kernel     one block per (b, span, group) scans the span both
//                            ways for every channel of the group: dx, ddt_raw,
//                            dz; dB, dC summed over the group's channels in
//                            shared memory and written once; per-span parts of
//                            dA_log, dD, ddt_bias
//   column sums (2 x 2)      add those parts to dA_log, dD, ddt_bias
// No atomics anywhere: every output is the same bits from run to run.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "selective_scan.cuh"
#include "ssd_common.cuh"
#include "cuda_check.cuh"
#include "ssm/common.hpp"

namespace ssm::kernels {
namespace {

using i64 = long long;

constexpr unsigned kFull = 0xffffffffu;
constexpr int kJ = 4;           // time sub-blocks per warp
constexpr int kCW = 8;          // channels per warp; lane = j * kCW + c
constexpr int kK = 8;           // consecutive steps per lane
constexpr int kSpan = kJ * kK;  // steps per span
static_assert(kSpan == kScanSpan, "the workspace layout assumes kScanSpan steps per span");
static_assert(kK == kCW, "the dB / dC reduce-scatter leaves step c of sub-block j on lane j * 8 + c");
// Pitch of a staged B / C row (one state, the span's steps, time contiguous for
// float4 reads). The 8 extra floats put the 4 states a warp's transposing copy
// writes at once on different banks.
constexpr int kPT = kSpan + 8;
constexpr int kAccPitch = kSpan + 1;  // dB / dC accumulator rows (one state): conflict-free both ways
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// 2^v on the special function unit (one MUFU op; ~2 ulp, flushes tiny results to 0).
__device__ __forceinline__ float ex2(float v) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}

__device__ __forceinline__ float sigmoid(float v) { return 1.f / (1.f + expf(-v)); }

// Sum over the 4 sub-blocks of a channel (lanes c, c + 8, c + 16, c + 24).
__device__ __forceinline__ float sum_subblocks(float v) {
  v += __shfl_xor_sync(kFull, v, 8);
  return v + __shfl_xor_sync(kFull, v, 16);
}

// Rows [0, kSpan) x channels [0, kCW) of a row-major (., stride) matrix into
// dst (kSpan, kCW); rows >= nrows and channels >= ncols are zero. vec: 16-byte
// copies (stride % 4 == 0 and src 16-byte aligned, so ncols is 4 or 8).
__device__ __forceinline__ void stage_rows(float* dst, const float* src, i64 stride, int nrows, int ncols, bool vec) {
  if (vec) {
    for (int q = threadIdx.x; q < kSpan * 2; q += blockDim.x) {
      const int r = q >> 1, col = (q & 1) * 4;
      const bool ok = r < nrows && col < ncols;
      cp_async16(dst + r * kCW + col, ok ? src + r * stride + col : src, ok);
    }
  } else {
    for (int q = threadIdx.x; q < kSpan * kCW; q += blockDim.x) {
      const int r = q >> 3, col = q & 7;
      const bool ok = r < nrows && col < ncols;
      cp_async4(dst + q, ok ? src + r * stride + col : src, ok);
    }
  }
}

// B and C of groups [g0, g0 + ngs) for the span's nrows steps from global row
// row0 (= b * T + t0), transposed into dst (2 [B, C], ngs, N, kPT): element
// (t, n) of group g0 + gl at ((arr * ngs + gl) * N + n) * kPT + t. Steps >= nrows
// and groups >= G are zero. 32 consecutive threads copy 8 steps x 4 states, so
// their writes fall on 32 different banks.
__device__ __forceinline__ void stage_bc_T(float* dst, const float* Bm, const float* Cm, i64 row0, int G, int N, int g0,
                                           int ngs, int nrows) {
  const int nq = (N + 3) >> 2;
  const int total = 2 * ngs * (kSpan / 8) * nq * 32;
  for (int q = threadIdx.x; q < total; q += blockDim.x) {
    int r = q;
    const int tlo = r & 7;
    r >>= 3;
    const int nlo = r & 3;
    r >>= 2;
    const int nhi = r % nq;
    r /= nq;
    const int thi = r % (kSpan / 8);
    r /= kSpan / 8;
    const int gl = r % ngs, arr = r / ngs;
    const int t = thi * 8 + tlo, n = nhi * 4 + nlo, g = g0 + gl;
    if (n >= N) continue;
    const bool ok = t < nrows && g < G;
    const float* src = arr ? Cm : Bm;
    cp_async4(dst + ((arr * ngs + gl) * N + n) * kPT + t, ok ? src + ((row0 + t) * G + g) * N + n : src, ok);
  }
}

__device__ __forceinline__ void put4(float* v, float4 f) {
  v[0] = f.x;
  v[1] = f.y;
  v[2] = f.z;
  v[3] = f.w;
}

// The lane's 8 steps of one staged B or C row (16-byte aligned).
__device__ __forceinline__ void load_span8(float (&v)[kK], const float* staged) {
  put4(v, *reinterpret_cast<const float4*>(staged));
  put4(v + 4, *reinterpret_cast<const float4*>(staged + 4));
}

// The same from global memory, step i at src[i * stride]; steps >= cnt are zero.
__device__ __forceinline__ void load_global8(float (&v)[kK], const float* src, i64 stride, int cnt) {
#pragma unroll
  for (int i = 0; i < kK; ++i) v[i] = i < cnt ? __ldg(src + i * stride) : 0.f;
}

// 8 consecutive states from global memory; states >= cnt are zero. vec: src is
// 16-byte aligned and cnt is 4 or 8.
__device__ __forceinline__ void load_states8(float (&v)[8], const float* src, int cnt, bool vec) {
  if (vec) {
    put4(v, __ldg(reinterpret_cast<const float4*>(src)));
    if (cnt >= 8)
      put4(v + 4, __ldg(reinterpret_cast<const float4*>(src + 4)));
    else
      v[4] = v[5] = v[6] = v[7] = 0.f;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = k < cnt ? __ldg(src + k) : 0.f;
  }
}

// The 4 sub-blocks of a channel's span as one scan, forward in time. Lane j
// holds P, its steps' decay product, and s, its end state from a zero start
// (sub-block 0's already from the state entering the span). Returns the state
// entering the lane's sub-block (j >= 1), or for j = 0 the span's end state.
__device__ __forceinline__ float span_scan_forward(float P, float s, int j, int c) {
#pragma unroll
  for (int d = 1; d < kJ; d <<= 1) {
    const float Pu = __shfl_up_sync(kFull, P, d * kCW), su = __shfl_up_sync(kFull, s, d * kCW);
    if (j >= d) {
      s = fmaf(P, su, s);
      P *= Pu;
    }
  }
  return __shfl_sync(kFull, s, ((j + kJ - 1) & (kJ - 1)) * kCW + c);
}

// The same backward in time for the gradient of the states, h[t-1] = a[t] (h[t] + u[t]):
// R is the decay product, h the gradient the sub-block sends back from a zero
// gradient after it (sub-block 3's already from the gradient after the span).
// Returns the gradient reaching the lane's last step from after it (j <= 2).
__device__ __forceinline__ float span_scan_backward(float R, float h, int j, int c) {
#pragma unroll
  for (int d = 1; d < kJ; d <<= 1) {
    const float Rd = __shfl_down_sync(kFull, R, d * kCW), hd = __shfl_down_sync(kFull, h, d * kCW);
    if (j + d < kJ) {
      h = fmaf(R, hd, h);
      R *= Rd;
    }
  }
  return __shfl_sync(kFull, h, ((j + 1) & (kJ - 1)) * kCW + c);
}

// Sum of v[0..7] over the 8 lanes of a row (same j, c = 0..7), scattered: lane
// c returns the sum of item c. Three halving exchanges, 7 shuffles.
__device__ __forceinline__ float reduce_scatter8(const float (&v)[kK], int c) {
  const bool h4 = c & 4, h2 = c & 2, h1 = c & 1;
  float u[4];  // item (c & 4) + k
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float send = h4 ? v[k] : v[k + 4], keep = h4 ? v[k + 4] : v[k];
    u[k] = keep + __shfl_xor_sync(kFull, send, 4);
  }
  float w2[2];  // item (c & 6) + k
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const float send = h2 ? u[k] : u[k + 2], keep = h2 ? u[k + 2] : u[k];
    w2[k] = keep + __shfl_xor_sync(kFull, send, 2);
  }
  const float send = h1 ? w2[0] : w2[1], keep = h1 ? w2[1] : w2[0];
  return keep + __shfl_xor_sync(kFull, send, 1);
}

// The inputs the kernels read, and the sizes.
struct ScanIn {
  const float* x;        // (B, T, E)
  const float* dt_raw;   // (B, T, E)
  const float* A_log;    // (E, N)
  const float* Bm;       // (B, T, G, N)
  const float* Cm;       // (B, T, G, N)
  const float* D;        // (E)
  const float* dt_bias;  // (E)
  const float* z;        // (B, T, E) or null
  const float* dy;       // (B, T, E); null in the forward
  int T, E, G, N;
  int epg;    // channels per group, E / G
  int nspan;  // spans, ceil(T / kSpan)
};

// ============================================================================
// Forward: one block per (b, 8 channels), warps split the states.
// grid (ceil(E / 8), B), block 32 * warps (1..4)
// ============================================================================
struct FwdParams {
  ScanIn in;
  float* y;                    // (B, T, E)
  float* final_state;          // (B, E, N) or null
  const float* initial_state;  // (B, E, N) or null
  int npw;                     // states per warp
  int ngs;   // groups staged per block (1 or 2); 0: blocks spanning more groups read B and C from global
  bool vec;  // 16-byte copies of the x / dt_raw / z rows
};

// Shared memory of scan_fwd_kernel, offsets in floats (multiples of 4).
struct FwdLayout {
  int a2, carry, dts, dtxs, ypart, raw, bc, total;
};

__host__ __device__ inline FwdLayout fwd_layout(int N, int nwarps, int ngs) {
  FwdLayout L;
  L.a2 = 0;                                // (N, 8)  A[e, n] * log2(e)
  L.carry = L.a2 + kCW * N;                // (N, 8)  state entering the current span
  L.dts = L.carry + kCW * N;               // (8 steps, 32 lanes)  dt of the lane's step i
  L.dtxs = L.dts + kSpan * kCW;            // (8, 32)  dt * x
  L.ypart = L.dtxs + kSpan * kCW;          // (warps, 8, 32)  y over each warp's states
  L.raw = L.ypart + nwarps * kSpan * kCW;  // (2 buffers, 3 [x, dt_raw, z], 32 steps, 8 channels)
  L.bc = L.raw + 2 * 3 * kSpan * kCW;      // (2 buffers, 2 [B, C], ngs, N, kPT)
  L.total = L.bc + 2 * 2 * ngs * N * kPT;
  return L;
}

// Starts the copies of span s into one buffer of raw and bc.
__device__ __forceinline__ void fwd_issue(const FwdParams& p, float* raw, float* bc, i64 rowb, int e0, int ncol,
                                          int g_lo, int s) {
  const int t0 = s * kSpan, nrows = min(kSpan, p.in.T - t0);
  const i64 off = (rowb + t0) * p.in.E + e0;
  stage_rows(raw, p.in.x + off, p.in.E, nrows, ncol, p.vec);
  stage_rows(raw + kSpan * kCW, p.in.dt_raw + off, p.in.E, nrows, ncol, p.vec);
  if (p.in.z) stage_rows(raw + 2 * kSpan * kCW, p.in.z + off, p.in.E, nrows, ncol, p.vec);
  if (p.ngs > 0) stage_bc_T(bc, p.in.Bm, p.in.Cm, rowb + t0, p.in.G, p.in.N, g_lo, p.ngs, nrows);
}

__global__ void __launch_bounds__(128) scan_fwd_kernel(FwdParams p) {
  extern __shared__ __align__(16) float smem[];
  const int nwarps = blockDim.x >> 5;
  const FwdLayout L = fwd_layout(p.in.N, nwarps, p.ngs);
  float* a2s = smem + L.a2;
  float* carry = smem + L.carry;
  float* dts = smem + L.dts;
  float* dtxs = smem + L.dtxs;
  float* ypart = smem + L.ypart;
  float* raw = smem + L.raw;
  float* bc = smem + L.bc;

  const int N = p.in.N, T = p.in.T, E = p.in.E;
  const int tid = threadIdx.x, nthr = blockDim.x, lane = tid & 31, w = tid >> 5;
  const int c = lane & (kCW - 1), j = lane >> 3;
  const int b = blockIdx.y, e0 = blockIdx.x * kCW;
  const int ncol = min(kCW, E - e0);
  const int g_lo = e0 / p.in.epg;
  const i64 rowb = static_cast<i64>(b) * T;
  const int raw_size = 3 * kSpan * kCW, bc_size = 2 * p.ngs * N * kPT;

  for (int q = tid; q < kCW * N; q += nthr) {
    const int n = q / kCW, cc = q % kCW;
    const bool ok = cc < ncol;
    const i64 en = static_cast<i64>(e0 + cc) * N + n;
    a2s[q] = ok ? -expf(p.in.A_log[en]) * kLog2e : 0.f;
    carry[q] = ok && p.initial_state ? p.initial_state[static_cast<i64>(b) * E * N + en] : 0.f;
  }
  // The prep and output loops give each thread one channel (nthr % 8 == 0).
  const int my_c = tid & (kCW - 1);
  const bool my_ok = my_c < ncol;
  const float my_bias = my_ok ? p.in.dt_bias[e0 + my_c] : 0.f;
  const float my_D = my_ok ? p.in.D[e0 + my_c] : 0.f;
  // The scan lane's channel, its group among the staged ones, and the warp's states.
  const bool cok = c < ncol;
  const int gl = cok ? (e0 + c) / p.in.epg - g_lo : 0;
  const int n0 = w * p.npw, n1 = min(N, n0 + p.npw);

  fwd_issue(p, raw, bc, rowb, e0, ncol, g_lo, 0);
  cp_async_commit();
  for (int s = 0; s < p.in.nspan; ++s) {
    const int bf = s & 1;
    const float* rawb = raw + bf * raw_size;
    const float* bcb = bc + bf * bc_size;
    cp_async_wait<0>();
    __syncthreads();  // span s is in shared memory, and every thread is done with span s - 1 (the other buffers)
    if (s + 1 < p.in.nspan)
      fwd_issue(p, raw + (bf ^ 1) * raw_size, bc + (bf ^ 1) * bc_size, rowb, e0, ncol, g_lo, s + 1);
    cp_async_commit();
    const int t0 = s * kSpan, tl = min(kSpan, T - t0);

    // dt and dt * x once per (step, channel), in the scan lanes' layout
    for (int q = tid; q < kSpan * kCW; q += nthr) {
      const int t = q >> 3;
      const float dt = (t < tl && my_ok) ? softplus(rawb[kSpan * kCW + q] + my_bias) : 0.f;
      const int slot = (t % kK) * 32 + (t / kK) * kCW + my_c;
      dts[slot] = dt;
      dtxs[slot] = dt * rawb[q];
    }
    __syncthreads();

    {
      float dt[kK], dtx[kK], yv[kK];
#pragma unroll
      for (int i = 0; i < kK; ++i) {
        dt[i] = dts[i * 32 + lane];
        dtx[i] = dtxs[i * 32 + lane];
        yv[i] = 0.f;
      }
      const int cnt = min(max(tl - j * kK, 0), kK);  // the lane's steps inside T
      const i64 lrow = rowb + t0 + j * kK;           // global row of its first step
      for (int n = n0; n < n1; ++n) {
        float bv[kK], cv[kK];
        if (p.ngs > 0) {
          load_span8(bv, bcb + (gl * N + n) * kPT + j * kK);
          load_span8(cv, bcb + ((p.ngs + gl) * N + n) * kPT + j * kK);
        } else {
          const i64 stride = static_cast<i64>(p.in.G) * N, off = (lrow * p.in.G + g_lo + gl) * N + n;
          load_global8(bv, p.in.Bm + off, stride, cnt);
          load_global8(cv, p.in.Cm + off, stride, cnt);
        }
        const float A2 = a2s[n * kCW + c];
        // local scan of the lane's steps from zero; Q[i] = C[i] * (decay from the sub-block start to i)
        float sl = 0.f, P = 1.f, Q[kK];
#pragma unroll
        for (int i = 0; i < kK; ++i) {
          const float a = ex2(dt[i] * A2);
          sl = fmaf(a, sl, dtx[i] * bv[i]);
          P *= a;
          yv[i] = fmaf(cv[i], sl, yv[i]);
          Q[i] = cv[i] * P;
        }
        // the carried state enters sub-block 0
        float* cr = carry + n * kCW + c;
        float c_in = 0.f;
        if (j == 0) {
          c_in = *cr;
          sl = fmaf(P, c_in, sl);
        }
        const float prev = span_scan_forward(P, sl, j, c);  // for j = 0: the next carry
        const float S0 = j == 0 ? c_in : prev;
#pragma unroll
        for (int i = 0; i < kK; ++i) yv[i] = fmaf(Q[i], S0, yv[i]);
        if (j == 0) *cr = prev;  // only this thread reads or writes carry[n][c]
      }
#pragma unroll
      for (int i = 0; i < kK; ++i) ypart[(w * kK + i) * 32 + lane] = yv[i];
    }
    __syncthreads();

    // y = (sum over the warps' states + D x) * silu(z)
    for (int q = tid; q < kSpan * kCW; q += nthr) {
      const int t = q >> 3;
      if (t >= tl || !my_ok) continue;
      const int slot = (t % kK) * 32 + (t / kK) * kCW + my_c;
      float v = 0.f;
      for (int ww = 0; ww < nwarps; ++ww) v += ypart[ww * kK * 32 + slot];
      v = fmaf(my_D, rawb[q], v);
      if (p.in.z) {
        const float zv = rawb[2 * kSpan * kCW + q];
        v *= zv * sigmoid(zv);
      }
      p.y[(rowb + t0 + t) * E + e0 + my_c] = v;
    }
  }
  cp_async_wait<0>();
  if (p.final_state && j == 0 && cok)
    for (int n = n0; n < n1; ++n) p.final_state[(static_cast<i64>(b) * E + e0 + c) * N + n] = carry[n * kCW + c];
}

// ============================================================================
// Backward 1: per (b, span, e), sequential over the span's steps:
//   S[b, span, n, e] = the span's end state from a zero start
//   H[b, span, n, e] = the gradient it sends to the step before it from a zero
//                      gradient after it: sum_t (prod_{u <= t} a[u]) gz[t] C[t, n]
//   dtsum[b, span, e] = sum of dt (the span's decay is exp(A dtsum))
// grid (nspan * ceil(E / 128), B), block 128, dynamic smem 3 * 32 * 128 floats
// ============================================================================
constexpr int kAggThreads = 128;

struct AggParams {
  ScanIn in;
  float* S;      // (B, nspan, N, E)
  float* H;      // (B, nspan, N, E)
  float* dtsum;  // (B, nspan, E)
  int netile;    // blocks of kAggThreads channels
  bool vec_bc;   // N % 4 == 0 and B, C 16-byte aligned
};

__global__ void __launch_bounds__(kAggThreads) scan_bwd_agg_kernel(AggParams p) {
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x;
  // (32 steps, 128 threads) each; a thread reads only its own column
  float* s_dt = smem;
  float* s_dtx = s_dt + kSpan * kAggThreads;
  float* s_gz = s_dtx + kSpan * kAggThreads;
  const int span = blockIdx.x / p.netile, et = blockIdx.x - span * p.netile, b = blockIdx.y;
  const int N = p.in.N, E = p.in.E, e = et * kAggThreads + tid;
  const bool ok = e < E;
  const int t0 = span * kSpan, tl = min(kSpan, p.in.T - t0);
  const i64 row0 = static_cast<i64>(b) * p.in.T + t0;
  const float bias = ok ? p.in.dt_bias[e] : 0.f;
  float dtsum = 0.f;
  for (int t = 0; t < tl; ++t) {
    float dt = 0.f, dtx = 0.f, gz = 0.f;
    if (ok) {
      const i64 i = (row0 + t) * E + e;
      dt = softplus(p.in.dt_raw[i] + bias);
      dtx = dt * p.in.x[i];
      gz = p.in.dy[i];
      if (p.in.z) {
        const float zv = p.in.z[i];
        gz *= zv * sigmoid(zv);
      }
    }
    s_dt[t * kAggThreads + tid] = dt;
    s_dtx[t * kAggThreads + tid] = dtx;
    s_gz[t * kAggThreads + tid] = gz;
    dtsum += dt;
  }
  const int g = ok ? e / p.in.epg : 0;
  const i64 bc_row = static_cast<i64>(p.in.G) * N;
  const float* Bt = p.in.Bm + (row0 * p.in.G + g) * N;  // B[t, g, :] at Bt + t * bc_row
  const float* Ct = p.in.Cm + (row0 * p.in.G + g) * N;
  const i64 ws0 = (static_cast<i64>(b) * p.in.nspan + span) * N;  // S, H of state n at (ws0 + n) * E + e
  for (int nb = 0; nb < N; nb += 8) {
    const int cnt = min(8, N - nb);
    float A2[8], s[8], P[8], h[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      A2[k] = (ok && k < cnt) ? -expf(p.in.A_log[static_cast<i64>(e) * N + nb + k]) * kLog2e : 0.f;
      s[k] = 0.f;
      P[k] = 1.f;
      h[k] = 0.f;
    }
    for (int t = 0; t < tl; ++t) {
      const float dt = s_dt[t * kAggThreads + tid], dtx = s_dtx[t * kAggThreads + tid],
                  gz = s_gz[t * kAggThreads + tid];
      float bv[8], cv[8];
      load_states8(bv, Bt + t * bc_row + nb, cnt, p.vec_bc);
      load_states8(cv, Ct + t * bc_row + nb, cnt, p.vec_bc);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float a = ex2(dt * A2[k]);
        s[k] = fmaf(a, s[k], dtx * bv[k]);
        P[k] *= a;
        h[k] = fmaf(P[k], gz * cv[k], h[k]);
      }
    }
    if (ok) {
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (k < cnt) {
          p.S[(ws0 + nb + k) * E + e] = s[k];
          p.H[(ws0 + nb + k) * E + e] = h[k];
        }
    }
  }
  if (ok) p.dtsum[(static_cast<i64>(b) * p.in.nspan + span) * E + e] = dtsum;
}

// ============================================================================
// Backward 2: per (b, n, e), over the spans, in place:
//   S[b, span] <- the state entering the span (initial_state for span 0)
//   H[b, span] <- the gradient entering the span from its end (dfinal_state for the last)
//   dinitial_state = the gradient leaving span 0
// grid (ceil(N * E / 256), B), block 256
// ============================================================================
struct CombineParams {
  float* S;                    // (B, nspan, N, E)
  float* H;                    // (B, nspan, N, E)
  float* dinitial_state;       // (B, E, N) or null
  const float* dtsum;          // (B, nspan, E)
  const float* A_log;          // (E, N)
  const float* initial_state;  // (B, E, N) or null
  const float* dfinal_state;   // (B, E, N) or null
  int E, N, nspan;
};

// One pass over the spans: out[s] = cur, cur = decay[s] cur + local[s] (in
// place, local read from out). The loads of a batch of spans are issued
// before its stores, which the compiler cannot reorder (out may alias), so
// each thread waits for memory once per batch instead of once per span.
constexpr int kCombineBatch = 16;

__device__ __forceinline__ float combine_pass(float* out, i64 stride, const float* dts, i64 dts_stride, float A2,
                                              int nspan, float cur, bool reverse) {
  for (int s0 = 0; s0 < nspan; s0 += kCombineBatch) {
    float local[kCombineBatch], decay[kCombineBatch];
#pragma unroll
    for (int k = 0; k < kCombineBatch; ++k) {
      const int s = reverse ? nspan - 1 - (s0 + k) : s0 + k;
      local[k] = decay[k] = 0.f;
      if (s0 + k < nspan) {
        local[k] = out[s * stride];
        decay[k] = ex2(A2 * dts[s * dts_stride]);
      }
    }
#pragma unroll
    for (int k = 0; k < kCombineBatch; ++k) {
      const int s = reverse ? nspan - 1 - (s0 + k) : s0 + k;
      if (s0 + k < nspan) {
        out[s * stride] = cur;
        cur = fmaf(decay[k], cur, local[k]);
      }
    }
  }
  return cur;
}

__global__ void __launch_bounds__(256) scan_bwd_combine_kernel(CombineParams p) {
  const i64 q = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int b = blockIdx.y;
  const i64 ne = static_cast<i64>(p.N) * p.E;
  if (q >= ne) return;
  const int n = static_cast<int>(q / p.E), e = static_cast<int>(q % p.E);
  const float A2 = -expf(p.A_log[static_cast<i64>(e) * p.N + n]) * kLog2e;
  float* S = p.S + static_cast<i64>(b) * p.nspan * ne + q;  // span s at S[s * ne]
  float* H = p.H + static_cast<i64>(b) * p.nspan * ne + q;
  const float* dts = p.dtsum + static_cast<i64>(b) * p.nspan * p.E + e;  // span s at dts[s * E]
  const i64 st = (static_cast<i64>(b) * p.E + e) * p.N + n;
  combine_pass(S, ne, dts, p.E, A2, p.nspan, p.initial_state ? p.initial_state[st] : 0.f, false);
  const float dinit = combine_pass(H, ne, dts, p.E, A2, p.nspan, p.dfinal_state ? p.dfinal_state[st] : 0.f, true);
  if (p.dinitial_state) p.dinitial_state[st] = dinit;
}

// ============================================================================
// Backward 3: one block per (b, span, group); its warps take the group's
// channels 8 at a time and run the span scan forward (states, from S) and
// backward (their gradient, from H) for every state.
// grid (nspan * G, B), block 32 * warps (1..4)
// ============================================================================
struct GradParams {
  float* dx;       // (B, T, E)
  float* ddt_raw;  // (B, T, E)
  float* dz;       // (B, T, E), written when want_dz
  float* dBm;      // (B, T, G, N)
  float* dCm;      // (B, T, G, N)
  float* H_dA;     // in: H (B, nspan, N, E); out, in place: the span's sum for dA_log[e, n] / A[e, n]
  float* dDb;      // out: (B, nspan, 2, E) the span's sums for dD and ddt_bias
  const float* S;  // (B, nspan, N, E)
  ScanIn in;
  int ntile;  // tiles of 8 channels per group
  bool want_dz;
};

__host__ __device__ inline int grad_smem_floats(int N, int nwarps) {
  return 2 * N * kPT + nwarps * N * kCW + nwarps * 2 * N * kAccPitch;
}

// 3 blocks per SM: 168 registers with a few bytes spilled (unbounded it takes 210).
__global__ void __launch_bounds__(128, 3) scan_bwd_grad_kernel(GradParams p) {
  extern __shared__ __align__(16) float smem[];
  const int N = p.in.N, E = p.in.E, nwarps = blockDim.x >> 5;
  float* bc = smem;                            // (2 [B, C], N, kPT) the span's rows of this group
  float* a2_all = bc + 2 * N * kPT;            // (warps, N, 8) A * log2(e) of each warp's tile
  float* acc_all = a2_all + nwarps * N * kCW;  // (warps, 2 [dB, dC], N, kAccPitch) summed over each warp's channels
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, c = lane & (kCW - 1), j = lane >> 3;
  const int span = blockIdx.x / p.in.G, g = blockIdx.x - span * p.in.G, b = blockIdx.y;
  const int t0 = span * kSpan, tl = min(kSpan, p.in.T - t0);
  const i64 row0 = static_cast<i64>(b) * p.in.T + t0;
  stage_bc_T(bc, p.in.Bm, p.in.Cm, row0, p.in.G, N, g, 1, tl);
  cp_async_commit();
  float* a2s = a2_all + w * N * kCW;
  float* acc = acc_all + w * 2 * N * kAccPitch;
  for (int q = lane; q < 2 * N * kAccPitch; q += 32) acc[q] = 0.f;
  cp_async_wait<0>();
  __syncthreads();

  const int cnt = min(max(tl - j * kK, 0), kK);  // the lane's steps inside T
  const i64 lrow = row0 + j * kK;
  const i64 ws0 = (static_cast<i64>(b) * p.in.nspan + span) * N;  // S, H of state n at (ws0 + n) * E + e
  const float* Bs = bc + j * kK;                                  // + n * kPT
  const float* Cs = bc + N * kPT + j * kK;
  for (int tile = w; tile < p.ntile; tile += nwarps) {
    const int ce = tile * kCW + c;  // channel within the group
    const bool cok = ce < p.in.epg;
    const int e = g * p.in.epg + (cok ? ce : 0);
    __syncwarp();  // the previous tile's reads of a2s are done
    for (int q = lane; q < N * kCW; q += 32) {
      const int n = q / kCW, cc = tile * kCW + q % kCW;
      a2s[q] = cc < p.in.epg ? -expf(p.in.A_log[static_cast<i64>(g * p.in.epg + cc) * N + n]) * kLog2e : 0.f;
    }
    __syncwarp();
    const float bias = cok ? p.in.dt_bias[e] : 0.f, Dv = cok ? p.in.D[e] : 0.f;
    // per step: x, dt, dt * x and gz = dy * silu(z), the gradient reaching the ungated output
    float xv[kK], dt[kK], dtx[kK], gz[kK];
#pragma unroll
    for (int i = 0; i < kK; ++i) {
      xv[i] = dt[i] = dtx[i] = gz[i] = 0.f;
      if (cok && i < cnt) {
        const i64 idx = (lrow + i) * E + e;
        xv[i] = p.in.x[idx];
        dt[i] = softplus(p.in.dt_raw[idx] + bias);
        dtx[i] = dt[i] * xv[i];
        gz[i] = p.in.dy[idx];
        if (p.in.z) {
          const float zv = p.in.z[idx];
          gz[i] *= zv * sigmoid(zv);
        }
      }
    }
    float dxa[kK], ddta[kK], ypre[kK];  // sums over the states: dx, d dt, the ungated output
#pragma unroll
    for (int i = 0; i < kK; ++i) dxa[i] = ddta[i] = ypre[i] = 0.f;

    // S (read by sub-block 0) and H (by sub-block 3) of state n + 1 are loaded during state n
    const bool reads_S = j == 0 && cok, reads_H = j == kJ - 1 && cok;
    float S_next = reads_S ? p.S[ws0 * E + e] : 0.f, H_next = reads_H ? p.H_dA[ws0 * E + e] : 0.f;
    for (int n = 0; n < N; ++n) {
      const float A2 = a2s[n * kCW + c], An = A2 * kLn2;
      float bv[kK], cv[kK], a[kK], sv[kK];
      load_span8(bv, Bs + n * kPT);
      load_span8(cv, Cs + n * kPT);
      const i64 wo = (ws0 + n) * E + e;
      const float S_span = S_next, H_span = H_next;
      if (n + 1 < N) {
        if (reads_S) S_next = p.S[wo + E];
        if (reads_H) H_next = p.H_dA[wo + E];  // not yet overwritten: only state n's entry is, below
      }

      // states: local scan, S folded into sub-block 0, shuffle scan, then the true states
      float sl = 0.f, P = 1.f;
#pragma unroll
      for (int i = 0; i < kK; ++i) {
        a[i] = ex2(dt[i] * A2);
        sl = fmaf(a[i], sl, dtx[i] * bv[i]);
        P *= a[i];
      }
      const float s_in = S_span;  // 0 except on sub-block 0
      sl = fmaf(P, s_in, sl);
      const float prev = span_scan_forward(P, sl, j, c);
      const float S0 = j == 0 ? s_in : prev;  // state before the lane's first step
      float st = S0;
#pragma unroll
      for (int i = 0; i < kK; ++i) {
        st = fmaf(a[i], st, dtx[i] * bv[i]);
        sv[i] = st;
        ypre[i] = fmaf(cv[i], st, ypre[i]);
      }

      // gradient of the states, h[t-1] = a[t] (h[t] + gz[t] C[t]): the same scan reversed,
      // H folded into sub-block 3
      float hl = 0.f, R = 1.f;
#pragma unroll
      for (int i = kK - 1; i >= 0; --i) {
        const float gs = fmaf(gz[i], cv[i], hl);
        hl = a[i] * gs;
        R *= a[i];
      }
      const float h_in = H_span;  // 0 except on sub-block 3
      hl = fmaf(R, h_in, hl);
      const float nxt = span_scan_backward(R, hl, j, c);
      float h = j == kJ - 1 ? h_in : nxt;  // gradient reaching the lane's last step from after it

      float dB[kK], dC[kK], dA = 0.f;
#pragma unroll
      for (int i = kK - 1; i >= 0; --i) {
        const float gs = fmaf(gz[i], cv[i], h);            // dL/dS[t]
        const float as = a[i] * (i > 0 ? sv[i - 1] : S0);  // a[t] S[t-1]
        dC[i] = gz[i] * sv[i];
        dB[i] = gs * dtx[i];
        dxa[i] = fmaf(gs * dt[i], bv[i], dxa[i]);
        ddta[i] = fmaf(gs, fmaf(An, as, xv[i] * bv[i]), ddta[i]);
        dA = fmaf(gs * as, dt[i], dA);
        h = a[i] * gs;
      }
      dA = sum_subblocks(dA);
      if (reads_H) p.H_dA[wo] = dA;  // the thread that read H[wo]
      // dB, dC over the tile's 8 channels; lane j * 8 + c ends with step 8j + c, i.e. step `lane`
      const float rb = reduce_scatter8(dB, c), rc = reduce_scatter8(dC, c);
      acc[n * kAccPitch + lane] += rb;
      acc[(N + n) * kAccPitch + lane] += rc;
    }

    float dD_sum = 0.f, dbias_sum = 0.f;
#pragma unroll
    for (int i = 0; i < kK; ++i) {
      if (!cok || i >= cnt) continue;
      const i64 idx = (lrow + i) * E + e;
      const float ddr = ddta[i] * sigmoid(p.in.dt_raw[idx] + bias);
      p.dx[idx] = fmaf(gz[i], Dv, dxa[i]);
      p.ddt_raw[idx] = ddr;
      dbias_sum += ddr;
      dD_sum = fmaf(gz[i], xv[i], dD_sum);
      if (p.want_dz) {
        const float zv = p.in.z[idx], sz = sigmoid(zv);
        p.dz[idx] = p.in.dy[idx] * fmaf(Dv, xv[i], ypre[i]) * sz * (1.f + zv * (1.f - sz));
      }
    }
    dD_sum = sum_subblocks(dD_sum);
    dbias_sum = sum_subblocks(dbias_sum);
    if (j == 0 && cok) {
      const i64 o = (static_cast<i64>(b) * p.in.nspan + span) * 2 * E + e;
      p.dDb[o] = dD_sum;
      p.dDb[o + E] = dbias_sum;
    }
  }
  __syncthreads();
  // dB, dC of the span: the warps' sums in warp order, written once
  for (int q = tid; q < 2 * kSpan * N; q += blockDim.x) {
    const int n = q % N, t = (q / N) % kSpan, arr = q / (N * kSpan);
    if (t >= tl) continue;
    float v = 0.f;
    for (int ww = 0; ww < nwarps; ++ww) v += acc_all[((ww * 2 + arr) * N + n) * kAccPitch + t];
    (arr ? p.dCm : p.dBm)[((row0 + t) * p.in.G + g) * N + n] = v;
  }
}

// ============================================================================
// Backward 4: column sums of the per-span parts, rows in a fixed order.
//   colsum_partial_kernel  part[split, col] = sum of src[r, col] over the split's rows
//                          grid (ceil(cols / 32), splits), block 256
//   colsum_dA_kernel       dA_log[e, n] += A[e, n] * sum_split part[split, n * E + e]
//   colsum_dDb_kernel      dD[e] += sum part[split, e], ddt_bias[e] += sum part[split, E + e]
// ============================================================================
constexpr int kColWarps = 8;

__global__ void __launch_bounds__(kColWarps * 32)
    colsum_partial_kernel(float* __restrict__ part, const float* __restrict__ src, i64 rows, int cols,
                          i64 rows_per_split) {
  __shared__ float red[kColWarps][32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int col = blockIdx.x * 32 + lane;
  const i64 r0 = static_cast<i64>(blockIdx.y) * rows_per_split, r1 = min(rows, r0 + rows_per_split);
  float v = 0.f;
  if (col < cols) {
#pragma unroll 4
    for (i64 r = r0 + w; r < r1; r += kColWarps) v += src[r * cols + col];
  }
  red[w][lane] = v;
  __syncthreads();
  if (w == 0 && col < cols) {
    float s = 0.f;
    for (int k = 0; k < kColWarps; ++k) s += red[k][lane];
    part[static_cast<i64>(blockIdx.y) * cols + col] = s;
  }
}

__global__ void __launch_bounds__(256) colsum_dA_kernel(float* __restrict__ dA_log, const float* __restrict__ part,
                                                        int splits, const float* __restrict__ A_log, int E, int N) {
  const i64 col = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x, ne = static_cast<i64>(N) * E;
  if (col >= ne) return;
  float s = 0.f;
  for (int k = 0; k < splits; ++k) s += part[k * ne + col];
  const int n = static_cast<int>(col / E), e = static_cast<int>(col % E);
  const i64 en = static_cast<i64>(e) * N + n;
  dA_log[en] += -expf(A_log[en]) * s;  // dA/dA_log = A
}

__global__ void __launch_bounds__(256) colsum_dDb_kernel(float* __restrict__ dD, float* __restrict__ ddt_bias,
                                                         const float* __restrict__ part, int splits, int E) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  float sd = 0.f, sb = 0.f;
  for (int k = 0; k < splits; ++k) {
    sd += part[static_cast<i64>(k) * 2 * E + e];
    sb += part[static_cast<i64>(k) * 2 * E + E + e];
  }
  dD[e] += sd;
  ddt_bias[e] += sb;
}

// ============================================================================
// host side
// ============================================================================
void check_launch(const char* what) { cuda_check_launch("selective scan cuda", what); }

int max_smem_optin() {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();
    return 48 * 1024;
  }
  return v;
}

template <typename K>
void set_smem(K kernel, size_t bytes, const char* what) {
  if (bytes <= 48 * 1024) return;
  const int most = max_smem_optin();
  if (bytes > static_cast<size_t>(most))
    fail(std::string("selective scan cuda: ") + what + " needs " + std::to_string(bytes) +
         " bytes of shared memory, the device allows " + std::to_string(most));
  cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
             std::string("selective scan cuda: cannot raise shared memory of ") + what + " to " +
                 std::to_string(bytes) + " bytes");
}

int sm_count() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return 132;
  }
  return n;
}

size_t align256(size_t n) { return (n + 255) / 256 * 256; }
bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }
int spans(const ScanDims& d) { return (d.T + kSpan - 1) / kSpan; }

// Workspace of the backward; carving it is shared by the size query and the launch.
struct BwdWs {
  float* S;        // (B, nspan, N, E)  span states
  float* H;        // (B, nspan, N, E)  span gradients, then dA_log parts
  float* dtsum;    // (B, nspan, E)
  float* dDb;      // (B, nspan, 2, E)  dD and ddt_bias parts
  float* part_dA;  // (splits, N * E)
  float* part_Db;  // (splits, 2 * E)
  int splits;
  i64 rows_per_split;
  size_t bytes;
};

BwdWs carve_bwd(const ScanDims& d, void* base) {
  const i64 rows = static_cast<i64>(d.B) * spans(d), ne = static_cast<i64>(d.N) * d.E;
  BwdWs w;
  w.splits = static_cast<int>(std::clamp<i64>(rows / 64, 1, 64));
  w.rows_per_split = (rows + w.splits - 1) / w.splits;
  char* p = static_cast<char*>(base);
  size_t off = 0;
  auto take = [&](i64 n_floats) {
    float* r = reinterpret_cast<float*>(p + off);
    off += align256(static_cast<size_t>(n_floats) * sizeof(float));
    return r;
  };
  w.S = take(rows * ne);
  w.H = take(rows * ne);
  w.dtsum = take(rows * d.E);
  w.dDb = take(rows * 2 * d.E);
  w.part_dA = take(w.splits * ne);
  w.part_Db = take(w.splits * 2 * static_cast<i64>(d.E));
  w.bytes = off;
  return w;
}

// Most groups the 8 channels of one forward block touch.
int groups_per_block(const ScanDims& d) {
  const int epg = d.E / d.G;
  int most = 1;
  for (int e0 = 0; e0 < d.E; e0 += kCW) most = std::max(most, (std::min(e0 + kCW, d.E) - 1) / epg - e0 / epg + 1);
  return most;
}

ScanIn scan_in(const ScanDims& d, const float* x, const float* dt_raw, const float* A_log, const float* Bm,
               const float* Cm, const float* D, const float* dt_bias, const float* z, const float* dy) {
  return ScanIn{x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, dy, d.T, d.E, d.G, d.N, d.E / d.G, spans(d)};
}

}  // namespace

size_t scan_bwd_workspace_bytes(const ScanDims& d) { return carve_bwd(d, nullptr).bytes; }

void scan_fwd_launch(const ScanFwdArgs& a, cudaStream_t stream) {
  const ScanDims& d = a.d;
  FwdParams p{};
  p.in = scan_in(d, a.x, a.dt_raw, a.A_log, a.Bm, a.Cm, a.D, a.dt_bias, a.z, nullptr);
  p.y = a.y;
  p.final_state = a.final_state;
  p.initial_state = a.initial_state;
  // About 8 states per warp (the block's staging and y sums are shared by its
  // warps); down to 2 when there are too few blocks for 16 warps per SM.
  int nwarps = std::clamp((d.N + 7) / 8, 1, 4);
  const long long blocks = static_cast<long long>((d.E + kCW - 1) / kCW) * d.B;
  while (nwarps < 4 && blocks * nwarps < 16LL * sm_count() && d.N >= 2 * std::min(4, 2 * nwarps))
    nwarps = std::min(4, 2 * nwarps);
  p.npw = (d.N + nwarps - 1) / nwarps;
  const int ngs = groups_per_block(d);
  p.ngs = ngs <= 2 ? ngs : 0;
  p.vec = d.E % 4 == 0 && aligned16(a.x) && aligned16(a.dt_raw) && (!a.z || aligned16(a.z));
  const size_t smem = static_cast<size_t>(fwd_layout(d.N, nwarps, p.ngs).total) * sizeof(float);
  set_smem(scan_fwd_kernel, smem, "scan_fwd_kernel");
  scan_fwd_kernel<<<dim3((d.E + kCW - 1) / kCW, d.B), 32 * nwarps, smem, stream>>>(p);
  check_launch("scan_fwd_kernel");
}

void scan_bwd_launch(const ScanBwdArgs& a, void* workspace, cudaStream_t stream) {
  const ScanDims& d = a.in.d;
  const BwdWs w = carve_bwd(d, workspace);
  const ScanIn in = scan_in(d, a.in.x, a.in.dt_raw, a.in.A_log, a.in.Bm, a.in.Cm, a.in.D, a.in.dt_bias, a.in.z, a.dy);
  const int nspan = in.nspan;
  const i64 rows = static_cast<i64>(d.B) * nspan, ne = static_cast<i64>(d.N) * d.E;

  const int netile = (d.E + kAggThreads - 1) / kAggThreads;
  const bool vec_bc = d.N % 4 == 0 && aligned16(a.in.Bm) && aligned16(a.in.Cm);
  const AggParams ap{in, w.S, w.H, w.dtsum, netile, vec_bc};
  const size_t agg_smem = 3 * kSpan * kAggThreads * sizeof(float);
  scan_bwd_agg_kernel<<<dim3(nspan * netile, d.B), kAggThreads, agg_smem, stream>>>(ap);
  check_launch("scan_bwd_agg_kernel");

  const CombineParams cp{w.S, w.H,  a.dinitial_state, w.dtsum, a.in.A_log, a.in.initial_state, a.dfinal_state, d.E,
                         d.N, nspan};
  scan_bwd_combine_kernel<<<dim3(static_cast<unsigned>((ne + 255) / 256), d.B), 256, 0, stream>>>(cp);
  check_launch("scan_bwd_combine_kernel");

  const int ntile = (in.epg + kCW - 1) / kCW;
  const bool want_dz = a.in.z != nullptr && a.dz != nullptr;
  const GradParams gp{a.dx, a.ddt_raw, a.dz, a.dBm, a.dCm, w.H, w.dDb, w.S, in, ntile, want_dz};
  const int gwarps = std::min(4, ntile);
  const size_t grad_smem = static_cast<size_t>(grad_smem_floats(d.N, gwarps)) * sizeof(float);
  set_smem(scan_bwd_grad_kernel, grad_smem, "scan_bwd_grad_kernel");
  scan_bwd_grad_kernel<<<dim3(nspan * d.G, d.B), 32 * gwarps, grad_smem, stream>>>(gp);
  check_launch("scan_bwd_grad_kernel");

  colsum_partial_kernel<<<dim3(static_cast<unsigned>((ne + 31) / 32), w.splits), kColWarps * 32, 0, stream>>>(
      w.part_dA, w.H, rows, static_cast<int>(ne), w.rows_per_split);
  check_launch("colsum_partial_kernel (dA_log)");
  colsum_dA_kernel<<<static_cast<unsigned>((ne + 255) / 256), 256, 0, stream>>>(a.dA_log, w.part_dA, w.splits, a.in.A_log,
                                                                                d.E, d.N);
  check_launch("colsum_dA_kernel");
  colsum_partial_kernel<<<dim3((2 * d.E + 31) / 32, w.splits), kColWarps * 32, 0, stream>>>(w.part_Db, w.dDb, rows,
                                                                                            2 * d.E, w.rows_per_split);
  check_launch("colsum_partial_kernel (dD, ddt_bias)");
  colsum_dDb_kernel<<<(d.E + 255) / 256, 256, 0, stream>>>(a.dD, a.ddt_bias, w.part_Db, w.splits, d.E);
  check_launch("colsum_dDb_kernel");
}

}  // namespace ssm::kernels
