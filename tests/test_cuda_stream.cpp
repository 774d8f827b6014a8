// The batched recurrent step on the GPU (ssm/cuda_stream.hpp) against S CPU
// ssm::Stream objects: every stream gets its own random inputs and a random
// initial state, then both advance by single steps, by long bursts (more
// samples than one launch takes) and through device pointers; outputs and
// final states must agree to 1e-4 (DESIGN.md §2.4, fp32 on both sides). On a
// machine without a GPU (or a build without CUDA) the GPU tests skip with the
// reason.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ssm/cuda.hpp"
#include "ssm/cuda_stream.hpp"
#include "ssm/model.hpp"
#include "testing.hpp"

#ifdef SSM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

using ssm::BatchedStreamCuda;
using ssm::ModelConfig;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using F = std::vector<float>;

constexpr size_t kSnapshotHeader = 24;  // Stream::snapshot(): magic, config fingerprint, count

// The default denoiser's architecture: D=64 L=4 E=128 P=32 (H=4) N=32 K=4 G=1, mono.
ModelConfig denoiser_config() { return ModelConfig{}; }

// G = 2, N a multiple of 4 that leaves a lane of each row idle (N/4 = 3 of 4
// lanes), K = 3, several input and output channels.
ModelConfig groups_config() {
  ModelConfig c;
  c.d_model = 16;
  c.n_layers = 2;
  c.head_dim = 8;  // E = 32, H = 4
  c.n_groups = 2;
  c.d_state = 12;
  c.d_conv = 3;
  c.in_channels = 2;
  c.out_channels = 3;
  return c;
}

// N not a multiple of 4 (one float per lane), K = 1 (no conv tail), P = 6.
ModelConfig odd_config() {
  ModelConfig c;
  c.d_model = 12;
  c.n_layers = 2;
  c.head_dim = 6;  // E = 24, H = 4
  c.d_state = 7;
  c.d_conv = 1;
  c.out_channels = 2;
  return c;
}

// The forecaster's architecture (models/forecaster/train.json).
ModelConfig forecaster_config() {
  ModelConfig c;
  c.d_model = 8;
  c.n_layers = 1;
  c.head_dim = 8;
  c.d_state = 8;
  c.sample_rate = 1;
  return c;
}

// Published initialisation, then every parameter moved a little, so that
// norm weights, D and biases differ from their constant initial values and a
// misplaced tensor shows.
ssm::Model make_model(const ModelConfig& cfg, uint64_t seed) {
  ssm::Model m(cfg);
  m.init(seed);
  const F noise = random_vector<float>(m.params().size(), seed + 1, -0.1, 0.1);
  float* p = m.params().data();
  for (size_t i = 0; i < noise.size(); ++i) p[i] += noise[i];
  return m;
}

F cpu_state(const ssm::Stream& s) {
  const std::vector<uint8_t> bytes = s.snapshot();
  F v((bytes.size() - kSnapshotHeader) / sizeof(float));
  std::memcpy(v.data(), bytes.data() + kSnapshotHeader, v.size() * sizeof(float));
  return v;
}

void set_cpu_state(ssm::Stream& s, const F& v) {
  std::vector<uint8_t> bytes = s.snapshot();
  ASSERT_EQ(bytes.size(), kSnapshotHeader + v.size() * sizeof(float));
  std::memcpy(bytes.data() + kSnapshotHeader, v.data(), v.size() * sizeof(float));
  s.restore(bytes);
}

// n samples of every stream through the CPU streams: in (n, S, ci) -> out (n, S, co).
F run_cpu(std::vector<ssm::Stream>& cpu, const F& in, int n, const ModelConfig& cfg) {
  const int S = static_cast<int>(cpu.size()), ci = cfg.in_channels, co = cfg.out_channels;
  F out(static_cast<size_t>(n) * S * co), xi(static_cast<size_t>(n) * ci), yi(static_cast<size_t>(n) * co);
  for (int s = 0; s < S; ++s) {
    for (int t = 0; t < n; ++t)
      std::memcpy(&xi[static_cast<size_t>(t) * ci], &in[(static_cast<size_t>(t) * S + s) * ci], ci * sizeof(float));
    cpu[s].process(xi.data(), yi.data(), n);
    for (int t = 0; t < n; ++t)
      std::memcpy(&out[(static_cast<size_t>(t) * S + s) * co], &yi[static_cast<size_t>(t) * co], co * sizeof(float));
  }
  return out;
}

TEST(CudaStream, RejectsMamba1) {
  ModelConfig c = forecaster_config();
  c.block = ssm::BlockKind::Mamba1;
  const ssm::Model m(c);
  EXPECT_THROW(BatchedStreamCuda(m, 4), ssm::Error);
}

class CudaStreamGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ssm::cuda_available()) GTEST_SKIP() << "no usable GPU: " << ssm::cuda_device_description();
  }
};

struct Case {
  const char* name;
  ModelConfig cfg;
  int S;
  int streams_per_block;  // 0: automatic
};

// Random states in, then single steps, a burst longer than one launch, and
// device-pointer bursts; outputs and final states against the CPU streams.
void run_case(const Case& cs, uint64_t seed) {
  SCOPED_TRACE(std::string(cs.name) + " S=" + std::to_string(cs.S) +
               " streams_per_block=" + std::to_string(cs.streams_per_block));
  const ModelConfig& cfg = cs.cfg;
  const int S = cs.S, ci = cfg.in_channels, co = cfg.out_channels;
  const ssm::Model model = make_model(cfg, seed);
  BatchedStreamCuda::Options opt;
  opt.streams_per_block = cs.streams_per_block;
  BatchedStreamCuda gpu(model, S, nullptr, opt);
  std::vector<ssm::Stream> cpu;
  cpu.reserve(S);
  for (int s = 0; s < S; ++s) cpu.emplace_back(model, 16);
  ASSERT_EQ(gpu.state_size(), cpu[0].state_size());
  ASSERT_EQ(gpu.streams(), S);

  for (int s = 0; s < S; ++s) {
    const F st = random_vector<float>(gpu.state_size(), seed + 100 + s, -0.5, 0.5);
    set_cpu_state(cpu[s], st);
    gpu.set_state(s, st.data());
  }

  double worst_out = 0;
  uint64_t draw = seed + 1000;
  // single steps (host pointers)
  for (int k = 0; k < 3; ++k) {
    const F in = random_vector<float>(static_cast<size_t>(S) * ci, ++draw);
    F out(static_cast<size_t>(S) * co, NAN);
    gpu.step_host(in.data(), out.data());
    const double e = rel_error(out, run_cpu(cpu, in, 1, cfg));
    EXPECT_LE(e, 1e-4) << "step " << k;
    worst_out = std::max(worst_out, e);
  }
  // a burst of 45 samples: more than one launch takes
  {
    const int n = 45;
    const F in = random_vector<float>(static_cast<size_t>(n) * S * ci, ++draw);
    F out(static_cast<size_t>(n) * S * co, NAN);
    gpu.step_many_host(in.data(), out.data(), n);
    const double e = rel_error(out, run_cpu(cpu, in, n, cfg));
    EXPECT_LE(e, 1e-4) << "burst of " << n;
    worst_out = std::max(worst_out, e);
  }
#ifdef SSM_WITH_CUDA
  // device pointers: a step, then a burst of 5, outputs poisoned beforehand
  {
    const int n = 6;
    const F in = random_vector<float>(static_cast<size_t>(n) * S * ci, ++draw);
    const size_t in_bytes = in.size() * sizeof(float), out_bytes = static_cast<size_t>(n) * S * co * sizeof(float);
    float *d_in = nullptr, *d_out = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_in), in_bytes), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_out), out_bytes), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_in, in.data(), in_bytes, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_out, 0xff, out_bytes), cudaSuccess);  // all-ones bits: NaN
    gpu.step(d_in, d_out);
    gpu.step_many(d_in + static_cast<size_t>(S) * ci, d_out + static_cast<size_t>(S) * co, n - 1);
    F out(static_cast<size_t>(n) * S * co);
    ASSERT_EQ(cudaMemcpy(out.data(), d_out, out_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(d_in);
    cudaFree(d_out);
    const double e = rel_error(out, run_cpu(cpu, in, n, cfg));
    EXPECT_LE(e, 1e-4) << "device pointers";
    worst_out = std::max(worst_out, e);
  }
#endif
  double worst_state = 0;
  F got(gpu.state_size());
  for (int s = 0; s < S; ++s) {
    gpu.get_state(s, got.data());
    worst_state = std::max(worst_state, rel_error(got, cpu_state(cpu[s])));
  }
  EXPECT_LE(worst_state, 1e-4) << "final states";
  std::printf("  %-10s S=%-4d %s\n    outputs %.1e  states %.1e\n", cs.name, S, gpu.launch_description().c_str(),
              worst_out, worst_state);
}

TEST_F(CudaStreamGpu, DenoiserMatchesCpuStreams) {
  const Case cases[] = {{"denoiser", denoiser_config(), 1, 0},
                        {"denoiser", denoiser_config(), 7, 0},
                        {"denoiser", denoiser_config(), 300, 0},
                        // the cut chosen for thousands of streams: 4 per block, state in registers
                        {"denoiser", denoiser_config(), 300, 4},
                        // state streamed in passes (too large for registers), last block partial
                        {"denoiser", denoiser_config(), 300, 16},
                        // state in registers, last block partial
                        {"denoiser", denoiser_config(), 7, 3}};
  uint64_t seed = 10;
  for (const Case& cs : cases) run_case(cs, seed += 10);
}

TEST_F(CudaStreamGpu, OtherShapesMatchCpuStreams) {
  const Case cases[] = {{"groups", groups_config(), 37, 0},
                        {"groups", groups_config(), 37, 5},
                        {"odd_N_K1", odd_config(), 50, 0},
                        {"odd_N_K1", odd_config(), 50, 64},
                        {"forecaster", forecaster_config(), 1000, 0},
                        {"forecaster", forecaster_config(), 1000, 32}};
  uint64_t seed = 500;
  for (const Case& cs : cases) run_case(cs, seed += 10);
}

TEST_F(CudaStreamGpu, StatesMoveResetAndAreChecked) {
  const ModelConfig cfg = groups_config();
  const ssm::Model model = make_model(cfg, 7);
  const int S = 9;
  BatchedStreamCuda gpu(model, S);
  const size_t n = gpu.state_size();
  F got(n);

  // set / get round trip is exact, and touches only its stream
  std::vector<F> states;
  for (int s = 0; s < S; ++s) {
    states.push_back(random_vector<float>(n, 40 + s));
    gpu.set_state(s, states.back().data());
  }
  for (int s = 0; s < S; ++s) {
    gpu.get_state(s, got.data());
    EXPECT_EQ(got, states[s]) << "stream " << s;
  }

  // a series moves from the GPU to a CPU stream and on: both continue alike
  ssm::Stream cpu(model);
  gpu.get_state(4, got.data());
  set_cpu_state(cpu, got);
  const F in = random_vector<float>(static_cast<size_t>(S) * cfg.in_channels, 77);
  F out(static_cast<size_t>(S) * cfg.out_channels), ref(cfg.out_channels);
  gpu.step_host(in.data(), out.data());
  cpu.process(in.data() + 4 * cfg.in_channels, ref.data(), 1);
  const F gpu4(out.begin() + 4 * cfg.out_channels, out.begin() + 5 * cfg.out_channels);
  EXPECT_LE(rel_error(gpu4, ref), 1e-4);
  gpu.get_state(4, got.data());
  EXPECT_LE(rel_error(got, cpu_state(cpu)), 1e-4);

  // reset of one stream zeroes it and leaves the others
  std::vector<F> before(S, F(n));
  for (int s = 0; s < S; ++s) gpu.get_state(s, before[s].data());
  gpu.reset(2);
  for (int s = 0; s < S; ++s) {
    gpu.get_state(s, got.data());
    if (s == 2) {
      EXPECT_EQ(got, F(n, 0.0f));
    } else {
      EXPECT_EQ(got, before[s]) << "stream " << s;
    }
  }
  // a reset stream continues as a fresh CPU stream
  ssm::Stream fresh(model);
  gpu.step_host(in.data(), out.data());
  fresh.process(in.data() + 2 * cfg.in_channels, ref.data(), 1);
  EXPECT_LE(rel_error(F(out.begin() + 2 * cfg.out_channels, out.begin() + 3 * cfg.out_channels), ref), 1e-4);

  gpu.reset_all();
  for (int s = 0; s < S; ++s) {
    gpu.get_state(s, got.data());
    EXPECT_EQ(got, F(n, 0.0f)) << "stream " << s;
  }

  // bad calls
  F bad(n, 0.0f);
  bad[n / 2] = NAN;
  EXPECT_THROW(gpu.set_state(0, bad.data()), ssm::Error);
  EXPECT_THROW(gpu.get_state(S, got.data()), ssm::Error);
  EXPECT_THROW(gpu.reset(-1), ssm::Error);
  EXPECT_THROW(gpu.step_many(in.data(), out.data(), -1), ssm::Error);
  BatchedStreamCuda::Options too_many;
  too_many.streams_per_block = 100000;
  EXPECT_THROW(BatchedStreamCuda(model, S, nullptr, too_many), ssm::Error);
  EXPECT_THROW(BatchedStreamCuda(model, 0), ssm::Error);
}

// A step of some streams only (in a shuffled order): they advance as their
// CPU streams do, the others keep their state to the bit; get_states reads
// many at once, as get_state does one by one.
void run_subset_case(const char* name, const ModelConfig& cfg, int S, uint64_t seed) {
  SCOPED_TRACE(std::string(name) + " S=" + std::to_string(S));
  const ssm::Model model = make_model(cfg, seed);
  BatchedStreamCuda gpu(model, S);
  std::vector<ssm::Stream> cpu;
  cpu.reserve(S);
  for (int s = 0; s < S; ++s) cpu.emplace_back(model, 16);
  const size_t n = gpu.state_size();
  for (int s = 0; s < S; ++s) {
    const F st = random_vector<float>(n, seed + 100 + s, -0.5, 0.5);
    set_cpu_state(cpu[s], st);
    gpu.set_state(s, st.data());
  }
  const int ci = cfg.in_channels, co = cfg.out_channels;
  std::vector<int> order(S);
  for (int s = 0; s < S; ++s) order[s] = s;
  double worst = 0;
  for (int round = 0; round < 4; ++round) {
    // every third stream from a rotating start, in reverse: a scattered, unordered subset
    std::vector<int> slots;
    for (int s = S - 1 - round; s >= 0; s -= 3) slots.push_back(s);
    const int count = static_cast<int>(slots.size());
    std::vector<F> before(S, F(n));
    for (int s = 0; s < S; ++s) gpu.get_state(s, before[s].data());
    const F in = random_vector<float>(static_cast<size_t>(count) * ci, seed + 900 + round);
    F out(static_cast<size_t>(count) * co, NAN);
    gpu.step_subset_host(slots.data(), in.data(), out.data(), count);
    std::vector<uint8_t> stepped(S, 0);
    F ref(static_cast<size_t>(count) * co);  // (count, co): norm-wise over the listed streams, as run_case does
    for (int i = 0; i < count; ++i) {
      cpu[slots[i]].process(in.data() + static_cast<size_t>(i) * ci, ref.data() + static_cast<size_t>(i) * co, 1);
      stepped[slots[i]] = 1;
    }
    const double e = rel_error(out, ref);
    EXPECT_LE(e, 1e-4) << "round " << round;
    worst = std::max(worst, e);
    F got(n);
    for (int s = 0; s < S; ++s) {
      gpu.get_state(s, got.data());
      if (stepped[s]) {
        EXPECT_LE(rel_error(got, cpu_state(cpu[s])), 1e-4) << "round " << round << " stream " << s;
      } else {
        EXPECT_EQ(got, before[s]) << "round " << round << " stream " << s << " was not listed";
      }
    }
    // get_states of the subset equals get_state of each
    F many(static_cast<size_t>(count) * n, NAN);
    gpu.get_states(slots.data(), count, many.data());
    for (int i = 0; i < count; ++i) {
      gpu.get_state(slots[i], got.data());
      EXPECT_EQ(F(many.begin() + i * n, many.begin() + (i + 1) * n), got) << "get_states row " << i;
    }
  }
  std::printf("  subset %-10s S=%-4d outputs %.1e\n", name, S, worst);
}

TEST_F(CudaStreamGpu, SubsetStepAdvancesOnlyTheListedStreams) {
  run_subset_case("denoiser", denoiser_config(), 40, 3);
  run_subset_case("groups", groups_config(), 23, 5);
  run_subset_case("odd_N_K1", odd_config(), 17, 7);
  run_subset_case("forecaster", forecaster_config(), 300, 9);

  const ssm::Model model = make_model(forecaster_config(), 1);
  BatchedStreamCuda gpu(model, 8);
  const int dup[] = {1, 5, 1}, out_of_range[] = {0, 8};
  const float in[3] = {0, 0, 0};
  float out[3];
  try {
    gpu.step_subset_host(dup, in, out, 3);
    ADD_FAILURE() << "a stream listed twice was accepted";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("stream 1 is listed twice"), std::string::npos) << e.what();
  }
  try {
    gpu.step_subset_host(out_of_range, in, out, 2);
    ADD_FAILURE() << "a stream out of range was accepted";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("slots[1] = 8 is out of range"), std::string::npos) << e.what();
  }
  gpu.step_subset_host(dup, in, out, 0);  // nothing to do
}

}  // namespace
