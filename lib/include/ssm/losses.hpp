// Training losses on (B, T) signals: L1, L2, SI-SDR and the multi-resolution
// STFT loss. Forward returns the loss (accumulated in double); backward
// assigns (=) dpred = dloss * dL/dpred, where dloss is the upstream gradient
// of the scalar loss. Targets get no gradient.
#pragma once
#include <complex>
#include <vector>

#include "ssm/common.hpp"

namespace ssm {

struct LossDims {
  int B;  // batch
  int T;  // samples per item
};

// Throws ssm::Error naming the field unless B >= 1 and T >= 1.
void loss_check_dims(const LossDims& d);

// L1 = mean over B*T of |pred - target|. Its gradient at pred == target is 0.
template <typename Real>
double l1_loss_forward(const Real* pred,    // (B, T)
                       const Real* target,  // (B, T)
                       const LossDims& d);

template <typename Real>
void l1_loss_backward(Real* dpred,         // (B, T)  =
                      double dloss,
                      const Real* pred,    // (B, T)
                      const Real* target,  // (B, T)
                      const LossDims& d);

// L2 = mean over B*T of (pred - target)^2.
template <typename Real>
double l2_loss_forward(const Real* pred,    // (B, T)
                       const Real* target,  // (B, T)
                       const LossDims& d);

template <typename Real>
void l2_loss_backward(Real* dpred,         // (B, T)  =
                      double dloss,
                      const Real* pred,    // (B, T)
                      const Real* target,  // (B, T)
                      const LossDims& d);

// Laplace negative log-likelihood of a probabilistic forecast: pred holds
// pairs (mu, log b), target pairs (y, unused);
// NLL = mean over B*T of |y - mu| / b + log b + log 2.
template <typename Real>
double laplace_nll_forward(const Real* pred,    // (B, T, 2) mu, log b
                           const Real* target,  // (B, T, 2) y, unused
                           const LossDims& d);

template <typename Real>
void laplace_nll_backward(Real* dpred,         // (B, T, 2)  =  (the unused channel's target gets nothing)
                          double dloss,
                          const Real* pred,    // (B, T, 2)
                          const Real* target,  // (B, T, 2)
                          const LossDims& d);

// Scale-invariant SDR in dB per item, zero-mean version (Le Roux et al.,
// "SDR - half-baked or well done?", 2019), with eps placed as in
// torchmetrics:
//   p = pred - mean(pred),  r = target - mean(target)
//   alpha = (<p, r> + eps) / (<r, r> + eps)
//   si_sdr = 10 log10((|alpha r|^2 + eps) / (|alpha r - p|^2 + eps))
template <typename Real>
void si_sdr(double* out,         // (B)  dB
            const Real* pred,    // (B, T)
            const Real* target,  // (B, T)
            const LossDims& d, double eps = 1e-8);

// Loss = -mean over the batch of si_sdr (lower is better).
template <typename Real>
double si_sdr_loss_forward(const Real* pred,    // (B, T)
                           const Real* target,  // (B, T)
                           const LossDims& d, double eps = 1e-8);

template <typename Real>
void si_sdr_loss_backward(Real* dpred,         // (B, T)  =
                          double dloss,
                          const Real* pred,    // (B, T)
                          const Real* target,  // (B, T)
                          const LossDims& d, double eps = 1e-8);

// Multi-resolution STFT loss (Yamamoto et al., Parallel WaveGAN, 2020),
// summed over resolutions. Per resolution (n = fft size, h = hop):
//   frames start at 0, h apart, are n long and not centred; the signal is
//   zero-padded at the end so every sample is in a frame:
//     F = 1 if T <= n, else 1 + ceil((T - n) / h)
//   S[b, f, k] = sum_j w[j] x[b, f h + j] exp(-2 pi i k j / n),  k < n/2 + 1,
//   w the periodic Hann window 0.5 - 0.5 cos(2 pi j / n);
//   |S| = sqrt(re^2 + im^2 + power_floor)   (finite gradient at S = 0)
//   sc  = ||S_ref| - |S_pred||_F / ||S_ref||_F      Frobenius over (B, F, K)
//   mag = mean over (B, F, K) of |log(|S_ref| + log_eps) - log(|S_pred| + log_eps)|
//   loss += sc + mag
// The gradient of sc where |S_ref| == |S_pred| everywhere, and of |.| at 0,
// is taken as 0.
struct StftLossConfig {
  std::vector<int> fft_sizes{256, 512, 1024};
  std::vector<int> hops{64, 128, 256};
  double power_floor = 1e-8;
  double log_eps = 1e-7;
};

// Throws ssm::Error naming the field unless fft_sizes and hops are non-empty
// and of equal length, 2 <= fft_sizes[i], 1 <= hops[i] <= fft_sizes[i],
// power_floor > 0 and log_eps >= 0.
void stft_loss_check_config(const StftLossConfig& c);

// Frames F of a T-sample signal at fft size n and hop h (see above).
int stft_frames(int T, int n, int hop);

// Plain-loop reference: direct DFT, double accumulation. O(B F n^2) per
// resolution; for tests on small shapes.
template <typename Real>
double mrstft_loss_reference_forward(const Real* pred,    // (B, T)
                                     const Real* target,  // (B, T)
                                     const LossDims& d, const StftLossConfig& c);

template <typename Real>
void mrstft_loss_reference_backward(Real* dpred,         // (B, T)  =
                                    double dloss,
                                    const Real* pred,    // (B, T)
                                    const Real* target,  // (B, T)
                                    const LossDims& d, const StftLossConfig& c);

// The fast version: FFTs (ssm/fft.hpp), OpenMP over batch items. forward
// keeps what backward needs (about 16 bytes per spectrum bin of every
// resolution), so one object serves one forward/backward pair at a time.
template <typename Real>
class MultiResStftLoss {
 public:
  explicit MultiResStftLoss(const StftLossConfig& c = {});

  const StftLossConfig& config() const { return config_; }

  double forward(const Real* pred,    // (B, T)
                 const Real* target,  // (B, T)
                 const LossDims& d);

  // Gradient of the last forward. Throws ssm::Error when no forward ran or
  // it ran with other dims.
  void backward(Real* dpred,  // (B, T)  =
                double dloss, const LossDims& d);

 private:
  struct Saved {
    int n = 0, hop = 0, F = 0, K = 0;
    std::vector<Real> window;            // (n)  periodic Hann
    double sc_num = 0;                   // ||S_ref| - |S_pred||_F
    double sc_den = 0;                   // ||S_ref||_F
    std::vector<std::complex<Real>> u;   // (B, F, K)  S_pred / |S_pred|
    std::vector<Real> diff;              // (B, F, K)  |S_ref| - |S_pred|
    std::vector<Real> q;                 // (B, F, K)  sign(log ratio) / (|S_pred| + log_eps)
  };
  StftLossConfig config_;
  std::vector<Saved> saved_;  // one per resolution
  LossDims dims_{0, 0};       // of the last forward; B == 0 before any
};

}  // namespace ssm
