// Real FFTs over FFTW (fftwf for float, fftw for double) and the causal
// convolutions built on them (DESIGN.md §1, convolution mode).
//
// Plans are created once per (size, transform, precision, alignment) and kept
// in a process-wide cache for the life of the process, so hot loops never pay
// for planning. FFTW's planner is not thread-safe: every plan this library
// makes goes through the cache, whose planning runs under a mutex. Execution
// uses FFTW's new-array functions on the caller's buffers, which is
// thread-safe, so one RealFft may be shared by many threads. Buffers need no
// particular alignment (a plan for unaligned data is used when they are not
// SIMD-aligned; fftw_malloc'ed buffers take the faster aligned plan).
#pragma once
#include <complex>
#include <cstddef>

#include "ssm/common.hpp"

namespace ssm {

// Smallest n' >= n of the form 2^a 3^b 5^c 7^d (sizes FFTW handles fastest).
// Throws ssm::Error unless 1 <= n and the result fits in an int.
int fft_next_fast_size(int n);

// How hard the planner works for plans created from now on (plans already in
// the cache stay as they are). Estimate (the default) plans in microseconds;
// Measure times candidate algorithms, which costs up to a second per size
// once and can make long transforms faster.
enum class FftEffort { Estimate, Measure };
void fft_set_effort(FftEffort effort);

// Number of FFTW plans created so far in this process (all sizes and
// precisions). A size already planned adds nothing.
std::size_t fft_plans_created();

// Real-to-complex transform of length n >= 1:
//   forward:  X[k] = sum_t x[t] exp(-2 pi i k t / n),   k < n/2 + 1
//   inverse:  x[t] = sum_k X[k] exp(+2 pi i k t / n)    (full Hermitian spectrum)
// The inverse is UNNORMALISED: inverse(forward(x)) = n * x.
// Input and output buffers must not overlap.
template <typename Real>
class RealFft {
 public:
  explicit RealFft(int n);

  int size() const { return n_; }
  int spectrum_size() const { return n_ / 2 + 1; }

  void forward(std::complex<Real>* out,  // (n/2 + 1)
               const Real* in            // (n)
  ) const;

  // `in` is left unchanged (slightly slower plan than inverse_destroy).
  void inverse(Real* out,                     // (n)
               const std::complex<Real>* in   // (n/2 + 1)
  ) const;

  // Same result; `in` is used as scratch and overwritten.
  void inverse_destroy(Real* out,              // (n)
                       std::complex<Real>* in  // (n/2 + 1)
  ) const;

  struct PlanSet;  // the cached plans of one size and precision

 private:
  int n_;
  PlanSet* plans_;
};

// Causal convolution of one sequence with a kernel of the same length, by FFT
// of length fft_next_fast_size(2T - 1) (long enough that no output wraps):
//   y[t] = sum_{s <= t} kernel[t - s] * x[s],   t < T
template <typename Real>
void causal_fft_conv_forward(Real* y,             // (T)
                             const Real* x,       // (T)
                             const Real* kernel,  // (T)
                             int T);

// dx is assigned (=); dkernel accumulates (+=).
template <typename Real>
void causal_fft_conv_backward(Real* dx,            // (T)  =
                              Real* dkernel,       // (T)  +=
                              const Real* dy,      // (T)
                              const Real* x,       // (T)
                              const Real* kernel,  // (T)
                              int T);

// The same convolution for every channel of (B, T, H) activations, channel h
// with its own kernel row (a depthwise long convolution, e.g. S4D):
//   y[b, t, h] = sum_{s <= t} kernel[h, t - s] * x[b, s, h]
// OpenMP over channels.
template <typename Real>
void depthwise_fft_conv_forward(Real* y,             // (B, T, H)
                                const Real* x,       // (B, T, H)
                                const Real* kernel,  // (H, T)
                                int B, int T, int H);

// dx is assigned (=); dkernel accumulates (+=).
template <typename Real>
void depthwise_fft_conv_backward(Real* dx,            // (B, T, H)  =
                                 Real* dkernel,       // (H, T)     +=
                                 const Real* dy,      // (B, T, H)
                                 const Real* x,       // (B, T, H)
                                 const Real* kernel,  // (H, T)
                                 int B, int T, int H);

}  // namespace ssm
