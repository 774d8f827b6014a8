// Linear layers on the GPU (ssm/cuda_ops.hpp) through cuBLAS, TF32 tensor
// cores with fp32 accumulation; plain fp32 products when the handle's math
// mode is CUBLAS_PEDANTIC_MATH (the precision the tests hold the model to).
//
// cuBLAS is column-major: to it, a row-major (rows, cols) buffer is the
// (cols, rows) matrix with leading dimension cols, the transpose. Writing M'
// for that view of a buffer M (x' = x^T (I, R), W' = W^T (I, O), y' = y^T (O, R)):
//   y  = x W^T    <=>  y'  = W'^T x'      gemm(T, N, m = O, n = R, k = I)
//   dx = dy W     <=>  dx' = W' dy'       gemm(N, N, m = I, n = R, k = O)
//   dW += dy^T x  <=>  dW' += x' dy'^T    gemm(N, T, m = I, n = O, k = R)
// The bias is added by a kernel after the product; dbias is a column sum.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "ops.cuh"
#include "ssm/common.hpp"
#include "ssm/cuda_ops.hpp"

namespace ssm {
namespace {

void check_blas(cublasStatus_t s, const char* fn, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail(std::string(fn) + ": " + what + " failed: " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

// The caller's handle on `stream` with host scalars for one call; a stream or
// pointer mode it changes is put back afterwards. A handle already on
// `stream` is left alone (cublasSetStream would drop a workspace the caller
// set with cublasSetWorkspace).
class BlasCall {
 public:
  BlasCall(cublasHandle_t h, cudaStream_t stream, const char* fn) : h_(h), fn_(fn) {
    check_blas(cublasGetStream(h_, &old_stream_), fn_, "cublasGetStream");
    check_blas(cublasGetPointerMode(h_, &old_mode_), fn_, "cublasGetPointerMode");
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
    check_blas(cublasGetMathMode(h_, &math), fn_, "cublasGetMathMode");
    compute_ = (static_cast<int>(math) & 0xf) == CUBLAS_PEDANTIC_MATH ? CUBLAS_COMPUTE_32F_PEDANTIC
                                                                      : CUBLAS_COMPUTE_32F_FAST_TF32;
    if (old_stream_ != stream) {
      check_blas(cublasSetStream(h_, stream), fn_, "cublasSetStream");
      restore_stream_ = true;
    }
    if (old_mode_ != CUBLAS_POINTER_MODE_HOST) {
      check_blas(cublasSetPointerMode(h_, CUBLAS_POINTER_MODE_HOST), fn_, "cublasSetPointerMode");
      restore_mode_ = true;
    }
  }
  ~BlasCall() {
    if (restore_mode_) cublasSetPointerMode(h_, old_mode_);
    if (restore_stream_) cublasSetStream(h_, old_stream_);
  }
  BlasCall(const BlasCall&) = delete;
  BlasCall& operator=(const BlasCall&) = delete;

  // C (m, n) = op(A) op(B) + beta C, column-major.
  void gemm(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc, const char* what) const {
    const float alpha = 1.0f;
    check_blas(cublasGemmEx(h_, op_a, op_b, m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C,
                            CUDA_R_32F, ldc, compute_, CUBLAS_GEMM_DEFAULT),
               fn_, what);
  }

 private:
  cublasHandle_t h_;
  const char* fn_;
  cublasComputeType_t compute_ = CUBLAS_COMPUTE_32F_FAST_TF32;
  cudaStream_t old_stream_ = nullptr;
  cublasPointerMode_t old_mode_ = CUBLAS_POINTER_MODE_HOST;
  bool restore_stream_ = false, restore_mode_ = false;
};

void check_sizes(const char* fn, cublasHandle_t blas, int R, int I, int O) {
  require(blas != nullptr, std::string(fn) + ": the cuBLAS handle blas must not be null");
  require(R >= 1 && I >= 1 && O >= 1, std::string(fn) + ": R, I, O must be >= 1, got R = " + std::to_string(R) +
                                          ", I = " + std::to_string(I) + ", O = " + std::to_string(O));
}

void require_ptr(const char* fn, const void* p, const char* name) {
  require(p != nullptr, std::string(fn) + ": " + name + " must not be null");
}

}  // namespace

void linear_forward_cuda(cublasHandle_t blas, float* y, const float* x, const float* W, const float* bias, int R, int I,
                         int O, cudaStream_t stream) {
  const char* fn = "linear_forward_cuda";
  check_sizes(fn, blas, R, I, O);
  require_ptr(fn, y, "y");
  require_ptr(fn, x, "x");
  require_ptr(fn, W, "W");
  {
    const BlasCall call(blas, stream, fn);
    call.gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, R, I, W, I, x, I, 0.0f, y, O, "y = x W^T");
  }
  if (bias) kernels::add_bias_rows_launch(y, bias, R, O, stream);
}

void linear_backward_cuda(cublasHandle_t blas, float* dx, float* dW, float* dbias, const float* dy, const float* x,
                          const float* W, int R, int I, int O, cudaStream_t stream) {
  const char* fn = "linear_backward_cuda";
  check_sizes(fn, blas, R, I, O);
  require_ptr(fn, dy, "dy");
  require_ptr(fn, x, "x");
  require_ptr(fn, W, "W");
  {
    const BlasCall call(blas, stream, fn);
    if (dx) call.gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, R, O, W, I, dy, O, 0.0f, dx, I, "dx = dy W");
    if (dW) call.gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, R, x, I, dy, O, 1.0f, dW, I, "dW += dy^T x");
  }
  if (dbias) kernels::col_sum_add_launch(dbias, dy, R, O, stream);
}

}  // namespace ssm
