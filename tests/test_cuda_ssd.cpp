// CUDA SSD (Mamba-2) chunked forward and backward against the library's fp64
// sequential reference (ssm/ssd.hpp: ssd_reference_forward / _backward, which
// tests/test_ssd.cpp checks against finite differences). On a machine without
// a GPU (or a build without CUDA) the GPU tests skip with the reason.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "ssm/cuda.hpp"
#include "ssm/cuda_ssd.hpp"
#include "ssm/ssd.hpp"
#include "testing.hpp"

#ifdef SSM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

using ssm::SsdDims;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using V = std::vector<double>;

// ---------------------------------------------------------------------------
// fp64 reference: the recurrence, and its gradient by reverse mode through time
// ---------------------------------------------------------------------------
struct Inputs {
  V x, dt_raw, A_log, Bm, Cm, D, dt_bias, init, dy, dfinal;  // init / dfinal empty: none
};

struct Grads {
  V dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dinit;
};

[[maybe_unused]] Inputs make_inputs(const SsdDims& d, uint64_t seed, bool init, bool dfinal) {
  const size_t bt = static_cast<size_t>(d.B) * d.T;
  Inputs in;
  in.x = random_vector(bt * d.H * d.P, seed + 1);
  in.dt_raw = random_vector(bt * d.H, seed + 2);
  in.A_log = random_vector(d.H, seed + 3, 1.0, 16.0);
  for (auto& a : in.A_log) a = std::log(a);
  in.Bm = random_vector(bt * d.G * d.N, seed + 4);
  in.Cm = random_vector(bt * d.G * d.N, seed + 5);
  in.D = random_vector(d.H, seed + 6);
  in.dt_bias = random_vector(d.H, seed + 7, 0.001, 0.1);
  for (auto& b : in.dt_bias) b = std::log(std::expm1(b));  // inverse softplus
  const size_t st = static_cast<size_t>(d.B) * d.H * d.P * d.N;
  if (init) in.init = random_vector(st, seed + 8);
  in.dy = random_vector(bt * d.H * d.P, seed + 9);
  if (dfinal) in.dfinal = random_vector(st, seed + 10);
  return in;
}

const double* ptr_or_null(const V& v) { return v.empty() ? nullptr : v.data(); }

// The library's fp64 sequential reference (lib/cpu/ssd.cpp): y (B, T, H, P), final (B, H, P, N).
[[maybe_unused]] void reference_forward(const Inputs& in, const SsdDims& d, V& y, V& fin) {
  y.assign(static_cast<size_t>(d.B) * d.T * d.H * d.P, 0.0);
  fin.assign(static_cast<size_t>(d.B) * d.H * d.P * d.N, 0.0);
  ssm::ssd_reference_forward<double>(y.data(), fin.data(), in.x.data(), in.dt_raw.data(), in.A_log.data(), in.Bm.data(),
                                     in.Cm.data(), in.D.data(), in.dt_bias.data(), ptr_or_null(in.init), d);
}

// Its gradient of <dy, y> + <dfinal, final>; parameter gradients from zero.
[[maybe_unused]] Grads reference_backward(const Inputs& in, const SsdDims& d) {
  Grads g;
  g.dx.assign(in.x.size(), 0.0);
  g.ddt_raw.assign(in.dt_raw.size(), 0.0);
  g.dA_log.assign(d.H, 0.0);
  g.dBm.assign(in.Bm.size(), 0.0);
  g.dCm.assign(in.Cm.size(), 0.0);
  g.dD.assign(d.H, 0.0);
  g.ddt_bias.assign(d.H, 0.0);
  g.dinit.assign(static_cast<size_t>(d.B) * d.H * d.P * d.N, 0.0);
  ssm::ssd_reference_backward<double>(
      g.dx.data(), g.ddt_raw.data(), g.dA_log.data(), g.dBm.data(), g.dCm.data(), g.dD.data(), g.ddt_bias.data(),
      g.dinit.data(), in.dy.data(), ptr_or_null(in.dfinal), in.x.data(), in.dt_raw.data(), in.A_log.data(),
      in.Bm.data(), in.Cm.data(), in.D.data(), in.dt_bias.data(), ptr_or_null(in.init), d);
  return g;
}

TEST(CudaSsd, RejectsSizesTheKernelsDoNotTake) {
  const SsdDims ok{1, 10, 2, 8, 1, 8};
  EXPECT_THROW(ssm::ssd_cuda_check_dims(ok, 65), ssm::Error);
  EXPECT_THROW(ssm::ssd_cuda_check_dims(SsdDims{1, 10, 2, 65, 1, 8}, 64), ssm::Error);
  EXPECT_THROW(ssm::ssd_cuda_check_dims(SsdDims{1, 10, 2, 8, 1, 129}, 64), ssm::Error);
  EXPECT_THROW(ssm::ssd_cuda_check_dims(SsdDims{1, 10, 3, 8, 2, 8}, 64), ssm::Error);
}

#ifdef SSM_WITH_CUDA

#define CUDA_OK(call)                                                      \
  do {                                                                     \
    const cudaError_t e_ = (call);                                         \
    ASSERT_EQ(e_, cudaSuccess) << #call << ": " << cudaGetErrorString(e_); \
  } while (0)

bool have_gpu(std::string& why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    why = std::string("no usable GPU: cudaGetDeviceCount returned ") + std::to_string(static_cast<int>(e)) + " (" +
          cudaGetErrorString(e) + ")";
    return false;
  }
  if (n == 0) {
    why = "no CUDA device";
    return false;
  }
  return true;
}

// A device buffer of floats.
struct Buf {
  float* p = nullptr;
  size_t n = 0;
  Buf() = default;
  explicit Buf(size_t count) : n(count) {
    if (n && cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)) != cudaSuccess) p = nullptr;
  }
  Buf(const V& v) : Buf(v.size()) { upload(v); }
  ~Buf() {
    if (p) cudaFree(p);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void upload(const V& v) {
    std::vector<float> f(v.begin(), v.end());
    if (!f.empty()) cudaMemcpy(p, f.data(), f.size() * sizeof(float), cudaMemcpyHostToDevice);
  }
  void poison() {
    if (p) cudaMemset(p, 0xff, n * sizeof(float));  // all-ones bits: NaN
  }
  std::vector<float> download() const {
    std::vector<float> f(n);
    if (n) cudaMemcpy(f.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost);
    return f;
  }
  float* get() { return p; }  // null for an empty buffer
};

struct Case {
  const char* name;
  SsdDims d;
  int Q;
  bool init, dfinal;
};

const Case kCases[] = {
    {"ragged_T_G2_init", {2, 200, 4, 16, 2, 16}, 64, true, true},
    {"T_less_than_Q", {1, 37, 2, 8, 1, 8}, 64, true, false},
    {"G_equals_H_Q32", {2, 130, 3, 12, 3, 20}, 32, true, true},
    {"odd_P_N_no_state", {2, 100, 2, 5, 1, 7}, 48, false, false},
    {"mamba2_tile_P64_N128", {2, 200, 4, 64, 1, 128}, 64, true, true},
    {"audio_tile_P32_N32", {3, 333, 4, 32, 1, 32}, 64, true, true},
    {"P48_N64_G2", {1, 190, 4, 48, 2, 64}, 64, true, false},
    {"Q1", {1, 20, 2, 8, 1, 8}, 1, true, true},
    {"T1_B3", {3, 1, 2, 4, 1, 4}, 64, true, true},
    // long enough for the sequential kernels to cut the sequence into segments
    {"segments_Q32", {1, 1000, 2, 32, 1, 64}, 32, true, true},
    {"segments_P64_N128_G2", {1, 700, 2, 64, 2, 128}, 64, true, true},
};

// Runs one case on the GPU and compares every output with the fp64 reference.
void run_case(const Case& cs, ssm::CudaMath math, double tol, uint64_t seed) {
  const SsdDims& d = cs.d;
  SCOPED_TRACE(std::string(cs.name) + (math == ssm::CudaMath::tf32 ? " tf32" : " fp32"));
  const Inputs in = make_inputs(d, seed, cs.init, cs.dfinal);
  V y_ref, fin_ref;
  reference_forward(in, d, y_ref, fin_ref);
  const Grads gr = reference_backward(in, d);

  Buf x(in.x), dt_raw(in.dt_raw), A_log(in.A_log), Bm(in.Bm), Cm(in.Cm), D(in.D), dt_bias(in.dt_bias), init(in.init),
      dy(in.dy), dfinal(in.dfinal);
  const size_t st = static_cast<size_t>(d.B) * d.H * d.P * d.N;
  Buf y(in.x.size()), fin(st);
  ssm::SsdCudaConfig cfg;
  cfg.math = math;

  // forward, twice: the second result must be bit-identical (no races)
  std::vector<float> y1, fin1;
  for (int rep = 0; rep < 2; ++rep) {
    y.poison();
    fin.poison();
    ssm::ssd_chunked_forward_cuda(y.get(), fin.get(), x.get(), dt_raw.get(), A_log.get(), Bm.get(), Cm.get(), D.get(),
                                  dt_bias.get(), init.get(), d, cs.Q, nullptr, cfg);
    CUDA_OK(cudaDeviceSynchronize());
    if (rep == 0) {
      y1 = y.download();
      fin1 = fin.download();
    }
  }
  const std::vector<float> y2 = y.download(), fin2 = fin.download();
  const double ey = rel_error(y1, y_ref), ef = rel_error(fin1, fin_ref);
  EXPECT_LT(ey, tol) << "y";
  EXPECT_LT(ef, tol) << "final_state";
  EXPECT_EQ(y1, y2) << "forward y differs between two runs";
  EXPECT_EQ(fin1, fin2) << "forward final_state differs between two runs";

  // backward; parameter gradients accumulate onto random values
  Buf dx(in.x.size()), ddt_raw(in.dt_raw.size()), dBm(in.Bm.size()), dCm(in.Cm.size()), dinit(st);
  const V base_A = random_vector(d.H, seed + 20), base_D = random_vector(d.H, seed + 21),
          base_bias = random_vector(d.H, seed + 22);
  Buf dA_log(base_A), dD(base_D), ddt_bias(base_bias);
  std::vector<float> dx1, dB1, dC1;
  for (int rep = 0; rep < 2; ++rep) {
    dx.poison();
    ddt_raw.poison();
    dBm.poison();
    dCm.poison();
    dinit.poison();
    dA_log.upload(base_A);
    dD.upload(base_D);
    ddt_bias.upload(base_bias);
    ssm::ssd_chunked_backward_cuda(dx.get(), ddt_raw.get(), dA_log.get(), dBm.get(), dCm.get(), dD.get(),
                                   ddt_bias.get(), dinit.get(), dy.get(), dfinal.get(), x.get(), dt_raw.get(),
                                   A_log.get(), Bm.get(), Cm.get(), D.get(), dt_bias.get(), init.get(), d, cs.Q,
                                   nullptr, cfg);
    CUDA_OK(cudaDeviceSynchronize());
    if (rep == 0) {
      dx1 = dx.download();
      dB1 = dBm.download();
      dC1 = dCm.download();
    }
  }
  auto delta = [](const std::vector<float>& out, const V& base) {
    V r(out.size());
    for (size_t i = 0; i < out.size(); ++i) r[i] = static_cast<double>(out[i]) - base[i];
    return r;
  };
  const double e_dx = rel_error(dx1, gr.dx), e_ddt = rel_error(ddt_raw.download(), gr.ddt_raw),
               e_dB = rel_error(dB1, gr.dBm), e_dC = rel_error(dC1, gr.dCm),
               e_dinit = rel_error(dinit.download(), gr.dinit),
               e_dA = rel_error(delta(dA_log.download(), base_A), gr.dA_log),
               e_dD = rel_error(delta(dD.download(), base_D), gr.dD),
               e_dbias = rel_error(delta(ddt_bias.download(), base_bias), gr.ddt_bias);
  EXPECT_LT(e_dx, tol) << "dx";
  EXPECT_LT(e_ddt, tol) << "ddt_raw";
  EXPECT_LT(e_dB, tol) << "dBm";
  EXPECT_LT(e_dC, tol) << "dCm";
  EXPECT_LT(e_dinit, tol) << "dinitial_state";
  EXPECT_LT(e_dA, tol) << "dA_log";
  EXPECT_LT(e_dD, tol) << "dD";
  EXPECT_LT(e_dbias, tol) << "ddt_bias";
  EXPECT_EQ(dx1, dx.download()) << "backward dx differs between two runs";
  EXPECT_EQ(dB1, dBm.download()) << "backward dBm differs between two runs";
  EXPECT_EQ(dC1, dCm.download()) << "backward dCm differs between two runs";
  std::printf(
      "  %-22s %s  y %.1e  final %.1e | dx %.1e  ddt_raw %.1e  dB %.1e  dC %.1e  dinit %.1e  dA_log %.1e  dD "
      "%.1e  ddt_bias %.1e\n",
      cs.name, math == ssm::CudaMath::tf32 ? "tf32" : "fp32", ey, ef, e_dx, e_ddt, e_dB, e_dC, e_dinit, e_dA, e_dD,
      e_dbias);
}

class CudaSsdGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!have_gpu(why)) GTEST_SKIP() << why;
  }
};

TEST_F(CudaSsdGpu, Tf32MatchesReference) {
  uint64_t seed = 100;
  for (const Case& cs : kCases) run_case(cs, ssm::CudaMath::tf32, 1e-3, seed += 100);
}

// Fresh seeds on the small shapes, where a parameter gradient is a sum of few
// terms and tf32 rounding shows most.
TEST_F(CudaSsdGpu, Tf32AcrossSeeds) {
  const Case cases[] = {
      {"seeds_odd", {2, 100, 2, 5, 1, 7}, 48, true, true},
      {"seeds_ragged", {2, 200, 4, 16, 2, 16}, 64, true, true},
      {"seeds_audio", {2, 333, 4, 32, 1, 32}, 64, true, true},
  };
  for (uint64_t seed = 1; seed <= 12; ++seed)
    for (const Case& cs : cases) run_case(cs, ssm::CudaMath::tf32, 1e-3, 100000 + 1000 * seed);
}

TEST_F(CudaSsdGpu, Fp32SplitMatchesReferenceClosely) {
  uint64_t seed = 7000;
  for (const Case& cs : kCases) run_case(cs, ssm::CudaMath::fp32, 1e-4, seed += 100);
}

TEST_F(CudaSsdGpu, CallerWorkspaceAndStream) {
  const Case cs{"workspace", {2, 150, 4, 32, 2, 64}, 64, true, true};
  const SsdDims& d = cs.d;
  const Inputs in = make_inputs(d, 99, true, true);
  V y_ref, fin_ref;
  reference_forward(in, d, y_ref, fin_ref);
  Buf x(in.x), dt_raw(in.dt_raw), A_log(in.A_log), Bm(in.Bm), Cm(in.Cm), D(in.D), dt_bias(in.dt_bias), init(in.init);
  Buf y(in.x.size());
  y.poison();
  ssm::SsdCudaConfig cfg;
  cfg.workspace_bytes = ssm::ssd_chunked_forward_cuda_workspace(d, cs.Q);
  CUDA_OK(cudaMalloc(&cfg.workspace, cfg.workspace_bytes));
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreate(&s));
  ssm::ssd_chunked_forward_cuda(y.get(), nullptr, x.get(), dt_raw.get(), A_log.get(), Bm.get(), Cm.get(), D.get(),
                                dt_bias.get(), init.get(), d, cs.Q, s, cfg);
  CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_LT(rel_error(y.download(), y_ref), 1e-3);
  ssm::SsdCudaConfig small = cfg;
  small.workspace_bytes = cfg.workspace_bytes - 1;
  EXPECT_THROW(ssm::ssd_chunked_forward_cuda(y.get(), nullptr, x.get(), dt_raw.get(), A_log.get(), Bm.get(), Cm.get(),
                                             D.get(), dt_bias.get(), init.get(), d, cs.Q, s, small),
               ssm::Error);
  cudaStreamDestroy(s);
  cudaFree(cfg.workspace);
}

#else

TEST(CudaSsdGpu, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend (SSM_CUDA=OFF)"; }

#endif  // SSM_WITH_CUDA

}  // namespace
