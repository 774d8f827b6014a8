// Training losses on CUDA (ssm/cuda_losses.hpp): L1, L2, SI-SDR and the
// multi-resolution STFT loss, fp32 signals in and out, everything between in
// fp64. The math is ssm/losses.hpp's; lib/cuda/losses.cpp runs the cuFFT
// transforms between these kernels.
//
// STFT loss, per resolution:
//   forward   stft_frames_kernel  windowed frames of pred and target   (2, B, F, n)
//             cuFFT D2Z, one batch of 2 B F frames                   -> (2, B, F, K)
//             stft_sums_kernel    the three sums of sc and mag, per block
//   backward  stft_grad_spectrum_kernel  dL/dS_pred                    (B, F, K)
//             cuFFT Z2D, one batch of B F frames                      -> (B, F, n)
//             stft_overlap_add_kernel   each sample gathers the frames covering it
// Reductions run on fixed grids and sum in a fixed order: no atomics, so every
// result is the same from run to run.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "losses.cuh"
#include "cuda_check.cuh"
#include "ssm/common.hpp"

namespace ssm::kernels {
namespace {

using i64 = long long;

constexpr int kThreads = 256;            // every launch here
constexpr i64 kMaxGridStride = 1 << 16;  // blocks of a grid-stride launch

void check_launch(const char* what) { cuda_check_launch("losses cuda", what); }

// Blocks for one thread per element, grid-strided past kMaxGridStride blocks.
unsigned grid_for(i64 n) {
  return static_cast<unsigned>(std::clamp<i64>((n + kThreads - 1) / kThreads, 1, kMaxGridStride));
}

__device__ __forceinline__ i64 first_index() { return static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_stride() { return static_cast<i64>(gridDim.x) * blockDim.x; }

__device__ __forceinline__ double sign_of(double x) { return double((x > 0) - (x < 0)); }

// Sums v over the block (blockDim.x == kThreads) with a fixed tree; the
// result is in thread 0. Ends with a barrier, so it may be called again.
template <int W>
__device__ __forceinline__ void block_sum(double (&v)[W]) {
  __shared__ double warp_sums[kThreads / 32][W];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int w = 0; w < W; ++w)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[w] += __shfl_xor_sync(0xffffffffu, v[w], o);
  if (lane == 0)
#pragma unroll
    for (int w = 0; w < W; ++w) warp_sums[warp][w] = v[w];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int w = 0; w < W; ++w) {
      v[w] = lane < kThreads / 32 ? warp_sums[lane][w] : 0.0;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v[w] += __shfl_xor_sync(0xffffffffu, v[w], o);
    }
  }
  __syncthreads();
}

// ============================================================================
// shared: the second stage of every whole-buffer reduction
// grid (rows), block kThreads
// ============================================================================
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(double* __restrict__ out, const double* __restrict__ partials, int width) {
  const double* row = partials + static_cast<i64>(blockIdx.x) * kLossPartials * width;
  for (int w = 0; w < width; ++w) {
    double v[1] = {0.0};
    for (int p = int(threadIdx.x); p < kLossPartials; p += kThreads) v[0] += row[p * width + w];
    block_sum(v);
    if (threadIdx.x == 0) out[blockIdx.x * width + w] = v[0];
  }
}

// ============================================================================
// L1 / L2
// ============================================================================
__global__ void __launch_bounds__(kThreads)
    pointwise_partials_kernel(double* __restrict__ partials, const float* __restrict__ pred,
                              const float* __restrict__ target, i64 n, bool l1) {
  double v[1] = {0.0};
  for (i64 i = first_index(); i < n; i += grid_stride()) {
    const double e = double(pred[i]) - double(target[i]);
    v[0] += l1 ? fabs(e) : e * e;
  }
  block_sum(v);
  if (threadIdx.x == 0) partials[blockIdx.x] = v[0];
}

__global__ void __launch_bounds__(kThreads)
    pointwise_backward_kernel(float* __restrict__ dpred, double scale, const float* __restrict__ pred,
                              const float* __restrict__ target, i64 n, bool l1) {
  for (i64 i = first_index(); i < n; i += grid_stride()) {
    const double e = double(pred[i]) - double(target[i]);
    dpred[i] = static_cast<float>(scale * (l1 ? sign_of(e) : 2 * e));
  }
}

// ============================================================================
// SI-SDR: each item is cut into C chunks of L samples, one block per
// (item, chunk); three passes of per-chunk sums (means, then <p, r> and
// <r, r>, then <e, e> and <e, r>), each pass first re-reducing the previous
// passes' chunk sums of its item in chunk order.
// grid (B * C), block kThreads
// ============================================================================
struct SiSdrGrid {
  int B, T, C, L;
  double eps;
  double* part;  // (3, B, C, 2)  chunk sums of the three passes
};

__device__ __forceinline__ double item_sum(const double* part, int b, int C, int w) {
  double s = 0;
  for (int c = 0; c < C; ++c) s += part[(static_cast<i64>(b) * C + c) * 2 + w];
  return s;
}

// The item's sums from the passes before `pass`, broadcast through shared memory.
struct SiSdrSoFar {
  double mean_p, mean_r, alpha;
};

__device__ SiSdrSoFar si_sdr_so_far(const SiSdrGrid& g, int b, int pass) {
  __shared__ SiSdrSoFar s;
  if (threadIdx.x == 0) {
    const i64 stride = static_cast<i64>(g.B) * g.C * 2;
    s.mean_p = pass > 0 ? item_sum(g.part, b, g.C, 0) / g.T : 0;
    s.mean_r = pass > 0 ? item_sum(g.part, b, g.C, 1) / g.T : 0;
    const double pr = pass > 1 ? item_sum(g.part + stride, b, g.C, 0) : 0;
    const double rr = pass > 1 ? item_sum(g.part + stride, b, g.C, 1) : 0;
    s.alpha = pass > 1 ? (pr + g.eps) / (rr + g.eps) : 0;
  }
  __syncthreads();
  return s;
}

__global__ void __launch_bounds__(kThreads)
    si_sdr_pass_kernel(SiSdrGrid g, const float* __restrict__ pred, const float* __restrict__ target, int pass) {
  const int b = blockIdx.x / g.C, c = blockIdx.x % g.C;
  const SiSdrSoFar so = si_sdr_so_far(g, b, pass);
  const i64 base = static_cast<i64>(b) * g.T;
  const int t0 = c * g.L, t1 = min(g.T, t0 + g.L);
  double v[2] = {0.0, 0.0};
  for (int t = t0 + int(threadIdx.x); t < t1; t += kThreads) {
    const double p = double(pred[base + t]) - so.mean_p, r = double(target[base + t]) - so.mean_r;
    if (pass == 0) {  // sums of pred and target
      v[0] += p;
      v[1] += r;
    } else if (pass == 1) {  // <p, r>, <r, r>
      v[0] += p * r;
      v[1] += r * r;
    } else {  // <e, e>, <e, r>; e summed directly: no cancellation when pred ~ target
      const double e = so.alpha * r - p;
      v[0] += e * e;
      v[1] += e * r;
    }
  }
  block_sum(v);
  if (threadIdx.x == 0) {
    double* out = g.part + static_cast<i64>(pass) * g.B * g.C * 2 + (static_cast<i64>(b) * g.C + c) * 2;
    out[0] = v[0];
    out[1] = v[1];
  }
}

// One thread per item: the stats row, and the two coefficients of the
// gradient  d si_sdr / dp = kr r + ke e  (see lib/train/losses.cpp).
// grid ceil(B / kThreads), block kThreads
__global__ void __launch_bounds__(kThreads) si_sdr_finish_kernel(double* __restrict__ stats, SiSdrGrid g) {
  const int b = blockIdx.x * kThreads + threadIdx.x;
  if (b >= g.B) return;
  const i64 stride = static_cast<i64>(g.B) * g.C * 2;
  const double mean_p = item_sum(g.part, b, g.C, 0) / g.T, mean_r = item_sum(g.part, b, g.C, 1) / g.T;
  const double pr = item_sum(g.part + stride, b, g.C, 0), rr = item_sum(g.part + stride, b, g.C, 1);
  const double ee = item_sum(g.part + 2 * stride, b, g.C, 0), er = item_sum(g.part + 2 * stride, b, g.C, 1);
  const double alpha = (pr + g.eps) / (rr + g.eps);
  const double num = alpha * alpha * rr + g.eps, den = ee + g.eps;
  const double k10 = 10 / 2.302585092994045684;  // 10 / ln 10
  const double c = rr + g.eps;
  double* s = stats + static_cast<i64>(b) * kSiSdrStats;
  s[kMeanP] = mean_p;
  s[kMeanR] = mean_r;
  s[kRR] = rr;
  s[kAlpha] = alpha;
  s[kER] = er;
  s[kNum] = num;
  s[kDen] = den;
  s[kValue] = 10 * log10(num / den);
  s[kKr] = k10 * (2 * alpha * rr / (c * num) - 2 * er / (c * den));
  s[kKe] = k10 * 2 / den;
}

// r and e have zero mean, so the gradient through pred's mean removal adds nothing.
__global__ void __launch_bounds__(kThreads)
    si_sdr_backward_kernel(float* __restrict__ dpred, const double* __restrict__ stats, const float* __restrict__ pred,
                           const float* __restrict__ target, int T, i64 n, double scale) {
  for (i64 i = first_index(); i < n; i += grid_stride()) {
    const double* s = stats + (i / T) * kSiSdrStats;
    const double p = double(pred[i]) - s[kMeanP], r = double(target[i]) - s[kMeanR];
    const double e = s[kAlpha] * r - p;
    dpred[i] = static_cast<float>(scale * (s[kKr] * r + s[kKe] * e));
  }
}

// ============================================================================
// STFT: framing. Row (s, b, f) of the frames is block s B F + b F + f.
// grid (2 B F), block min(kThreads, n rounded up to a warp)
// ============================================================================
__global__ void __launch_bounds__(kThreads)
    stft_frames_kernel(double* __restrict__ frames, const float* __restrict__ pred, const float* __restrict__ target,
                       const double* __restrict__ window, StftShape s) {
  const int row = blockIdx.x, items = s.B * s.F;
  const int which = row / items, b = (row - which * items) / s.F, f = row - which * items - b * s.F;
  const float* x = (which ? target : pred) + static_cast<i64>(b) * s.T;
  const int start = f * s.hop;  // < T: the last frame starts inside the signal
  double* out = frames + static_cast<i64>(row) * s.n;
  for (int j = int(threadIdx.x); j < s.n; j += int(blockDim.x))
    out[j] = j < s.T - start ? window[j] * double(x[start + j]) : 0.0;
}

__device__ __forceinline__ double magnitude(double2 z, double power_floor) {
  return sqrt(z.x * z.x + z.y * z.y + power_floor);
}

// grid kLossPartials, block kThreads
__global__ void __launch_bounds__(kThreads)
    stft_sums_kernel(double* __restrict__ partials, const double2* __restrict__ spec, i64 bins, double power_floor,
                     double log_eps) {
  double v[3] = {0.0, 0.0, 0.0};  // (|S_ref| - |S_pred|)^2, |S_ref|^2, |log ratio|
  for (i64 i = first_index(); i < bins; i += grid_stride()) {
    const double mp = magnitude(spec[i], power_floor), mr = magnitude(spec[bins + i], power_floor);
    const double diff = mr - mp;
    v[0] += diff * diff;
    v[1] += mr * mr;
    v[2] += fabs(log((mr + log_eps) / (mp + log_eps)));  // one log of the ratio, as the CPU
  }
  block_sum(v);
  if (threadIdx.x == 0)
    for (int w = 0; w < 3; ++w) partials[blockIdx.x * 3 + w] = v[w];
}

// dL/dS_pred = dL/d|S_pred| S_pred / |S_pred|. The unnormalised inverse real
// FFT counts bins 1 .. ceil(n/2)-1 twice (with their conjugates) where the
// adjoint of the one-sided DFT counts them once, hence the halves. The DC and
// Nyquist bins are real functions of the signal: their imaginary gradient is
// zero (the inverse ignores it; it is cleared so nothing depends on that).
__global__ void __launch_bounds__(kThreads)
    stft_grad_spectrum_kernel(double2* __restrict__ grad, const double2* __restrict__ spec, i64 bins, int n, int K,
                              double ka, double kq, double power_floor, double log_eps) {
  for (i64 i = first_index(); i < bins; i += grid_stride()) {
    const int k = static_cast<int>(i % K);
    const double2 p = spec[i];
    const double mp = magnitude(p, power_floor), mr = magnitude(spec[bins + i], power_floor);
    const double diff = mr - mp;
    // sign of the log ratio == sign(diff): log is increasing
    const double gm = ka * diff + kq * sign_of(diff) / (mp + log_eps);
    const bool real_bin = k == 0 || 2 * k == n;
    const double h = (real_bin ? gm : 0.5 * gm) / mp;
    grad[i] = make_double2(h * p.x, real_bin ? 0.0 : h * p.y);
  }
}

// acc_in and acc_out may be the same buffer (each element is read, then
// written, by its own thread), so neither is __restrict__.
// Frames f cover sample t when f hop <= t < f hop + n: from
// ceil((t - n + 1) / hop) (or 0) to min(F - 1, t / hop); at most ceil(n / hop).
__global__ void __launch_bounds__(kThreads)
    stft_overlap_add_kernel(double* acc_out, float* __restrict__ dpred, const double* acc_in,
                            const double* __restrict__ frames, const double* __restrict__ window, StftShape s) {
  const i64 total = static_cast<i64>(s.B) * s.T;
  for (i64 i = first_index(); i < total; i += grid_stride()) {
    const int b = static_cast<int>(i / s.T), t = static_cast<int>(i - static_cast<i64>(b) * s.T);
    const int f_lo = t < s.n ? 0 : (t - s.n) / s.hop + 1, f_hi = min(s.F - 1, t / s.hop);
    const double* fb = frames + static_cast<i64>(b) * s.F * s.n;
    double g = acc_in ? acc_in[i] : 0.0;
    for (int f = f_lo; f <= f_hi; ++f) {
      const int j = t - f * s.hop;
      g += window[j] * fb[static_cast<i64>(f) * s.n + j];
    }
    if (acc_out) acc_out[i] = g;
    if (dpred) dpred[i] = static_cast<float>(g);
  }
}

SiSdrGrid si_sdr_grid(double* scratch, int B, int T, double eps) {
  const int C = si_sdr_chunks(T);
  return SiSdrGrid{B, T, C, (T + C - 1) / C, eps, scratch};
}

void si_sdr_stats_enqueue(double* stats, const SiSdrGrid& g, const float* pred, const float* target,
                          cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(static_cast<i64>(g.B) * g.C);
  for (int pass = 0; pass < 3; ++pass) {
    si_sdr_pass_kernel<<<blocks, kThreads, 0, stream>>>(g, pred, target, pass);
    check_launch("si_sdr_pass_kernel");
  }
  si_sdr_finish_kernel<<<(g.B + kThreads - 1) / kThreads, kThreads, 0, stream>>>(stats, g);
  check_launch("si_sdr_finish_kernel");
}

}  // namespace

// ============================================================================
// host side
// ============================================================================
void loss_sum_partials_launch(double* out, const double* partials, int rows, int width, cudaStream_t stream) {
  sum_partials_kernel<<<rows, kThreads, 0, stream>>>(out, partials, width);
  check_launch("sum_partials_kernel");
}

void pointwise_loss_partials_launch(double* partials, const float* pred, const float* target, int64_t n, bool l1,
                                    cudaStream_t stream) {
  pointwise_partials_kernel<<<kLossPartials, kThreads, 0, stream>>>(partials, pred, target, n, l1);
  check_launch("pointwise_partials_kernel");
}

void pointwise_loss_backward_launch(float* dpred, double scale, const float* pred, const float* target, int64_t n,
                                    bool l1, cudaStream_t stream) {
  pointwise_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(dpred, scale, pred, target, n, l1);
  check_launch("pointwise_backward_kernel");
}

// Chunks of about 2048 samples, at most 64 per item: B = 32, T = 16000 gives 256 blocks.
int si_sdr_chunks(int T) { return static_cast<int>(std::clamp<i64>((static_cast<i64>(T) + 2047) / 2048, 1, 64)); }

int64_t si_sdr_scratch_doubles(int B, int T) { return 3LL * B * si_sdr_chunks(T) * 2; }

void si_sdr_stats_launch(double* stats, double* scratch, const float* pred, const float* target, int B, int T,
                         double eps, cudaStream_t stream) {
  si_sdr_stats_enqueue(stats, si_sdr_grid(scratch, B, T, eps), pred, target, stream);
}

void si_sdr_backward_launch(float* dpred, const double* stats, const float* pred, const float* target, int B, int T,
                            double dloss, cudaStream_t stream) {
  const i64 n = static_cast<i64>(B) * T;
  si_sdr_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(dpred, stats, pred, target, T, n, -dloss / B);
  check_launch("si_sdr_backward_kernel");
}

void stft_frames_launch(double* frames, const float* pred, const float* target, const double* window,
                        const StftShape& s, cudaStream_t stream) {
  const unsigned rows = static_cast<unsigned>(2LL * s.B * s.F);
  const int threads = std::min(kThreads, (s.n + 31) / 32 * 32);
  stft_frames_kernel<<<rows, threads, 0, stream>>>(frames, pred, target, window, s);
  check_launch("stft_frames_kernel");
}

void stft_sums_launch(double* partials, const double2* spec, const StftShape& s, double power_floor, double log_eps,
                      cudaStream_t stream) {
  const i64 bins = static_cast<i64>(s.B) * s.F * s.K;
  stft_sums_kernel<<<kLossPartials, kThreads, 0, stream>>>(partials, spec, bins, power_floor, log_eps);
  check_launch("stft_sums_kernel");
}

void stft_grad_spectrum_launch(double2* grad, const double2* spec, const StftShape& s, double ka, double kq,
                               double power_floor, double log_eps, cudaStream_t stream) {
  const i64 bins = static_cast<i64>(s.B) * s.F * s.K;
  stft_grad_spectrum_kernel<<<grid_for(bins), kThreads, 0, stream>>>(grad, spec, bins, s.n, s.K, ka, kq, power_floor,
                                                                     log_eps);
  check_launch("stft_grad_spectrum_kernel");
}

void stft_overlap_add_launch(double* acc_out, float* dpred, const double* acc_in, const double* frames,
                             const double* window, const StftShape& s, cudaStream_t stream) {
  const i64 n = static_cast<i64>(s.B) * s.T;
  stft_overlap_add_kernel<<<grid_for(n), kThreads, 0, stream>>>(acc_out, dpred, acc_in, frames, window, s);
  check_launch("stft_overlap_add_kernel");
}

}  // namespace ssm::kernels
