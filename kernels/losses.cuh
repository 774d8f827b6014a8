// Host-side entry points of the training-loss kernels in kernels/losses.cu.
// Called only by lib/cuda/losses.cpp, which checks the arguments, owns the
// buffers and the cuFFT plans; the public API is ssm/cuda_losses.hpp.
//
// Every reduction runs on a fixed grid and sums in a fixed order, so results
// are bitwise reproducible (no atomics anywhere).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace ssm::kernels {

// Blocks of every reducing launch over a whole buffer; each writes one partial.
constexpr int kLossPartials = 512;

// out[r, w] = sum over p of partials[r, p, w], in a fixed order.
void loss_sum_partials_launch(double* out,             // (rows, width)
                              const double* partials,  // (rows, kLossPartials, width)
                              int rows, int width, cudaStream_t stream);

// ---- L1 / L2 ------------------------------------------------------------------
// partials[p] = sum over this block's share of |pred - target| (l1) or
// (pred - target)^2, the difference taken in double.
void pointwise_loss_partials_launch(double* partials,  // (kLossPartials)
                                    const float* pred, const float* target, int64_t n, bool l1, cudaStream_t stream);
// dpred = scale * sign(pred - target) (l1) or scale * 2 (pred - target).
void pointwise_loss_backward_launch(float* dpred, double scale, const float* pred, const float* target, int64_t n,
                                    bool l1, cudaStream_t stream);

// ---- SI-SDR -------------------------------------------------------------------
// Per-item sums of ssm/losses.hpp's si_sdr, one row of kSiSdrStats per item:
// the means, <r, r>, alpha, <e, r>, |alpha r|^2 + eps, |e|^2 + eps, the value
// in dB, and the gradient d si_sdr / dp = kr r + ke e.
enum SiSdrStat { kMeanP, kMeanR, kRR, kAlpha, kER, kNum, kDen, kValue, kKr, kKe, kSiSdrStats };

// Blocks per item (each takes a contiguous chunk of the T samples).
int si_sdr_chunks(int T);
// Doubles of scratch si_sdr_stats_launch needs.
int64_t si_sdr_scratch_doubles(int B, int T);
// stats[b, :] for every item; value in dB.
void si_sdr_stats_launch(double* stats,        // (B, kSiSdrStats)
                         double* scratch,      // (si_sdr_scratch_doubles)
                         const float* pred,    // (B, T)
                         const float* target,  // (B, T)
                         int B, int T, double eps, cudaStream_t stream);
// dpred = -(dloss / B) d si_sdr / dpred, from the stats of the same inputs.
void si_sdr_backward_launch(float* dpred,         // (B, T)  =
                            const double* stats,  // (B, kSiSdrStats)
                            const float* pred,    // (B, T)
                            const float* target,  // (B, T)
                            int B, int T, double dloss, cudaStream_t stream);

// ---- multi-resolution STFT ----------------------------------------------------
// One resolution of ssm/losses.hpp's StftLossConfig at given dims.
struct StftShape {
  int B, T;  // signals (B, T)
  int n;     // fft size
  int hop;
  int F;  // frames per item
  int K;  // bins per frame, n / 2 + 1
};

// Windowed frames of pred (s = 0) and target (s = 1), zero past the end.
void stft_frames_launch(double* frames,        // (2, B, F, n)
                        const float* pred,     // (B, T)
                        const float* target,   // (B, T)
                        const double* window,  // (n)  periodic Hann
                        const StftShape& s, cudaStream_t stream);

// Per block: sum of (|S_ref| - |S_pred|)^2, of |S_ref|^2 and of
// |log((|S_ref| + log_eps) / (|S_pred| + log_eps))|.
void stft_sums_launch(double* partials,     // (kLossPartials, 3)
                      const double2* spec,  // (2, B, F, K)  pred then target
                      const StftShape& s, double power_floor, double log_eps, cudaStream_t stream);

// Gradient of the loss wrt the one-sided spectrum of pred, with
// dL/d|S_pred| = ka (|S_ref| - |S_pred|) + kq sign(|S_ref| - |S_pred|) / (|S_pred| + log_eps),
// scaled for the unnormalised inverse real FFT (bins it counts twice are halved).
void stft_grad_spectrum_launch(double2* grad,        // (B, F, K)
                               const double2* spec,  // (2, B, F, K)
                               const StftShape& s, double ka, double kq, double power_floor, double log_eps,
                               cudaStream_t stream);

// Overlap-add of windowed gradient frames, one thread per sample summing the
// frames that cover it:  g[b, t] = acc_in[b, t] + sum_f w[t - f hop] frames[b, f, t - f hop].
// acc_in null: no prior sum. Writes acc_out (if not null) and dpred (if not null).
void stft_overlap_add_launch(double* acc_out,       // (B, T) or null
                             float* dpred,          // (B, T) or null
                             const double* acc_in,  // (B, T) or null
                             const double* frames,  // (B, F, n)
                             const double* window,  // (n)
                             const StftShape& s, cudaStream_t stream);

}  // namespace ssm::kernels
