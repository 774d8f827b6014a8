// CUDA selective scan (Mamba-1, S6) forward and backward against the library's
// fp64 CPU versions (ssm/selective_scan.hpp: selective_scan_reference_forward
// for y and the final state, selective_scan_backward for every gradient; both
// are checked against finite differences in tests/test_selective_scan.cpp).
// On a machine without a GPU (or a build without CUDA) the GPU tests skip with
// the reason.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "ssm/common.hpp"
#include "ssm/cuda.hpp"
#include "ssm/selective_scan.hpp"
#include "testing.hpp"

#ifdef SSM_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ssm/cuda_selective_scan.hpp"
#endif

namespace {

#ifdef SSM_WITH_CUDA

using ssm::ScanDims;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using V = std::vector<double>;

size_t act(const ScanDims& d) { return size_t(d.B) * d.T * d.E; }        // (B, T, E)
size_t bcs(const ScanDims& d) { return size_t(d.B) * d.T * d.G * d.N; }  // (B, T, G, N)
size_t sts(const ScanDims& d) { return size_t(d.B) * d.E * d.N; }        // (B, E, N)

struct Case {
  const char* name;
  ScanDims d;     // B, T, E, G, N
  bool gate;      // z
  bool init;      // initial_state
  bool dfinal;    // dfinal_state
  bool in_place;  // final_state is the initial_state buffer
  bool dinit;     // dinitial_state wanted
};

// Two input regimes: Mamba's initialisation (A = -(1..16), dt in [1e-3, 0.1]:
// long memory, states carried across many spans) and fast decays (dt up to
// ~1.3, |A| in [0.5, 4]: decay products underflow inside a span).
enum class Regime { mamba, fast };

struct Inputs {
  V x, dt_raw, A_log, Bm, Cm, D, dt_bias, z, init, dy, dfinal;  // z / init / dfinal empty: none
};

Inputs make_inputs(const Case& cs, Regime regime, uint64_t seed) {
  const ScanDims& d = cs.d;
  Inputs in;
  in.x = random_vector(act(d), seed + 1);
  in.Bm = random_vector(bcs(d), seed + 4);
  in.Cm = random_vector(bcs(d), seed + 5);
  in.D = random_vector(d.E, seed + 6);
  if (regime == Regime::mamba) {
    in.dt_raw = random_vector(act(d), seed + 2);
    in.A_log = random_vector(size_t(d.E) * d.N, seed + 3, 1.0, 16.0);
    for (auto& a : in.A_log) a = std::log(a);
    in.dt_bias = random_vector(d.E, seed + 7, 0.001, 0.1);
    for (auto& b : in.dt_bias) b = std::log(std::expm1(b));  // inverse softplus
  } else {
    in.dt_raw = random_vector(act(d), seed + 2, -2.0, 1.0);
    in.A_log = random_vector(size_t(d.E) * d.N, seed + 3, std::log(0.5), std::log(4.0));
    in.dt_bias = random_vector(d.E, seed + 7, -1.0, 0.0);
  }
  if (cs.gate) in.z = random_vector(act(d), seed + 8, -2.0, 2.0);
  if (cs.init) in.init = random_vector(sts(d), seed + 9);
  in.dy = random_vector(act(d), seed + 10);
  if (cs.dfinal) in.dfinal = random_vector(sts(d), seed + 11);
  return in;
}

const double* ptr_or_null(const V& v) { return v.empty() ? nullptr : v.data(); }

struct Grads {
  V dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dz, dinit;  // dz empty without z
};

// fp64: y (B, T, E) and the final state (B, E, N); every gradient of <dy, y> + <dfinal, final>.
void reference(const Inputs& in, const ScanDims& d, V& y, V& fin, Grads& g) {
  y.assign(act(d), 0.0);
  fin.assign(sts(d), 0.0);
  ssm::selective_scan_reference_forward<double>(y.data(), fin.data(), in.x.data(), in.dt_raw.data(), in.A_log.data(),
                                                in.Bm.data(), in.Cm.data(), in.D.data(), in.dt_bias.data(),
                                                ptr_or_null(in.z), ptr_or_null(in.init), d);
  g.dx.assign(act(d), 0.0);
  g.ddt_raw.assign(act(d), 0.0);
  g.dA_log.assign(size_t(d.E) * d.N, 0.0);
  g.dBm.assign(bcs(d), 0.0);
  g.dCm.assign(bcs(d), 0.0);
  g.dD.assign(d.E, 0.0);
  g.ddt_bias.assign(d.E, 0.0);
  g.dz.assign(in.z.empty() ? 0 : act(d), 0.0);
  g.dinit.assign(sts(d), 0.0);
  ssm::selective_scan_backward<double>(g.dx.data(), g.ddt_raw.data(), g.dA_log.data(), g.dBm.data(), g.dCm.data(),
                                       g.dD.data(), g.ddt_bias.data(), in.z.empty() ? nullptr : g.dz.data(),
                                       g.dinit.data(), in.dy.data(), ptr_or_null(in.dfinal), in.x.data(),
                                       in.dt_raw.data(), in.A_log.data(), in.Bm.data(), in.Cm.data(), in.D.data(),
                                       in.dt_bias.data(), ptr_or_null(in.z), ptr_or_null(in.init), d, 16);
}

#define CUDA_OK(call)                                                      \
  do {                                                                     \
    const cudaError_t e_ = (call);                                         \
    ASSERT_EQ(e_, cudaSuccess) << #call << ": " << cudaGetErrorString(e_); \
  } while (0)

// A device buffer of floats (null when empty).
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
  float* get() { return p; }
};

V delta(const std::vector<float>& out, const V& base) {
  V r(out.size());
  for (size_t i = 0; i < out.size(); ++i) r[i] = static_cast<double>(out[i]) - base[i];
  return r;
}

// Runs one case on the GPU (forward and backward, each twice: the second run
// must give the same bits) and compares every output with the fp64 reference.
void run_case(const Case& cs, Regime regime, uint64_t seed, double tol) {
  const ScanDims& d = cs.d;
  SCOPED_TRACE(std::string(cs.name) + (regime == Regime::mamba ? " mamba" : " fast") + " seed " + std::to_string(seed));
  const Inputs in = make_inputs(cs, regime, seed);
  V y_ref, fin_ref;
  Grads gr;
  reference(in, d, y_ref, fin_ref, gr);

  Buf x(in.x), dt_raw(in.dt_raw), A_log(in.A_log), Bm(in.Bm), Cm(in.Cm), D(in.D), dt_bias(in.dt_bias), z(in.z),
      init(in.init), dy(in.dy), dfinal(in.dfinal);
  Buf y(act(d)), fin(sts(d));

  std::vector<float> y1, fin1;
  for (int rep = 0; rep < 2; ++rep) {
    y.poison();
    fin.poison();
    float* init_p = init.get();
    if (cs.in_place) {  // the state is carried in place: final_state is initial_state
      fin.upload(in.init);
      init_p = fin.get();
    }
    ssm::selective_scan_forward_cuda(y.get(), fin.get(), x.get(), dt_raw.get(), A_log.get(), Bm.get(), Cm.get(),
                                     D.get(), dt_bias.get(), z.get(), init_p, d, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    if (rep == 0) {
      y1 = y.download();
      fin1 = fin.download();
    }
  }
  const double ey = rel_error(y1, y_ref), ef = rel_error(fin1, fin_ref);
  EXPECT_LT(ey, tol) << "y";
  EXPECT_LT(ef, tol) << "final_state";
  EXPECT_EQ(y1, y.download()) << "forward y differs between two runs";
  EXPECT_EQ(fin1, fin.download()) << "forward final_state differs between two runs";

  // backward; parameter gradients accumulate onto random values
  Buf dx(act(d)), ddt_raw(act(d)), dBm(bcs(d)), dCm(bcs(d)), dz(in.z.empty() ? 0 : act(d)),
      dinit(cs.dinit ? sts(d) : 0);
  const V base_A = random_vector(size_t(d.E) * d.N, seed + 20), base_D = random_vector(d.E, seed + 21),
          base_bias = random_vector(d.E, seed + 22);
  Buf dA_log(base_A), dD(base_D), ddt_bias(base_bias);
  std::vector<std::vector<float>> first;
  auto all_grads = [&] {
    return std::vector<std::vector<float>>{dx.download(),     ddt_raw.download(), dBm.download(),
                                           dCm.download(),    dz.download(),      dinit.download(),
                                           dA_log.download(), dD.download(),      ddt_bias.download()};
  };
  for (int rep = 0; rep < 2; ++rep) {
    dx.poison();
    ddt_raw.poison();
    dBm.poison();
    dCm.poison();
    dz.poison();
    dinit.poison();
    dA_log.upload(base_A);
    dD.upload(base_D);
    ddt_bias.upload(base_bias);
    ssm::selective_scan_backward_cuda(dx.get(), ddt_raw.get(), dA_log.get(), dBm.get(), dCm.get(), dD.get(),
                                      ddt_bias.get(), dz.get(), dinit.get(), dy.get(), dfinal.get(), x.get(),
                                      dt_raw.get(), A_log.get(), Bm.get(), Cm.get(), D.get(), dt_bias.get(), z.get(),
                                      init.get(), d, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    if (rep == 0) first = all_grads();
  }
  EXPECT_TRUE(first == all_grads()) << "backward differs between two runs";
  const double e_dx = rel_error(first[0], gr.dx), e_ddt = rel_error(first[1], gr.ddt_raw),
               e_dB = rel_error(first[2], gr.dBm), e_dC = rel_error(first[3], gr.dCm),
               e_dz = in.z.empty() ? 0.0 : rel_error(first[4], gr.dz),
               e_dinit = cs.dinit ? rel_error(first[5], gr.dinit) : 0.0,
               e_dA = rel_error(delta(first[6], base_A), gr.dA_log), e_dD = rel_error(delta(first[7], base_D), gr.dD),
               e_dbias = rel_error(delta(first[8], base_bias), gr.ddt_bias);
  EXPECT_LT(e_dx, tol) << "dx";
  EXPECT_LT(e_ddt, tol) << "ddt_raw";
  EXPECT_LT(e_dB, tol) << "dBm";
  EXPECT_LT(e_dC, tol) << "dCm";
  EXPECT_LT(e_dz, tol) << "dz";
  EXPECT_LT(e_dinit, tol) << "dinitial_state";
  EXPECT_LT(e_dA, tol) << "dA_log";
  EXPECT_LT(e_dD, tol) << "dD";
  EXPECT_LT(e_dbias, tol) << "ddt_bias";
  std::printf(
      "  %-22s %-5s y %.1e final %.1e | dx %.1e ddt_raw %.1e dB %.1e dC %.1e dz %.1e dinit %.1e dA_log %.1e dD "
      "%.1e ddt_bias %.1e\n",
      cs.name, regime == Regime::mamba ? "mamba" : "fast", ey, ef, e_dx, e_ddt, e_dB, e_dC, e_dz, e_dinit, e_dA, e_dD,
      e_dbias);
}

// name, {B, T, E, G, N}, z, initial_state, dfinal_state, in place, dinitial_state
const Case kCases[] = {
    {"ragged_z_init_G2", {2, 200, 16, 2, 16}, true, true, true, false, true},
    {"T1", {3, 1, 8, 1, 4}, true, true, true, false, true},
    {"T32_one_span", {1, 32, 8, 1, 8}, false, true, false, false, true},
    {"T33", {2, 33, 16, 1, 16}, true, false, true, false, false},
    {"E13_N7_plain", {2, 77, 13, 1, 7}, false, false, false, false, false},
    // E % 4 != 0: scalar copies; 5 channels per group: blocks of 8 span 2 groups
    {"E10_G2_N32", {1, 65, 10, 2, 32}, true, true, true, false, true},
    {"E12_G3", {1, 100, 12, 3, 16}, true, true, true, false, true},
    // 1 and 3 channels per group: blocks span 8 / 3 groups, B and C read from global
    {"G_equals_E", {2, 70, 8, 8, 8}, true, true, true, false, true},
    {"E9_G3_N5", {1, 50, 9, 3, 5}, false, true, true, false, true},
    {"N64_long", {1, 1000, 16, 1, 64}, true, true, true, false, true},
    {"N1", {2, 40, 8, 1, 1}, true, false, false, false, false},
    {"in_place_state", {2, 150, 24, 1, 32}, true, true, false, true, true},
    {"mamba_like_G2", {2, 300, 96, 2, 16}, true, false, false, false, false},
    {"audio_like", {2, 500, 128, 1, 32}, true, true, true, false, true},
};

class CudaSelectiveScanGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ssm::cuda_available()) GTEST_SKIP() << "no usable GPU: " << ssm::cuda_device_description();
  }
};

TEST_F(CudaSelectiveScanGpu, MatchesReferenceMambaInit) {
  uint64_t seed = 100;
  for (const Case& cs : kCases) run_case(cs, Regime::mamba, seed += 100, 1e-3);
}

TEST_F(CudaSelectiveScanGpu, MatchesReferenceFastDecay) {
  uint64_t seed = 5000;
  for (const Case& cs : kCases) run_case(cs, Regime::fast, seed += 100, 1e-3);
}

TEST_F(CudaSelectiveScanGpu, AcrossSeeds) {
  const Case cases[] = {
      {"seeds_ragged", {2, 111, 16, 2, 16}, true, true, true, false, true},
      {"seeds_odd", {1, 97, 11, 1, 6}, true, true, true, false, true},
  };
  for (uint64_t seed = 1; seed <= 8; ++seed)
    for (const Case& cs : cases) run_case(cs, seed % 2 ? Regime::mamba : Regime::fast, 100000 + 1000 * seed, 1e-3);
}

TEST_F(CudaSelectiveScanGpu, CallerWorkspaceAndStream) {
  const Case cs{"workspace", {2, 150, 24, 2, 16}, true, true, true, false, true};
  const ScanDims& d = cs.d;
  const Inputs in = make_inputs(cs, Regime::mamba, 77);
  V y_ref, fin_ref;
  Grads gr;
  reference(in, d, y_ref, fin_ref, gr);
  Buf x(in.x), dt_raw(in.dt_raw), A_log(in.A_log), Bm(in.Bm), Cm(in.Cm), D(in.D), dt_bias(in.dt_bias), z(in.z),
      init(in.init), dy(in.dy), dfinal(in.dfinal);
  Buf y(act(d)), dx(act(d)), ddt_raw(act(d)), dBm(bcs(d)), dCm(bcs(d)), dz(act(d)), dinit(sts(d));
  Buf dA_log(V(size_t(d.E) * d.N, 0.0)), dD(V(d.E, 0.0)), ddt_bias(V(d.E, 0.0));
  y.poison();
  dx.poison();
  const size_t bytes = ssm::selective_scan_backward_cuda_workspace(d);
  void* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, bytes));
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreate(&s));
  ssm::selective_scan_forward_cuda(y.get(), nullptr, x.get(), dt_raw.get(), A_log.get(), Bm.get(), Cm.get(), D.get(),
                                   dt_bias.get(), z.get(), init.get(), d, s);
  ssm::selective_scan_backward_cuda(dx.get(), ddt_raw.get(), dA_log.get(), dBm.get(), dCm.get(), dD.get(),
                                    ddt_bias.get(), dz.get(), dinit.get(), dy.get(), dfinal.get(), x.get(),
                                    dt_raw.get(), A_log.get(), Bm.get(), Cm.get(), D.get(), dt_bias.get(), z.get(),
                                    init.get(), d, ws, bytes, s);
  CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_LT(rel_error(y.download(), y_ref), 1e-3);
  EXPECT_LT(rel_error(dx.download(), gr.dx), 1e-3);
  EXPECT_LT(rel_error(dA_log.download(), gr.dA_log), 1e-3);
  EXPECT_THROW(ssm::selective_scan_backward_cuda(dx.get(), ddt_raw.get(), dA_log.get(), dBm.get(), dCm.get(), dD.get(),
                                                 ddt_bias.get(), dz.get(), dinit.get(), dy.get(), dfinal.get(), x.get(),
                                                 dt_raw.get(), A_log.get(), Bm.get(), Cm.get(), D.get(), dt_bias.get(),
                                                 z.get(), init.get(), d, ws, bytes - 1, s),
               ssm::Error);
  cudaStreamDestroy(s);
  cudaFree(ws);
}

// Argument checks run before anything touches the device.
TEST(CudaSelectiveScan, RejectsSizesTheKernelsDoNotTake) {
  EXPECT_NO_THROW(ssm::selective_scan_cuda_check_dims(ScanDims{2, 10, 8, 2, 64}));
  EXPECT_THROW(ssm::selective_scan_cuda_check_dims(ScanDims{2, 10, 8, 2, 65}), ssm::Error);  // N > 64
  EXPECT_THROW(ssm::selective_scan_cuda_check_dims(ScanDims{65536, 10, 8, 1, 4}), ssm::Error);
  EXPECT_THROW(ssm::selective_scan_cuda_check_dims(ScanDims{1, 10, 9, 2, 4}), ssm::Error);  // E % G
  EXPECT_THROW(ssm::selective_scan_cuda_check_dims(ScanDims{1, 0, 8, 1, 4}), ssm::Error);
}

TEST(CudaSelectiveScan, RejectsNullPointers) {
  const ScanDims d{1, 4, 8, 1, 4};
  float dummy = 0;
  float* p = &dummy;  // never dereferenced: the checks throw first
  EXPECT_THROW(ssm::selective_scan_forward_cuda(nullptr, nullptr, p, p, p, p, p, p, p, nullptr, nullptr, d),
               ssm::Error);
  EXPECT_THROW(ssm::selective_scan_forward_cuda(p, nullptr, p, p, p, nullptr, p, p, p, nullptr, nullptr, d),
               ssm::Error);
  EXPECT_THROW(ssm::selective_scan_backward_cuda(p, p, p, p, p, p, p, nullptr, nullptr, nullptr, nullptr, p, p, p, p, p,
                                                 p, p, nullptr, nullptr, d),
               ssm::Error);  // dy
  EXPECT_THROW(ssm::selective_scan_backward_cuda(p, p, p, p, p, p, p, nullptr, nullptr, p, nullptr, p, p, p, p, p, p, p,
                                                 nullptr, nullptr, d, nullptr, 0),
               ssm::Error);  // workspace
}

#else

TEST(CudaSelectiveScanGpu, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend (SSM_CUDA=OFF)"; }

#endif  // SSM_WITH_CUDA

}  // namespace
