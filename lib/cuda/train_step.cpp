// One training step on the GPU (ssm/cuda_train.hpp; TrainStepDevice of the
// CUDA module, lib/cuda/module.hpp): the same sequence as
// Trainer's CPU step (lib/train/trainer.cpp). The model is the one
// ModelGraph over the CUDA backend's ops (ssm/backend_ops.hpp), on that
// backend's stream; the losses and the update use the ops of ssm/cuda_*.hpp
// on the same stream.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "device_array.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_losses.hpp"
#include "ssm/backend_ops.hpp"
#include "ssm/model.hpp"
#include "ssm/cuda_ops.hpp"
#include "module.hpp"
#include "ssm/cuda_train.hpp"

namespace ssm {
namespace {

class TrainStepKernels final : public TrainStepDevice {
 public:
  TrainStepKernels(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg);
  void upload(const float* params, const float* m, const float* v) override;
  void download(float* params, float* m, float* v) override;
  CudaStepResult step(const float* in, const float* target, int B, int T, bool update, int64_t t,
                      double lr) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace

struct TrainStepKernels::Impl {
  ModelConfig mc;
  TrainerConfig cfg;
  AdamWConfig adam;
  size_t total;
  cudaStream_t stream = nullptr;  // the CUDA backend's (the default stream)
  std::unique_ptr<ModelGraph<float>> graph;
  std::unique_ptr<MultiResStftLossCuda> stft;
  DeviceArray<float> params, grads, m, v, decay_mult;  // (total)
  DeviceArray<float> in, target, out, dout, dtmp;      // (B, T, C)
  DeviceArray<double> norm_sq;                         // (1)

  Impl(const ModelConfig& model, const ParamTable& table, const TrainerConfig& c)
      : mc(model), cfg(c), adam{0.9, 0.999, 1e-8, c.weight_decay}, total(table.total()) {
    require(cuda_available(), "training on cuda: " + cuda_device_description() +
                                  " (to train on the CPU: --device cpu, or training.device \"cpu\")");
    std::string why;
    const ops::OpsTable<float>* backend = ops::cuda(&why);
    require(backend != nullptr, "training on cuda: " + why);
    graph = std::make_unique<ModelGraph<float>>(mc, table, *backend);
    if (cfg.stft_weight > 0) stft = std::make_unique<MultiResStftLossCuda>(StftLossConfig{});
    params.grow(total);
    grads.grow(total);
    m.grow(total);
    v.grow(total);
    const std::vector<float> mult = table.update_multipliers();  // (total)
    cuda_check(cudaMemcpy(decay_mult.grow(total), mult.data(), sizeof(float) * total, cudaMemcpyHostToDevice),
               "training on cuda: upload of the decay multipliers");
    norm_sq.grow(1);
  }
  ~Impl() { cudaStreamSynchronize(stream); }

  void copy_in(float* dst, const float* src, size_t n, const char* what) {
    cuda_check(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyHostToDevice, stream),
               std::string("training on cuda: upload of ") + what);
  }

  // Loss of out vs target as Trainer's CPU loss(); when `backward`, fills dout.
  double loss(int B, int T, bool backward) {
    const size_t n = static_cast<size_t>(B) * T * mc.out_channels;
    const LossDims d{B, T * mc.out_channels};
    double total_loss = 0;
    if (backward) cuda_check(cudaMemsetAsync(dout.data(), 0, sizeof(float) * n, stream), "training on cuda: memset");
    auto accumulate = [&] { add_into_cuda(dout.data(), dtmp.data(), static_cast<long>(n), stream); };
    const float* o = out.data();
    const float* t = target.data();
    if (cfg.l1_weight > 0) {
      total_loss += cfg.l1_weight * l1_loss_forward_cuda(o, t, d, stream);
      if (backward) l1_loss_backward_cuda(dtmp.data(), cfg.l1_weight, o, t, d, stream), accumulate();
    }
    if (cfg.l2_weight > 0) {
      total_loss += cfg.l2_weight * l2_loss_forward_cuda(o, t, d, stream);
      if (backward) l2_loss_backward_cuda(dtmp.data(), cfg.l2_weight, o, t, d, stream), accumulate();
    }
    if (cfg.stft_weight > 0) {
      total_loss += cfg.stft_weight * stft->forward(o, t, d, stream);
      if (backward) stft->backward(dtmp.data(), cfg.stft_weight, d, stream), accumulate();
    }
    if (cfg.sisdr_weight > 0) {
      total_loss += cfg.sisdr_weight * si_sdr_loss_forward_cuda(o, t, d, 1e-8, stream);
      if (backward) si_sdr_loss_backward_cuda(dtmp.data(), cfg.sisdr_weight, o, t, d, 1e-8, stream), accumulate();
    }
    return total_loss;
  }
};

TrainStepKernels::TrainStepKernels(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg)
    : impl_(std::make_unique<Impl>(model, table, cfg)) {}

TrainStepDevice* make_train_step_device(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg) {
  return new TrainStepKernels(model, table, cfg);
}

void TrainStepKernels::upload(const float* params, const float* m, const float* v) {
  Impl& s = *impl_;
  s.copy_in(s.params.data(), params, s.total, "the parameters");
  s.copy_in(s.m.data(), m, s.total, "the AdamW first moments");
  s.copy_in(s.v.data(), v, s.total, "the AdamW second moments");
  cuda_check(cudaStreamSynchronize(s.stream), "training on cuda: upload");
}

void TrainStepKernels::download(float* params, float* m, float* v) {
  Impl& s = *impl_;
  const size_t bytes = sizeof(float) * s.total;
  if (params)
    cuda_check(cudaMemcpyAsync(params, s.params.data(), bytes, cudaMemcpyDeviceToHost, s.stream), "download");
  if (m) cuda_check(cudaMemcpyAsync(m, s.m.data(), bytes, cudaMemcpyDeviceToHost, s.stream), "download");
  if (v) cuda_check(cudaMemcpyAsync(v, s.v.data(), bytes, cudaMemcpyDeviceToHost, s.stream), "download");
  cuda_check(cudaStreamSynchronize(s.stream), "training on cuda: download");
}

CudaStepResult TrainStepKernels::step(const float* in, const float* target, int B, int T, bool update, int64_t t,
                                      double lr) {
  Impl& s = *impl_;
  const size_t n_in = static_cast<size_t>(B) * T * s.mc.in_channels;
  const size_t n_out = static_cast<size_t>(B) * T * s.mc.out_channels;
  s.copy_in(s.in.grow(n_in), in, n_in, "the input batch");
  s.copy_in(s.target.grow(n_out), target, n_out, "the target batch");
  s.out.grow(n_out);
  s.dout.grow(n_out);
  s.dtmp.grow(n_out);
  s.graph->forward(s.out.data(), s.in.data(), s.params.data(), B, T);
  CudaStepResult r;
  r.loss = s.loss(B, T, update);
  if (!update || !std::isfinite(r.loss)) return r;
  cuda_check(cudaMemsetAsync(s.grads.data(), 0, sizeof(float) * s.total, s.stream), "training on cuda: memset");
  s.graph->backward(s.grads.data(), nullptr, s.dout.data(), s.params.data());
  sum_squares_cuda(s.norm_sq.data(), s.grads.data(), s.total, s.stream);
  double sq = 0;
  cuda_check(cudaMemcpyAsync(&sq, s.norm_sq.data(), sizeof(double), cudaMemcpyDeviceToHost, s.stream),
             "training on cuda: gradient norm");
  cuda_check(cudaStreamSynchronize(s.stream), "training on cuda: step");
  r.grad_norm = std::sqrt(sq);
  if (!std::isfinite(r.grad_norm)) return r;
  // As clip_grad_norm: scale by max_norm / (norm + 1e-6) only above the limit.
  float scale = 1.0f;
  if (s.cfg.clip > 0 && r.grad_norm > s.cfg.clip) scale = static_cast<float>(s.cfg.clip / (r.grad_norm + 1e-6));
  adamw_update_cuda(s.params.data(), s.m.data(), s.v.data(), s.grads.data(), s.decay_mult.data(), s.total, t, lr,
                    s.adam, scale, s.stream);
  cuda_check(cudaGetLastError(), "training on cuda: AdamW");
  return r;
}

}  // namespace ssm
