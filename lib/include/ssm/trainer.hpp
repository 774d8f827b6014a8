// Training a model on the CPU or the GPU: batches from a BatchSource, the combined loss
// (sample L1 / L2, multi-resolution STFT, SI-SDR), AdamW with clipping and a
// warm-up + cosine schedule, and checkpoints that resume bit-identically.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "ssm/losses.hpp"
#include "ssm/model.hpp"
#include "ssm/optim.hpp"

namespace ssm {

struct TrainerConfig {
  int64_t steps = 1000;     // total optimisation steps (the schedule's length)
  int batch = 8;            // B
  int segment = 16000;      // T, samples per item
  double lr = 2e-3;         // peak learning rate
  double min_lr = 2e-5;     // floor of the cosine decay
  int64_t warmup = 100;     // linear warm-up steps
  double weight_decay = 0.01;
  double clip = 1.0;        // max global gradient norm (0 = no clipping)
  double l1_weight = 1.0;   // loss = l1_weight * L1 + l2_weight * L2 + stft_weight * MR-STFT + sisdr_weight * -SI-SDR
  double l2_weight = 0.0;
  double stft_weight = 1.0;
  double sisdr_weight = 0.0;
  double nll_weight = 0.0;  // Laplace NLL of a 2-channel (mu, log b) output (laplace_nll_forward); CPU only
  uint64_t seed = 0;        // model init and data order
  int threads = 0;          // OpenMP threads (0 = all cores)
  std::string device = "cpu";  // "cpu" or "cuda" (the step on the GPU, ssm/cuda_train.hpp)
  // GPUs that share each step (device "cuda"), data-parallel: every GPU
  // takes `batch` items of a global batch of gpus * batch, and the gradients
  // are averaged over them (NCCL) before the one update all apply alike.
  int gpus = 1;
  int global_batch() const { return batch * gpus; }
  // Weights (.safetensors) to start from instead of the seeded initialisation,
  // e.g. to continue a finished run with a new schedule; "" = none.
  std::string init;

  // Throws ssm::Error naming the field.
  void validate() const;
};

// (input, target) batches. Deterministic in (seed, step): a resumed run draws
// exactly the batches an uninterrupted one would.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual void batch(float* in,      // (B, T, in_channels)
                     float* target,  // (B, T, out_channels)
                     int B, int T, uint64_t seed, int64_t step) = 0;
};

struct StepStats {
  int64_t step = 0;  // steps taken, this one included
  double loss = 0;
  double grad_norm = 0;  // before clipping
  double lr = 0;
};

class Trainer {
 public:
  Trainer(Model& model, const TrainerConfig& cfg);
  ~Trainer();

  // One optimisation step on the next batch of `source`. A non-finite loss
  // or gradient norm skips the update and throws ssm::Error saying so.
  StepStats step(BatchSource& source);

  // The training loss on a given batch, without updating anything.
  // in (B, T, in_channels), target (B, T, out_channels).
  double evaluate(const float* in, const float* target, int B, int T);

  int64_t steps_done() const;
  const TrainerConfig& config() const;

  // Writes the model to `path` and the optimizer state + step to
  // `path`.optim (both atomically). load_checkpoint() reads both back and
  // checks that they belong together.
  void save_checkpoint(const std::string& path) const;
  void load_checkpoint(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The prediction target for a model with lookahead d: the output at t
// estimates target[t - d] (zero before the start). target (B, T, C) in place.
void shift_target_for_lookahead(float* target, int B, int T, int C, int d);

}  // namespace ssm
