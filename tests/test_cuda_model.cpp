// The whole model on the GPU against the CPU: ModelGraph over the CUDA
// backend, forward and backward, vs ModelGraph<double> (itself checked against finite differences
// in test_model.cpp), and Trainer with device "cuda" vs the CPU trainer:
// the step's loss and gradient norm, a short training run's loss curve, and
// checkpoints moving between the two. Skips with the reason without a GPU.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "ssm/cuda.hpp"
#include "ssm/backend_ops.hpp"
#include "ssm/cuda_ssd.hpp"  // CudaMath
#include "ssm/model.hpp"
#include "ssm/trainer.hpp"
#include "model_fixtures.hpp"
#include "testing.hpp"

#ifdef SSM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

using ssm::BlockKind;
using ssm::CudaMath;
using ssm::Model;
using ssm::ModelConfig;
using ssm::Trainer;
using ssm::TrainerConfig;
using ssm::testing::rel_error;

#ifdef SSM_WITH_CUDA
namespace {

bool have_gpu(std::string& why) {
  if (ssm::cuda_available()) return true;
  why = "no GPU: " + ssm::cuda_device_description();
  return false;
}

// A device copy of a host vector (or n poisoned floats), freed at scope end.
struct DevFloats {
  float* p = nullptr;
  size_t n = 0;
  explicit DevFloats(size_t count, float fill = NAN) : n(count) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), cudaSuccess);
    std::vector<float> h(n, fill);
    cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  }
  explicit DevFloats(const std::vector<float>& h) : n(h.size()) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), cudaSuccess);
    cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  }
  ~DevFloats() { cudaFree(p); }
  std::vector<float> host() const {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

struct GraphCase {
  BlockKind kind;
  CudaMath math;
  int B, T, chunk, in_channels, out_channels;
  double tol;  // relative, per output and per parameter tensor
  int frame = 1, mask_bins = 0;
  int attention_every = 0;  // > 0: a hybrid, attention layers over a window of 24 (kernels/attention.cu)
};

std::string case_name(const GraphCase& c) {
  return std::string(ssm::block_kind_name(c.kind)) + (c.math == CudaMath::fp32 ? "_fp32" : "_tf32") + "_B" +
         std::to_string(c.B) + "_T" + std::to_string(c.T) + "_Q" + std::to_string(c.chunk) +
         (c.frame > 1 ? "_F" + std::to_string(c.frame) : "") + (c.mask_bins > 0 ? "_K" + std::to_string(c.mask_bins) : "") +
         (c.attention_every > 0 ? "_attention" + std::to_string(c.attention_every) : "");
}

class ModelGraphCudaGpu : public ::testing::TestWithParam<GraphCase> {};

TEST_P(ModelGraphCudaGpu, MatchesCpuGraph) {
  std::string why;
  if (!have_gpu(why)) GTEST_SKIP() << why;
  const GraphCase c = GetParam();
  const ssm::ops::OpsTable<float>* backend = c.math == CudaMath::fp32 ? ssm::ops::cuda_fp32(&why) : ssm::ops::cuda(&why);
  ASSERT_NE(backend, nullptr) << why;
  ModelConfig cfg = ssm::testing::small_model_config(c.kind, c.chunk);
  cfg.in_channels = c.in_channels;
  cfg.out_channels = c.out_channels;
  cfg.frame = c.frame;
  cfg.mask_bins = c.mask_bins;
  if (c.attention_every > 0) {
    cfg.attention_every = c.attention_every;
    cfg.attention_window = 24;
    cfg.attention_heads = 4;
  }
  Model model(cfg);
  model.init(11);
  // Perturb every parameter so no tensor sits at a special value (norms at 1, D at 1).
  std::vector<float> noise = ssm::testing::random_vector<float>(model.params().size(), 12, -0.1, 0.1);
  for (const auto& e : model.table().entries())
    for (size_t i = 0; i < e.numel; ++i) model.params().data()[e.offset + i] += noise[e.offset + i];
  const size_t total = model.params().size();
  const size_t n_in = static_cast<size_t>(c.B) * c.T * cfg.in_channels;
  const size_t n_out = static_cast<size_t>(c.B) * c.T * cfg.out_channels;
  const auto in = ssm::testing::random_vector<double>(n_in, 13);
  const auto dout = ssm::testing::random_vector<double>(n_out, 14);

  // fp64 CPU reference.
  std::vector<double> P64(model.params().data(), model.params().data() + total);
  ssm::ModelGraph<double> ref(cfg, model.table());
  std::vector<double> out_ref(n_out), din_ref(n_in), dP_ref(total, 0.0);
  ref.forward(out_ref.data(), in.data(), P64.data(), c.B, c.T);
  ref.backward(dP_ref.data(), din_ref.data(), dout.data(), P64.data());

  // GPU: outputs poisoned; parameter gradients pre-filled to check +=.
  const float prefill = 0.5f;
  DevFloats P(std::vector<float>(model.params().data(), model.params().data() + total));
  DevFloats x(ssm::testing::cast_vector<float>(in)), dy(ssm::testing::cast_vector<float>(dout));
  DevFloats out(n_out), din(n_in), dP(total, prefill);
  ssm::ModelGraph<float> graph(cfg, model.table(), *backend);
  graph.forward(out.p, x.p, P.p, c.B, c.T);
  graph.backward(dP.p, din.p, dy.p, P.p);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const auto out_h = out.host();
  const auto din_h = din.host();
  auto dP_h = dP.host();
  for (auto& g : dP_h) g -= prefill;
  EXPECT_LE(rel_error(out_h.data(), out_ref.data(), n_out), c.tol) << "output";
  EXPECT_LE(rel_error(din_h.data(), din_ref.data(), n_in), c.tol) << "input gradient";
  for (const auto& e : model.table().entries())
    EXPECT_LE(rel_error(dP_h.data() + e.offset, dP_ref.data() + e.offset, e.numel), c.tol) << e.spec.name;
  // Alignment gaps are not written.
  std::vector<bool> in_tensor(total, false);
  for (const auto& e : model.table().entries())
    for (size_t i = 0; i < e.numel; ++i) in_tensor[e.offset + i] = true;
  for (size_t i = 0; i < total; ++i)
    if (!in_tensor[i]) ASSERT_EQ(dP_h[i], 0.0f) << "gap element " << i;

  // A second, smaller call on the grown buffers gives the same as a fresh graph.
  const int T2 = std::max(1, c.T / 3 / c.frame) * c.frame;
  const size_t n_out2 = static_cast<size_t>(c.B) * T2 * cfg.out_channels;
  std::vector<double> out_ref2(n_out2);
  std::vector<double> in2(in.begin(), in.begin() + static_cast<size_t>(c.B) * T2 * cfg.in_channels);
  ref.forward(out_ref2.data(), in2.data(), P64.data(), c.B, T2);
  DevFloats x2(ssm::testing::cast_vector<float>(in2)), out2(n_out2);
  graph.forward(out2.p, x2.p, P.p, c.B, T2);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto out2_h = out2.host();
  EXPECT_LE(rel_error(out2_h.data(), out_ref2.data(), n_out2), c.tol) << "second call, T=" << T2;
}

// fp32 math: the reference tolerance of 1e-3; tf32 (the training default) as bf16's 1e-2.
INSTANTIATE_TEST_SUITE_P(Shapes, ModelGraphCudaGpu,
                         ::testing::Values(GraphCase{BlockKind::Mamba2, CudaMath::fp32, 3, 150, 32, 1, 1, 1e-3},
                                           GraphCase{BlockKind::Mamba2, CudaMath::fp32, 2, 20, 64, 3, 2, 1e-3},
                                           GraphCase{BlockKind::Mamba2, CudaMath::tf32, 4, 1000, 64, 1, 1, 1e-2},
                                           GraphCase{BlockKind::Mamba1, CudaMath::fp32, 3, 150, 32, 1, 1, 1e-3},
                                           GraphCase{BlockKind::Mamba1, CudaMath::tf32, 2, 700, 64, 2, 1, 1e-2},
                                           // Frames with a masking head (the denoiser's shape, small).
                                           GraphCase{BlockKind::Mamba2, CudaMath::fp32, 3, 640, 16, 1, 1, 1e-3, 8, 24},
                                           GraphCase{BlockKind::Mamba2, CudaMath::tf32, 2, 1280, 32, 1, 1, 1e-2, 16, 40},
                                           // Hybrids: T past the window of 24, and T below it.
                                           GraphCase{BlockKind::Mamba2, CudaMath::fp32, 3, 150, 32, 1, 1, 1e-3, 1, 0, 1},
                                           GraphCase{BlockKind::Mamba1, CudaMath::fp32, 2, 20, 16, 1, 1, 1e-3, 1, 0, 2},
                                           GraphCase{BlockKind::Mamba2, CudaMath::tf32, 2, 700, 64, 1, 1, 1e-2, 1, 0, 1}),
                         [](const auto& info) { return case_name(info.param); });

// The trainer tests' short run with the denoiser's losses (L1 + MR-STFT).
TrainerConfig short_run(int64_t steps, const char* device) {
  TrainerConfig t = ssm::testing::short_training_run(steps);
  t.l1_weight = 1;
  t.l2_weight = 0;
  t.stft_weight = 1;
  t.device = device;
  return t;
}

ModelConfig tiny_denoiser() { return ssm::testing::small_model_config(BlockKind::Mamba2, 32); }

TEST(TrainerCudaGpu, FirstStepMatchesCpu) {
  std::string why;
  if (!have_gpu(why)) GTEST_SKIP() << why;
  Model cpu_model(tiny_denoiser()), gpu_model(tiny_denoiser());
  cpu_model.init(3);
  gpu_model.init(3);
  Trainer cpu(cpu_model, short_run(50, "cpu")), gpu(gpu_model, short_run(50, "cuda"));
  ssm::testing::HarmonicDenoising data(0.1);
  const ssm::StepStats a = cpu.step(data), b = gpu.step(data);
  EXPECT_NEAR(b.loss, a.loss, 1e-3 * std::abs(a.loss));
  EXPECT_NEAR(b.grad_norm, a.grad_norm, 1e-2 * a.grad_norm);
  EXPECT_EQ(b.lr, a.lr);
  EXPECT_EQ(gpu.steps_done(), 1);
}

TEST(TrainerCudaGpu, LossCurveFollowsCpu) {
  std::string why;
  if (!have_gpu(why)) GTEST_SKIP() << why;
  const int64_t steps = 150;
  Model cpu_model(tiny_denoiser()), gpu_model(tiny_denoiser());
  cpu_model.init(5);
  gpu_model.init(5);
  // A learning rate at which the run is not chaotic: at the short run's
  // 2e-2 the CPU's own end value moves by 6% with its thread count alone,
  // and tf32 rounding sends the two runs 50% apart.
  TrainerConfig cpu_cfg = short_run(steps, "cpu"), gpu_cfg = short_run(steps, "cuda");
  cpu_cfg.lr = gpu_cfg.lr = 5e-3;
  Trainer cpu(cpu_model, cpu_cfg), gpu(gpu_model, gpu_cfg);
  ssm::testing::HarmonicDenoising data(0.1);
  const int VB = 8, VT = 1024;
  std::vector<float> vin(VB * VT), vtarget(VB * VT);
  data.batch(vin.data(), vtarget.data(), VB, VT, /*seed=*/999, 0);
  const double start = cpu.evaluate(vin.data(), vtarget.data(), VB, VT);
  EXPECT_NEAR(gpu.evaluate(vin.data(), vtarget.data(), VB, VT), start, 1e-3 * start);
  for (int64_t i = 0; i < steps; ++i) {
    const double lc = cpu.step(data).loss, lg = gpu.step(data).loss;
    // Step by step the runs drift apart only slowly (tf32 products).
    if (i % 10 == 0) std::printf("step %3lld  cpu %.5f  gpu %.5f\n", static_cast<long long>(i), lc, lg);
    ASSERT_TRUE(std::isfinite(lg));
  }
  const double end_cpu = cpu.evaluate(vin.data(), vtarget.data(), VB, VT);
  const double end_gpu = gpu.evaluate(vin.data(), vtarget.data(), VB, VT);
  std::printf("validation loss: start %.5f, after %lld steps cpu %.5f gpu %.5f\n", start,
              static_cast<long long>(steps), end_cpu, end_gpu);
  EXPECT_LT(end_cpu, 0.7 * start);
  EXPECT_LT(end_gpu, 0.7 * start);
  EXPECT_NEAR(end_gpu, end_cpu, 0.15 * end_cpu);
  // The host copy of the parameters follows the GPU's: evaluating it on the
  // CPU agrees up to the GPU forward's tf32 products (the copy itself is
  // exact: CheckpointsMoveBetweenCpuAndGpu compares it bit for bit).
  Trainer check(gpu_model, short_run(steps, "cpu"));
  EXPECT_NEAR(check.evaluate(vin.data(), vtarget.data(), VB, VT), end_gpu, 1e-2 * end_gpu);
}

// A masking model with band gains over a fixed filterbank: the GPU trainer
// follows the CPU one step by step, and neither moves the fixed tensors
// (ParamSpec::trainable), bit for bit, while the rest train.
TEST(TrainerCudaGpu, FixedFilterbankAndBandsTrainAsOnCpu) {
  std::string why;
  if (!have_gpu(why)) GTEST_SKIP() << why;
  namespace fs = std::filesystem;
  ModelConfig cfg = tiny_denoiser();
  cfg.frame = 8;
  cfg.mask_bins = 16;
  cfg.analysis_frames = 3;
  cfg.log_power_input = true;
  cfg.mask_bands = 4;
  cfg.fixed_filterbank = true;
  Model c(cfg), g(cfg);
  c.init(5);
  g.init(5);
  const std::vector<float> start(c.params().data(), c.params().data() + c.params().size());
  Trainer ct(c, short_run(40, "cpu")), gt(g, short_run(40, "cuda"));
  ssm::testing::HarmonicDenoising data(0.1);
  for (int i = 0; i < 4; ++i) {
    const ssm::StepStats a = ct.step(data), b = gt.step(data);
    EXPECT_NEAR(b.loss, a.loss, 1e-3 * std::abs(a.loss)) << "step " << i + 1;
  }
  const fs::path dir = fs::temp_directory_path() / ("ssm_cuda_fixed_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "gpu.safetensors").string();
  gt.save_checkpoint(path);
  const Model trained = Model::load(path);
  fs::remove_all(dir);
  for (const auto& e : trained.table().entries()) {
    size_t moved = 0;
    for (size_t i = 0; i < e.numel; ++i) moved += trained.params().data()[e.offset + i] != start[e.offset + i];
    if (e.spec.trainable)
      EXPECT_GT(moved, 0u) << e.spec.name << " did not train";
    else
      EXPECT_EQ(moved, 0u) << e.spec.name << " is fixed but moved";
  }
  EXPECT_FALSE(trained.table().entry("band_expand.weight").spec.trainable);
  EXPECT_FALSE(trained.table().entry("analysis.weight").spec.trainable);
}

// Data-parallel training (TrainerConfig::gpus): asking for more GPUs than
// there are says how many there are, before any work.
TEST(TrainerCudaGpu, MoreGpusThanThereAreIsAClearError) {
  std::string why;
  if (!have_gpu(why)) GTEST_SKIP() << why;
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  Model m(tiny_denoiser());
  m.init(1);
  TrainerConfig t = short_run(10, "cuda");
  t.gpus = count + 1;
  try {
    Trainer trainer(m, t);
    ADD_FAILURE() << "gpus " << t.gpus << " was accepted on " << count << " GPU(s)";
  } catch (const ssm::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'gpus' is " + std::to_string(count + 1) + " but this machine has " + std::to_string(count) +
                       " GPU(s)"),
              std::string::npos)
        << msg;
  }
}

// With the same global batch, two GPUs follow one (the rows are split, the
// gradients averaged): the first step's loss and norm agree, and the curve
// ends as close as LossCurveFollowsCpu's; the checkpoint of the two-GPU run
// continues on one GPU and on the CPU.
TEST(TrainerCudaGpu, TwoGpusFollowOneWithTheSameGlobalBatch) {
  std::string why;
  if (!have_gpu(why)) GTEST_SKIP() << why;
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << count << " (" << ssm::cuda_device_description() << ")";
  namespace fs = std::filesystem;
  const int64_t steps = 150;
  TrainerConfig one = short_run(steps, "cuda"), two = one;
  one.lr = two.lr = 5e-3;  // as LossCurveFollowsCpu: not chaotic
  one.batch = 2 * two.batch;
  two.gpus = 2;
  ASSERT_EQ(one.global_batch(), two.global_batch());
  Model a(tiny_denoiser()), b(tiny_denoiser());
  a.init(21);
  b.init(21);
  Trainer ta(a, one), tb(b, two);
  ssm::testing::HarmonicDenoising data(0.1);
  const int VB = 8, VT = 1024;
  std::vector<float> vin(VB * VT), vtarget(VB * VT);
  data.batch(vin.data(), vtarget.data(), VB, VT, /*seed=*/999, 0);
  const double start = ta.evaluate(vin.data(), vtarget.data(), VB, VT);
  EXPECT_NEAR(tb.evaluate(vin.data(), vtarget.data(), VB, VT), start, 1e-3 * start);
  for (int64_t s = 0; s < steps; ++s) {
    const ssm::StepStats sa = ta.step(data), sb = tb.step(data);
    if (s == 0) {
      EXPECT_NEAR(sb.loss, sa.loss, 1e-3 * sa.loss);
      EXPECT_NEAR(sb.grad_norm, sa.grad_norm, 1e-2 * sa.grad_norm);
    }
    ASSERT_TRUE(std::isfinite(sb.loss)) << "step " << s + 1;
  }
  const double end_one = ta.evaluate(vin.data(), vtarget.data(), VB, VT);
  const double end_two = tb.evaluate(vin.data(), vtarget.data(), VB, VT);
  std::printf("[ measured ] validation loss: start %.5f, after %lld steps 1 GPU %.5f, 2 GPUs %.5f\n", start,
              static_cast<long long>(steps), end_one, end_two);
  EXPECT_LT(end_two, 0.7 * start);
  EXPECT_NEAR(end_two, end_one, 0.15 * end_one);
  const fs::path dir = fs::temp_directory_path() / ("ssm_cuda_dp_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string ckpt = (dir / "two.safetensors").string();
  tb.save_checkpoint(ckpt);
  Model c(tiny_denoiser()), g(tiny_denoiser());
  TrainerConfig on_cpu = short_run(steps + 5, "cpu");
  on_cpu.batch = one.batch;
  TrainerConfig on_gpu = short_run(steps + 5, "cuda");
  on_gpu.batch = one.batch;
  Trainer tc(c, on_cpu), tg(g, on_gpu);
  tc.load_checkpoint(ckpt);
  tg.load_checkpoint(ckpt);
  const ssm::StepStats sc = tc.step(data), sg = tg.step(data);
  EXPECT_EQ(sc.step, steps + 1);
  EXPECT_NEAR(sg.loss, sc.loss, 1e-3 * sc.loss);
  fs::remove_all(dir);
}

TEST(TrainerCudaGpu, CheckpointsMoveBetweenCpuAndGpu) {
  std::string why;
  if (!have_gpu(why)) GTEST_SKIP() << why;
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("ssm_cuda_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string gpu_ckpt = (dir / "gpu.safetensors").string(), cpu_ckpt = (dir / "cpu.safetensors").string();
  ssm::testing::HarmonicDenoising data(0.1);

  // GPU -> CPU: the CPU trainer resumes from the GPU's checkpoint and its
  // next step matches a GPU trainer resumed from the same file.
  Model g(tiny_denoiser());
  g.init(9);
  Trainer gt(g, short_run(40, "cuda"));
  for (int i = 0; i < 7; ++i) gt.step(data);
  gt.save_checkpoint(gpu_ckpt);
  Model c(tiny_denoiser()), g2(tiny_denoiser());
  Trainer ct(c, short_run(40, "cpu")), gt2(g2, short_run(40, "cuda"));
  ct.load_checkpoint(gpu_ckpt);
  gt2.load_checkpoint(gpu_ckpt);
  EXPECT_EQ(ct.steps_done(), 7);
  EXPECT_EQ(gt2.steps_done(), 7);
  for (size_t i = 0; i < g.params().size(); ++i) ASSERT_EQ(c.params().data()[i], g.params().data()[i]) << i;
  const ssm::StepStats sc = ct.step(data), sg = gt2.step(data);
  EXPECT_NEAR(sg.loss, sc.loss, 1e-3 * sc.loss);
  EXPECT_EQ(sc.step, 8);
  EXPECT_EQ(sg.step, 8);

  // CPU -> GPU, and the optimizer state round-trips exactly through the GPU.
  ct.save_checkpoint(cpu_ckpt);
  Model g3(tiny_denoiser());
  Trainer gt3(g3, short_run(40, "cuda"));
  gt3.load_checkpoint(cpu_ckpt);
  const std::string again = (dir / "again.safetensors").string();
  gt3.save_checkpoint(again);  // before any GPU step: the same state
  Model c2(tiny_denoiser());
  Trainer ct2(c2, short_run(40, "cpu"));
  ct2.load_checkpoint(again);
  EXPECT_EQ(ct2.steps_done(), 8);
  const ssm::StepStats s1 = ct2.step(data), s2 = gt3.step(data);
  EXPECT_NEAR(s2.loss, s1.loss, 1e-3 * s1.loss);
  fs::remove_all(dir);
}

}  // namespace
#else
TEST(ModelGraphCudaGpu, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend (SSM_CUDA=OFF)"; }
#endif

// Without CUDA (or without a GPU) asking for it is a clear error, not a crash.
TEST(TrainerCuda, DeviceCudaWithoutGpuSaysSo) {
  if (ssm::cuda_available()) GTEST_SKIP() << "a GPU is present: " << ssm::cuda_device_description();
  Model model(ssm::testing::small_model_config(BlockKind::Mamba2, 32));
  TrainerConfig t;
  t.device = "cuda";
  try {
    Trainer trainer(model, t);
    FAIL() << "no error";
  } catch (const ssm::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cuda"), std::string::npos) << msg;
  }
}

TEST(TrainerCuda, UnknownDeviceIsRejected) {
  TrainerConfig t;
  t.device = "tpu";
  EXPECT_THROW(t.validate(), ssm::Error);
}
