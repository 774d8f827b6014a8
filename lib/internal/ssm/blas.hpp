// Row-major matrix product through the tuned BLAS (OpenBLAS):
//   C(M, N) = alpha * op(A) @ op(B) + beta * C
// op(A) is (M, K): A is (M, K) with lda >= K, or (K, M) with lda >= M when transA.
// op(B) is (K, N): B is (K, N) with ldb >= N, or (N, K) with ldb >= K when transB.
// The fp64 reference paths use plain loops, never this.
#pragma once

namespace ssm {

template <typename Real>
void gemm(bool transA, bool transB, int M, int N, int K, Real alpha, const Real* A, int lda,
          const Real* B, int ldb, Real beta, Real* C, int ldc);

// Threads used inside BLAS calls (1 for the real-time path and when the
// caller already parallelises over batch / heads).
void blas_set_threads(int n);

}  // namespace ssm
