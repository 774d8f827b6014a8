// One training step on the GPU (ssm/cuda_train.hpp; TrainStepDevice of the
// CUDA module, lib/cuda/module.hpp): the same sequence as
// Trainer's CPU step (lib/train/trainer.cpp). The model is the one
// ModelGraph over the CUDA backend's ops (ssm/backend_ops.hpp), on that
// backend's stream; the losses and the update use the ops of ssm/cuda_*.hpp
// on the same stream.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <memory>
#include <thread>
#include <vector>

#include "device_array.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_losses.hpp"
#include "ssm/backend_ops.hpp"
#include "ssm/model.hpp"
#include "ssm/cuda_ops.hpp"
#include "module.hpp"
#include "nccl.hpp"
#include "ssm/cuda_train.hpp"

namespace ssm {
namespace {

// One GPU's step. In a data-parallel group (TrainerConfig::gpus > 1) it is
// rank `rank` on GPU `device`: the gradients are summed over the group
// before the norm and the update, which then average them, so every rank
// makes the same update.
class TrainStepKernels final : public TrainStepDevice {
 public:
  TrainStepKernels(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg, int device,
                   const NcclGroup* group = nullptr, int rank = 0);
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
  int device;
  const NcclGroup* group;  // null: one GPU
  int rank;
  cudaStream_t stream = nullptr;  // the CUDA backend's (the default stream)
  std::unique_ptr<ModelGraph<float>> graph;
  std::unique_ptr<MultiResStftLossCuda> stft;
  DeviceArray<float> params, grads, m, v, decay_mult;  // (total)
  DeviceArray<float> in, target, out, dout, dtmp;      // (B, T, C)
  DeviceArray<double> norm_sq;                         // (1)

  Impl(const ModelConfig& model, const ParamTable& table, const TrainerConfig& c, int dev, const NcclGroup* g, int r)
      : mc(model), cfg(c), adam{0.9, 0.999, 1e-8, c.weight_decay}, total(table.total()), device(dev), group(g),
        rank(r) {
    require(cuda_available(), "training on cuda: " + cuda_device_description() +
                                  " (to train on the CPU: --device cpu, or training.device \"cpu\")");
    cuda_check(cudaSetDevice(device), "training on cuda: select the GPU");  // the backend's table is per GPU
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
  ~Impl() {
    cudaSetDevice(device);
    cudaStreamSynchronize(stream);
  }

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

TrainStepKernels::TrainStepKernels(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg,
                                   int device, const NcclGroup* group, int rank)
    : impl_(std::make_unique<Impl>(model, table, cfg, device, group, rank)) {}

namespace {

// TrainerConfig::gpus > 1: one TrainStepKernels per GPU, each in its own
// thread for the step, each taking batch / gpus consecutive rows of the
// global batch; NCCL sums the gradients between the backward and the update.
class DataParallelStep final : public TrainStepDevice {
 public:
  DataParallelStep(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg) : mc_(model) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      count = 0;
    }
    require(cfg.gpus <= count, "training config: 'gpus' is " + std::to_string(cfg.gpus) + " but this machine has " +
                                   std::to_string(count) + " GPU(s) (" + cuda_device_description() + ")");
    std::vector<int> devices(cfg.gpus);
    for (int r = 0; r < cfg.gpus; ++r) devices[r] = r;
    group_ = std::make_unique<NcclGroup>(devices);
    for (int r = 0; r < cfg.gpus; ++r)
      ranks_.push_back(std::make_unique<TrainStepKernels>(model, table, cfg, devices[r], group_.get(), r));
  }
  void upload(const float* params, const float* m, const float* v) override {
    for (auto& r : ranks_) r->upload(params, m, v);
  }
  void download(float* params, float* m, float* v) override { ranks_[0]->download(params, m, v); }  // all alike
  CudaStepResult step(const float* in, const float* target, int B, int T, bool update, int64_t t,
                      double lr) override {
    const int N = static_cast<int>(ranks_.size());
    require(B % N == 0, "training on " + std::to_string(N) + " GPUs: the batch of " + std::to_string(B) +
                            " does not split evenly");
    const int per = B / N;
    const size_t in_rows = static_cast<size_t>(per) * T * mc_.in_channels;
    const size_t out_rows = static_cast<size_t>(per) * T * mc_.out_channels;
    std::vector<CudaStepResult> got(N);
    std::vector<std::exception_ptr> errors(N);
    std::vector<std::thread> threads;
    for (int r = 0; r < N; ++r)
      threads.emplace_back([&, r] {
        try {
          got[r] = ranks_[r]->step(in + r * in_rows, target + r * out_rows, per, T, update, t, lr);
        } catch (...) {
          errors[r] = std::current_exception();
        }
      });
    for (auto& th : threads) th.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    // Each rank's loss is its rows' mean; the global batch's is their mean.
    // The norm is of the averaged gradient, the same on every rank.
    CudaStepResult r;
    for (const auto& g : got) r.loss += g.loss / N;
    r.grad_norm = got[0].grad_norm;
    return r;
  }

 private:
  ModelConfig mc_;
  std::unique_ptr<NcclGroup> group_;  // destroyed after the ranks
  std::vector<std::unique_ptr<TrainStepKernels>> ranks_;
};

}  // namespace

TrainStepDevice* make_train_step_device(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg) {
  if (cfg.gpus > 1) return new DataParallelStep(model, table, cfg);
  int device = 0;
  cuda_check(cudaGetDevice(&device), "training on cuda: the current GPU");
  return new TrainStepKernels(model, table, cfg, device);
}

void TrainStepKernels::upload(const float* params, const float* m, const float* v) {
  Impl& s = *impl_;
  cuda_check(cudaSetDevice(s.device), "training on cuda: select the GPU");
  s.copy_in(s.params.data(), params, s.total, "the parameters");
  s.copy_in(s.m.data(), m, s.total, "the AdamW first moments");
  s.copy_in(s.v.data(), v, s.total, "the AdamW second moments");
  cuda_check(cudaStreamSynchronize(s.stream), "training on cuda: upload");
}

void TrainStepKernels::download(float* params, float* m, float* v) {
  Impl& s = *impl_;
  cuda_check(cudaSetDevice(s.device), "training on cuda: select the GPU");
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
  cuda_check(cudaSetDevice(s.device), "training on cuda: select the GPU");  // this thread's, in a group
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
  // In a group every rank must reach the all-reduce: a non-finite loss there
  // makes the summed gradient's norm non-finite, and every rank skips the update.
  if (!update || (!s.group && !std::isfinite(r.loss))) return r;
  cuda_check(cudaMemsetAsync(s.grads.data(), 0, sizeof(float) * s.total, s.stream), "training on cuda: memset");
  s.graph->backward(s.grads.data(), nullptr, s.dout.data(), s.params.data());
  const int ranks = s.group ? s.group->ranks() : 1;
  if (s.group) s.group->all_reduce_sum(s.rank, s.grads.data(), s.total, s.stream);
  sum_squares_cuda(s.norm_sq.data(), s.grads.data(), s.total, s.stream);
  double sq = 0;
  cuda_check(cudaMemcpyAsync(&sq, s.norm_sq.data(), sizeof(double), cudaMemcpyDeviceToHost, s.stream),
             "training on cuda: gradient norm");
  cuda_check(cudaStreamSynchronize(s.stream), "training on cuda: step");
  r.grad_norm = std::sqrt(sq) / ranks;  // of the mean gradient
  if (!std::isfinite(r.grad_norm)) return r;
  // As clip_grad_norm: scale by max_norm / (norm + 1e-6) only above the limit;
  // and the summed gradients by 1 / ranks, to their mean.
  double scale = 1.0 / ranks;
  if (s.cfg.clip > 0 && r.grad_norm > s.cfg.clip) scale *= s.cfg.clip / (r.grad_norm + 1e-6);
  adamw_update_cuda(s.params.data(), s.m.data(), s.v.data(), s.grads.data(), s.decay_mult.data(), s.total, t, lr,
                    s.adam, static_cast<float>(scale), s.stream);
  cuda_check(cudaGetLastError(), "training on cuda: AdamW");
  return r;
}

}  // namespace ssm
