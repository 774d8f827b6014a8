#include "ssm/trainer.hpp"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "ssm/cuda_train.hpp"
#include "ssm/safetensors.hpp"

namespace ssm {

void TrainerConfig::validate() const {
  require(steps >= 1, "training config: 'steps' must be >= 1");
  require(batch >= 1, "training config: 'batch' must be >= 1");
  require(segment >= 1, "training config: 'segment' must be >= 1");
  require(std::isfinite(lr) && lr > 0, "training config: 'lr' must be > 0");
  require(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr, "training config: need 0 <= 'min_lr' <= 'lr'");
  require(warmup >= 0 && warmup <= steps, "training config: need 0 <= 'warmup' <= 'steps'");
  require(weight_decay >= 0, "training config: 'weight_decay' must be >= 0");
  require(clip >= 0, "training config: 'clip' must be >= 0");
  require(l1_weight >= 0 && l2_weight >= 0 && stft_weight >= 0 && sisdr_weight >= 0 && nll_weight >= 0,
          "training config: loss weights must be >= 0");
  require(l1_weight + l2_weight + stft_weight + sisdr_weight + nll_weight > 0,
          "training config: every loss weight is 0");
  require(nll_weight == 0 || device == "cpu", "training config: 'nll_weight' is implemented on the CPU only");
  require(threads >= 0, "training config: 'threads' must be >= 0");
  require(device == "cpu" || device == "cuda", "training config: 'device' must be \"cpu\" or \"cuda\", got \"" + device + "\"");
  require(gpus >= 1 && gpus <= 64, "training config: 'gpus' must be in [1, 64]");
  require(gpus == 1 || device == "cuda",
          "training config: 'gpus' is " + std::to_string(gpus) + " but the device is \"" + device +
              "\" (more than one GPU needs device \"cuda\")");
  require(int64_t{batch} * gpus <= (int64_t{1} << 20), "training config: 'batch' * 'gpus' is beyond what this library supports");
}

void shift_target_for_lookahead(float* target, int B, int T, int C, int d) {
  if (d <= 0) return;
  for (int b = 0; b < B; ++b) {
    float* row = target + static_cast<size_t>(b) * T * C;  // (T, C)
    const int keep = std::max(0, T - d);
    std::memmove(row + static_cast<size_t>(d) * C, row, sizeof(float) * keep * C);
    std::fill(row, row + static_cast<size_t>(std::min(d, T)) * C, 0.0f);
  }
}

struct Trainer::Impl {
  Model& model;
  TrainerConfig cfg;
  ModelGraph<float> graph;
  ParamBlock<float> grads;
  AdamW<float> opt;
  LrSchedule schedule;
  MultiResStftLoss<float> stft;
  std::vector<float> in, target, out, dout, dtmp;  // (B, T, C)
  // device == "cuda": the step runs there; the Model's parameters are copied
  // back after every step and the optimizer state when a checkpoint is saved.
  std::unique_ptr<TrainStepCuda> gpu;
  int64_t gpu_steps = 0;
  bool gpu_synced = false;

  Impl(Model& m, const TrainerConfig& c)
      : model(m),
        cfg(c),
        graph(m.config(), m.table()),
        grads(m.table()),
        opt(m.table(), AdamWConfig{0.9, 0.999, 1e-8, c.weight_decay}),
        schedule{c.lr, c.min_lr, c.warmup, c.steps} {
    cfg.validate();
    schedule.check();
    if (cfg.stft_weight > 0)
      require(m.config().out_channels == 1, "training config: the STFT loss needs a model with one output channel");
    if (cfg.nll_weight > 0)
      require(m.config().out_channels == 2, "training config: the NLL loss needs a model with two output channels");
    if (cfg.device == "cuda") gpu = std::make_unique<TrainStepCuda>(m.config(), m.table(), cfg);
  }

  // Uploads the Model's parameters and the optimizer state before the first
  // GPU step after construction or a checkpoint load (the caller may
  // initialise the model after constructing the trainer).
  void gpu_sync() {
    if (gpu_synced) return;
    const auto& st = opt.state();
    gpu->upload(model.params().data(), st.m.data(), st.v.data());
    gpu_steps = st.step;
    gpu_synced = true;
  }

  // The optimizer state as of now (fetched from the GPU when it runs there).
  AdamWState<float> optimizer_state() const {
    if (!gpu || !gpu_synced) return opt.state();
    AdamWState<float> st{gpu_steps, ParamBlock<float>(model.table()), ParamBlock<float>(model.table())};
    gpu->download(nullptr, st.m.data(), st.v.data());
    return st;
  }

  // Loss of out vs target; when `backward`, fills dout.
  double loss(int B, int T, bool backward) {
    const int C = model.config().out_channels;
    const LossDims d{B, T * C};
    double total = 0;
    if (backward) std::fill(dout.begin(), dout.begin() + static_cast<size_t>(B) * T * C, 0.0f);
    dtmp.resize(static_cast<size_t>(B) * T * C);
    auto accumulate = [&] {
      for (size_t i = 0; i < static_cast<size_t>(B) * T * C; ++i) dout[i] += dtmp[i];
    };
    if (cfg.l1_weight > 0) {
      total += cfg.l1_weight * l1_loss_forward(out.data(), target.data(), d);
      if (backward) l1_loss_backward(dtmp.data(), cfg.l1_weight, out.data(), target.data(), d), accumulate();
    }
    if (cfg.l2_weight > 0) {
      total += cfg.l2_weight * l2_loss_forward(out.data(), target.data(), d);
      if (backward) l2_loss_backward(dtmp.data(), cfg.l2_weight, out.data(), target.data(), d), accumulate();
    }
    if (cfg.stft_weight > 0) {
      total += cfg.stft_weight * stft.forward(out.data(), target.data(), d);
      if (backward) stft.backward(dtmp.data(), cfg.stft_weight, d), accumulate();
    }
    if (cfg.nll_weight > 0) {
      const LossDims pairs{B, T};
      total += cfg.nll_weight * laplace_nll_forward(out.data(), target.data(), pairs);
      if (backward) laplace_nll_backward(dtmp.data(), cfg.nll_weight, out.data(), target.data(), pairs), accumulate();
    }
    if (cfg.sisdr_weight > 0) {
      total += cfg.sisdr_weight * si_sdr_loss_forward(out.data(), target.data(), d);
      if (backward) si_sdr_loss_backward(dtmp.data(), cfg.sisdr_weight, out.data(), target.data(), d), accumulate();
    }
    return total;
  }

  void resize(int B, int T) {
    const auto& mc = model.config();
    in.resize(static_cast<size_t>(B) * T * mc.in_channels);
    target.resize(static_cast<size_t>(B) * T * mc.out_channels);
    out.resize(target.size());
    dout.resize(target.size());
  }
};

Trainer::Trainer(Model& model, const TrainerConfig& cfg) : impl_(std::make_unique<Impl>(model, cfg)) {}
Trainer::~Trainer() = default;

int64_t Trainer::steps_done() const {
  return impl_->gpu && impl_->gpu_synced ? impl_->gpu_steps : impl_->opt.state().step;
}
const TrainerConfig& Trainer::config() const { return impl_->cfg; }

StepStats Trainer::step(BatchSource& source) {
  Impl& s = *impl_;
  if (s.cfg.threads > 0) omp_set_num_threads(s.cfg.threads);
  // The global batch: with several GPUs each takes its share (ssm/cuda_train.hpp).
  const int B = s.cfg.global_batch(), T = s.cfg.segment;
  const auto& mc = s.model.config();
  s.resize(B, T);
  const int64_t step = steps_done();
  source.batch(s.in.data(), s.target.data(), B, T, s.cfg.seed, step);
  shift_target_for_lookahead(s.target.data(), B, T, mc.out_channels, mc.lookahead);
  StepStats st;
  if (s.gpu) {
    st.lr = s.schedule.at(step);
    s.gpu_sync();
    const CudaStepResult r = s.gpu->step(s.in.data(), s.target.data(), B, T, /*update=*/true, step + 1, st.lr);
    st.loss = r.loss;
    st.grad_norm = r.grad_norm;
    if (!std::isfinite(st.loss)) fail("training step " + std::to_string(step + 1) + ": the loss is not finite");
    if (!std::isfinite(st.grad_norm))
      fail("training step " + std::to_string(step + 1) + ": the gradient norm is not finite; update skipped");
    s.gpu->download(s.model.params().data(), nullptr, nullptr);
    st.step = ++s.gpu_steps;
    return st;
  }
  s.graph.forward(s.out.data(), s.in.data(), s.model.params().data(), B, T);
  st.loss = s.loss(B, T, /*backward=*/true);
  if (!std::isfinite(st.loss)) fail("training step " + std::to_string(step + 1) + ": the loss is not finite");
  s.grads.zero();
  s.graph.backward(s.grads.data(), nullptr, s.dout.data(), s.model.params().data());
  st.grad_norm = clip_grad_norm(s.grads.data(), s.grads.size(), s.cfg.clip > 0 ? s.cfg.clip : INFINITY);
  if (!std::isfinite(st.grad_norm))
    fail("training step " + std::to_string(step + 1) + ": the gradient norm is not finite; update skipped");
  st.lr = s.schedule.at(step);
  s.opt.step(s.model.params(), s.grads, st.lr);
  st.step = steps_done();
  return st;
}

double Trainer::evaluate(const float* in, const float* target, int B, int T) {
  Impl& s = *impl_;
  const auto& mc = s.model.config();
  s.resize(B, T);
  std::memcpy(s.target.data(), target, sizeof(float) * s.target.size());
  shift_target_for_lookahead(s.target.data(), B, T, mc.out_channels, mc.lookahead);
  if (s.gpu) {
    s.gpu_sync();
    return s.gpu->step(in, s.target.data(), B, T, /*update=*/false, 0, 0.0).loss;
  }
  s.graph.forward(s.out.data(), in, s.model.params().data(), B, T);
  return s.loss(B, T, /*backward=*/false);
}

void Trainer::save_checkpoint(const std::string& path) const {
  const Impl& s = *impl_;
  const AdamWState<float> st = s.optimizer_state();
  SafeTensorsWriter w;
  const int64_t total = static_cast<int64_t>(st.m.size());
  w.add("adamw.m", st.m.data(), {total});
  w.add("adamw.v", st.v.data(), {total});
  w.set_metadata("ssm.step", std::to_string(st.step));
  w.set_metadata("ssm.config", s.model.config().to_json_text());
  // Optimizer state first: a crash between the two writes leaves a model
  // whose step differs from the optimizer's, which load_checkpoint refuses.
  w.write_file(path + ".optim");
  s.model.save(path, {{"ssm.step", std::to_string(st.step)}});
}

namespace {

int64_t checkpoint_step(const SafeTensors& st, const std::string& path) {
  auto it = st.metadata().find("ssm.step");
  require(it != st.metadata().end(), "checkpoint '" + path + "': no 'ssm.step' in __metadata__");
  int64_t step = -1;
  try {
    size_t used = 0;
    step = std::stoll(it->second, &used);
    if (used != it->second.size()) step = -1;
  } catch (...) {
  }
  require(step >= 0, "checkpoint '" + path + "': 'ssm.step' is not a non-negative integer");
  return step;
}

}  // namespace

void Trainer::load_checkpoint(const std::string& path) {
  Impl& s = *impl_;
  Model loaded = Model::load(path);
  require(loaded.config().to_json_text() == s.model.config().to_json_text(),
          "checkpoint '" + path + "': its model config differs from the one being trained");
  SafeTensors opt = SafeTensors::read_file(path + ".optim");
  const int64_t step = checkpoint_step(opt, path + ".optim");
  require(step == checkpoint_step(SafeTensors::read_file(path), path),
          "checkpoint '" + path + "': the model and its optimizer state are from different steps");
  AdamWState<float> st{step, ParamBlock<float>(s.model.table()), ParamBlock<float>(s.model.table())};
  const std::vector<int64_t> shape{static_cast<int64_t>(st.m.size())};
  opt.read_float("adamw.m", st.m.data(), shape);
  opt.read_float("adamw.v", st.v.data(), shape);
  std::memcpy(s.model.params().data(), loaded.params().data(), sizeof(float) * loaded.params().size());
  s.opt.load_state(st);
  s.gpu_synced = false;
}

}  // namespace ssm
