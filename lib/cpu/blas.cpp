#include "ssm/blas.hpp"

#include <cblas.h>

namespace ssm {

// Up to this many rows a product runs as one matrix-vector product per row.
// OpenBLAS's matrix product packs its operands first, which at a few rows
// costs more than it saves: the shipped denoiser streamed in blocks of 2 and
// 4 frames took 2.15 and 1.17 us per sample through sgemm, 1.01 and 0.94
// through sgemv; at 8 rows sgemm is ahead again (0.86 against 0.93).
constexpr int kRowsByMatrixVector = 4;

template <>
void gemm<float>(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (M <= kRowsByMatrixVector && !transA) {
    // A few rows (the streaming paths): matrix-vector products skip the
    // packing a matrix product pays for, which costs more than they save.
    for (int i = 0; i < M; ++i) {
      const float* a = A + static_cast<long>(i) * lda;
      float* c = C + static_cast<long>(i) * ldc;
      if (transB)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, a, 1, beta, c, 1);
      else
        cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, a, 1, beta, c, 1);
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<double>(bool transA, bool transB, int M, int N, int K, double alpha, const double* A, int lda,
                  const double* B, int ldb, double beta, double* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (M <= kRowsByMatrixVector && !transA) {
    // A few rows (the streaming paths): matrix-vector products skip the
    // packing a matrix product pays for, which costs more than they save.
    for (int i = 0; i < M; ++i) {
      const double* a = A + static_cast<long>(i) * lda;
      double* c = C + static_cast<long>(i) * ldc;
      if (transB)
        cblas_dgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, a, 1, beta, c, 1);
      else
        cblas_dgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, a, 1, beta, c, 1);
    }
    return;
  }
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void blas_set_threads(int n) { openblas_set_num_threads(n); }

}  // namespace ssm
