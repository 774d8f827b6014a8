// The Mamba block's other ops on CUDA, fp32: RMSNorm (plain and gated),
// SiLU, add, column copies, bias rows, column sums and the causal depthwise
// conv1d, forward and backward. The CPU versions (lib/cpu/layers.cpp,
// lib/cpu/conv1d.cpp) are the reference; the sums run in the same order
// where it is cheap to do so.
//
// Row norms: one warp per row, the row's groups one after another, each
// reduced with shuffles. Row kernels (copies, bias, conv): blocks of 32 x 8
// threads, a row per threadIdx.y and the columns across the warp, so a row's
// index arithmetic is done once per row and the accesses coalesce. Flat
// element-wise ops: one thread per element, grid-stride.
//
// Parameter gradients (sums over all rows) are two passes: a (column tile x
// row part) grid of fp32 partial sums, then one block per column sums the
// parts in fp64 in a fixed order and adds (+=) into the gradient. The row
// partition depends on the sizes only, so the bits are the same on every run.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ops.cuh"

namespace ssm::kernels {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;                  // warps (rows) per block of the norm kernels
constexpr int kThreads = 256;                     // flat element-wise kernels
constexpr int kRowLanes = 8;                      // rows per block of the row kernels (blockDim 32 x 8)
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // beyond this, grid-stride

unsigned flat_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}
unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>((rows + kRowLanes - 1) / kRowLanes, kMaxBlocks));
}
const dim3 kRowBlock(kWarp, kRowLanes);

#define SSM_FLAT_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)
// Rows per threadIdx.y; the caller loops its columns from threadIdx.x by kWarp.
#define SSM_ROW_STRIDE(r, rows) \
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < (rows); r += int64_t(gridDim.x) * kRowLanes)

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// expf(-z) overflows to inf for z < -88, which gives the right limit 0.
__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// Input of the normalisation: x, or x * silu(z) when gated.
__device__ __forceinline__ float norm_input(const float* x, const float* z, int64_t i) {
  const float xv = x[i];
  if (!z) return xv;
  const float zv = z[i];
  return xv * (zv * sigmoid(zv));
}

// ============================================================================
// column sums over rows, two passes
// ============================================================================
constexpr int kColTile = 32;  // columns per block: a warp reads 32 neighbours of one row
constexpr int kColTargetBlocks = 4096;
constexpr int64_t kMinRowsPerPart = 128;

struct RowParts {
  int64_t rows_per_part;
  int parts;
};

// Enough parts to fill the GPU with `tiles` column tiles, at least 128 rows each.
RowParts row_parts(int64_t R, int64_t tiles) {
  const int64_t max_parts = std::clamp<int64_t>(kColTargetBlocks / tiles, 64, 1024);
  RowParts p;
  p.rows_per_part = std::max<int64_t>(kMinRowsPerPart, (R + max_parts - 1) / max_parts);
  p.parts = static_cast<int>((R + p.rows_per_part - 1) / p.rows_per_part);  // <= max_parts
  return p;
}

// Sum of v over the block's kRowLanes rows of threads, for threadIdx.y == 0.
__device__ __forceinline__ float row_lanes_sum(float v, float (&lane_sums)[kRowLanes][kColTile]) {
  __syncthreads();  // lane_sums may still be read from the previous call
  lane_sums[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  float s = 0.0f;
  if (threadIdx.y == 0)
#pragma unroll
    for (int l = 0; l < kRowLanes; ++l) s += lane_sums[l][threadIdx.x];
  return s;
}

// partials[part, j] = sum over the part's rows of term(r, j).
template <typename Term>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    col_partial_kernel(float* partials,  // (parts, ncols)
                       Term term, int64_t R, int ncols, int64_t rows_per_part) {
  __shared__ float lane_sums[kRowLanes][kColTile];
  const int64_t j = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_part;
  const int64_t r1 = r0 + rows_per_part < R ? r0 + rows_per_part : R;
  float acc = 0.0f;
  if (j < ncols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) acc += term(r, static_cast<int>(j));
  const float s = row_lanes_sum(acc, lane_sums);
  if (threadIdx.y == 0 && j < ncols) partials[int64_t(blockIdx.y) * ncols + j] = s;
}

// One block per column: out(j, the parts summed in fp64 by a fixed tree).
template <typename Out>
__global__ void __launch_bounds__(kReduceThreads) col_finish_kernel(Out out, const float* partials,  // (parts, ncols)
                                                                    int parts, int ncols) {
  __shared__ double shared[kReduceThreads];
  const int j = static_cast<int>(blockIdx.x);
  double s = 0.0;
  for (int p = threadIdx.x; p < parts; p += kReduceThreads) s += partials[int64_t(p) * ncols + j];
  s = block_sum(s, shared);
  if (threadIdx.x == 0) out(j, s);
}

template <typename Out>
void col_finish(Out out, const float* partials, int parts, int ncols, cudaStream_t stream, const char* what) {
  col_finish_kernel<<<static_cast<unsigned>(ncols), kReduceThreads, 0, stream>>>(out, partials, parts, ncols);
  check_op_launch(what);
}

// out(j, sum_r term(r, j)) for j < ncols.
template <typename Term, typename Out>
void col_reduce(Term term, Out out, int64_t R, int ncols, cudaStream_t stream, const char* what) {
  const int64_t tiles = (ncols + kColTile - 1) / kColTile;
  const RowParts rp = row_parts(R, tiles);
  StreamScratch partials(sizeof(float) * static_cast<size_t>(rp.parts) * ncols, stream, what);
  col_partial_kernel<<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(rp.parts)), kRowBlock, 0, stream>>>(
      partials.as<float>(), term, R, ncols, rp.rows_per_part);
  check_op_launch(what);
  col_finish(out, partials.as<float>(), rp.parts, ncols, stream, what);
}

struct AddTo {
  float* out;  // (ncols)  +=
  __device__ void operator()(int j, double s) const { out[j] += static_cast<float>(s); }
};

struct ColumnOf {
  const float* m;  // (R, C)
  int C;
  __device__ float operator()(int64_t r, int c) const { return m[r * C + c]; }
};

// ============================================================================
// RMSNorm, plain and gated
// ============================================================================
__global__ void __launch_bounds__(kWarp* kRowsPerBlock)
    norm_forward_kernel(float* y, float* rstd, const float* x, const float* z, const float* weight, int R, int C, int G,
                        float eps) {
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= R) return;  // the whole warp leaves: the shuffles below stay full
  const int lane = static_cast<int>(threadIdx.x % kWarp), m = C / G;
  for (int g = 0; g < G; ++g) {
    const int64_t base = r * C + int64_t(g) * m;
    const float* w = weight + int64_t(g) * m;  // (m)
    float ss = 0.0f;
    for (int c = lane; c < m; c += kWarp) {
      const float v = norm_input(x, z, base + c);
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float rs = 1.0f / sqrtf(ss / static_cast<float>(m) + eps);
    if (lane == 0) rstd[r * G + g] = rs;
    for (int c = lane; c < m; c += kWarp) y[base + c] = norm_input(x, z, base + c) * rs * w[c];
  }
}

// dv = rs * w * dy - rs^3 * (sum_c w dy v) / m * v, then through the gate.
__global__ void __launch_bounds__(kWarp* kRowsPerBlock)
    norm_backward_kernel(float* dx, float* dz, const float* dy, const float* rstd, const float* x, const float* z,
                         const float* weight, int R, int C, int G) {
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= R) return;
  const int lane = static_cast<int>(threadIdx.x % kWarp), m = C / G;
  for (int g = 0; g < G; ++g) {
    const int64_t base = r * C + int64_t(g) * m;
    const float* w = weight + int64_t(g) * m;  // (m)
    const float rs = rstd[r * G + g];
    float dot = 0.0f;
    for (int c = lane; c < m; c += kWarp) dot += w[c] * dy[base + c] * norm_input(x, z, base + c);
    dot = warp_sum(dot);
    const float k = rs * rs * rs * dot / static_cast<float>(m);
    for (int c = lane; c < m; c += kWarp) {
      const int64_t i = base + c;
      const float dv = rs * w[c] * dy[i] - k * norm_input(x, z, i);
      if (!z) {
        dx[i] = dv;
      } else {
        const float zv = z[i], s = sigmoid(zv);
        dx[i] = dv * zv * s;
        dz[i] = dv * x[i] * s * (1.0f + zv * (1.0f - s));
      }
    }
  }
}

// dweight[c] = sum_r dy[r, c] * v[r, c] * rstd[r, c / m]
struct NormDweightTerm {
  const float* dy;    // (R, C)
  const float* x;     // (R, C)
  const float* z;     // (R, C) or null
  const float* rstd;  // (R, G)
  int C, G, m;        // m = C / G
  __device__ float operator()(int64_t r, int c) const {
    const int64_t i = r * C + c;
    return dy[i] * norm_input(x, z, i) * rstd[r * G + c / m];
  }
};

// ============================================================================
// element-wise, column copies, bias rows
// ============================================================================
__global__ void silu_forward_kernel(float* y, const float* x, int64_t n) {
  SSM_FLAT_STRIDE(i, n) {
    const float v = x[i];
    y[i] = v * sigmoid(v);
  }
}

__global__ void silu_backward_kernel(float* dx, const float* dy, const float* x, int64_t n) {
  SSM_FLAT_STRIDE(i, n) {
    const float v = x[i], s = sigmoid(v);
    dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
  }
}

__global__ void sigmoid_gate_forward_kernel(float* y, const float* x, const float* g, int64_t n) {
  SSM_FLAT_STRIDE(i, n) y[i] = x[i] * sigmoid(g[i]);
}

__global__ void sigmoid_gate_backward_kernel(float* dx, float* dg, const float* dy, const float* x, const float* g,
                                             int64_t n) {
  SSM_FLAT_STRIDE(i, n) {
    const float s = sigmoid(g[i]);
    if (dx) dx[i] = dy[i] * s;
    dg[i] = dy[i] * x[i] * s * (1.0f - s);
  }
}

__global__ void log_power_forward_kernel(float* y, const float* x, int64_t n, float eps) {
  SSM_FLAT_STRIDE(i, n) {
    const float a = x[2 * i], b = x[2 * i + 1];
    y[i] = logf(a * a + b * b + eps);
  }
}

__global__ void log_power_backward_kernel(float* dx, const float* dy, const float* x, int64_t n, float eps) {
  SSM_FLAT_STRIDE(i, n) {
    const float a = x[2 * i], b = x[2 * i + 1];
    const float g = 2.0f * dy[i] / (a * a + b * b + eps);
    dx[2 * i] = g * a;
    dx[2 * i + 1] = g * b;
  }
}

// Frame tau of batch b: x for tau >= 0, the tail (or zeros) before.
__device__ __forceinline__ float unfold_frame(const float* x, const float* tail, int b, int64_t tau, int c, int T,
                                              int C, int W) {
  if (tau >= 0) return x[(int64_t(b) * T + tau) * C + c];
  return tail ? tail[(int64_t(b) * (W - 1) + tau + W - 1) * C + c] : 0.0f;
}

__global__ void unfold_forward_kernel(float* y, const float* x, const float* tail, int B, int T, int C, int W) {
  const int64_t n = int64_t(B) * T * W * C;
  SSM_FLAT_STRIDE(i, n) {
    const int c = static_cast<int>(i % C);
    const int j = static_cast<int>((i / C) % W);
    const int64_t bt = i / (int64_t(C) * W);
    const int b = static_cast<int>(bt / T);
    const int64_t t = bt % T;
    y[i] = unfold_frame(x, tail, b, t - (W - 1 - j), c, T, C, W);
  }
}

__global__ void unfold_tail_kernel(float* next_tail, const float* x, const float* tail, int B, int T, int C, int W) {
  const int64_t n = int64_t(B) * (W - 1) * C;
  SSM_FLAT_STRIDE(i, n) {
    const int c = static_cast<int>(i % C);
    const int k = static_cast<int>((i / C) % (W - 1));
    const int b = static_cast<int>(i / (int64_t(C) * (W - 1)));
    next_tail[i] = unfold_frame(x, tail, b, int64_t(T) - (W - 1) + k, c, T, C, W);
  }
}

__global__ void unfold_backward_kernel(float* dx, const float* dy, int B, int T, int C, int W) {
  const int64_t n = int64_t(B) * T * C;
  SSM_FLAT_STRIDE(i, n) {
    const int c = static_cast<int>(i % C);
    const int64_t bt = i / C;
    const int64_t t = bt % T;
    float s = 0.0f;
    for (int j = 0; j < W; ++j) {
      const int64_t u = t + (W - 1 - j);
      if (u < T) s += dy[((bt - t + u) * W + j) * C + c];
    }
    dx[i] = s;
  }
}

__global__ void add_into_kernel(float* dst, const float* src, int64_t n) { SSM_FLAT_STRIDE(i, n) dst[i] += src[i]; }

__global__ void copy_cols_kernel(float* dst, int ld_dst, const float* src, int ld_src, int64_t R, int w) {
  SSM_ROW_STRIDE(r, R) {
    for (int c = threadIdx.x; c < w; c += kWarp) dst[r * ld_dst + c] = src[r * ld_src + c];
  }
}

__global__ void add_bias_rows_kernel(float* y, const float* bias, int64_t R, int O) {
  SSM_ROW_STRIDE(r, R) {
    for (int o = threadIdx.x; o < O; o += kWarp) y[r * O + o] += bias[o];
  }
}

// ============================================================================
// causal depthwise conv1d (ssm/conv1d.hpp): input row s of stream b lies in
// x when s >= 0, else in row s + K-1 of the tail
// ============================================================================
__global__ void conv1d_forward_kernel(float* y,             // (B, T, C)
                                      const float* x,       // (B, T, C)
                                      const float* weight,  // (C, K)
                                      const float* bias,    // (C) or null
                                      const float* tail,    // (B, K-1, C) or null
                                      int64_t rows, int T, int C, int K) {
  const int K1 = K - 1;
  SSM_ROW_STRIDE(row, rows) {  // row = b * T + t
    const int t = static_cast<int>(row % T);
    const int64_t b = row / T;
    for (int c = threadIdx.x; c < C; c += kWarp) {
      const float* w = weight + int64_t(c) * K;  // (K)
      float acc = bias ? bias[c] : 0.0f;
      for (int k = 0; k < K; ++k) {
        const int s = t - K1 + k;
        if (s >= 0)
          acc += w[k] * x[(row - K1 + k) * C + c];
        else if (tail)
          acc += w[k] * tail[(b * K1 + s + K1) * C + c];
      }
      y[row * C + c] = acc;
    }
  }
}

// One thread per (b, c) walks the K-1 tail rows in ascending order: when
// final_tail aliases tail, row j reads tail row T + j > j, not yet written.
__global__ void conv1d_final_tail_kernel(float* final_tail,  // (B, K-1, C)
                                         const float* x,     // (B, T, C)
                                         const float* tail,  // (B, K-1, C) or null
                                         int T, int C, int K1, int64_t n /* B * C */) {
  SSM_FLAT_STRIDE(i, n) {
    const int64_t b = i / C;
    const int c = static_cast<int>(i - b * C);
    for (int j = 0; j < K1; ++j) {
      const int s = T - K1 + j;
      float v = 0.0f;
      if (s >= 0)
        v = x[(b * T + s) * C + c];
      else if (tail)
        v = tail[(b * K1 + s + K1) * C + c];
      final_tail[(b * K1 + j) * C + c] = v;
    }
  }
}

// x[s] feeds y[s + K-1-k] through weight k; the last K-1 inputs also feed the final tail.
__global__ void conv1d_dx_kernel(float* dx,                 // (B, T, C)
                                 const float* dy,           // (B, T, C)
                                 const float* dfinal_tail,  // (B, K-1, C) or null
                                 const float* weight,       // (C, K)
                                 int64_t rows, int T, int C, int K) {
  const int K1 = K - 1;
  SSM_ROW_STRIDE(row, rows) {  // row = b * T + s
    const int s = static_cast<int>(row % T);
    const int64_t b = row / T;
    for (int c = threadIdx.x; c < C; c += kWarp) {
      const float* w = weight + int64_t(c) * K;  // (K)
      float acc = 0.0f;
      for (int k = 0; k < K; ++k)
        if (s + K1 - k < T) acc += w[k] * dy[(row + K1 - k) * C + c];
      if (dfinal_tail && s >= T - K1) acc += dfinal_tail[(b * K1 + s - (T - K1)) * C + c];
      dx[row * C + c] = acc;
    }
  }
}

// Tail row j is input s = j - (K-1); it feeds y[j - k] (when j - k < T) and,
// when T <= j, row j - T of the final tail.
__global__ void conv1d_dtail_kernel(float* dinitial_tail,      // (B, K-1, C)
                                    const float* dy,           // (B, T, C)
                                    const float* dfinal_tail,  // (B, K-1, C) or null
                                    const float* weight,       // (C, K)
                                    int64_t rows /* B * (K-1) */, int T, int C, int K) {
  const int K1 = K - 1;
  SSM_ROW_STRIDE(row, rows) {  // row = b * (K-1) + j
    const int j = static_cast<int>(row % K1);
    const int64_t b = row / K1;
    for (int c = threadIdx.x; c < C; c += kWarp) {
      const float* w = weight + int64_t(c) * K;  // (K)
      float acc = 0.0f;
      for (int k = 0; k <= j; ++k)
        if (j - k < T) acc += w[k] * dy[(b * T + j - k) * C + c];
      if (dfinal_tail && j >= T) acc += dfinal_tail[(b * K1 + j - T) * C + c];
      dinitial_tail[row * C + c] = acc;
    }
  }
}

// First pass of dweight / dbias: each thread holds the K (+1) sums of one
// channel over its rows of the part, so a row's dy is read once and its index
// arithmetic done once. partials (parts, K + with_bias, C) is the layout
// col_finish reads as columns j = k * C + c (k == K: the bias).
__global__ void __launch_bounds__(kColTile* kRowLanes)
    conv1d_param_partial_kernel(float* partials,    // (parts, K + with_bias, C)
                                const float* dy,    // (B, T, C)
                                const float* x,     // (B, T, C)
                                const float* tail,  // (B, K-1, C) or null
                                int64_t rows, int T, int C, int K, bool with_bias, int64_t rows_per_part) {
  __shared__ float lane_sums[kRowLanes][kColTile];
  const int K1 = K - 1, nk = K + (with_bias ? 1 : 0);
  const int c = static_cast<int>(blockIdx.x) * kColTile + static_cast<int>(threadIdx.x);
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_part;
  const int64_t r1 = r0 + rows_per_part < rows ? r0 + rows_per_part : rows;
  float acc[kConv1dMaxK + 1] = {};  // taps 0..K-1, then the bias at [kConv1dMaxK]
  if (c < C)
    for (int64_t row = r0 + threadIdx.y; row < r1; row += kRowLanes) {
      const int s = static_cast<int>(row % T);
      const int64_t b = row / T;
      const float g = dy[row * C + c];
#pragma unroll
      for (int k = 0; k < kConv1dMaxK; ++k) {
        if (k >= K) break;
        const int src = s - K1 + k;
        float in = 0.0f;
        if (src >= 0)
          in = x[(row - K1 + k) * C + c];
        else if (tail)
          in = tail[(b * K1 + src + K1) * C + c];
        acc[k] += g * in;
      }
      acc[kConv1dMaxK] += g;
    }
  // Fixed indices into acc (unrolled), so it stays in registers; the skips
  // depend on K and with_bias only, the same for the whole block.
  float* part = partials + int64_t(blockIdx.y) * nk * C;
#pragma unroll
  for (int k = 0; k <= kConv1dMaxK; ++k) {
    const bool is_bias = k == kConv1dMaxK;
    if (is_bias ? !with_bias : k >= K) continue;
    const float sum = row_lanes_sum(acc[k], lane_sums);
    if (threadIdx.y == 0 && c < C) part[int64_t(is_bias ? K : k) * C + c] = sum;
  }
}

struct ConvParamOut {
  float* dweight;  // (C, K)  +=
  float* dbias;    // (C)     +=, only reached when the reduction has K + 1 column blocks
  int C, K;
  __device__ void operator()(int j, double s) const {
    const int k = j / C, c = j - k * C;
    if (k < K)
      dweight[int64_t(c) * K + k] += static_cast<float>(s);
    else
      dbias[c] += static_cast<float>(s);
  }
};

}  // namespace

// ============================================================================
// host side
// ============================================================================
void norm_forward_launch(float* y, float* rstd, const float* x, const float* z, const float* weight, int R, int C,
                         int G, float eps, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((int64_t(R) + kRowsPerBlock - 1) / kRowsPerBlock);
  norm_forward_kernel<<<blocks, kWarp * kRowsPerBlock, 0, stream>>>(y, rstd, x, z, weight, R, C, G, eps);
  check_op_launch(z ? "gated rmsnorm forward" : "rmsnorm forward");
}

void norm_backward_launch(float* dx, float* dz, float* dweight, const float* dy, const float* rstd, const float* x,
                          const float* z, const float* weight, int R, int C, int G, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((int64_t(R) + kRowsPerBlock - 1) / kRowsPerBlock);
  norm_backward_kernel<<<blocks, kWarp * kRowsPerBlock, 0, stream>>>(dx, dz, dy, rstd, x, z, weight, R, C, G);
  check_op_launch(z ? "gated rmsnorm backward" : "rmsnorm backward");
  col_reduce(NormDweightTerm{dy, x, z, rstd, C, G, C / G}, AddTo{dweight}, R, C, stream,
             z ? "gated rmsnorm dweight" : "rmsnorm dweight");
}

void silu_forward_launch(float* y, const float* x, int64_t n, cudaStream_t stream) {
  silu_forward_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(y, x, n);
  check_op_launch("silu forward");
}

void silu_backward_launch(float* dx, const float* dy, const float* x, int64_t n, cudaStream_t stream) {
  silu_backward_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(dx, dy, x, n);
  check_op_launch("silu backward");
}

void sigmoid_gate_forward_launch(float* y, const float* x, const float* g, int64_t n, cudaStream_t stream) {
  sigmoid_gate_forward_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(y, x, g, n);
  check_op_launch("sigmoid gate forward");
}

void sigmoid_gate_backward_launch(float* dx, float* dg, const float* dy, const float* x, const float* g, int64_t n,
                                  cudaStream_t stream) {
  sigmoid_gate_backward_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(dx, dg, dy, x, g, n);
  check_op_launch("sigmoid gate backward");
}

void log_power_forward_launch(float* y, const float* x, int64_t n, float eps, cudaStream_t stream) {
  log_power_forward_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(y, x, n, eps);
  check_op_launch("log power forward");
}

void log_power_backward_launch(float* dx, const float* dy, const float* x, int64_t n, float eps,
                               cudaStream_t stream) {
  log_power_backward_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(dx, dy, x, n, eps);
  check_op_launch("log power backward");
}

void unfold_forward_launch(float* y, float* next_tail, const float* x, const float* tail, int B, int T, int C, int W,
                           cudaStream_t stream) {
  unfold_forward_kernel<<<flat_blocks(int64_t(B) * T * W * C), kThreads, 0, stream>>>(y, x, tail, B, T, C, W);
  check_op_launch("unfold forward");
  if (!next_tail || W == 1) return;
  unfold_tail_kernel<<<flat_blocks(int64_t(B) * (W - 1) * C), kThreads, 0, stream>>>(next_tail, x, tail, B, T, C, W);
  check_op_launch("unfold tail");
}

void unfold_backward_launch(float* dx, const float* dy, int B, int T, int C, int W, cudaStream_t stream) {
  unfold_backward_kernel<<<flat_blocks(int64_t(B) * T * C), kThreads, 0, stream>>>(dx, dy, B, T, C, W);
  check_op_launch("unfold backward");
}

void add_into_launch(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  add_into_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(dst, src, n);
  check_op_launch("add_into");
}

void copy_cols_launch(float* dst, int ld_dst, const float* src, int ld_src, int64_t R, int w, cudaStream_t stream) {
  copy_cols_kernel<<<row_blocks(R), kRowBlock, 0, stream>>>(dst, ld_dst, src, ld_src, R, w);
  check_op_launch("copy_cols");
}

void add_bias_rows_launch(float* y, const float* bias, int64_t R, int O, cudaStream_t stream) {
  add_bias_rows_kernel<<<row_blocks(R), kRowBlock, 0, stream>>>(y, bias, R, O);
  check_op_launch("bias rows");
}

void col_sum_add_launch(float* out, const float* m, int64_t R, int C, cudaStream_t stream) {
  col_reduce(ColumnOf{m, C}, AddTo{out}, R, C, stream, "column sums");
}

void conv1d_forward_launch(float* y, float* final_tail, const float* x, const float* weight, const float* bias,
                           const float* initial_tail, const Conv1dDims& d, cudaStream_t stream) {
  const int64_t rows = int64_t(d.B) * d.T;
  const float* tail = d.K > 1 ? initial_tail : nullptr;
  conv1d_forward_kernel<<<row_blocks(rows), kRowBlock, 0, stream>>>(y, x, weight, bias, tail, rows, d.T, d.C, d.K);
  check_op_launch("conv1d forward");
  // After y (stream order): final_tail may alias initial_tail.
  if (final_tail && d.K > 1) {
    const int64_t streams = int64_t(d.B) * d.C;
    conv1d_final_tail_kernel<<<flat_blocks(streams), kThreads, 0, stream>>>(final_tail, x, tail, d.T, d.C, d.K - 1,
                                                                            streams);
    check_op_launch("conv1d final tail");
  }
}

void conv1d_backward_launch(float* dx, float* dweight, float* dbias, float* dinitial_tail, const float* dy,
                            const float* dfinal_tail, const float* x, const float* weight, const float* initial_tail,
                            const Conv1dDims& d, cudaStream_t stream) {
  const int K1 = d.K - 1;
  const float* dfinal = K1 > 0 ? dfinal_tail : nullptr;
  const float* tail = K1 > 0 ? initial_tail : nullptr;
  const int64_t rows = int64_t(d.B) * d.T;
  conv1d_dx_kernel<<<row_blocks(rows), kRowBlock, 0, stream>>>(dx, dy, dfinal, weight, rows, d.T, d.C, d.K);
  check_op_launch("conv1d backward dx");
  if (dinitial_tail && K1 > 0) {
    const int64_t tail_rows = int64_t(d.B) * K1;
    conv1d_dtail_kernel<<<row_blocks(tail_rows), kRowBlock, 0, stream>>>(dinitial_tail, dy, dfinal, weight, tail_rows,
                                                                         d.T, d.C, d.K);
    check_op_launch("conv1d backward dinitial_tail");
  }
  const bool with_bias = dbias != nullptr;
  const int ncols = (d.K + (with_bias ? 1 : 0)) * d.C;  // the launcher checked that it fits
  const int64_t tiles = (d.C + kColTile - 1) / kColTile;
  const RowParts rp = row_parts(rows, tiles);
  const char* what = "conv1d backward dweight / dbias";
  StreamScratch partials(sizeof(float) * static_cast<size_t>(rp.parts) * ncols, stream, what);
  conv1d_param_partial_kernel<<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(rp.parts)), kRowBlock, 0,
                                stream>>>(partials.as<float>(), dy, x, tail, rows, d.T, d.C, d.K, with_bias,
                                          rp.rows_per_part);
  check_op_launch(what);
  col_finish(ConvParamOut{dweight, dbias, d.C, d.K}, partials.as<float>(), rp.parts, ncols, stream, what);
}

}  // namespace ssm::kernels
