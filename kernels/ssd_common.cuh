// Device helpers shared by the SSD kernels (kernels/ssd.cu): tf32 tensor-core
// MMA fragments, cp.async copies, warp reductions, and the chunk tile loader.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ssm::kernels {

// Every kernel works on chunks padded to QT time slots; the user's chunk length
// Q may be any value in [1, QT] (slots >= Q are zero-filled: dt = 0, x = B = C = 0).
constexpr int QT = 64;

// ---- tf32 MMA, m16n8k8, fp32 accumulate -----------------------------------
// Fragment layout, with g = lane / 4 and q = lane % 4:
//   A (16x8, row major):  a0 (g, q)   a1 (g+8, q)   a2 (g, q+4)   a3 (g+8, q+4)
//   B (8x8, col major):   b0 (q, g)   b1 (q+4, g)
//   C (16x8):             c0 (g, 2q)  c1 (g, 2q+1)  c2 (g+8, 2q)  c3 (g+8, 2q+1)
// The k index is a pure reduction index, so a GEMM may use the permuted order
// (k = q -> 2q, k = q+4 -> 2q+1) as long as A and B agree: then A is loaded as a
// float2 from row-major storage, and an accumulator tile (c0..c3) can be fed
// straight back as an A fragment.
// With SPLIT, each operand is split into a tf32 high part and a low part and
// three products are summed (3xTF32): about fp32 accuracy at 3x the cost.

// tf32 rounding by integer arithmetic (one IADD, or IADD + LOP for an exact tf32
// value): cvt.rna.tf32.f32 runs on the conversion unit at a quarter of the
// integer rate and was the bottleneck of v1. Adding half an ulp of tf32 to the
// magnitude rounds to nearest (ties away from zero); the tensor cores ignore
// the 13 low mantissa bits, so the plain add suffices as an operand.
__device__ __forceinline__ uint32_t tf32_round(float x) { return __float_as_uint(x) + 0x1000u; }
__device__ __forceinline__ uint32_t tf32_exact(float x) { return (__float_as_uint(x) + 0x1000u) & 0xffffe000u; }

template <bool SPLIT>
struct FragA {
  uint32_t hi[4];
  uint32_t lo[SPLIT ? 4 : 1];
};
template <bool SPLIT>
struct FragB {
  uint32_t hi[2];
  uint32_t lo[SPLIT ? 2 : 1];
};

template <bool SPLIT>
__device__ __forceinline__ FragA<SPLIT> make_a(float a0, float a1, float a2, float a3) {
  FragA<SPLIT> f;
  const float v[4] = {a0, a1, a2, a3};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (SPLIT) {
      f.hi[i] = tf32_exact(v[i]);
      f.lo[i] = __float_as_uint(v[i] - __uint_as_float(f.hi[i]));
    } else {
      f.hi[i] = tf32_round(v[i]);
    }
  }
  return f;
}

template <bool SPLIT>
__device__ __forceinline__ FragB<SPLIT> make_b(float b0, float b1) {
  FragB<SPLIT> f;
  if constexpr (SPLIT) {
    f.hi[0] = tf32_exact(b0);
    f.hi[1] = tf32_exact(b1);
    f.lo[0] = __float_as_uint(b0 - __uint_as_float(f.hi[0]));
    f.lo[1] = __float_as_uint(b1 - __uint_as_float(f.hi[1]));
  } else {
    f.hi[0] = tf32_round(b0);
    f.hi[1] = tf32_round(b1);
  }
  return f;
}

__device__ __forceinline__ void mma_raw(float (&d)[4], const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a @ b
template <bool SPLIT>
__device__ __forceinline__ void mma(float (&d)[4], const FragA<SPLIT>& a, const FragB<SPLIT>& b) {
  if constexpr (SPLIT) {
    mma_raw(d, a.lo, b.hi);
    mma_raw(d, a.hi, b.lo);
  }
  mma_raw(d, a.hi, b.hi);
}

// ---- cp.async ---------------------------------------------------------------
// With valid == false nothing is read and the destination is zero-filled.
__device__ __forceinline__ void cp_async16(float* smem, const float* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Copies a ROWS x CP tile into shared memory (row stride lds floats). Row r of
// the tile is global src + r * row_stride; rows >= nrows and columns >= ncols
// are zero-filled. `vec` (16-byte copies) needs ncols, row_stride and the
// address of src to be multiples of 4 floats.
template <int ROWS, int CP, int NTHREADS>
__device__ __forceinline__ void load_tile(float* dst, int lds, const float* src, long long row_stride, int nrows,
                                          int ncols, bool vec) {
  if (vec) {
    constexpr int C4 = CP / 4;
    for (int i = threadIdx.x; i < ROWS * C4; i += NTHREADS) {
      const int r = i / C4, c = (i % C4) * 4;
      const bool ok = r < nrows && c < ncols;
      cp_async16(dst + r * lds + c, ok ? src + r * row_stride + c : src, ok);
    }
  } else {
    for (int i = threadIdx.x; i < ROWS * CP; i += NTHREADS) {
      const int r = i / CP, c = i % CP;
      const bool ok = r < nrows && c < ncols;
      cp_async4(dst + r * lds + c, ok ? src + r * row_stride + c : src, ok);
    }
  }
}

// ---- warp reductions ---------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over the 4 lanes of a quad (same g, q = 0..3).
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}
// Sum over the 8 lanes with the same q (g = 0..7).
__device__ __forceinline__ float column_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 8);
  v += __shfl_xor_sync(0xffffffffu, v, 16);
  return v;
}

__device__ __forceinline__ float softplus(float z) { return z > 20.f ? z : log1pf(expf(z)); }

}  // namespace ssm::kernels
