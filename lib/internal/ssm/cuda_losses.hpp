// Training losses on the GPU: the same functions as ssm/losses.hpp on device
// pointers, fp32 signals, fp64 reductions. forward returns the loss on the
// host (it synchronises `stream`); backward assigns (=) dpred.
#pragma once
#include <memory>

#include "ssm/losses.hpp"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace ssm {

double l1_loss_forward_cuda(const float* pred, const float* target, const LossDims& d, cudaStream_t stream = nullptr);
void l1_loss_backward_cuda(float* dpred, double dloss, const float* pred, const float* target, const LossDims& d,
                           cudaStream_t stream = nullptr);

double l2_loss_forward_cuda(const float* pred, const float* target, const LossDims& d, cudaStream_t stream = nullptr);
void l2_loss_backward_cuda(float* dpred, double dloss, const float* pred, const float* target, const LossDims& d,
                           cudaStream_t stream = nullptr);

double si_sdr_loss_forward_cuda(const float* pred, const float* target, const LossDims& d, double eps = 1e-8,
                                cudaStream_t stream = nullptr);
void si_sdr_loss_backward_cuda(float* dpred, double dloss, const float* pred, const float* target, const LossDims& d,
                               double eps = 1e-8, cudaStream_t stream = nullptr);

// Multi-resolution STFT loss with cuFFT. Plans and saved spectra are kept
// between calls and grow to the largest dims seen; one forward/backward pair
// at a time, as MultiResStftLoss. Calls on different streams are ordered
// after one another.
// Frames, FFTs and per-bin math run in fp64 (about 32 bytes saved per
// spectrum bin): the log-magnitude gradient is dominated by the bins of least
// |S|, whose phase an fp32 FFT gets wrong enough to move the whole gradient
// by up to 1e-2 relative at B = 32, T = 16000 (MultiResStftLoss<float>
// against <double> shows the same).
class MultiResStftLossCuda {
 public:
  explicit MultiResStftLossCuda(const StftLossConfig& c = {});
  ~MultiResStftLossCuda();
  MultiResStftLossCuda(const MultiResStftLossCuda&) = delete;
  MultiResStftLossCuda& operator=(const MultiResStftLossCuda&) = delete;

  const StftLossConfig& config() const;
  double forward(const float* pred,    // (B, T) device
                 const float* target,  // (B, T) device
                 const LossDims& d, cudaStream_t stream = nullptr);
  // Gradient of the last forward; throws ssm::Error when none ran or dims differ.
  void backward(float* dpred,  // (B, T) device  =
                double dloss, const LossDims& d, cudaStream_t stream = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
