#include "ssm/optim.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

namespace ssm {

void adamw_check_config(const AdamWConfig& c) {
  require(c.beta1 >= 0 && c.beta1 < 1, "AdamWConfig.beta1 must be in [0, 1), got " + std::to_string(c.beta1));
  require(c.beta2 >= 0 && c.beta2 < 1, "AdamWConfig.beta2 must be in [0, 1), got " + std::to_string(c.beta2));
  require(c.eps > 0 && std::isfinite(c.eps), "AdamWConfig.eps must be finite and > 0");
  require(c.weight_decay >= 0 && std::isfinite(c.weight_decay), "AdamWConfig.weight_decay must be finite and >= 0");
}

template <typename Real>
void adamw_update(Real* params, Real* m, Real* v, const Real* grads, const ParamTable& table, int64_t step,
                  double lr, const AdamWConfig& c) {
  require(step >= 1, "adamw_update: step must be >= 1, got " + std::to_string(step));
  // Scalars in double, as PyTorch computes them in Python floats.
  const double bias1 = 1 - std::pow(c.beta1, static_cast<double>(step));
  const double bias2_sqrt = std::sqrt(1 - std::pow(c.beta2, static_cast<double>(step)));
  const Real beta1 = static_cast<Real>(c.beta1), one_m_beta1 = static_cast<Real>(1 - c.beta1);
  const Real beta2 = static_cast<Real>(c.beta2), one_m_beta2 = static_cast<Real>(1 - c.beta2);
  const Real step_size = static_cast<Real>(lr / bias1);
  const Real inv_bias2_sqrt = static_cast<Real>(1 / bias2_sqrt);
  const Real eps = static_cast<Real>(c.eps);
  for (const ParamEntry& e : table.entries()) {
    if (!e.spec.trainable) continue;
    const Real decay = static_cast<Real>(1 - lr * c.weight_decay * e.spec.weight_decay_mult);
    Real* p = params + e.offset;   // (numel)
    Real* mm = m + e.offset;       // (numel)
    Real* vv = v + e.offset;       // (numel)
    const Real* g = grads + e.offset;  // (numel)
    const int64_t n = static_cast<int64_t>(e.numel);
#pragma omp parallel for simd schedule(static) if (n >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      const Real gi = g[i];
      const Real mi = beta1 * mm[i] + one_m_beta1 * gi;
      const Real vi = beta2 * vv[i] + one_m_beta2 * gi * gi;
      mm[i] = mi;
      vv[i] = vi;
      p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_bias2_sqrt + eps);
    }
  }
}

template <typename Real>
AdamW<Real>::AdamW(const ParamTable& table, const AdamWConfig& config) : config_(config) {
  adamw_check_config(config);
  state_.m = ParamBlock<Real>(table);
  state_.v = ParamBlock<Real>(table);
}

template <typename Real>
void AdamW<Real>::step(ParamBlock<Real>& params, const ParamBlock<Real>& grads, double lr) {
  const ParamTable& t = state_.m.table();
  require(params.table() == t, "AdamW::step: params block was built from a different ParamTable");
  require(grads.table() == t, "AdamW::step: grads block was built from a different ParamTable");
  require(lr >= 0 && std::isfinite(lr), "AdamW::step: lr must be finite and >= 0, got " + std::to_string(lr));
  state_.step += 1;
  adamw_update(params.data(), state_.m.data(), state_.v.data(), grads.data(), t, state_.step, lr, config_);
}

template <typename Real>
void AdamW<Real>::load_state(const AdamWState<Real>& s) {
  const ParamTable& t = state_.m.table();
  require(s.m.table() == t, "AdamW::load_state: m was built from a different ParamTable");
  require(s.v.table() == t, "AdamW::load_state: v was built from a different ParamTable");
  require(s.step >= 0, "AdamW::load_state: step must be >= 0, got " + std::to_string(s.step));
  state_ = s;
}

template <typename Real>
double clip_grad_norm(Real* grads, size_t n, double max_norm) {
  require(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got " + std::to_string(max_norm));
  // Fixed chunks summed in order: the norm does not depend on the thread
  // count, so a resumed run clips exactly as the original did.
  constexpr size_t kChunk = 1 << 14;
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
  std::vector<double> partial(static_cast<size_t>(chunks));  // (chunks)
#pragma omp parallel for schedule(static) if (chunks > 4)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t lo = static_cast<size_t>(c) * kChunk, hi = std::min(n, lo + kChunk);
    double s = 0;
    for (size_t i = lo; i < hi; ++i) s += static_cast<double>(grads[i]) * static_cast<double>(grads[i]);
    partial[static_cast<size_t>(c)] = s;
  }
  double sum = 0;
  for (double s : partial) sum += s;
  const double norm = std::sqrt(sum);
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1) {
    const Real k = static_cast<Real>(coef);
    const int64_t ni = static_cast<int64_t>(n);
#pragma omp parallel for simd schedule(static) if (ni >= (1 << 16))
    for (int64_t i = 0; i < ni; ++i) grads[i] *= k;
  }
  return norm;
}

void LrSchedule::check() const {
  require(std::isfinite(peak_lr) && peak_lr >= 0, "LrSchedule.peak_lr must be finite and >= 0");
  require(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= peak_lr, "LrSchedule.min_lr must be in [0, peak_lr]");
  require(total_steps >= 1, "LrSchedule.total_steps must be >= 1, got " + std::to_string(total_steps));
  require(warmup_steps >= 0 && warmup_steps <= total_steps,
          "LrSchedule.warmup_steps must be in [0, total_steps], got " + std::to_string(warmup_steps));
}

double LrSchedule::at(int64_t step) const {
  check();
  if (step < 0) step = 0;
  if (step < warmup_steps) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (step >= total_steps) return min_lr;
  const double r = static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return min_lr + 0.5 * (peak_lr - min_lr) * (1 + std::cos(std::numbers::pi * r));
}

template void adamw_update<float>(float*, float*, float*, const float*, const ParamTable&, int64_t, double,
                                  const AdamWConfig&);
template void adamw_update<double>(double*, double*, double*, const double*, const ParamTable&, int64_t, double,
                                   const AdamWConfig&);
template class AdamW<float>;
template class AdamW<double>;
template double clip_grad_norm<float>(float*, size_t, double);
template double clip_grad_norm<double>(double*, size_t, double);

}  // namespace ssm
