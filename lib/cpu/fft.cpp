#include "ssm/fft.hpp"

#include <fftw3.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace ssm {

namespace {

// One place for the fftwf_* / fftw_* spellings.
template <typename Real>
struct Fftw;

template <>
struct Fftw<float> {
  using Complex = fftwf_complex;
  static void* plan_r2c(int n, float* in, Complex* out, unsigned flags) {
    return fftwf_plan_dft_r2c_1d(n, in, out, flags);
  }
  static void* plan_c2r(int n, Complex* in, float* out, unsigned flags) {
    return fftwf_plan_dft_c2r_1d(n, in, out, flags);
  }
  static void exec_r2c(void* p, float* in, Complex* out) { fftwf_execute_dft_r2c(fftwf_plan(p), in, out); }
  static void exec_c2r(void* p, Complex* in, float* out) { fftwf_execute_dft_c2r(fftwf_plan(p), in, out); }
  static int alignment_of(const void* p) { return fftwf_alignment_of(static_cast<float*>(const_cast<void*>(p))); }
  static void* malloc(size_t bytes) { return fftwf_malloc(bytes); }
  static void free(void* p) { fftwf_free(p); }
};

template <>
struct Fftw<double> {
  using Complex = fftw_complex;
  static void* plan_r2c(int n, double* in, Complex* out, unsigned flags) {
    return fftw_plan_dft_r2c_1d(n, in, out, flags);
  }
  static void* plan_c2r(int n, Complex* in, double* out, unsigned flags) {
    return fftw_plan_dft_c2r_1d(n, in, out, flags);
  }
  static void exec_r2c(void* p, double* in, Complex* out) { fftw_execute_dft_r2c(fftw_plan(p), in, out); }
  static void exec_c2r(void* p, Complex* in, double* out) { fftw_execute_dft_c2r(fftw_plan(p), in, out); }
  static int alignment_of(const void* p) { return fftw_alignment_of(static_cast<double*>(const_cast<void*>(p))); }
  static void* malloc(size_t bytes) { return fftw_malloc(bytes); }
  static void free(void* p) { fftw_free(p); }
};

// Intentionally never destroyed: plans must outlive every static object that
// might still run an FFT during program exit.
std::mutex& planner_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::atomic<std::size_t> g_plans_created{0};
std::atomic<int> g_effort{static_cast<int>(FftEffort::Estimate)};

// Plan slots of a PlanSet.
enum Slot { kR2cAligned, kR2cUnaligned, kC2rKeepAligned, kC2rKeepUnaligned, kC2rDestroyAligned, kC2rDestroyUnaligned, kSlots };

// SIMD-aligned scratch from FFTW's allocator.
template <typename T, typename Real>
struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) : p(static_cast<T*>(Fftw<Real>::malloc(std::max<size_t>(n, 1) * sizeof(T)))) {
    if (!p) fail("fft: out of memory allocating " + std::to_string(n) + " elements of scratch");
  }
  ~AlignedBuffer() { Fftw<Real>::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* p;
};

}  // namespace

template <typename Real>
struct RealFft<Real>::PlanSet {
  int n;
  std::atomic<void*> plan[kSlots];
};

namespace {

template <typename Real>
using PlanSetOf = typename RealFft<Real>::PlanSet;

template <typename Real>
PlanSetOf<Real>* plan_set_for(int n) {
  static auto* sets = new std::map<int, std::unique_ptr<PlanSetOf<Real>>>;
  std::lock_guard<std::mutex> lock(planner_mutex());
  auto& s = (*sets)[n];
  if (!s) {
    s = std::make_unique<PlanSetOf<Real>>();
    s->n = n;
    for (auto& p : s->plan) p.store(nullptr, std::memory_order_relaxed);
  }
  return s.get();
}

// Plans one slot under the planner mutex (double-checked: another thread may
// have planned it meanwhile). The planning arrays are throw-away scratch;
// execution always passes the caller's arrays.
template <typename Real>
void* make_plan(PlanSetOf<Real>* set, int slot) {
  std::lock_guard<std::mutex> lock(planner_mutex());
  if (void* p = set->plan[slot].load(std::memory_order_acquire)) return p;
  const int n = set->n;
  AlignedBuffer<Real, Real> re(n);
  AlignedBuffer<typename Fftw<Real>::Complex, Real> cx(n / 2 + 1);
  unsigned flags = g_effort.load() == static_cast<int>(FftEffort::Measure) ? FFTW_MEASURE : FFTW_ESTIMATE;
  if (slot % 2 == 1) flags |= FFTW_UNALIGNED;
  void* p = nullptr;
  if (slot <= kR2cUnaligned) {
    p = Fftw<Real>::plan_r2c(n, re.p, cx.p, flags);
  } else {
    flags |= slot <= kC2rKeepUnaligned ? FFTW_PRESERVE_INPUT : FFTW_DESTROY_INPUT;
    p = Fftw<Real>::plan_c2r(n, cx.p, re.p, flags);
  }
  if (!p) fail("fft: FFTW could not plan a transform of size " + std::to_string(n));
  ++g_plans_created;
  set->plan[slot].store(p, std::memory_order_release);
  return p;
}

template <typename Real>
void* plan_of(PlanSetOf<Real>* set, int slot) {
  void* p = set->plan[slot].load(std::memory_order_acquire);
  return p ? p : make_plan<Real>(set, slot);
}

template <typename Real>
bool aligned(const void* a, const void* b) {
  return Fftw<Real>::alignment_of(a) == 0 && Fftw<Real>::alignment_of(b) == 0;
}

}  // namespace

int fft_next_fast_size(int n) {
  require(n >= 1, "fft_next_fast_size: n must be >= 1, got " + std::to_string(n));
  for (long long m = n; m <= INT_MAX; ++m) {
    long long r = m;
    for (int f : {2, 3, 5, 7})
      while (r % f == 0) r /= f;
    if (r == 1) return static_cast<int>(m);
  }
  fail("fft_next_fast_size: no fast size >= " + std::to_string(n) + " fits in an int");
}

void fft_set_effort(FftEffort effort) { g_effort.store(static_cast<int>(effort)); }

std::size_t fft_plans_created() { return g_plans_created.load(); }

template <typename Real>
RealFft<Real>::RealFft(int n) : n_(n), plans_(nullptr) {
  require(n >= 1, "RealFft: size n must be >= 1, got " + std::to_string(n));
  plans_ = plan_set_for<Real>(n);
}

template <typename Real>
void RealFft<Real>::forward(std::complex<Real>* out, const Real* in) const {
  require(out && in, "RealFft::forward: null buffer");
  const int slot = aligned<Real>(in, out) ? kR2cAligned : kR2cUnaligned;
  // An out-of-place r2c transform never writes its input.
  Fftw<Real>::exec_r2c(plan_of<Real>(plans_, slot), const_cast<Real*>(in),
                       reinterpret_cast<typename Fftw<Real>::Complex*>(out));
}

template <typename Real>
void RealFft<Real>::inverse(Real* out, const std::complex<Real>* in) const {
  require(out && in, "RealFft::inverse: null buffer");
  const int slot = aligned<Real>(in, out) ? kC2rKeepAligned : kC2rKeepUnaligned;
  // Planned with FFTW_PRESERVE_INPUT, so `in` is only read.
  Fftw<Real>::exec_c2r(plan_of<Real>(plans_, slot),
                       reinterpret_cast<typename Fftw<Real>::Complex*>(const_cast<std::complex<Real>*>(in)), out);
}

template <typename Real>
void RealFft<Real>::inverse_destroy(Real* out, std::complex<Real>* in) const {
  require(out && in, "RealFft::inverse_destroy: null buffer");
  const int slot = aligned<Real>(in, out) ? kC2rDestroyAligned : kC2rDestroyUnaligned;
  Fftw<Real>::exec_c2r(plan_of<Real>(plans_, slot), reinterpret_cast<typename Fftw<Real>::Complex*>(in), out);
}

template class RealFft<float>;
template class RealFft<double>;

namespace {

void check_conv(const char* fn, const void* a, const void* b, const void* c, const void* d, int B, int T, int H) {
  const std::string f(fn);
  require(B >= 1, f + ": batch B must be >= 1, got " + std::to_string(B));
  require(T >= 1, f + ": time steps T must be >= 1, got " + std::to_string(T));
  require(H >= 1, f + ": channels H must be >= 1, got " + std::to_string(H));
  require(T <= INT_MAX / 4, f + ": T = " + std::to_string(T) + " is too long for an FFT of length 2T");
  require(a && b && c && d, f + ": null buffer");
}

// (a * b) and (conj(a) * b) written out: std::complex's operator* takes a slow
// NaN-recovery path without -ffast-math.
template <typename Real>
inline std::complex<Real> mul(std::complex<Real> a, std::complex<Real> b) {
  return {a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real()};
}
template <typename Real>
inline std::complex<Real> conj_mul(std::complex<Real> a, std::complex<Real> b) {
  return {a.real() * b.real() + a.imag() * b.imag(), a.real() * b.imag() - a.imag() * b.real()};
}

// Copies column h of a (B, T, H) sequence b (or a kernel row when stride is
// 1) into the first T entries of buf and zero-pads it to L.
template <typename Real>
inline void gather(Real* buf, const Real* src, int T, long stride, int L) {
  for (int t = 0; t < T; ++t) buf[t] = src[t * stride];
  std::fill(buf + T, buf + L, Real(0));
}

// Creates the aligned plans the convolutions use before their parallel
// regions, so that no planning error can be thrown inside one.
template <typename Real>
void plan_aligned(const RealFft<Real>& fft) {
  const int L = fft.size();
  AlignedBuffer<Real, Real> buf(L);
  AlignedBuffer<std::complex<Real>, Real> spec(L / 2 + 1);
  std::fill(buf.p, buf.p + L, Real(0));
  fft.forward(spec.p, buf.p);
  fft.inverse_destroy(buf.p, spec.p);
}

}  // namespace

template <typename Real>
void depthwise_fft_conv_forward(Real* y, const Real* x, const Real* kernel, int B, int T, int H) {
  check_conv("depthwise_fft_conv_forward", y, x, kernel, y, B, T, H);
  const int L = fft_next_fast_size(2 * T - 1);
  const int M = L / 2 + 1;
  const RealFft<Real> fft(L);
  const Real scale = Real(1) / Real(L);
  const long step = static_cast<long>(T) * H;  // batch stride of (B, T, H)
  plan_aligned(fft);
#pragma omp parallel
  {
    AlignedBuffer<Real, Real> buf(L);                      // (L)
    AlignedBuffer<std::complex<Real>, Real> kspec(M);      // (L/2+1)
    AlignedBuffer<std::complex<Real>, Real> spec(M);       // (L/2+1)
#pragma omp for schedule(dynamic)
    for (int h = 0; h < H; ++h) {
      gather(buf.p, kernel + static_cast<long>(h) * T, T, 1, L);
      fft.forward(kspec.p, buf.p);
      for (int b = 0; b < B; ++b) {
        gather(buf.p, x + b * step + h, T, H, L);
        fft.forward(spec.p, buf.p);
        for (int k = 0; k < M; ++k) spec.p[k] = mul(spec.p[k], kspec.p[k]);
        fft.inverse_destroy(buf.p, spec.p);
        Real* yb = y + b * step + h;
        for (int t = 0; t < T; ++t) yb[static_cast<long>(t) * H] = buf.p[t] * scale;
      }
    }
  }
}

template <typename Real>
void depthwise_fft_conv_backward(Real* dx, Real* dkernel, const Real* dy, const Real* x, const Real* kernel, int B,
                                 int T, int H) {
  check_conv("depthwise_fft_conv_backward", dx, dkernel, dy, x, B, T, H);
  require(kernel != nullptr, "depthwise_fft_conv_backward: null kernel");
  const int L = fft_next_fast_size(2 * T - 1);
  const int M = L / 2 + 1;
  const RealFft<Real> fft(L);
  const Real scale = Real(1) / Real(L);
  const long step = static_cast<long>(T) * H;
  plan_aligned(fft);
  // The adjoint of a causal convolution is the anti-causal correlation; with
  // L >= 2T - 1 the circular correlation has no wrapped terms in t < T:
  //   dx[s] = sum_{t >= s} kernel[t - s] dy[t]  <->  conj(K) DY
  //   dk[j] = sum_{t >= j} x[t - j] dy[t]       <->  sum_b conj(X_b) DY_b
#pragma omp parallel
  {
    AlignedBuffer<Real, Real> buf(L);                      // (L)
    AlignedBuffer<std::complex<Real>, Real> kspec(M);      // (L/2+1)
    AlignedBuffer<std::complex<Real>, Real> dyspec(M);     // (L/2+1)
    AlignedBuffer<std::complex<Real>, Real> xspec(M);      // (L/2+1)
    AlignedBuffer<std::complex<Real>, Real> dkspec(M);     // (L/2+1)
#pragma omp for schedule(dynamic)
    for (int h = 0; h < H; ++h) {
      gather(buf.p, kernel + static_cast<long>(h) * T, T, 1, L);
      fft.forward(kspec.p, buf.p);
      std::fill(dkspec.p, dkspec.p + M, std::complex<Real>(0));
      for (int b = 0; b < B; ++b) {
        gather(buf.p, dy + b * step + h, T, H, L);
        fft.forward(dyspec.p, buf.p);
        gather(buf.p, x + b * step + h, T, H, L);
        fft.forward(xspec.p, buf.p);
        for (int k = 0; k < M; ++k) {
          dkspec.p[k] += conj_mul(xspec.p[k], dyspec.p[k]);
          xspec.p[k] = conj_mul(kspec.p[k], dyspec.p[k]);
        }
        fft.inverse_destroy(buf.p, xspec.p);
        Real* dxb = dx + b * step + h;
        for (int t = 0; t < T; ++t) dxb[static_cast<long>(t) * H] = buf.p[t] * scale;
      }
      fft.inverse_destroy(buf.p, dkspec.p);
      Real* dk = dkernel + static_cast<long>(h) * T;
      for (int t = 0; t < T; ++t) dk[t] += buf.p[t] * scale;
    }
  }
}

template <typename Real>
void causal_fft_conv_forward(Real* y, const Real* x, const Real* kernel, int T) {
  depthwise_fft_conv_forward(y, x, kernel, 1, T, 1);
}

template <typename Real>
void causal_fft_conv_backward(Real* dx, Real* dkernel, const Real* dy, const Real* x, const Real* kernel, int T) {
  depthwise_fft_conv_backward(dx, dkernel, dy, x, kernel, 1, T, 1);
}

#define SSM_INSTANTIATE(Real)                                                                                   \
  template void causal_fft_conv_forward<Real>(Real*, const Real*, const Real*, int);                           \
  template void causal_fft_conv_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int);      \
  template void depthwise_fft_conv_forward<Real>(Real*, const Real*, const Real*, int, int, int);              \
  template void depthwise_fft_conv_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int, int, \
                                                  int);
SSM_INSTANTIATE(float)
SSM_INSTANTIATE(double)
#undef SSM_INSTANTIATE

}  // namespace ssm
