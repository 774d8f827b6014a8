// The GPU side of ssm::Trainer (TrainerConfig::device == "cuda"): parameters,
// gradients and AdamW moments live on the device; a step uploads one batch,
// runs forward, the losses, backward, global-norm clipping and a fused AdamW
// there, and hands back the loss and gradient norm. Trainer keeps the host
// copies (the Model's parameters, the optimizer state) in step with it, so
// CPU and GPU checkpoints are the same files.
#pragma once
#include <cstdint>
#include <memory>

#include "ssm/trainer.hpp"

namespace ssm {

struct CudaStepResult {
  double loss = 0;
  double grad_norm = 0;  // before clipping; 0 when no update was asked for
};

class TrainStepCuda {
 public:
  // Throws ssm::Error when the build has no CUDA or no GPU answers.
  TrainStepCuda(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg);
  ~TrainStepCuda();
  TrainStepCuda(const TrainStepCuda&) = delete;
  TrainStepCuda& operator=(const TrainStepCuda&) = delete;

  // Host blocks of table.total() floats each.
  void upload(const float* params, const float* m, const float* v);
  // Any of them may be null (not wanted). Synchronises.
  void download(float* params, float* m, float* v);

  // in (B, T, in_channels), target (B, T, out_channels) on the host, target
  // already shifted for lookahead. With `update`: gradients, clipping, then
  // AdamW step `t` (>= 1) at learning rate `lr`; a non-finite loss or norm
  // leaves the parameters untouched (the caller reports it).
  CudaStepResult step(const float* in, const float* target, int B, int T, bool update, int64_t t, double lr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
