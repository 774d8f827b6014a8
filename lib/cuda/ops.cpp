// Launchers of the layer and optimiser kernels (ssm/cuda_ops.hpp): argument
// checks that name the bad field, then kernels/layers.cu and kernels/optim.cu
// do the work. Nothing here touches the GPU before the checks pass.
#include "ops.cuh"

#include <climits>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "ssm/common.hpp"
#include "ssm/cuda_ops.hpp"

namespace ssm {
namespace {

void require_ptrs(const char* fn, std::initializer_list<std::pair<const char*, const void*>> bufs) {
  for (const auto& [name, p] : bufs)
    if (!p) fail(std::string(fn) + ": " + name + " must not be null");
}

void check_rows(const char* fn, int R, int C, int G) {
  require(R >= 1, std::string(fn) + ": rows R must be >= 1, got " + std::to_string(R));
  require(C >= 1, std::string(fn) + ": columns C must be >= 1, got " + std::to_string(C));
  require(G >= 1 && C % G == 0, std::string(fn) + ": groups G must be >= 1 and divide C = " + std::to_string(C) +
                                    ", got G = " + std::to_string(G));
}

void check_eps(const char* fn, float eps) {
  require(std::isfinite(eps) && eps >= 0, std::string(fn) + ": eps must be finite and >= 0");
}

void check_count(const char* fn, long n) {
  require(n >= 0, std::string(fn) + ": n must be >= 0, got " + std::to_string(n));
}

// Conv sizes; the backward's parameter-gradient pass holds K taps in
// registers and indexes (K+1) * C columns with an int.
void check_conv(const char* fn, const Conv1dDims& d, bool backward) {
  conv1d_check_dims(d);
  if (!backward) return;
  require(d.K <= kernels::kConv1dMaxK, std::string(fn) + ": Conv1dDims.K = " + std::to_string(d.K) +
                                           " is above the CUDA backward's limit of " +
                                           std::to_string(kernels::kConv1dMaxK));
  require(
      (static_cast<long long>(d.K) + 1) * d.C <= INT_MAX,
      std::string(fn) + ": Conv1dDims.C = " + std::to_string(d.C) + " is too large ((K + 1) * C must fit in an int)");
}

}  // namespace

void rmsnorm_forward_cuda(float* y, float* rstd, const float* x, const float* weight, int R, int C, float eps,
                          cudaStream_t stream) {
  const char* fn = "rmsnorm_forward_cuda";
  check_rows(fn, R, C, 1);
  check_eps(fn, eps);
  require_ptrs(fn, {{"y", y}, {"rstd", rstd}, {"x", x}, {"weight", weight}});
  kernels::norm_forward_launch(y, rstd, x, nullptr, weight, R, C, 1, eps, stream);
}

void rmsnorm_backward_cuda(float* dx, float* dweight, const float* dy, const float* rstd, const float* x,
                           const float* weight, int R, int C, cudaStream_t stream) {
  const char* fn = "rmsnorm_backward_cuda";
  check_rows(fn, R, C, 1);
  require_ptrs(fn, {{"dx", dx}, {"dweight", dweight}, {"dy", dy}, {"rstd", rstd}, {"x", x}, {"weight", weight}});
  kernels::norm_backward_launch(dx, nullptr, dweight, dy, rstd, x, nullptr, weight, R, C, 1, stream);
}

void gated_rmsnorm_forward_cuda(float* y, float* rstd, const float* x, const float* z, const float* weight, int R,
                                int C, int G, float eps, cudaStream_t stream) {
  const char* fn = "gated_rmsnorm_forward_cuda";
  check_rows(fn, R, C, G);
  check_eps(fn, eps);
  require_ptrs(fn, {{"y", y}, {"rstd", rstd}, {"x", x}, {"z", z}, {"weight", weight}});
  kernels::norm_forward_launch(y, rstd, x, z, weight, R, C, G, eps, stream);
}

void gated_rmsnorm_backward_cuda(float* dx, float* dz, float* dweight, const float* dy, const float* rstd,
                                 const float* x, const float* z, const float* weight, int R, int C, int G,
                                 cudaStream_t stream) {
  const char* fn = "gated_rmsnorm_backward_cuda";
  check_rows(fn, R, C, G);
  require_ptrs(fn, {{"dx", dx},
                    {"dz", dz},
                    {"dweight", dweight},
                    {"dy", dy},
                    {"rstd", rstd},
                    {"x", x},
                    {"z", z},
                    {"weight", weight}});
  kernels::norm_backward_launch(dx, dz, dweight, dy, rstd, x, z, weight, R, C, G, stream);
}

void silu_forward_cuda(float* y, const float* x, long n, cudaStream_t stream) {
  const char* fn = "silu_forward_cuda";
  check_count(fn, n);
  if (n == 0) return;
  require_ptrs(fn, {{"y", y}, {"x", x}});
  kernels::silu_forward_launch(y, x, n, stream);
}

void silu_backward_cuda(float* dx, const float* dy, const float* x, long n, cudaStream_t stream) {
  const char* fn = "silu_backward_cuda";
  check_count(fn, n);
  if (n == 0) return;
  require_ptrs(fn, {{"dx", dx}, {"dy", dy}, {"x", x}});
  kernels::silu_backward_launch(dx, dy, x, n, stream);
}

void sigmoid_gate_forward_cuda(float* y, const float* x, const float* g, long n, cudaStream_t stream) {
  const char* fn = "sigmoid_gate_forward_cuda";
  check_count(fn, n);
  if (n == 0) return;
  require_ptrs(fn, {{"y", y}, {"x", x}, {"g", g}});
  kernels::sigmoid_gate_forward_launch(y, x, g, n, stream);
}

void sigmoid_gate_backward_cuda(float* dx, float* dg, const float* dy, const float* x, const float* g, long n,
                                cudaStream_t stream) {
  const char* fn = "sigmoid_gate_backward_cuda";
  check_count(fn, n);
  if (n == 0) return;
  require_ptrs(fn, {{"dg", dg}, {"dy", dy}, {"x", x}, {"g", g}});
  kernels::sigmoid_gate_backward_launch(dx, dg, dy, x, g, n, stream);
}

void log_power_forward_cuda(float* y, const float* x, long n, double eps, cudaStream_t stream) {
  const char* fn = "log_power_forward_cuda";
  check_count(fn, n);
  require(eps > 0, std::string(fn) + ": eps must be > 0");
  if (n == 0) return;
  require_ptrs(fn, {{"y", y}, {"x", x}});
  kernels::log_power_forward_launch(y, x, n, static_cast<float>(eps), stream);
}

void log_power_backward_cuda(float* dx, const float* dy, const float* x, long n, double eps, cudaStream_t stream) {
  const char* fn = "log_power_backward_cuda";
  check_count(fn, n);
  require(eps > 0, std::string(fn) + ": eps must be > 0");
  if (n == 0) return;
  require_ptrs(fn, {{"dx", dx}, {"dy", dy}, {"x", x}});
  kernels::log_power_backward_launch(dx, dy, x, n, static_cast<float>(eps), stream);
}

namespace {
void check_unfold_dims(const char* fn, int B, int T, int C, int W) {
  require(B >= 1 && T >= 1 && C >= 1 && W >= 1, std::string(fn) + ": B, T, C, W must be >= 1, got B = " +
                                                    std::to_string(B) + ", T = " + std::to_string(T) + ", C = " +
                                                    std::to_string(C) + ", W = " + std::to_string(W));
}
}  // namespace

void unfold_forward_cuda(float* y, float* next_tail, const float* x, const float* tail, int B, int T, int C, int W,
                         cudaStream_t stream) {
  const char* fn = "unfold_forward_cuda";
  check_unfold_dims(fn, B, T, C, W);
  require_ptrs(fn, {{"y", y}, {"x", x}});
  kernels::unfold_forward_launch(y, next_tail, x, tail, B, T, C, W, stream);
}

void unfold_backward_cuda(float* dx, const float* dy, int B, int T, int C, int W, cudaStream_t stream) {
  const char* fn = "unfold_backward_cuda";
  check_unfold_dims(fn, B, T, C, W);
  require_ptrs(fn, {{"dx", dx}, {"dy", dy}});
  kernels::unfold_backward_launch(dx, dy, B, T, C, W, stream);
}

void add_into_cuda(float* dst, const float* src, long n, cudaStream_t stream) {
  const char* fn = "add_into_cuda";
  check_count(fn, n);
  if (n == 0) return;
  require_ptrs(fn, {{"dst", dst}, {"src", src}});
  kernels::add_into_launch(dst, src, n, stream);
}

void copy_cols_cuda(float* dst, int ld_dst, int c0_dst, const float* src, int ld_src, int c0_src, size_t R, int w,
                    cudaStream_t stream) {
  const char* fn = "copy_cols_cuda";
  require(w >= 0, std::string(fn) + ": width w must be >= 0, got " + std::to_string(w));
  require(c0_dst >= 0 && ld_dst >= 1 && static_cast<long long>(c0_dst) + w <= ld_dst,
          std::string(fn) + ": destination columns [c0_dst, c0_dst + w) = [" + std::to_string(c0_dst) + ", " +
              std::to_string(static_cast<long long>(c0_dst) + w) +
              ") must lie in [0, ld_dst = " + std::to_string(ld_dst) + ")");
  require(c0_src >= 0 && ld_src >= 1 && static_cast<long long>(c0_src) + w <= ld_src,
          std::string(fn) + ": source columns [c0_src, c0_src + w) = [" + std::to_string(c0_src) + ", " +
              std::to_string(static_cast<long long>(c0_src) + w) +
              ") must lie in [0, ld_src = " + std::to_string(ld_src) + ")");
  require(R <= static_cast<size_t>(INT64_MAX / (static_cast<int64_t>(ld_dst > ld_src ? ld_dst : ld_src) + 1)),
          std::string(fn) + ": rows R = " + std::to_string(R) + " overflow the element index");
  if (R == 0 || w == 0) return;
  require_ptrs(fn, {{"dst", dst}, {"src", src}});
  kernels::copy_cols_launch(dst + c0_dst, ld_dst, src + c0_src, ld_src, static_cast<int64_t>(R), w, stream);
}

void conv1d_forward_cuda(float* y, float* final_tail, const float* x, const float* weight, const float* bias,
                         const float* initial_tail, const Conv1dDims& d, cudaStream_t stream) {
  const char* fn = "conv1d_forward_cuda";
  check_conv(fn, d, false);
  require_ptrs(fn, {{"y", y}, {"x", x}, {"weight", weight}});
  kernels::conv1d_forward_launch(y, final_tail, x, weight, bias, initial_tail, d, stream);
}

void conv1d_backward_cuda(float* dx, float* dweight, float* dbias, float* dinitial_tail, const float* dy,
                          const float* dfinal_tail, const float* x, const float* weight, const float* initial_tail,
                          const Conv1dDims& d, cudaStream_t stream) {
  const char* fn = "conv1d_backward_cuda";
  check_conv(fn, d, true);
  require_ptrs(fn, {{"dx", dx}, {"dweight", dweight}, {"dy", dy}, {"x", x}, {"weight", weight}});
  kernels::conv1d_backward_launch(dx, dweight, dbias, dinitial_tail, dy, dfinal_tail, x, weight, initial_tail, d,
                                  stream);
}

void sum_squares_cuda(double* out_sq, const float* grads, size_t n, cudaStream_t stream) {
  const char* fn = "sum_squares_cuda";
  require_ptrs(fn, {{"out_sq", out_sq}});
  if (n > 0) require_ptrs(fn, {{"grads", grads}});
  kernels::sum_squares_launch(out_sq, grads, n, stream);
}

void adamw_update_cuda(float* params, float* m, float* v, const float* grads, const float* decay_mult, size_t n,
                       int64_t step, double lr, const AdamWConfig& c, float grad_scale, cudaStream_t stream) {
  const char* fn = "adamw_update_cuda";
  adamw_check_config(c);
  require(step >= 1, std::string(fn) + ": step must be >= 1, got " + std::to_string(step));
  require(std::isfinite(lr) && lr >= 0, std::string(fn) + ": lr must be finite and >= 0, got " + std::to_string(lr));
  require(std::isfinite(grad_scale) && grad_scale >= 0,
          std::string(fn) + ": grad_scale must be finite and >= 0, got " + std::to_string(grad_scale));
  if (n == 0) return;
  require_ptrs(fn, {{"params", params}, {"m", m}, {"v", v}, {"grads", grads}, {"decay_mult", decay_mult}});
  // Scalars in fp64, as adamw_update (and PyTorch, in Python floats) forms them.
  const double bias1 = 1 - std::pow(c.beta1, static_cast<double>(step));
  const double bias2_sqrt = std::sqrt(1 - std::pow(c.beta2, static_cast<double>(step)));
  kernels::AdamWStep s{};
  s.beta1 = static_cast<float>(c.beta1);
  s.one_m_beta1 = static_cast<float>(1 - c.beta1);
  s.beta2 = static_cast<float>(c.beta2);
  s.one_m_beta2 = static_cast<float>(1 - c.beta2);
  s.step_size = static_cast<float>(lr / bias1);
  s.inv_bias2_sqrt = static_cast<float>(1 / bias2_sqrt);
  s.eps = static_cast<float>(c.eps);
  s.grad_scale = grad_scale;
  s.lr_wd = lr * c.weight_decay;
  kernels::adamw_launch(params, m, v, grads, decay_mult, n, s, stream);
}

}  // namespace ssm
