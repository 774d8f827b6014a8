// The Mamba block's other ops on the GPU (ssm/cuda_ops.hpp) against the CPU
// reference in fp64 (ssm/layers.hpp, ssm/conv1d.hpp, ssm/optim.hpp), on fresh
// random inputs at several shapes, odd ones included (rows not a multiple of
// a block, columns not a multiple of 32, T < K-1, with and without tails and
// bias). Inputs are exact floats, so both sides see the same numbers.
//
// Outputs are poisoned with NaN before each run, so an element a kernel
// leaves unwritten fails (rel_error is +inf on NaN). Parameter gradients
// accumulate onto random values and the difference is compared.
// Tolerances (‖gpu − ref‖ / ‖ref‖): 1e-5 for the fp32 kernels; the TF32
// matrix products 1e-3 on plain floats (DESIGN.md §2) and 1e-4 on inputs
// that are exact in TF32 (products exact, only the fp32 accumulation rounds),
// which pins down the transposes. Norm groups are at least 2 wide: with one
// column, dx is rs * w * dy * eps / (v^2 + eps), a cancellation no fp32
// kernel resolves.
//
// The argument checks run without a GPU; the GPU tests skip with the reason.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "ssm/conv1d.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_ops.hpp"
#include "ssm/layers.hpp"
#include "ssm/optim.hpp"
#include "ssm/params.hpp"
#include "testing.hpp"

#ifdef SSM_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

namespace {

#ifdef SSM_WITH_CUDA

using ssm::Conv1dDims;
using ssm::testing::rel_error;
using V = std::vector<double>;

constexpr double kTol = 1e-5;           // fp32 kernels
constexpr double kTolTf32 = 1e-3;       // TF32 products on plain floats
constexpr double kTolExactTf32 = 1e-4;  // TF32 products of TF32-exact inputs
// Parameter gradients accumulate onto values of this size: small, so that the
// fp32 rounding of base + gradient stays far below the tolerance even for a
// gradient of one small term, large enough that "=" instead of "+=" fails.
constexpr double kBase = 0.01;

// ---------------------------------------------------------------------------
// argument checks: they throw before anything reaches the GPU
// ---------------------------------------------------------------------------

// f throws ssm::Error and its message contains `needle`.
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no ssm::Error; expected one naming '" << needle << "'";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(CudaOpsChecks, BadSizesAndNullPointersNameTheField) {
  expect_error([] { ssm::rmsnorm_forward_cuda(nullptr, nullptr, nullptr, nullptr, 0, 4, 1e-5f); }, "rows R");
  expect_error([] { ssm::rmsnorm_forward_cuda(nullptr, nullptr, nullptr, nullptr, 3, 0, 1e-5f); }, "columns C");
  expect_error([] { ssm::rmsnorm_forward_cuda(nullptr, nullptr, nullptr, nullptr, 3, 4, -1.0f); }, "eps");
  expect_error([] { ssm::rmsnorm_forward_cuda(nullptr, nullptr, nullptr, nullptr, 3, 4, 1e-5f); },
               "y must not be null");
  expect_error([] { ssm::rmsnorm_backward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 3, 4); },
               "dx must not be null");
  expect_error([] { ssm::gated_rmsnorm_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 3, 10, 3, 1e-5f); },
               "groups G");
  expect_error(
      [] {
        ssm::gated_rmsnorm_backward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 3, 10,
                                         0);
      },
      "groups G");
  expect_error([] { ssm::silu_forward_cuda(nullptr, nullptr, -1); }, "n must be >= 0");
  expect_error([] { ssm::silu_backward_cuda(nullptr, nullptr, nullptr, 5); }, "dx must not be null");
  expect_error([] { ssm::add_into_cuda(nullptr, nullptr, 5); }, "dst must not be null");
  expect_error([] { ssm::copy_cols_cuda(nullptr, 8, 4, nullptr, 16, 0, 10, 5); }, "destination columns");
  expect_error([] { ssm::copy_cols_cuda(nullptr, 8, 0, nullptr, 16, 12, 10, 5); }, "source columns");
  expect_error([] { ssm::copy_cols_cuda(nullptr, 8, 0, nullptr, 16, 0, 10, -1); }, "width w");
  expect_error(
      [] {
        ssm::conv1d_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, {1, 4, 3, 0});
      },
      "Conv1dDims.K");
  expect_error(
      [] {
        ssm::conv1d_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, {1, 0, 3, 4});
      },
      "Conv1dDims.T");
  expect_error(
      [] {
        ssm::conv1d_backward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  {2, 4, 3, 4});
      },
      "dx must not be null");
  expect_error(
      [] {
        ssm::conv1d_backward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  {2, 4, 3, 17});
      },
      "Conv1dDims.K = 17");
  expect_error([] { ssm::linear_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 2, 3, 4); }, "blas");
  expect_error(
      [] { ssm::linear_backward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 2, 3, 4); },
      "blas");
  expect_error([] { ssm::sum_squares_cuda(nullptr, nullptr, 10); }, "out_sq must not be null");
  const ssm::AdamWConfig ok;
  expect_error([&] { ssm::adamw_update_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 10, 0, 1e-3, ok, 1.0f); },
               "step must be >= 1");
  expect_error([&] { ssm::adamw_update_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 10, 1, -1.0, ok, 1.0f); },
               "lr must be");
  expect_error(
      [&] { ssm::adamw_update_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 10, 1, 1e-3, ok, std::nanf("")); },
      "grad_scale");
  ssm::AdamWConfig bad = ok;
  bad.beta1 = 1.0;
  expect_error([&] { ssm::adamw_update_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 10, 1, 1e-3, bad, 1.0f); },
               "beta1");
  expect_error([&] { ssm::adamw_update_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 10, 1, 1e-3, ok, 1.0f); },
               "params must not be null");
}

// ---------------------------------------------------------------------------
// GPU helpers
// ---------------------------------------------------------------------------
#define CUDA_OK(call)                                                      \
  do {                                                                     \
    const cudaError_t e_ = (call);                                         \
    ASSERT_EQ(e_, cudaSuccess) << #call << ": " << cudaGetErrorString(e_); \
  } while (0)

// Uniform random values that are exact floats.
V random_floats(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  V v = ssm::testing::random_vector(n, seed, lo, hi);
  for (double& e : v) e = static_cast<float>(e);
  return v;
}

// The same values rounded to TF32 (10 mantissa bits, to nearest): products
// of these are exact in the tensor cores whatever their rounding of fp32.
V tf32_exact(V v) {
  for (double& e : v) {
    uint32_t bits;
    const float f = static_cast<float>(e);
    std::memcpy(&bits, &f, 4);
    bits = (bits + 0x1000u) & 0xffffe000u;
    float r;
    std::memcpy(&r, &bits, 4);
    e = r;
  }
  return v;
}

V minus(const V& a, const V& b) {
  V r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

const double* ptr_or_null(const V& v) { return v.empty() ? nullptr : v.data(); }
double* ptr_or_null(V& v) { return v.empty() ? nullptr : v.data(); }

// A device buffer of floats; empty: null.
class Dev {
 public:
  explicit Dev(size_t n) : n_(n) {
    if (n_ && cudaMalloc(reinterpret_cast<void**>(&p_), n_ * sizeof(float)) != cudaSuccess) {
      p_ = nullptr;
      ADD_FAILURE() << "cudaMalloc of " << n_ << " floats failed";
    }
  }
  explicit Dev(const V& v) : Dev(v.size()) { upload(v); }
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;

  void upload(const V& v) {
    ASSERT_EQ(v.size(), n_);
    const std::vector<float> f(v.begin(), v.end());
    if (p_) {
      EXPECT_EQ(cudaMemcpy(p_, f.data(), n_ * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  void poison() {
    if (p_) {
      EXPECT_EQ(cudaMemset(p_, 0xff, n_ * sizeof(float)), cudaSuccess);  // all-ones bits: NaN
    }
  }
  // Waits for the device, so an error of an earlier launch shows here.
  V download() const {
    std::vector<float> f(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (p_) {
      EXPECT_EQ(cudaMemcpy(f.data(), p_, n_ * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return V(f.begin(), f.end());
  }
  float* get() const { return p_; }

 private:
  float* p_ = nullptr;
  size_t n_ = 0;
};

class CudaOpsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ssm::cuda_available()) GTEST_SKIP() << "no usable GPU: " << ssm::cuda_device_description();
  }
};

// ---------------------------------------------------------------------------
// RMSNorm, plain and gated
// ---------------------------------------------------------------------------
struct NormCase {
  const char* name;
  int R, C, G;
  bool gated;
};

void run_norm_case(const NormCase& cs, uint64_t seed) {
  SCOPED_TRACE(cs.name);
  const int R = cs.R, C = cs.C, G = cs.G;
  const size_t n = static_cast<size_t>(R) * C;
  const float eps = 1e-5f;
  const V x = random_floats(n, seed + 1, -2.0, 2.0), z = cs.gated ? random_floats(n, seed + 2, -4.0, 4.0) : V{},
          w = random_floats(C, seed + 3, 0.5, 1.5), dy = random_floats(n, seed + 4),
          dw_base = random_floats(C, seed + 5, -kBase, kBase);

  // fp64 reference
  V y_ref(n), rstd_ref(static_cast<size_t>(R) * G), dx_ref(n), dz_ref(cs.gated ? n : 0), dw_ref(C, 0.0);
  if (cs.gated) {
    ssm::gated_rmsnorm_forward<double>(y_ref.data(), rstd_ref.data(), x.data(), z.data(), w.data(), R, C, G, eps);
  } else {
    ssm::rmsnorm_forward<double>(y_ref.data(), rstd_ref.data(), x.data(), w.data(), R, C, eps);
  }
  // The backward reads the rstd the forward saved: give both sides the same (float) one.
  V rstd_f = rstd_ref;
  for (double& r : rstd_f) r = static_cast<float>(r);
  if (cs.gated) {
    ssm::gated_rmsnorm_backward<double>(dx_ref.data(), dz_ref.data(), dw_ref.data(), dy.data(), rstd_f.data(), x.data(),
                                        z.data(), w.data(), R, C, G);
  } else {
    ssm::rmsnorm_backward<double>(dx_ref.data(), dw_ref.data(), dy.data(), rstd_f.data(), x.data(), w.data(), R, C);
  }

  Dev x_dev(x), z_dev(z), w_dev(w), dy_dev(dy), y(n), rstd(rstd_ref.size()), rstd_saved(rstd_f), dx(n), dz(z.size()),
      dweight(dw_base);
  y.poison();
  rstd.poison();
  if (cs.gated) {
    ssm::gated_rmsnorm_forward_cuda(y.get(), rstd.get(), x_dev.get(), z_dev.get(), w_dev.get(), R, C, G, eps);
  } else {
    ssm::rmsnorm_forward_cuda(y.get(), rstd.get(), x_dev.get(), w_dev.get(), R, C, eps);
  }
  const double e_y = rel_error(y.download(), y_ref), e_rstd = rel_error(rstd.download(), rstd_ref);

  dx.poison();
  dz.poison();
  if (cs.gated) {
    ssm::gated_rmsnorm_backward_cuda(dx.get(), dz.get(), dweight.get(), dy_dev.get(), rstd_saved.get(), x_dev.get(),
                                     z_dev.get(), w_dev.get(), R, C, G);
  } else {
    ssm::rmsnorm_backward_cuda(dx.get(), dweight.get(), dy_dev.get(), rstd_saved.get(), x_dev.get(), w_dev.get(), R, C);
  }
  const double e_dx = rel_error(dx.download(), dx_ref), e_dz = cs.gated ? rel_error(dz.download(), dz_ref) : 0.0,
               e_dw = rel_error(minus(dweight.download(), dw_base), dw_ref);
  EXPECT_LT(e_y, kTol) << "y";
  EXPECT_LT(e_rstd, kTol) << "rstd";
  EXPECT_LT(e_dx, kTol) << "dx";
  EXPECT_LT(e_dz, kTol) << "dz";
  EXPECT_LT(e_dw, kTol) << "dweight (+=)";
  std::printf("  %-26s R %6d C %5d G %3d  y %.1e rstd %.1e | dx %.1e dz %.1e dweight %.1e\n", cs.name, R, C, G, e_y,
              e_rstd, e_dx, e_dz, e_dw);
}

TEST_F(CudaOpsGpu, RmsNormMatchesReference) {
  const NormCase cases[] = {
      {"one_row", 1, 3, 1, false},
      {"odd_small", 5, 7, 1, false},
      {"C33_R37", 37, 33, 1, false},
      {"D64", 1000, 64, 1, false},
      {"C400_R301", 301, 400, 1, false},
      {"wide_row", 3, 2000, 1, false},
      {"many_rows_parts", 70001, 20, 1, false},
  };
  uint64_t seed = 100;
  for (const NormCase& cs : cases) run_norm_case(cs, seed += 100);
}

TEST_F(CudaOpsGpu, GatedRmsNormMatchesReference) {
  const NormCase cases[] = {
      {"G1_one_row", 1, 8, 1, true},      {"G2_small", 5, 8, 2, true},          {"G3_group32", 37, 96, 3, true},
      {"G4_group100", 301, 400, 4, true}, {"group_width_2", 64, 48, 24, true},  {"E256_G1", 1000, 256, 1, true},
      {"wide_G2", 7, 1030, 2, true},      {"many_rows_G2", 40001, 36, 2, true},
  };
  uint64_t seed = 5000;
  for (const NormCase& cs : cases) run_norm_case(cs, seed += 100);
}

// ---------------------------------------------------------------------------
// element-wise ops and column copies
// ---------------------------------------------------------------------------
TEST_F(CudaOpsGpu, SiluForwardBackwardAndInPlace) {
  uint64_t seed = 900;
  for (const long n : {1L, 31L, 1000L, 123457L, 3L * (1L << 20) + 5}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    V x = random_floats(static_cast<size_t>(n), seed += 10, -10.0, 10.0);
    if (n > 2) {  // the tails of the sigmoid, among values that dominate the norm-wise error
      x[0] = -100.0;
      x[1] = 100.0;
    }
    const V dy = random_floats(static_cast<size_t>(n), seed + 1);
    V y_ref(x.size()), dx_ref(x.size());
    ssm::silu_forward<double>(y_ref.data(), x.data(), n);
    ssm::silu_backward<double>(dx_ref.data(), dy.data(), x.data(), n);

    Dev x_dev(x), dy_dev(dy), y(x.size()), dx(x.size());
    y.poison();
    ssm::silu_forward_cuda(y.get(), x_dev.get(), n);
    EXPECT_LT(rel_error(y.download(), y_ref), kTol) << "y";
    dx.poison();
    ssm::silu_backward_cuda(dx.get(), dy_dev.get(), x_dev.get(), n);
    EXPECT_LT(rel_error(dx.download(), dx_ref), kTol) << "dx";
    ssm::silu_forward_cuda(x_dev.get(), x_dev.get(), n);  // y aliases x
    EXPECT_LT(rel_error(x_dev.download(), y_ref), kTol) << "in place";
  }
  ssm::silu_forward_cuda(nullptr, nullptr, 0);  // nothing to do, no error
}

TEST_F(CudaOpsGpu, AddInto) {
  for (const long n : {1L, 1001L, 1L << 20}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    const V dst0 = random_floats(static_cast<size_t>(n), 40 + n), src = random_floats(static_cast<size_t>(n), 41 + n);
    V ref(dst0.size());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = dst0[i] + src[i];
    Dev dst(dst0), src_dev(src);
    ssm::add_into_cuda(dst.get(), src_dev.get(), n);
    EXPECT_LT(rel_error(dst.download(), ref), kTol);
  }
}

TEST_F(CudaOpsGpu, CopyColsMovesExactlyTheStrip) {
  struct Case {
    size_t R;
    int ld_dst, c0_dst, ld_src, c0_src, w;
  };
  const Case cases[] = {{1, 1, 0, 1, 0, 1},         {7, 10, 3, 5, 1, 4}, {1000, 130, 64, 300, 200, 33},
                        {70001, 40, 8, 96, 32, 32}, {5, 8, 0, 8, 0, 8},  {3, 4, 2, 4, 0, 0}};
  uint64_t seed = 77;
  for (const Case& cs : cases) {
    SCOPED_TRACE("R " + std::to_string(cs.R) + " w " + std::to_string(cs.w));
    const V src = random_floats(cs.R * cs.ld_src, seed += 3);
    Dev src_dev(src), dst(cs.R * cs.ld_dst);
    dst.poison();
    ssm::copy_cols_cuda(dst.get(), cs.ld_dst, cs.c0_dst, src_dev.get(), cs.ld_src, cs.c0_src, cs.R, cs.w);
    const V out = dst.download();
    size_t wrong = 0, touched = 0;
    for (size_t r = 0; r < cs.R; ++r)
      for (int c = 0; c < cs.ld_dst; ++c) {
        const double v = out[r * cs.ld_dst + c];
        const bool inside = c >= cs.c0_dst && c < cs.c0_dst + cs.w;
        if (inside && v != src[r * cs.ld_src + cs.c0_src + (c - cs.c0_dst)]) ++wrong;
        if (!inside && !std::isnan(v)) ++touched;
      }
    EXPECT_EQ(wrong, 0u) << "elements of the strip not copied exactly";
    EXPECT_EQ(touched, 0u) << "elements outside the strip written";
  }
}

// ---------------------------------------------------------------------------
// causal depthwise conv1d
// ---------------------------------------------------------------------------
struct ConvCase {
  const char* name;
  Conv1dDims d;
  bool tail, bias, final_tail, dfinal, dtail;
};

void run_conv_case(const ConvCase& cs, uint64_t seed) {
  SCOPED_TRACE(cs.name);
  const Conv1dDims& d = cs.d;
  const size_t n = static_cast<size_t>(d.B) * d.T * d.C, nt = static_cast<size_t>(d.B) * (d.K - 1) * d.C;
  const V x = random_floats(n, seed + 1), w = random_floats(static_cast<size_t>(d.C) * d.K, seed + 2),
          bias = cs.bias ? random_floats(d.C, seed + 3) : V{}, tail = cs.tail ? random_floats(nt, seed + 4) : V{},
          dy = random_floats(n, seed + 5), dfinal = cs.dfinal ? random_floats(nt, seed + 6) : V{},
          dw_base = random_floats(w.size(), seed + 7, -kBase, kBase),
          db_base = random_floats(d.C, seed + 8, -kBase, kBase);

  V y_ref(n), fin_ref(cs.final_tail ? nt : 0), dx_ref(n), dw_ref(w.size(), 0.0), db_ref(cs.bias ? d.C : 0, 0.0),
      dtail_ref(cs.dtail ? nt : 0);
  ssm::conv1d_forward<double>(y_ref.data(), ptr_or_null(fin_ref), x.data(), w.data(), ptr_or_null(bias),
                              ptr_or_null(tail), d);
  ssm::conv1d_backward<double>(dx_ref.data(), dw_ref.data(), ptr_or_null(db_ref), ptr_or_null(dtail_ref), dy.data(),
                               ptr_or_null(dfinal), x.data(), w.data(), ptr_or_null(tail), d);

  Dev x_dev(x), w_dev(w), bias_dev(bias), tail_dev(tail), dy_dev(dy), dfinal_dev(dfinal), y(n), fin(fin_ref.size()),
      dx(n), dweight(dw_base), dbias(cs.bias ? db_base : V{}), dtail(dtail_ref.size());
  y.poison();
  fin.poison();
  ssm::conv1d_forward_cuda(y.get(), fin.get(), x_dev.get(), w_dev.get(), bias_dev.get(), tail_dev.get(), d);
  const double e_y = rel_error(y.download(), y_ref), e_fin = cs.final_tail ? rel_error(fin.download(), fin_ref) : 0.0;

  // backward twice from the same base: the parameter gradients must be the same bits
  V dw1, db1;
  for (int rep = 0; rep < 2; ++rep) {
    dx.poison();
    dtail.poison();
    dweight.upload(dw_base);
    if (cs.bias) dbias.upload(db_base);
    ssm::conv1d_backward_cuda(dx.get(), dweight.get(), dbias.get(), dtail.get(), dy_dev.get(), dfinal_dev.get(),
                              x_dev.get(), w_dev.get(), tail_dev.get(), d);
    if (rep == 0) {
      dw1 = dweight.download();
      db1 = cs.bias ? dbias.download() : V{};
    }
  }
  const double e_dx = rel_error(dx.download(), dx_ref),
               e_dtail = cs.dtail ? rel_error(dtail.download(), dtail_ref) : 0.0,
               e_dw = rel_error(minus(dw1, dw_base), dw_ref),
               e_db = cs.bias ? rel_error(minus(db1, db_base), db_ref) : 0.0;
  EXPECT_LT(e_y, kTol) << "y";
  EXPECT_LT(e_fin, kTol) << "final_tail";
  EXPECT_LT(e_dx, kTol) << "dx";
  EXPECT_LT(e_dtail, kTol) << "dinitial_tail";
  EXPECT_LT(e_dw, kTol) << "dweight (+=)";
  EXPECT_LT(e_db, kTol) << "dbias (+=)";
  EXPECT_EQ(dw1, dweight.download()) << "dweight differs between two runs";
  if (cs.bias) {
    EXPECT_EQ(db1, dbias.download()) << "dbias differs between two runs";
  }
  std::printf("  %-20s B %d T %5d C %4d K %d  y %.1e final %.1e | dx %.1e dtail %.1e dweight %.1e dbias %.1e\n",
              cs.name, d.B, d.T, d.C, d.K, e_y, e_fin, e_dx, e_dtail, e_dw, e_db);
}

TEST_F(CudaOpsGpu, Conv1dMatchesReference) {
  const ConvCase cases[] = {
      {"one_element", {1, 1, 1, 1}, false, false, false, false, false},
      {"K1_everything", {2, 5, 3, 1}, true, true, true, true, true},  // K-1 = 0: the tails are empty
      {"T_below_K1", {2, 2, 5, 4}, true, true, true, true, true},
      {"T1_K7", {3, 1, 9, 7}, true, false, true, true, true},
      {"T_below_K1_K7", {3, 3, 9, 7}, true, false, true, true, true},
      {"T_equals_K1", {2, 3, 6, 4}, true, true, true, true, true},
      {"T_below_K1_no_tail", {2, 2, 5, 4}, false, true, true, false, true},
      {"no_tails", {3, 50, 33, 4}, false, true, false, false, false},
      {"tails_no_bias", {2, 300, 70, 4}, true, false, true, false, true},
      {"K3_dfinal_only", {1, 17, 40, 3}, true, true, false, true, false},
      {"mamba_xBC", {4, 1000, 100, 4}, true, true, true, true, true},
      {"many_rows", {8, 4000, 20, 4}, false, true, false, false, false},
      {"C400", {2, 257, 400, 4}, true, true, true, true, true},
      {"K16_widest", {2, 40, 10, 16}, true, true, true, true, true},
      {"K16_T_below_K1", {1, 5, 7, 16}, true, true, true, true, true},
  };
  uint64_t seed = 3000;
  for (const ConvCase& cs : cases) run_conv_case(cs, seed += 100);
}

// final_tail may be the initial_tail buffer (a stream carried in place).
TEST_F(CudaOpsGpu, Conv1dFinalTailMayAliasInitialTail) {
  for (const Conv1dDims d : {Conv1dDims{2, 2, 5, 4}, Conv1dDims{2, 1, 3, 6}, Conv1dDims{3, 40, 17, 4}}) {
    SCOPED_TRACE("T = " + std::to_string(d.T) + ", K = " + std::to_string(d.K));
    const size_t n = static_cast<size_t>(d.B) * d.T * d.C, nt = static_cast<size_t>(d.B) * (d.K - 1) * d.C;
    const V x = random_floats(n, 11 + d.T), w = random_floats(static_cast<size_t>(d.C) * d.K, 12),
            tail = random_floats(nt, 13);
    V y_ref(n), fin_ref(nt);
    ssm::conv1d_forward<double>(y_ref.data(), fin_ref.data(), x.data(), w.data(), nullptr, tail.data(), d);
    Dev x_dev(x), w_dev(w), carried(tail), y(n);
    y.poison();
    ssm::conv1d_forward_cuda(y.get(), carried.get(), x_dev.get(), w_dev.get(), nullptr, carried.get(), d);
    EXPECT_LT(rel_error(y.download(), y_ref), kTol) << "y";
    EXPECT_EQ(rel_error(carried.download(), fin_ref), 0.0) << "the tail carried in place";
  }
}

// ---------------------------------------------------------------------------
// linear layers (cuBLAS, TF32)
// ---------------------------------------------------------------------------
struct LinearCase {
  const char* name;
  int R, I, O;
  bool bias, dx;
};

const LinearCase kLinearCases[] = {
    {"one_element", 1, 1, 1, true, true},         {"odd_small", 7, 5, 3, true, true},
    {"no_bias", 300, 64, 200, false, true},       {"no_dx_odd", 1000, 33, 70, true, false},
    {"in_proj_like", 2049, 128, 256, true, true}, {"wide_in", 64, 400, 130, true, true},
    {"many_rows", 40000, 16, 24, true, true},
};

// exact_tf32: inputs rounded to TF32 first, so the products are exact.
void run_linear_case(cublasHandle_t blas, const LinearCase& cs, bool exact_tf32, double tol, uint64_t seed) {
  SCOPED_TRACE(std::string(cs.name) + (exact_tf32 ? " (tf32-exact inputs)" : " (plain floats)"));
  const int R = cs.R, I = cs.I, O = cs.O;
  auto in = [&](size_t n, uint64_t s) { return exact_tf32 ? tf32_exact(random_floats(n, s)) : random_floats(n, s); };
  const V x = in(static_cast<size_t>(R) * I, seed + 1), W = in(static_cast<size_t>(O) * I, seed + 2),
          bias = cs.bias ? random_floats(O, seed + 3) : V{}, dy = in(static_cast<size_t>(R) * O, seed + 4),
          dW_base = random_floats(W.size(), seed + 5, -kBase, kBase),
          db_base = random_floats(O, seed + 6, -kBase, kBase);
  V y_ref(static_cast<size_t>(R) * O), dx_ref(cs.dx ? x.size() : 0), dW_ref(W.size(), 0.0),
      db_ref(cs.bias ? O : 0, 0.0);
  ssm::linear_forward<double>(y_ref.data(), x.data(), W.data(), ptr_or_null(bias), R, I, O);
  ssm::linear_backward<double>(ptr_or_null(dx_ref), dW_ref.data(), ptr_or_null(db_ref), dy.data(), x.data(), W.data(),
                               R, I, O);

  Dev x_dev(x), W_dev(W), bias_dev(bias), dy_dev(dy), y(y_ref.size()), dx(dx_ref.size()), dW(dW_base),
      dbias(cs.bias ? db_base : V{});
  y.poison();
  ssm::linear_forward_cuda(blas, y.get(), x_dev.get(), W_dev.get(), bias_dev.get(), R, I, O);
  dx.poison();
  ssm::linear_backward_cuda(blas, dx.get(), dW.get(), dbias.get(), dy_dev.get(), x_dev.get(), W_dev.get(), R, I, O);
  const double e_y = rel_error(y.download(), y_ref), e_dx = cs.dx ? rel_error(dx.download(), dx_ref) : 0.0,
               e_dW = rel_error(minus(dW.download(), dW_base), dW_ref),
               e_db = cs.bias ? rel_error(minus(dbias.download(), db_base), db_ref) : 0.0;
  EXPECT_LT(e_y, tol) << "y";
  EXPECT_LT(e_dx, tol) << "dx";
  EXPECT_LT(e_dW, tol) << "dW (+=)";
  EXPECT_LT(e_db, kTol) << "dbias (+=, fp32 column sums)";
  std::printf("  %-14s %-6s R %6d I %4d O %4d  y %.1e | dx %.1e dW %.1e dbias %.1e\n", cs.name,
              exact_tf32 ? "exact" : "plain", R, I, O, e_y, e_dx, e_dW, e_db);
}

class CudaLinearGpu : public CudaOpsGpu {
 protected:
  void SetUp() override {
    CudaOpsGpu::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(cublasCreate(&blas_), CUBLAS_STATUS_SUCCESS);
  }
  void TearDown() override {
    if (blas_) cublasDestroy(blas_);
  }
  cublasHandle_t blas_ = nullptr;
};

TEST_F(CudaLinearGpu, Tf32MatchesReference) {
  uint64_t seed = 7000;
  for (const LinearCase& cs : kLinearCases) run_linear_case(blas_, cs, false, kTolTf32, seed += 100);
}

TEST_F(CudaLinearGpu, ExactOnTf32Inputs) {
  uint64_t seed = 8000;
  for (const LinearCase& cs : kLinearCases) run_linear_case(blas_, cs, true, kTolExactTf32, seed += 100);
}

// The call runs on the given stream and leaves the handle's stream as it was.
TEST_F(CudaLinearGpu, RunsOnTheStreamAndRestoresTheHandle) {
  const int R = 50, I = 24, O = 10;
  const V x = tf32_exact(random_floats(static_cast<size_t>(R) * I, 1)), W = tf32_exact(random_floats(O * I, 2)),
          bias = random_floats(O, 3);
  V y_ref(static_cast<size_t>(R) * O);
  ssm::linear_forward<double>(y_ref.data(), x.data(), W.data(), bias.data(), R, I, O);
  Dev x_dev(x), W_dev(W), bias_dev(bias), y(y_ref.size());
  y.poison();
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreate(&s));
  ssm::linear_forward_cuda(blas_, y.get(), x_dev.get(), W_dev.get(), bias_dev.get(), R, I, O, s);
  CUDA_OK(cudaStreamSynchronize(s));
  cudaStream_t now = s;
  EXPECT_EQ(cublasGetStream(blas_, &now), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(now, nullptr) << "the handle was left on the call's stream";
  EXPECT_LT(rel_error(y.download(), y_ref), kTolExactTf32);
  cudaStreamDestroy(s);
}

// ---------------------------------------------------------------------------
// sum of squares and AdamW over a flat block
// ---------------------------------------------------------------------------
TEST_F(CudaOpsGpu, SumSquaresInFp64IsDeterministic) {
  double* out = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&out), sizeof(double)));
  for (const size_t n : {size_t(0), size_t(1), size_t(1000), size_t(3) * (1u << 20) + 7}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    const V g = random_floats(n, 500 + n, -3.0, 3.0);
    double ref = 0;
    for (double v : g) ref += v * v;
    Dev g_dev(g);
    double got[2] = {0, 0};
    for (double& r : got) {
      CUDA_OK(cudaMemset(out, 0xff, sizeof(double)));  // NaN
      ssm::sum_squares_cuda(out, g_dev.get(), n);
      CUDA_OK(cudaMemcpy(&r, out, sizeof(double), cudaMemcpyDeviceToHost));
    }
    EXPECT_EQ(std::memcmp(&got[0], &got[1], sizeof(double)), 0) << "two runs differ";
    if (n == 0) {
      EXPECT_EQ(got[0], 0.0);
    } else {
      EXPECT_LT(std::abs(got[0] - ref) / ref, 1e-12) << got[0] << " vs " << ref;
    }
  }
  cudaFree(out);
}

TEST_F(CudaOpsGpu, AdamWMatchesReferenceAndSkipsGaps) {
  ssm::ParamTable table;
  table.add({"norm.weight", {3}, 0.0f});
  table.add({"in_proj.weight", {17, 5}, 1.0f});
  table.add({"half_decay", {64}, 0.5f});
  table.add({"scalar", {}, 0.0f});
  table.add({"out_proj.weight", {33, 33}, 1.0f});
  table.add({"big", {300001}, 1.0f});
  const size_t total = table.total();
  // decay_mult per element, -1 in the alignment gaps
  V mult(total, -1.0);
  std::vector<bool> gap(total, true);
  for (const ssm::ParamEntry& e : table.entries())
    for (size_t i = e.offset; i < e.offset + e.numel; ++i) {
      mult[i] = e.spec.weight_decay_mult;
      gap[i] = false;
    }
  ASSERT_GT(total, table.numel()) << "the table should have gaps to test";

  ssm::AdamWConfig c;
  c.weight_decay = 0.1;
  // Gaps hold values the update must not change (grads there are nonzero too).
  V p = random_floats(total, 1), m = random_floats(total, 2, -0.1, 0.1), v = random_floats(total, 3, 0.0, 0.01);
  for (size_t i = 0; i < total; ++i)
    if (gap[i]) p[i] = 42.0, m[i] = -3.0, v[i] = 7.0;
  Dev p_dev(p), m_dev(m), v_dev(v), mult_dev(mult), g_dev(total);

  struct Step {
    int64_t t;
    double lr;
    float grad_scale;
  };
  uint64_t seed = 10;
  for (const Step st : {Step{1, 0.05, 1.0f}, Step{2, 0.05, 0.5f}, Step{3, 0.02, 1.0f}, Step{1000, 0.05, 0.25f}}) {
    SCOPED_TRACE("step " + std::to_string(st.t));
    const V g = random_floats(total, seed += 10);
    V g_scaled(total);
    for (size_t i = 0; i < total; ++i) g_scaled[i] = g[i] * st.grad_scale;
    const V p_before = p;
    ssm::adamw_update<double>(p.data(), m.data(), v.data(), g_scaled.data(), table, st.t, st.lr, c);
    g_dev.upload(g);
    ssm::adamw_update_cuda(p_dev.get(), m_dev.get(), v_dev.get(), g_dev.get(), mult_dev.get(), total, st.t, st.lr, c,
                           st.grad_scale);
    const V gp = p_dev.download(), gm = m_dev.download(), gv = v_dev.download();
    // Only the tensors' elements against the reference: the change of params, m and v themselves.
    V dp_gpu, dp_ref, m_gpu, m_ref, v_gpu, v_ref;
    size_t gap_changed = 0;
    for (size_t i = 0; i < total; ++i) {
      if (gap[i]) {
        gap_changed += gp[i] != 42.0 || gm[i] != -3.0 || gv[i] != 7.0;
        continue;
      }
      dp_gpu.push_back(gp[i] - p_before[i]);
      dp_ref.push_back(p[i] - p_before[i]);
      m_gpu.push_back(gm[i]);
      m_ref.push_back(m[i]);
      v_gpu.push_back(gv[i]);
      v_ref.push_back(v[i]);
    }
    const double e_p = rel_error(dp_gpu, dp_ref), e_m = rel_error(m_gpu, m_ref), e_v = rel_error(v_gpu, v_ref);
    EXPECT_LT(e_p, kTol) << "params update";
    EXPECT_LT(e_m, kTol) << "m";
    EXPECT_LT(e_v, kTol) << "v";
    EXPECT_EQ(gap_changed, 0u) << "elements in the alignment gaps changed";
    std::printf("  adamw step %5lld lr %.2f scale %.2f  dparams %.1e m %.1e v %.1e\n", static_cast<long long>(st.t),
                st.lr, st.grad_scale, e_p, e_m, e_v);
    // Continue both from the GPU's state, so each step is compared on its own.
    p = gp;
    m = gm;
    v = gv;
  }
}

#else

TEST(CudaOpsGpu, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend (SSM_CUDA=OFF)"; }

#endif  // SSM_WITH_CUDA

}  // namespace
