#include "ssm/blas.hpp"

#include <cblas.h>

namespace ssm {

// Up to this many rows a product runs as one matrix-vector product per row.
// OpenBLAS's matrix product packs its operands first, which at a few rows
// costs more than it saves: the shipped denoiser streamed in blocks of 2 and
// 4 frames took 2.15 and 1.17 us per sample through sgemm, 1.01 and 0.94
// through sgemv; at 8 rows sgemm is ahead again (0.86 against 0.93).
constexpr int kRowsByMatrixVector = 4;

namespace {

// y = alpha op(B) x + beta y for one row x of A and the row y of C.
void gemv(CBLAS_TRANSPOSE t, int m, int n, float alpha, const float* a, int lda, const float* x, float beta,
          float* y) {
  cblas_sgemv(CblasRowMajor, t, m, n, alpha, a, lda, x, 1, beta, y, 1);
}
void gemv(CBLAS_TRANSPOSE t, int m, int n, double alpha, const double* a, int lda, const double* x, double beta,
          double* y) {
  cblas_dgemv(CblasRowMajor, t, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

template <typename Real>
void rows_by_gemv(bool transB, int M, int N, int K, Real alpha, const Real* A, int lda, const Real* B, int ldb,
                  Real beta, Real* C, int ldc) {
  for (int i = 0; i < M; ++i) {
    const Real* a = A + static_cast<long>(i) * lda;
    Real* c = C + static_cast<long>(i) * ldc;
    if (transB)
      gemv(CblasNoTrans, N, K, alpha, B, ldb, a, beta, c);
    else
      gemv(CblasTrans, K, N, alpha, B, ldb, a, beta, c);
  }
}

}  // namespace

template <>
void gemm<float>(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (M <= kRowsByMatrixVector && !transA) {
    // A few rows (the streaming paths): matrix-vector products skip the
    // packing a matrix product pays for, which costs more than they save.
    rows_by_gemv(transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
    rows_by_gemv(transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void blas_set_threads(int n) { openblas_set_num_threads(n); }

}  // namespace ssm
