// Internal to lib/cpu: branch-free float exponentials that let the hot
// loops vectorise, and the attribute that gives a function an x86-64-v3
// (AVX2 + FMA) clone picked at load time.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace ssm {

// Not under ThreadSanitizer: GCC instruments the clones' resolver, which the
// dynamic loader runs while it is still relocating the program, before calls
// into the TSan runtime can work, so every program crashed at startup.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define SSM_SIMD_CLONES __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define SSM_SIMD_CLONES
#endif
#if defined(__GNUC__)
#define SSM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SSM_ALWAYS_INLINE inline
#endif

template <typename Real>
SSM_ALWAYS_INLINE Real softplus(Real z) {
  // log(1 + e^z) without overflow for large z.
  return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
}

template <typename Real>
SSM_ALWAYS_INLINE Real sigmoid(Real z) {
  return Real(1) / (Real(1) + std::exp(-z));
}

// e^x for x <= 0. The float version is written without calls or branches so
// that the loops over a chunk vectorise, and is accurate to ~2 ulp (degree-7
// polynomial after reduction by ln 2). Arguments below -87 give e^-87
// (~1.6e-38) instead of a denormal: far below what any sum it enters can
// resolve, and it avoids the slow underflow path of expf.
SSM_ALWAYS_INLINE float decay_exp(float x) {
  // Clamp to -87 on the bits: for x <= 0 the unsigned bit pattern grows with
  // |x|. An integer select vectorises; a float compare does not under the
  // default trapping-math rules.
  const uint32_t u = std::bit_cast<uint32_t>(x);
  x = std::bit_cast<float>(u > 0xC2AE0000u ? 0xC2AE0000u : u);  // 0xC2AE0000 = -87.0f
  constexpr float shift = 12582912.0f;                          // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * 1.44269504088896341f + shift;      // k in the low bits of the mantissa
  const float k = shifted - shift;
  float r = x - k * 0.693145751953125f;  // ln 2, high bits (exact product)
  r = r - k * 1.428606820309417e-06f;    // ln 2, low bits
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^k built from k's bits, not by converting k to an integer: a NaN
  // argument then gives NaN (p is NaN) instead of an undefined conversion.
  const uint32_t k_bits = std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(shift);  // k mod 2^32
  return p * std::bit_cast<float>((k_bits + 127u) << 23);
}

SSM_ALWAYS_INLINE double decay_exp(double x) { return std::exp(x); }

// e^x for |x| <= 87 (either sign): e^-|x|, inverted for x > 0. The sign
// picks between the two by an integer mask, so loops of it vectorise.
SSM_ALWAYS_INLINE float exp_bounded(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const float e = decay_exp(std::bit_cast<float>(u | 0x80000000u));  // e^-|x|
  const uint32_t negative = 0u - (u >> 31);                           // all ones when x < 0
  return std::bit_cast<float>((std::bit_cast<uint32_t>(e) & negative) |
                              (std::bit_cast<uint32_t>(1.0f / e) & ~negative));
}
SSM_ALWAYS_INLINE double exp_bounded(double x) { return std::exp(x); }

// log(1 + u) for u in [0, 1] as 2 atanh(u / (2 + u)): no cancellation for
// small u, and the series in s^2 <= 1/9 converges fast.
SSM_ALWAYS_INLINE float log1p_unit(float u) {
  const float s = u / (2.0f + u);
  const float s2 = s * s;
  float p = 1.0f / 13;
  p = p * s2 + 1.0f / 11;
  p = p * s2 + 1.0f / 9;
  p = p * s2 + 1.0f / 7;
  p = p * s2 + 1.0f / 5;
  p = p * s2 + 1.0f / 3;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

SSM_ALWAYS_INLINE float abs_bits(float z) { return std::bit_cast<float>(std::bit_cast<uint32_t>(z) & 0x7fffffffu); }

// softplus and its derivative for the chunked paths, vectorisable in float
// (~3e-7 relative); the reference and step paths use softplus / sigmoid.
// max(z, 0) is (z + |z|) / 2, exact, and needs no float compare.
SSM_ALWAYS_INLINE float fast_softplus(float z) {
  const float a = abs_bits(z);
  return (z + a) * 0.5f + log1p_unit(decay_exp(-a));
}
SSM_ALWAYS_INLINE double fast_softplus(double z) { return softplus(z); }

SSM_ALWAYS_INLINE float fast_sigmoid(float z) {
  const float u = decay_exp(-abs_bits(z));
  const float r = 1.0f / (1.0f + u);
  // sigmoid(z) = u r for z < 0, r otherwise: a bit mask selects, so the
  // loops that call this have no branch and vectorise.
  const uint32_t neg = 0u - (std::bit_cast<uint32_t>(z) >> 31);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(u * r) & neg) | (std::bit_cast<uint32_t>(r) & ~neg));
}
SSM_ALWAYS_INLINE double fast_sigmoid(double z) { return sigmoid(z); }

}  // namespace ssm
