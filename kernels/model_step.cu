// Batched recurrent step of a Mamba-2 model (DESIGN.md §1, the recurrent mode
// of ssm::Stream) for S independent streams: one launch advances every stream
// by n samples (n = 1 for a plain step) through the whole model.
//
// Cut: a block of kStepThreads threads owns St streams for the whole launch.
// Their residual stream h (n, St, D) lives in shared memory; the block walks
// the layers, and inside a layer the n samples, as Stream does:
//
//   encoder                       h[t] = in[t] @ enc_w^T + enc_b      (all t)
//   per layer:
//     conv tails -> smem (cp.async), SSM state -> registers when it fits
//     per sample t:
//       A  un   = RMSNorm(h[t])                       warp per stream
//       B  proj = un @ in_proj^T  [z | xBC | dt_raw]   thread per output column
//       C  act  = SiLU(conv(xBC, tail)), tail shifted; dt = softplus, decay = exp(dt A)
//       D  y    = S @ C + D x after S = decay S + dt x B^T   (state update)
//       E  y    = RMSNorm_G(y * SiLU(z))               warp per (stream, group)
//       F  h[t] += y @ out_proj^T
//     state and tails back to memory
//   head                          out[t] = RMSNorm(h[t]) @ head_w^T + head_b
//
// The state update (D) is the memory-bound part: every (P, N) row of the
// state is split over LPR lanes, each holding VEC consecutive floats, so a
// warp's loads are contiguous and a row's readout is a shuffle sum over LPR
// lanes. A thread holds `units` such pieces. When the block's whole state
// fits (passes == 1) it is loaded once per layer and stays in registers for
// the n samples: read and written once per launch, not n times. Its loads
// are issued early (layer 0's before the encoder, each later layer's right
// after the layer before stores its own, during that layer's phases E and F)
// so that they overlap arithmetic. Otherwise each sample streams it through
// in `passes` passes, the first pass's loads issued before phase A.
//
// Weights are read through the L1 (__ldg), transposed so that a warp reads
// 32 consecutive floats: blocks of an SM in the same layer share them there,
// and at worst a block fetches a layer's weights (116 KB for the default
// denoiser) from L2 once per sample for its St streams. The projections are
// fp32 FMAs (not tf32): the mode must match the CPU stream to 1e-4, and at one
// sample per launch the state's bytes, not the arithmetic, set the time
// (ssm/cuda_stream.hpp counts the floor).
//
// Accuracy: fp32 everywhere, the CPU step's formulas (softplus without
// overflow, exact exp / log1p); only summation orders differ (tree sums of
// norms and readouts), about 1e-7 relative per step.
#include <cuda_runtime.h>

#include <string>

#include "model_step.cuh"
#include "ssd_common.cuh"  // warp_sum, cp.async
#include "cuda_check.cuh"
#include "ssm/common.hpp"

namespace ssm::kernels {
namespace {

// Offsets (floats) of a block's shared-memory buffers, for St streams and n samples.
struct StepCarve {
  size_t h;      // (n, St, D)   residual stream of every sample of the launch
  size_t tail;   // (St, K-1, Cc) conv tails of the current layer
  size_t un;     // (St, D)      normalised input of the current sample
  size_t proj;   // (St, F)      in_proj output [z | xBC | dt_raw]
  size_t act;    // (St, Cc)     conv + SiLU output [x | B | C]
  size_t y;      // (St, E)      state readout, then the gated norm's output
  size_t dt;     // (St, H)      softplus(dt_raw + dt_bias)
  size_t decay;  // (St, H)      exp(dt * A)
  size_t total;
};

__host__ __device__ inline StepCarve step_carve(int St, int n, int D, int E, int H, int Cc, int K, int F) {
  StepCarve c{};
  size_t end = 0;
  const auto take = [&end](size_t floats) {
    const size_t at = end;
    end += floats;
    return at;
  };
  const size_t s = static_cast<size_t>(St);
  c.h = take(static_cast<size_t>(n) * s * D);
  c.tail = take(s * (K - 1) * Cc);
  c.un = take(s * D);
  c.proj = take(s * F);
  c.act = take(s * Cc);
  c.y = take(s * E);
  c.dt = take(s * H);
  c.decay = take(s * H);
  c.total = end;
  return c;
}

// softplus as the CPU step computes it (lib/cpu/fast_math.hpp): no overflow
// for large z, the tail kept for very negative z.
__device__ __forceinline__ float softplus_step(float z) { return z > 0.f ? z + log1pf(expf(-z)) : log1pf(expf(z)); }

__device__ __forceinline__ float silu(float v) { return v / (1.f + expf(-v)); }

// out[r, c] = x[r, c] * rstd[r] * w[c] for rows r < R; one warp per row.
__device__ __forceinline__ void rmsnorm_rows(float* out, const float* x, const float* __restrict__ w, int R, int C,
                                             float eps) {
  const int lane = threadIdx.x % 32;
  for (int r = threadIdx.x / 32; r < R; r += kStepThreads / 32) {
    const float* xr = x + static_cast<size_t>(r) * C;
    float ss = 0.f;
    for (int c = lane; c < C; c += 32) ss += xr[c] * xr[c];
    ss = warp_sum(ss);
    const float rs = 1.f / sqrtf(ss / C + eps);
    float* o = out + static_cast<size_t>(r) * C;
    for (int c = lane; c < C; c += 32) o[c] = xr[c] * rs * __ldg(w + c);
  }
}

// out[r, o] (+)= sum_k in[r, k] * WT[k, o] for rows r < R, columns o < O.
// in and out in shared memory (row strides ldi, ldo); WT (I, O) in global
// memory. A thread computes one column for RB rows: consecutive threads take
// consecutive columns (one 128-byte weight row segment per warp and k) and
// share their rows (broadcast shared-memory reads).
template <int RB>
__device__ __forceinline__ void block_linear(float* out, int ldo, const float* in, int ldi,
                                             const float* __restrict__ WT, int R, int I, int O, bool accumulate) {
  const int groups = (R + RB - 1) / RB;
  for (int task = threadIdx.x; task < O * groups; task += kStepThreads) {
    const int o = task % O, r0 = (task / O) * RB;
    const float* a[RB];  // rows past R read row R-1 and are not written
#pragma unroll
    for (int i = 0; i < RB; ++i) a[i] = in + static_cast<size_t>(min(r0 + i, R - 1)) * ldi;
    float acc[RB];
#pragma unroll
    for (int i = 0; i < RB; ++i) acc[i] = 0.f;
    const float* w = WT + o;
#pragma unroll 4
    for (int k = 0; k < I; ++k) {
      const float wk = __ldg(w + static_cast<size_t>(k) * O);
#pragma unroll
      for (int i = 0; i < RB; ++i) acc[i] += a[i][k] * wk;
    }
#pragma unroll
    for (int i = 0; i < RB; ++i)
      if (r0 + i < R) {
        float* dst = out + static_cast<size_t>(r0 + i) * ldo + o;
        *dst = accumulate ? *dst + acc[i] : acc[i];
      }
  }
}

// Rows R < 1 never reach here; picks the row blocking that keeps the threads busy.
__device__ __forceinline__ void linear_rows(float* out, int ldo, const float* in, int ldi, const float* WT, int R,
                                            int I, int O, bool accumulate) {
  if (O * R <= kStepThreads)
    block_linear<1>(out, ldo, in, ldi, WT, R, I, O, accumulate);
  else
    block_linear<4>(out, ldo, in, ldi, WT, R, I, O, accumulate);
}

// Moves the thread's pieces of a block's SSM state between registers and
// memory (STORE: registers -> mem). Unit j is row
// r = row0 + j * RG + threadIdx.x / LPR of the block's (rows_b, N) rows
// (RG = kStepThreads / LPR), floats n0 .. n0 + VEC - 1 with
// n0 = (threadIdx.x % LPR) * VEC. Pieces past the rows or past N are not
// stored and load as zeros.
template <bool STORE, int VEC, int UNITS>
__device__ __forceinline__ void state_move(float (&st)[UNITS * VEC], float* mem, int row0, int rows_b, int N, int LPR) {
  const int RG = kStepThreads / LPR, n0 = (threadIdx.x % LPR) * VEC;
  const int r_first = row0 + threadIdx.x / LPR;
#pragma unroll
  for (int j = 0; j < UNITS; ++j) {
    const int r = r_first + j * RG;
    float* v = st + VEC * j;
    if (r < rows_b && n0 < N) {
      float* p = mem + static_cast<size_t>(r) * N + n0;
      if constexpr (STORE && VEC == 4) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
      } else if constexpr (VEC == 4) {
        const float4 m = *reinterpret_cast<const float4*>(p);
        v[0] = m.x;
        v[1] = m.y;
        v[2] = m.z;
        v[3] = m.w;
      } else if constexpr (STORE) {
        *p = v[0];
      } else {
        v[0] = *p;
      }
    } else if constexpr (!STORE) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] = 0.f;
    }
  }
}

template <int VEC, int UNITS>
__device__ __forceinline__ void state_load(float (&st)[UNITS * VEC], float* src, int row0, int rows_b, int N, int LPR) {
  state_move<false, VEC, UNITS>(st, src, row0, rows_b, N, LPR);
}

template <int VEC, int UNITS>
__device__ __forceinline__ void state_store(float (&st)[UNITS * VEC], float* dst, int row0, int rows_b, int N,
                                            int LPR) {
  state_move<true, VEC, UNITS>(st, dst, row0, rows_b, N, LPR);
}

struct SsmDims {
  int E, H, P, G, N, Cc, LPR;
};

// Phase D for the thread's units (rows as in state_load):
//   S[n] = decay * S[n] + (dt * x) * B[n];  y = sum_n S[n] C[n] + D x
// summed over the LPR lanes of a row; lane 0 of the row writes y[r].
template <int VEC, int UNITS>
__device__ __forceinline__ void state_update(float (&st)[UNITS * VEC], float* y, const float* act, const float* dt,
                                             const float* decay, const float* __restrict__ Dp, int row0, int rows_b,
                                             const SsmDims& d) {
  const int LPR = d.LPR, RG = kStepThreads / LPR;
  const int lr = threadIdx.x % LPR, n0 = lr * VEC;
  const int r_first = row0 + threadIdx.x / LPR;
  // (s, h, p) of unit 0, and the step RG rows make in each, so that the units
  // advance by additions: RG = ds * E + dh * P + dp.
  int s = r_first / d.E;
  int h = (r_first - s * d.E) / d.P;
  int p = r_first - s * d.E - h * d.P;
  const int ds = RG / d.E, dh = (RG % d.E) / d.P, dp = (RG % d.E) % d.P;
  const int heads_per_group = d.H / d.G;
#pragma unroll
  for (int j = 0; j < UNITS; ++j) {
    const int r = r_first + j * RG;
    const bool row_ok = r < rows_b;
    float acc = 0.f, x = 0.f;
    if (row_ok) {
      const float* a = act + static_cast<size_t>(s) * d.Cc;  // [x (E) | B (G, N) | C (G, N)]
      x = a[h * d.P + p];
      const float dtx = dt[s * d.H + h] * x, dec = decay[s * d.H + h];
      if (n0 < d.N) {
        const int g = d.G == 1 ? 0 : h / heads_per_group;
        const float* Bn = a + d.E + g * d.N + n0;
        const float* Cn = Bn + d.G * d.N;
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          const float sn = dec * st[VEC * j + v] + dtx * Bn[v];
          st[VEC * j + v] = sn;
          acc += sn * Cn[v];
        }
      }
    }
    for (int o = LPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (row_ok && lr == 0) y[r] = acc + __ldg(Dp + h) * x;
    // next unit: RG rows further on
    p += dp;
    h += dh;
    s += ds;
    if (p >= d.P) {
      p -= d.P;
      ++h;
    }
    if (h >= d.H) {
      h -= d.H;
      ++s;
    }
  }
}

// Two blocks per SM: at most 128 registers a thread. With at most 16 state
// floats a thread (small states) three blocks fit, at 80 registers (no spills).
template <int VEC, int UNITS>
__global__ void __launch_bounds__(kStepThreads, UNITS <= 8 && UNITS * VEC <= 16 ? 3 : 2)
    model_step_kernel(const StepArgs a) {
  extern __shared__ float smem[];
  const int D = a.D, E = a.E, H = a.H, G = a.G, N = a.N, K = a.K, K1 = a.K - 1;
  const int Cc = E + 2 * G * N, F = E + Cc + H;
  const int St = a.streams_per_block, n = a.n;
  const int s0 = blockIdx.x * St;
  const int Sb = min(St, a.S - s0);  // streams of this block (the last may have fewer)
  const int tid = threadIdx.x;
  const StepCarve c = step_carve(St, n, D, E, H, Cc, K, F);
  float* h = smem + c.h;          // (n, St, D)
  float* tail = smem + c.tail;    // (St, K-1, Cc)
  float* un = smem + c.un;        // (St, D)
  float* proj = smem + c.proj;    // (St, F)
  float* act = smem + c.act;      // (St, Cc)
  float* y = smem + c.y;          // (St, E)
  float* dt = smem + c.dt;        // (St, H)
  float* decay = smem + c.decay;  // (St, H)
  const float* W = a.weights;
  const SsmDims sd{E, H, a.P, G, N, Cc, a.lanes_per_row};
  const bool keep = a.passes == 1;  // the block's state stays in registers across the n samples
  const int rows_b = Sb * E;        // (P, N) rows of the block's state per layer
  const int pass_rows = UNITS * (kStepThreads / a.lanes_per_row);
  const size_t S = static_cast<size_t>(a.S);
  float st[UNITS * VEC];  // the thread's state units
  // Kept state: layer 0's loads overlap the encoder; each later layer's are
  // issued as soon as the layer before has stored its own (phase D below).
  if (keep) state_load<VEC, UNITS>(st, a.ssm_state + static_cast<size_t>(s0) * E * N, 0, rows_b, N, a.lanes_per_row);

  // encoder: h[t, s] = in[t, s] @ enc_w^T + enc_b
  for (int i = tid; i < n * Sb * D; i += kStepThreads) {
    const int d = i % D, s = (i / D) % Sb, t = i / (D * Sb);
    const float* x = a.in + (static_cast<size_t>(t) * S + s0 + s) * a.ci;
    const float* w = W + a.enc_w + static_cast<size_t>(d) * a.ci;
    float acc = 0.f;
    for (int k = 0; k < a.ci; ++k) acc += __ldg(x + k) * __ldg(w + k);
    h[(static_cast<size_t>(t) * St + s) * D + d] = acc + __ldg(W + a.enc_b + d);
  }
  __syncthreads();

  for (int l = 0; l < a.L; ++l) {
    const float* Wl = W + a.layer0 + static_cast<size_t>(l) * a.layer_stride;
    float* ssm_l = a.ssm_state + (static_cast<size_t>(l) * S + s0) * E * N;     // this block's (Sb, E, N)
    float* tail_l = a.conv_tail + (static_cast<size_t>(l) * S + s0) * K1 * Cc;  // this block's (Sb, K-1, Cc)
    const int tail_floats = Sb * K1 * Cc;
    for (int i = tid; i < tail_floats; i += kStepThreads) cp_async4(tail + i, tail_l + i, true);
    cp_async_commit();

    for (int t = 0; t < n; ++t) {
      float* ht = h + static_cast<size_t>(t) * St * D;  // (St, D)
      // Streamed state: the first pass's loads overlap phases A-C.
      if (!keep) state_load<VEC, UNITS>(st, ssm_l, 0, rows_b, N, a.lanes_per_row);
      // A
      rmsnorm_rows(un, ht, Wl + a.lo.norm, Sb, D, a.eps);
      __syncthreads();
      // B
      linear_rows(proj, F, un, D, Wl + a.lo.in_wT, Sb, D, F, false);
      cp_async_wait<0>();  // this thread's tail copies (only the first sample waits)
      __syncthreads();
      // C: conv step + SiLU per (stream, channel); the thread owning a channel shifts its tail
      for (int i = tid; i < Sb * Cc; i += kStepThreads) {
        const int s = i / Cc, ch = i % Cc;
        const float xin = proj[static_cast<size_t>(s) * F + E + ch];
        float* tl = tail + static_cast<size_t>(s) * K1 * Cc + ch;  // (K-1) values, stride Cc
        const float* wc = Wl + a.lo.conv_w + static_cast<size_t>(ch) * K;
        float v = __ldg(Wl + a.lo.conv_b + ch);
        for (int k = 0; k < K1; ++k) v += __ldg(wc + k) * tl[k * Cc];
        v += __ldg(wc + K1) * xin;
        for (int k = 0; k + 1 < K1; ++k) tl[k * Cc] = tl[(k + 1) * Cc];
        if (K1 > 0) tl[(K1 - 1) * Cc] = xin;
        act[static_cast<size_t>(s) * Cc + ch] = silu(v);
      }
      for (int i = tid; i < Sb * H; i += kStepThreads) {
        const int s = i / H, hh = i % H;
        const float d_t = softplus_step(proj[static_cast<size_t>(s) * F + E + Cc + hh] + __ldg(Wl + a.lo.dt_bias + hh));
        dt[i] = d_t;
        decay[i] = expf(d_t * __ldg(Wl + a.lo.A + hh));
      }
      __syncthreads();
      // D
      for (int pass = 0; pass < a.passes; ++pass) {
        const int row0 = pass * pass_rows;
        if (!keep && pass > 0) state_load<VEC, UNITS>(st, ssm_l, row0, rows_b, N, a.lanes_per_row);
        state_update<VEC, UNITS>(st, y, act, dt, decay, Wl + a.lo.D, row0, rows_b, sd);
        if (!keep) state_store<VEC, UNITS>(st, ssm_l, row0, rows_b, N, a.lanes_per_row);
      }
      if (keep && t == n - 1) {
        // The layer's state is final: store it, and start loading the next
        // layer's so that the loads overlap phases E and F.
        state_store<VEC, UNITS>(st, ssm_l, 0, rows_b, N, a.lanes_per_row);
        if (l + 1 < a.L) state_load<VEC, UNITS>(st, ssm_l + S * E * N, 0, rows_b, N, a.lanes_per_row);
      }
      __syncthreads();
      // E: y = RMSNorm over each of the G groups of y * SiLU(z), in place; one warp per (stream, group)
      {
        const int m = E / G, lane = tid % 32;
        const float* wn = Wl + a.lo.mixer_norm;
        for (int task = tid / 32; task < Sb * G; task += kStepThreads / 32) {
          const int s = task / G, g = task % G;
          float* yr = y + static_cast<size_t>(s) * E + g * m;
          const float* zr = proj + static_cast<size_t>(s) * F + g * m;
          float ss = 0.f;
          for (int i = lane; i < m; i += 32) {
            const float z = zr[i], v = yr[i] * (z / (1.f + expf(-z)));
            yr[i] = v;
            ss += v * v;
          }
          ss = warp_sum(ss);
          const float rs = 1.f / sqrtf(ss / m + a.eps);
          for (int i = lane; i < m; i += 32) yr[i] = yr[i] * rs * __ldg(wn + g * m + i);
        }
      }
      __syncthreads();
      // F: residual
      linear_rows(ht, D, y, E, Wl + a.lo.out_wT, Sb, E, D, true);
      __syncthreads();
    }

    for (int i = tid; i < tail_floats; i += kStepThreads) tail_l[i] = tail[i];
    __syncthreads();  // the next layer's tail copies overwrite `tail`
  }

  // head: out[t, s] = RMSNorm(h[t, s]) @ head_w^T + head_b
  for (int t = 0; t < n; ++t) {
    rmsnorm_rows(un, h + static_cast<size_t>(t) * St * D, W + a.norm_f, Sb, D, a.eps);
    __syncthreads();
    for (int i = tid; i < Sb * a.co; i += kStepThreads) {
      const int s = i / a.co, o = i % a.co;
      const float* u = un + static_cast<size_t>(s) * D;
      const float* w = W + a.head_w + static_cast<size_t>(o) * D;
      float acc = 0.f;
      for (int k = 0; k < D; ++k) acc += u[k] * __ldg(w + k);
      a.out[(static_cast<size_t>(t) * S + s0 + s) * a.co + o] = acc + __ldg(W + a.head_b + o);
    }
    __syncthreads();
  }
}

// One thread per float4 of the rows (every row of the state tables is a
// multiple of 4 floats when row % 4 == 0; otherwise floats one by one).
template <bool GATHER, int VEC>
__global__ void state_rows_kernel(float* __restrict__ full, float* __restrict__ compact,
                                  const int* __restrict__ slots, int count, int S, size_t row) {
  const size_t per_row = row / VEC, per_layer = per_row * count;
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t l = blockIdx.y;
  if (i >= per_layer) return;
  const size_t s = i / per_row, j = i % per_row;
  float* f = full + ((l * S + __ldg(slots + s)) * row) + j * VEC;
  float* c = compact + ((l * count + s) * row) + j * VEC;
  if constexpr (VEC == 4) {
    if constexpr (GATHER)
      *reinterpret_cast<float4*>(c) = *reinterpret_cast<const float4*>(f);
    else
      *reinterpret_cast<float4*>(f) = *reinterpret_cast<const float4*>(c);
  } else {
    if constexpr (GATHER)
      *c = *f;
    else
      *f = *c;
  }
}

using StepKernel = void (*)(StepArgs);

StepKernel step_kernel(int vec, int units) {
#define SSM_STEP_KERNEL(V)             \
  switch (units) {                     \
    case 1:                            \
      return model_step_kernel<V, 1>;  \
    case 2:                            \
      return model_step_kernel<V, 2>;  \
    case 4:                            \
      return model_step_kernel<V, 4>;  \
    case 8:                            \
      return model_step_kernel<V, 8>;  \
    case 16:                           \
      return model_step_kernel<V, 16>; \
    default:                           \
      break;                           \
  }
  if (vec == 4) {
    SSM_STEP_KERNEL(4)
  } else if (vec == 1) {
    SSM_STEP_KERNEL(1)
  }
#undef SSM_STEP_KERNEL
  fail("model step cuda: no kernel for vec = " + std::to_string(vec) + ", units = " + std::to_string(units));
}

}  // namespace

size_t model_step_smem_bytes(const StepArgs& a) {
  const int Cc = a.E + 2 * a.G * a.N, F = a.E + Cc + a.H;
  return step_carve(a.streams_per_block, a.n, a.D, a.E, a.H, Cc, a.K, F).total * sizeof(float);
}

void model_step_prepare(int vec, int units, size_t bytes) {
  // Only ever raised: another batch may launch the same kernel with more.
  const StepKernel kernel = step_kernel(vec, units);
  cudaFuncAttributes fa{};
  cudaError_t e = cudaFuncGetAttributes(&fa, kernel);
  if (e == cudaSuccess && bytes <= static_cast<size_t>(fa.maxDynamicSharedSizeBytes)) return;
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  cuda_check(e, "model step cuda: cannot raise shared memory to " + std::to_string(bytes) + " bytes");
}

void model_step_launch(const StepArgs& a, cudaStream_t stream) {
  if (a.n < 1 || a.S < 1) return;
  const unsigned blocks = static_cast<unsigned>((a.S + a.streams_per_block - 1) / a.streams_per_block);
  step_kernel(a.vec, a.units)<<<blocks, kStepThreads, model_step_smem_bytes(a), stream>>>(a);
  cuda_check_launch("model step cuda", "the step kernel");
}

void state_rows_copy(bool gather, float* full, float* compact, const int* slots, int count, int S, int L,
                     size_t row, cudaStream_t stream) {
  if (count < 1 || L < 1 || row == 0) return;
  const int vec = row % 4 == 0 ? 4 : 1;
  const size_t per_layer = row / vec * count;
  const dim3 grid(static_cast<unsigned>((per_layer + 255) / 256), static_cast<unsigned>(L));
  if (vec == 4) {
    if (gather)
      state_rows_kernel<true, 4><<<grid, 256, 0, stream>>>(full, compact, slots, count, S, row);
    else
      state_rows_kernel<false, 4><<<grid, 256, 0, stream>>>(full, compact, slots, count, S, row);
  } else {
    if (gather)
      state_rows_kernel<true, 1><<<grid, 256, 0, stream>>>(full, compact, slots, count, S, row);
    else
      state_rows_kernel<false, 1><<<grid, 256, 0, stream>>>(full, compact, slots, count, S, row);
  }
  cuda_check_launch("model step cuda", "the state copy");
}

}  // namespace ssm::kernels
