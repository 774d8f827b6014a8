// Optimisation over the flat blocks of ssm/params.hpp: AdamW, gradient
// clipping by global norm, and the learning-rate schedule.
//
// AdamW follows PyTorch's torch.optim.AdamW (amsgrad off), per element, with
// t the step count after incrementing:
//   p  = p * (1 - lr * weight_decay * weight_decay_mult)     decoupled decay
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g^2
//   p  = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// weight_decay_mult comes from the ParamTable entry of each tensor.
//
// The optimizer state (step count, m, v) is plain data: copy it out, write
// it with the checkpoint, load it back, and the continuation is bit-identical.
#pragma once
#include <cstdint>

#include "ssm/common.hpp"
#include "ssm/params.hpp"

namespace ssm {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // scaled per tensor by ParamSpec::weight_decay_mult
};

// Throws ssm::Error naming the field unless 0 <= beta < 1, eps > 0, weight_decay >= 0.
void adamw_check_config(const AdamWConfig& c);

// One AdamW update of every tensor in `table`; `step` is t above (>= 1).
// The alignment gaps between tensors are not touched.
template <typename Real>
void adamw_update(Real* params,        // (total)  in/out
                  Real* m,             // (total)  in/out, first moment
                  Real* v,             // (total)  in/out, second moment
                  const Real* grads,   // (total)
                  const ParamTable& table, int64_t step, double lr, const AdamWConfig& c);

template <typename Real>
struct AdamWState {
  int64_t step = 0;    // updates taken so far
  ParamBlock<Real> m;  // (total)
  ParamBlock<Real> v;  // (total)
};

template <typename Real>
class AdamW {
 public:
  AdamW(const ParamTable& table, const AdamWConfig& config);

  // step += 1, then adamw_update with that step and learning rate `lr`.
  // Throws ssm::Error when a block was not built from an equal table or lr
  // is negative or not finite.
  void step(ParamBlock<Real>& params, const ParamBlock<Real>& grads, double lr);

  const AdamWConfig& config() const { return config_; }
  const AdamWState<Real>& state() const { return state_; }
  // Replaces the state (e.g. from a checkpoint); throws ssm::Error unless m
  // and v were built from a table equal to this optimizer's and step >= 0.
  void load_state(const AdamWState<Real>& s);

 private:
  AdamWConfig config_;
  AdamWState<Real> state_;
};

// Global L2 norm of grads (accumulated in double). When it exceeds max_norm,
// scales grads by max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_
// does. Returns the norm before clipping. A non-finite norm (NaN/inf in the
// gradients) leaves grads untouched and is returned as is: the caller checks
// std::isfinite and skips the step.
template <typename Real>
double clip_grad_norm(Real* grads,  // (n)  in/out
                      size_t n, double max_norm);

// Linear warm-up then cosine decay to a floor. `step` counts from 0 (the
// index of the update about to be taken):
//   step <  warmup_steps:  peak_lr * (step + 1) / warmup_steps
//   step >= total_steps:   min_lr
//   otherwise:             min_lr + 0.5 * (peak_lr - min_lr) * (1 + cos(pi * r)),
//                          r = (step - warmup_steps) / (total_steps - warmup_steps)
struct LrSchedule {
  double peak_lr = 1e-3;
  double min_lr = 1e-5;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // Throws ssm::Error naming the field unless 0 <= min_lr <= peak_lr,
  // 0 <= warmup_steps <= total_steps and total_steps >= 1.
  void check() const;
  double at(int64_t step) const;
};

}  // namespace ssm
