// CUDA training losses (ssm/cuda_losses.hpp) against the CPU ones
// (ssm/losses.hpp, which tests/test_losses.cpp checks against finite
// differences): L1, L2 and SI-SDR against the fp64 functions, the
// multi-resolution STFT loss against the fp64 plain-loop reference on small
// shapes and against MultiResStftLoss<double> at training shapes. Outputs are
// poisoned with NaN before every backward, and every result is computed twice
// and must be bit-identical (no atomics). On a machine without a GPU (or a
// build without CUDA) the GPU tests skip with the reason.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "ssm/cuda.hpp"
#include "ssm/losses.hpp"
#include "testing.hpp"

#ifdef SSM_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ssm/cuda_losses.hpp"
#endif

namespace {

#ifdef SSM_WITH_CUDA

using ssm::LossDims;
using ssm::StftLossConfig;
using ssm::testing::cast_vector;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using Floats = std::vector<float>;
using Doubles = std::vector<double>;

// Argument errors throw before any device work, so these run without a GPU.
TEST(CudaLosses, ArgumentErrors) {
  const LossDims no_items{0, 10}, no_samples{2, 0}, ok{2, 10};
  EXPECT_THROW(ssm::l1_loss_forward_cuda(nullptr, nullptr, no_items), ssm::Error);
  EXPECT_THROW(ssm::l2_loss_forward_cuda(nullptr, nullptr, no_samples), ssm::Error);
  EXPECT_THROW(ssm::l1_loss_forward_cuda(nullptr, nullptr, ok), ssm::Error);
  EXPECT_THROW(ssm::l2_loss_backward_cuda(nullptr, 1.0, nullptr, nullptr, ok), ssm::Error);
  EXPECT_THROW(ssm::si_sdr_loss_forward_cuda(nullptr, nullptr, no_items), ssm::Error);
  EXPECT_THROW(ssm::si_sdr_loss_backward_cuda(nullptr, 1.0, nullptr, nullptr, ok), ssm::Error);

  StftLossConfig mismatched;
  mismatched.hops = {64, 128};
  EXPECT_THROW(ssm::MultiResStftLossCuda{mismatched}, ssm::Error);
  StftLossConfig hop_too_long;
  hop_too_long.hops = {64, 128, 2048};
  EXPECT_THROW(ssm::MultiResStftLossCuda{hop_too_long}, ssm::Error);
  ssm::MultiResStftLossCuda loss;  // no device work until the first forward
  EXPECT_EQ(loss.config().fft_sizes, StftLossConfig{}.fft_sizes);
  EXPECT_THROW(loss.forward(nullptr, nullptr, no_items), ssm::Error);
  EXPECT_THROW(loss.forward(nullptr, nullptr, ok), ssm::Error);
  EXPECT_THROW(loss.backward(nullptr, 1.0, ok), ssm::Error);
}

// A device array of floats, freed on scope exit.
class DeviceFloats {
 public:
  explicit DeviceFloats(size_t n) : n_(n) {
    if (cudaMalloc(reinterpret_cast<void**>(&p_), bytes()) != cudaSuccess) p_ = nullptr;
  }
  explicit DeviceFloats(const Floats& v) : DeviceFloats(v.size()) {
    if (p_) cudaMemcpy(p_, v.data(), bytes(), cudaMemcpyHostToDevice);
  }
  ~DeviceFloats() { cudaFree(p_); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;

  float* get() const { return p_; }
  void fill_nan() const { cudaMemset(p_, 0xff, bytes()); }  // all-ones bits: NaN
  Floats download() const {
    Floats v(n_);
    cudaMemcpy(v.data(), p_, bytes(), cudaMemcpyDeviceToHost);
    return v;
  }

 private:
  size_t bytes() const { return n_ * sizeof(float); }
  float* p_ = nullptr;
  size_t n_;
};

class CudaLossesGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ssm::cuda_available()) GTEST_SKIP() << "no usable GPU: " << ssm::cuda_device_description();
  }
};

size_t count(const LossDims& d) { return size_t(d.B) * size_t(d.T); }

// |out - ref| / max(|ref|, 1): relative, except near zero.
double value_error(double out, double ref) { return std::fabs(out - ref) / std::max(std::fabs(ref), 1.0); }

constexpr double kForwardTol = 1e-4;
constexpr double kBackwardTol = 1e-3;
constexpr double kDloss = 0.7;  // upstream gradient, not 1 so its scaling is checked

// Runs backward twice into a NaN-filled dpred; the two results must agree bit for bit.
template <typename Backward>
Floats backward_twice(const DeviceFloats& dpred, Backward backward) {
  Floats first;
  for (int rep = 0; rep < 2; ++rep) {
    dpred.fill_nan();
    backward(dpred.get());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (rep == 0) first = dpred.download();
  }
  EXPECT_EQ(first, dpred.download()) << "backward differs between two runs";
  return first;
}

// ---------------------------------------------------------------- L1 / L2

TEST_F(CudaLossesGpu, L1AndL2MatchTheCpu) {
  const LossDims shapes[] = {{1, 1}, {3, 1001}, {32, 16000}};
  uint64_t seed = 10;
  for (const LossDims& d : shapes) {
    Floats pred = random_vector<float>(count(d), ++seed), target = random_vector<float>(count(d), ++seed);
    for (size_t i = 0; i < pred.size(); i += 7) target[i] = pred[i];  // L1's gradient there is 0
    const Doubles pd = cast_vector<double>(pred), td = cast_vector<double>(target);
    const DeviceFloats p(pred), t(target), dpred(count(d));
    for (const bool l1 : {true, false}) {
      SCOPED_TRACE(std::string(l1 ? "L1" : "L2") + " B=" + std::to_string(d.B) + " T=" + std::to_string(d.T));
      const double ref =
          l1 ? ssm::l1_loss_forward(pd.data(), td.data(), d) : ssm::l2_loss_forward(pd.data(), td.data(), d);
      const double out =
          l1 ? ssm::l1_loss_forward_cuda(p.get(), t.get(), d) : ssm::l2_loss_forward_cuda(p.get(), t.get(), d);
      EXPECT_LE(value_error(out, ref), kForwardTol) << out << " vs " << ref;
      Doubles gref(count(d));
      if (l1)
        ssm::l1_loss_backward(gref.data(), kDloss, pd.data(), td.data(), d);
      else
        ssm::l2_loss_backward(gref.data(), kDloss, pd.data(), td.data(), d);
      const Floats g = backward_twice(dpred, [&](float* dp) {
        if (l1)
          ssm::l1_loss_backward_cuda(dp, kDloss, p.get(), t.get(), d);
        else
          ssm::l2_loss_backward_cuda(dp, kDloss, p.get(), t.get(), d);
      });
      const double err = rel_error(g, gref);
      EXPECT_LE(err, kBackwardTol);
      for (size_t i = 0; i < g.size(); i += 7) ASSERT_EQ(g[i], 0.0f) << "at " << i;
      std::printf("  %s B=%-2d T=%-5d forward %.1e  backward %.1e\n", l1 ? "L1" : "L2", d.B, d.T, value_error(out, ref),
                  err);
    }
  }
}

// ---------------------------------------------------------------- SI-SDR

TEST_F(CudaLossesGpu, SiSdrMatchesTheCpu) {
  struct Case {
    LossDims d;
    bool special_items;  // item 0 perfect (pred == target), item 1 with a silent target
  };
  // T = 70000 cuts each item into 35 chunks; T = 1 leaves nothing after the means.
  const Case cases[] = {{{2, 1}, false}, {{3, 5000}, true}, {{32, 16000}, false}, {{3, 70000}, true}};
  uint64_t seed = 200;
  for (const Case& cs : cases) {
    const LossDims& d = cs.d;
    SCOPED_TRACE("B=" + std::to_string(d.B) + " T=" + std::to_string(d.T));
    const Floats target = random_vector<float>(count(d), ++seed), noise = random_vector<float>(count(d), ++seed);
    Floats pred(count(d));
    for (size_t i = 0; i < pred.size(); ++i) pred[i] = 0.8f * target[i] + 0.3f * noise[i] + 0.05f;
    Floats tgt = target;
    if (cs.special_items) {
      std::copy(target.begin(), target.begin() + d.T, pred.begin());
      std::fill(tgt.begin() + d.T, tgt.begin() + 2 * d.T, 0.0f);
    }
    const Doubles pd = cast_vector<double>(pred), td = cast_vector<double>(tgt);
    const DeviceFloats p(pred), t(tgt), dpred(count(d));
    const double ref = ssm::si_sdr_loss_forward(pd.data(), td.data(), d);
    const double out = ssm::si_sdr_loss_forward_cuda(p.get(), t.get(), d);
    EXPECT_EQ(out, ssm::si_sdr_loss_forward_cuda(p.get(), t.get(), d)) << "forward differs between two runs";
    EXPECT_LE(value_error(out, ref), kForwardTol) << out << " vs " << ref;
    Doubles gref(count(d));
    ssm::si_sdr_loss_backward(gref.data(), kDloss, pd.data(), td.data(), d);
    const Floats g =
        backward_twice(dpred, [&](float* dp) { ssm::si_sdr_loss_backward_cuda(dp, kDloss, p.get(), t.get(), d); });
    const double err = rel_error(g, gref);
    EXPECT_LE(err, kBackwardTol);
    std::printf("  SI-SDR B=%-2d T=%-5d loss %8.3f  forward %.1e  backward %.1e\n", d.B, d.T, ref,
                value_error(out, ref), err);
  }
}

// ---------------------------------------------------------------- STFT loss

struct StftRun {
  double loss;
  Floats grad;
};

// forward and backward twice each on one object; both runs must agree bit for bit.
StftRun run_stft(ssm::MultiResStftLossCuda& loss, const Floats& pred, const Floats& target, const LossDims& d,
                 cudaStream_t stream = nullptr) {
  const DeviceFloats p(pred), t(target), dpred(count(d));
  StftRun run;
  run.loss = loss.forward(p.get(), t.get(), d, stream);
  EXPECT_EQ(run.loss, loss.forward(p.get(), t.get(), d, stream)) << "forward differs between two runs";
  run.grad = backward_twice(dpred, [&](float* dp) { loss.backward(dp, kDloss, d, stream); });
  return run;
}

// Small shapes against the plain-loop DFT reference in fp64: odd fft sizes,
// hops that do not divide them, no overlap, n = 2, T < n and T = 1.
TEST_F(CudaLossesGpu, StftMatchesTheReferenceOnSmallShapes) {
  struct Case {
    const char* name;
    StftLossConfig c;
    std::vector<LossDims> dims;  // run in turn on one object
  };
  const std::vector<Case> cases = {
      {"n16_32_15", {{16, 32, 15}, {4, 8, 7}}, {{3, 101}, {2, 10}, {2, 1}, {1, 33}, {3, 101}}},
      {"no_overlap", {{8}, {8}}, {{2, 37}, {2, 8}}},
      {"n2", {{2}, {1}}, {{2, 5}}},
      {"floors", {{12, 20}, {3, 20}, 1e-4, 1e-3}, {{2, 50}}},
      {"default", {}, {{2, 1500}}},
  };
  uint64_t seed = 300;
  for (const Case& cs : cases) {
    ssm::MultiResStftLossCuda loss(cs.c);
    for (const LossDims& d : cs.dims) {
      SCOPED_TRACE(std::string(cs.name) + " B=" + std::to_string(d.B) + " T=" + std::to_string(d.T));
      const Floats pred = random_vector<float>(count(d), ++seed), target = random_vector<float>(count(d), ++seed);
      const Doubles pd = cast_vector<double>(pred), td = cast_vector<double>(target);
      const double ref = ssm::mrstft_loss_reference_forward(pd.data(), td.data(), d, cs.c);
      Doubles gref(count(d));
      ssm::mrstft_loss_reference_backward(gref.data(), kDloss, pd.data(), td.data(), d, cs.c);
      const StftRun run = run_stft(loss, pred, target, d);
      const double ef = value_error(run.loss, ref), eb = rel_error(run.grad, gref);
      EXPECT_LE(ef, kForwardTol) << run.loss << " vs " << ref;
      EXPECT_LE(eb, kBackwardTol);
      std::printf("  STFT %-10s B=%d T=%-4d loss %.4f  forward %.1e  backward %.1e\n", cs.name, d.B, d.T, ref, ef, eb);
    }
  }
}

// The default config at training shapes, against MultiResStftLoss<double> (the
// float CPU version is itself up to 1e-2 off in backward: see cuda_losses.hpp).
// One object through growing, ragged and shrinking dims, one case on a stream.
TEST_F(CudaLossesGpu, StftMatchesTheCpuAtTrainingShapes) {
  struct Case {
    LossDims d;
    bool independent;  // pred unrelated to target, else a noisy estimate of it
  };
  const Case cases[] = {
      {{4, 16000}, true}, {{32, 16000}, false}, {{5, 12345}, true}, {{3, 700}, false}, {{4, 16000}, false}};
  ssm::MultiResStftLossCuda loss;
  ssm::MultiResStftLoss<double> cpu;
  ssm::MultiResStftLoss<float> cpu_float;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  uint64_t seed = 400;
  for (const Case& cs : cases) {
    const LossDims& d = cs.d;
    SCOPED_TRACE("B=" + std::to_string(d.B) + " T=" + std::to_string(d.T));
    const Floats target = random_vector<float>(count(d), ++seed), noise = random_vector<float>(count(d), ++seed);
    Floats pred = noise;
    if (!cs.independent)
      for (size_t i = 0; i < pred.size(); ++i) pred[i] = 0.6f * target[i] + 0.2f * noise[i];
    const Doubles pd = cast_vector<double>(pred), td = cast_vector<double>(target);
    const double ref = cpu.forward(pd.data(), td.data(), d);
    Doubles gref(count(d));
    cpu.backward(gref.data(), kDloss, d);
    const double ref_float = cpu_float.forward(pred.data(), target.data(), d);
    const StftRun run = run_stft(loss, pred, target, d);
    const double ef = value_error(run.loss, ref), eb = rel_error(run.grad, gref);
    EXPECT_LE(ef, kForwardTol) << run.loss << " vs " << ref;
    EXPECT_LE(value_error(run.loss, ref_float), kForwardTol) << run.loss << " vs float " << ref_float;
    EXPECT_LE(eb, kBackwardTol);
    std::printf("  STFT default B=%-2d T=%-5d loss %.4f  forward %.1e  backward %.1e\n", d.B, d.T, ref, ef, eb);
    if (d.B == 5) {  // the same on a stream of its own
      const StftRun on_stream = run_stft(loss, pred, target, d, stream);
      EXPECT_EQ(on_stream.loss, run.loss);
      EXPECT_EQ(on_stream.grad, run.grad);
    }
  }
  // pred == target: the loss is zero and the gradient finite.
  const LossDims d{2, 4000};
  const Floats x = random_vector<float>(count(d), 499);
  const StftRun same = run_stft(loss, x, x, d);
  EXPECT_LE(std::fabs(same.loss), 1e-9);
  EXPECT_TRUE(std::all_of(same.grad.begin(), same.grad.end(), [](float v) { return std::isfinite(v); }));
  cudaStreamDestroy(stream);
}

TEST_F(CudaLossesGpu, StftBackwardNeedsAMatchingForward) {
  const LossDims d{2, 500};
  const Floats pred = random_vector<float>(count(d), 501), target = random_vector<float>(count(d), 502);
  const DeviceFloats p(pred), t(target), dpred(count(d));
  ssm::MultiResStftLossCuda loss;
  EXPECT_THROW(loss.backward(dpred.get(), 1.0, d), ssm::Error);  // no forward yet
  loss.forward(p.get(), t.get(), d);
  EXPECT_THROW(loss.backward(dpred.get(), 1.0, LossDims{2, 501}), ssm::Error);
  EXPECT_THROW(loss.backward(dpred.get(), 1.0, LossDims{3, 500}), ssm::Error);
  EXPECT_THROW(loss.backward(nullptr, 1.0, d), ssm::Error);
  // A forward refused for its arguments leaves the last one standing, as on the CPU.
  EXPECT_THROW(loss.forward(p.get(), nullptr, d), ssm::Error);
  EXPECT_NO_THROW(loss.backward(dpred.get(), 1.0, d));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// Forward + backward of the default config at the training size; prints the
// median time (the sanity bound is loose: the printed time is the measurement).
TEST_F(CudaLossesGpu, StftSpeedAtTrainingSize) {
  const LossDims d{32, 16000};
  const DeviceFloats p(random_vector<float>(count(d), 601)), t(random_vector<float>(count(d), 602)), dpred(count(d));
  ssm::MultiResStftLossCuda loss;
  std::vector<double> fwd_ms, step_ms;
  for (int rep = 0; rep < 23; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    loss.forward(p.get(), t.get(), d);  // synchronises
    const auto t1 = std::chrono::steady_clock::now();
    loss.backward(dpred.get(), 1.0, d);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto t2 = std::chrono::steady_clock::now();
    if (rep < 3) continue;  // warm-up: plans, buffers
    fwd_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    step_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
  }
  std::sort(fwd_ms.begin(), fwd_ms.end());
  std::sort(step_ms.begin(), step_ms.end());
  const double fwd = fwd_ms[fwd_ms.size() / 2], step = step_ms[step_ms.size() / 2];
  std::printf("  STFT loss B=32 T=16000 (fft 256/512/1024) on %s: forward %.3f ms, forward + backward %.3f ms\n",
              ssm::cuda_device_description().c_str(), fwd, step);
  EXPECT_LT(step, 50.0);
}

#else

TEST(CudaLossesGpu, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend (SSM_CUDA=OFF)"; }

#endif  // SSM_WITH_CUDA

}  // namespace
