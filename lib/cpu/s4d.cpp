#include "ssm/s4d.hpp"

#include <cmath>
#include <complex>
#include <random>
#include <string>
#include <vector>

#include "ssm/fft.hpp"

namespace ssm {

namespace {

using cd = std::complex<double>;

constexpr double kPi = 3.14159265358979323846;

void check(const char* fn, const S4dDims& d, bool uses_B, bool uses_T) {
  const std::string f(fn);
  if (uses_B) require(d.B >= 1, f + ": batch B must be >= 1, got " + std::to_string(d.B));
  if (uses_T) require(d.T >= 1, f + ": time steps T must be >= 1, got " + std::to_string(d.T));
  require(d.H >= 1, f + ": channels H must be >= 1, got " + std::to_string(d.H));
  require(d.N >= 1, f + ": modes N must be >= 1, got " + std::to_string(d.N));
}

void check_ptrs(const char* fn, std::initializer_list<std::pair<const char*, const void*>> bufs) {
  for (const auto& [name, p] : bufs) require(p != nullptr, std::string(fn) + ": " + name + " is null");
}

// The continuous and discretised quantities of one mode, in fp64.
struct Mode {
  cd A;     // continuous pole
  cd Abar;  // exp(dt A)
  cd Bbar;  // (Abar - 1) / A
};

template <typename Real>
Mode mode(double dt, Real a_re_log, Real a_im) {
  const cd A(-std::exp(static_cast<double>(a_re_log)), static_cast<double>(a_im));
  const double re = dt * A.real(), im = dt * A.imag();
  const double s = std::sin(0.5 * im);
  // exp(dt A) - 1 without the cancellation of subtracting 1 when dt|A| is small.
  const cd em1(std::expm1(re) * std::cos(im) - 2.0 * s * s, std::exp(re) * std::sin(im));
  return {A, em1 + 1.0, em1 / A};
}

template <typename Real>
void init(Real* log_dt, Real* A_re_log, Real* A_im, Real* C, Real* D, const S4dDims& d, uint64_t seed, double dt_min,
          double dt_max, bool lin, const char* fn) {
  check(fn, d, false, false);
  check_ptrs(fn, {{"log_dt", log_dt}, {"A_re_log", A_re_log}, {"A_im", A_im}, {"C", C}, {"D", D}});
  require(dt_min > 0 && dt_max >= dt_min && std::isfinite(dt_max),
          std::string(fn) + ": expected 0 < dt_min <= dt_max, got dt_min = " + std::to_string(dt_min) +
              ", dt_max = " + std::to_string(dt_max));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(std::log(dt_min), std::log(dt_max));
  std::normal_distribution<double> normal(0.0, 1.0);
  const double half = std::sqrt(0.5);
  for (int h = 0; h < d.H; ++h) {
    log_dt[h] = static_cast<Real>(u(rng));
    D[h] = static_cast<Real>(normal(rng));
    for (int n = 0; n < d.N; ++n) {
      const long i = static_cast<long>(h) * d.N + n;
      A_re_log[i] = static_cast<Real>(lin ? std::log(0.5) : std::log(n + 1.0));
      A_im[i] = static_cast<Real>(lin ? kPi * n : 0.0);
      C[2 * i] = static_cast<Real>(half * normal(rng));
      C[2 * i + 1] = static_cast<Real>(half * normal(rng));
    }
  }
}

// One recurrence step of one channel: s = Abar s + Bbar x, returns
// Re(sum_n C s) + D x. Arithmetic in fp64, the state stored as S; shared by
// s4d_step and s4d_recurrent_forward so both give identical samples.
template <typename S, typename Real>
inline double advance(S* s,               // (N, 2)
                      const double* Ab,   // (N, 2)
                      const double* Bb,   // (N, 2)
                      const Real* Ch,     // (N, 2)
                      double x, double Dh, int N) {
  double acc = Dh * x;
  for (int n = 0; n < N; ++n) {
    const double sr = s[2 * n], si = s[2 * n + 1];
    const double nr = Ab[2 * n] * sr - Ab[2 * n + 1] * si + Bb[2 * n] * x;
    const double ni = Ab[2 * n] * si + Ab[2 * n + 1] * sr + Bb[2 * n + 1] * x;
    s[2 * n] = static_cast<S>(nr);
    s[2 * n + 1] = static_cast<S>(ni);
    acc += static_cast<double>(Ch[2 * n]) * nr - static_cast<double>(Ch[2 * n + 1]) * ni;
  }
  return acc;
}

// The recurrence over (B, T, H) inputs, OpenMP over (batch, channel). The
// state is held as S between steps: Real in the recurrent mode (what
// s4d_step stores), fp64 for the final state of the convolution mode.
// y and final_state may be null.
template <typename S, typename Real>
void recur(Real* y,                    // (B, T, H) or null
           Real* final_state,          // (B, H, N, 2) or null
           const Real* x,              // (B, T, H)
           const Real* log_dt,         // (H)
           const Real* A_re_log,       // (H, N)
           const Real* A_im,           // (H, N)
           const Real* C,              // (H, N, 2)
           const Real* D,              // (H)
           const Real* initial_state,  // (B, H, N, 2) or null
           const S4dDims& d) {
  const int B = d.B, T = d.T, H = d.H, N = d.N;
  std::vector<double> Ab(static_cast<size_t>(H) * N * 2), Bb(Ab.size());  // (H, N, 2) each
  s4d_discretize(Ab.data(), Bb.data(), log_dt, A_re_log, A_im, d);
#pragma omp parallel
  {
    std::vector<S> s(2 * N);  // (N, 2)
#pragma omp for schedule(static)
    for (long bh = 0; bh < static_cast<long>(B) * H; ++bh) {
      const long b = bh / H, h = bh % H;
      for (int j = 0; j < 2 * N; ++j) s[j] = initial_state ? static_cast<S>(initial_state[bh * N * 2 + j]) : S(0);
      const double* ab = Ab.data() + h * N * 2;
      const double* bb = Bb.data() + h * N * 2;
      const Real* ch = C + h * N * 2;
      const double dh = D[h];
      for (int t = 0; t < T; ++t) {
        const long i = (b * T + t) * H + h;
        const double out = advance(s.data(), ab, bb, ch, static_cast<double>(x[i]), dh, N);
        if (y) y[i] = static_cast<Real>(out);
      }
      if (final_state)
        for (int j = 0; j < 2 * N; ++j) final_state[bh * N * 2 + j] = static_cast<Real>(s[j]);
    }
  }
}

}  // namespace

void s4d_check_dims(const S4dDims& d) { check("s4d", d, true, true); }

template <typename Real>
void s4d_init_lin(Real* log_dt, Real* A_re_log, Real* A_im, Real* C, Real* D, const S4dDims& d, uint64_t seed,
                  double dt_min, double dt_max) {
  init(log_dt, A_re_log, A_im, C, D, d, seed, dt_min, dt_max, true, "s4d_init_lin");
}

template <typename Real>
void s4d_init_real(Real* log_dt, Real* A_re_log, Real* A_im, Real* C, Real* D, const S4dDims& d, uint64_t seed,
                   double dt_min, double dt_max) {
  init(log_dt, A_re_log, A_im, C, D, d, seed, dt_min, dt_max, false, "s4d_init_real");
}

template <typename Real>
void s4d_kernel_forward(Real* kernel, const Real* log_dt, const Real* A_re_log, const Real* A_im, const Real* C,
                        const S4dDims& d) {
  check("s4d_kernel_forward", d, false, true);
  check_ptrs("s4d_kernel_forward",
             {{"kernel", kernel}, {"log_dt", log_dt}, {"A_re_log", A_re_log}, {"A_im", A_im}, {"C", C}});
  const int T = d.T, H = d.H, N = d.N;
#pragma omp parallel
  {
    std::vector<double> wr(N), wi(N), zr(N), zi(N);  // (N) each: C Bbar Abar^k and Abar
#pragma omp for schedule(static)
    for (int h = 0; h < H; ++h) {
      const double dt = std::exp(static_cast<double>(log_dt[h]));
      for (int n = 0; n < N; ++n) {
        const long i = static_cast<long>(h) * N + n;
        const Mode m = mode(dt, A_re_log[i], A_im[i]);
        const cd w = cd(C[2 * i], C[2 * i + 1]) * m.Bbar;
        wr[n] = w.real(), wi[n] = w.imag();
        zr[n] = m.Abar.real(), zi[n] = m.Abar.imag();
      }
      Real* kh = kernel + static_cast<long>(h) * T;
      // Powers by repeated multiplication: fp64 rounding grows ~k * 1e-16.
      for (int k = 0; k < T; ++k) {
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int n = 0; n < N; ++n) {
          s += wr[n];
          const double r = wr[n] * zr[n] - wi[n] * zi[n];
          wi[n] = wr[n] * zi[n] + wi[n] * zr[n];
          wr[n] = r;
        }
        kh[k] = static_cast<Real>(s);
      }
    }
  }
}

template <typename Real>
void s4d_kernel_backward(Real* dlog_dt, Real* dA_re_log, Real* dA_im, Real* dC, const Real* dkernel,
                         const Real* log_dt, const Real* A_re_log, const Real* A_im, const Real* C,
                         const S4dDims& d) {
  check("s4d_kernel_backward", d, false, true);
  check_ptrs("s4d_kernel_backward", {{"dlog_dt", dlog_dt}, {"dA_re_log", dA_re_log}, {"dA_im", dA_im}, {"dC", dC},
                                     {"dkernel", dkernel}, {"log_dt", log_dt}, {"A_re_log", A_re_log},
                                     {"A_im", A_im}, {"C", C}});
  const int T = d.T, H = d.H, N = d.N;
  // With z = Abar, beta = Bbar, g = dkernel[h, :] and the loss
  // L = sum_k g[k] Re(C beta z^k) = Re(F):
  //   S = sum_k g[k] z^k,  U = sum_k k g[k] z^k  (= z dS/dz)
  //   dF/dC  = beta S
  //   dF/ddt = C (z S + (z - 1) U)                       =: C Q
  //   dF/dA  = C (dt Q - beta S) / A                      (dt fixed, holomorphic)
  // and for a real loss of a holomorphic F, dL/dRe = Re(F'), dL/dIm = -Im(F').
#pragma omp parallel
  {
    std::vector<double> pr(N), pi(N), zr(N), zi(N);  // (N) each: z^k and z
    std::vector<double> sr(N), si(N), ur(N), ui(N);  // (N) each: S and U
    std::vector<Mode> modes(N);                       // (N)
#pragma omp for schedule(static)
    for (int h = 0; h < H; ++h) {
      const double dt = std::exp(static_cast<double>(log_dt[h]));
      for (int n = 0; n < N; ++n) {
        const long i = static_cast<long>(h) * N + n;
        modes[n] = mode(dt, A_re_log[i], A_im[i]);
        zr[n] = modes[n].Abar.real(), zi[n] = modes[n].Abar.imag();
        pr[n] = 1, pi[n] = 0, sr[n] = si[n] = ur[n] = ui[n] = 0;
      }
      const Real* gh = dkernel + static_cast<long>(h) * T;
      for (int k = 0; k < T; ++k) {
        const double g = gh[k], gk = g * k;
#pragma omp simd
        for (int n = 0; n < N; ++n) {
          sr[n] += g * pr[n], si[n] += g * pi[n];
          ur[n] += gk * pr[n], ui[n] += gk * pi[n];
          const double r = pr[n] * zr[n] - pi[n] * zi[n];
          pi[n] = pr[n] * zi[n] + pi[n] * zr[n];
          pr[n] = r;
        }
      }
      double ddt = 0;
      for (int n = 0; n < N; ++n) {
        const long i = static_cast<long>(h) * N + n;
        const Mode& m = modes[n];
        const cd Cn(C[2 * i], C[2 * i + 1]), S(sr[n], si[n]), U(ur[n], ui[n]);
        const cd bS = m.Bbar * S;
        const cd Q = m.Abar * S + (m.Abar - 1.0) * U;
        const cd dF_dA = Cn * (dt * Q - bS) / m.A;
        ddt += (Cn * Q).real();
        dA_re_log[i] += static_cast<Real>(dF_dA.real() * m.A.real());  // dA_re/dA_re_log = A_re
        dA_im[i] += static_cast<Real>(-dF_dA.imag());
        dC[2 * i] += static_cast<Real>(bS.real());
        dC[2 * i + 1] += static_cast<Real>(-bS.imag());
      }
      dlog_dt[h] += static_cast<Real>(ddt * dt);
    }
  }
}

template <typename Real>
void s4d_conv_forward(Real* y, std::type_identity_t<Real>* final_state, Real* kernel, const Real* x, const Real* log_dt,
                      const Real* A_re_log, const Real* A_im, const Real* C, const Real* D, const S4dDims& d) {
  check("s4d_conv_forward", d, true, true);
  check_ptrs("s4d_conv_forward", {{"y", y}, {"kernel", kernel}, {"x", x}, {"D", D}});
  const int B = d.B, T = d.T, H = d.H;
  s4d_kernel_forward(kernel, log_dt, A_re_log, A_im, C, d);
  depthwise_fft_conv_forward(y, x, kernel, B, T, H);
  const long rows = static_cast<long>(B) * T;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; ++r)
    for (int h = 0; h < H; ++h) y[r * H + h] += D[h] * x[r * H + h];
  // The state after the last step, for a stream to continue from: the
  // recurrence with an fp64 state (outputs not needed).
  if (final_state)
    recur<double>(static_cast<Real*>(nullptr), final_state, x, log_dt, A_re_log, A_im, C, D,
                  static_cast<const Real*>(nullptr), d);
}

template <typename Real>
void s4d_conv_backward(Real* dx, Real* dlog_dt, Real* dA_re_log, Real* dA_im, Real* dC, Real* dD, const Real* dy,
                       const Real* kernel, const Real* x, const Real* log_dt, const Real* A_re_log,
                       const Real* A_im, const Real* C, const Real* D, const S4dDims& d) {
  check("s4d_conv_backward", d, true, true);
  check_ptrs("s4d_conv_backward", {{"dx", dx}, {"dD", dD}, {"dy", dy}, {"kernel", kernel}, {"x", x}, {"D", D}});
  const int B = d.B, T = d.T, H = d.H;
  std::vector<Real> dkernel(static_cast<size_t>(H) * T, Real(0));  // (H, T)
  depthwise_fft_conv_backward(dx, dkernel.data(), dy, x, kernel, B, T, H);
  const long rows = static_cast<long>(B) * T;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; ++r)
    for (int h = 0; h < H; ++h) dx[r * H + h] += D[h] * dy[r * H + h];
  // dD by columns so that each thread owns its h (no shared accumulation).
#pragma omp parallel for schedule(static)
  for (int h = 0; h < H; ++h) {
    double s = 0;
    for (long r = 0; r < rows; ++r) s += static_cast<double>(dy[r * H + h]) * x[r * H + h];
    dD[h] += static_cast<Real>(s);
  }
  s4d_kernel_backward(dlog_dt, dA_re_log, dA_im, dC, dkernel.data(), log_dt, A_re_log, A_im, C, d);
}

template <typename Real>
void s4d_discretize(double* Abar, double* Bbar, const Real* log_dt, const Real* A_re_log, const Real* A_im,
                    const S4dDims& d) {
  check("s4d_discretize", d, false, false);
  check_ptrs("s4d_discretize",
             {{"Abar", Abar}, {"Bbar", Bbar}, {"log_dt", log_dt}, {"A_re_log", A_re_log}, {"A_im", A_im}});
  for (int h = 0; h < d.H; ++h) {
    const double dt = std::exp(static_cast<double>(log_dt[h]));
    for (int n = 0; n < d.N; ++n) {
      const long i = static_cast<long>(h) * d.N + n;
      const Mode m = mode(dt, A_re_log[i], A_im[i]);
      Abar[2 * i] = m.Abar.real(), Abar[2 * i + 1] = m.Abar.imag();
      Bbar[2 * i] = m.Bbar.real(), Bbar[2 * i + 1] = m.Bbar.imag();
    }
  }
}

template <typename Real>
void s4d_step(Real* y, Real* state, const Real* x, const double* Abar, const double* Bbar, const Real* C,
              const Real* D, const S4dDims& d) {
  check("s4d_step", d, true, false);
  check_ptrs("s4d_step", {{"y", y}, {"state", state}, {"x", x}, {"Abar", Abar}, {"Bbar", Bbar}, {"C", C}, {"D", D}});
  const int H = d.H, N = d.N;
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < H; ++h) {
      const long bh = static_cast<long>(b) * H + h;
      y[bh] = static_cast<Real>(advance(state + bh * N * 2, Abar + static_cast<long>(h) * N * 2,
                                        Bbar + static_cast<long>(h) * N * 2, C + static_cast<long>(h) * N * 2,
                                        static_cast<double>(x[bh]), static_cast<double>(D[h]), N));
    }
}

template <typename Real>
void s4d_recurrent_forward(Real* y, std::type_identity_t<Real>* final_state, const Real* x, const Real* log_dt,
                           const Real* A_re_log, const Real* A_im, const Real* C, const Real* D,
                           const std::type_identity_t<Real>* initial_state,
                           const S4dDims& d) {
  check("s4d_recurrent_forward", d, true, true);
  check_ptrs("s4d_recurrent_forward", {{"y", y}, {"x", x}, {"C", C}, {"D", D}});
  recur<Real>(y, final_state, x, log_dt, A_re_log, A_im, C, D, initial_state, d);
}

#define SSM_INSTANTIATE(Real)                                                                                     \
  template void s4d_init_lin<Real>(Real*, Real*, Real*, Real*, Real*, const S4dDims&, uint64_t, double, double);  \
  template void s4d_init_real<Real>(Real*, Real*, Real*, Real*, Real*, const S4dDims&, uint64_t, double, double); \
  template void s4d_kernel_forward<Real>(Real*, const Real*, const Real*, const Real*, const Real*,               \
                                         const S4dDims&);                                                        \
  template void s4d_kernel_backward<Real>(Real*, Real*, Real*, Real*, const Real*, const Real*, const Real*,      \
                                          const Real*, const Real*, const S4dDims&);                             \
  template void s4d_conv_forward<Real>(Real*, Real*, Real*, const Real*, const Real*, const Real*, const Real*,   \
                                       const Real*, const Real*, const S4dDims&);                                \
  template void s4d_conv_backward<Real>(Real*, Real*, Real*, Real*, Real*, Real*, const Real*, const Real*,       \
                                        const Real*, const Real*, const Real*, const Real*, const Real*,          \
                                        const Real*, const S4dDims&);                                            \
  template void s4d_discretize<Real>(double*, double*, const Real*, const Real*, const Real*, const S4dDims&);    \
  template void s4d_step<Real>(Real*, Real*, const Real*, const double*, const double*, const Real*, const Real*, \
                               const S4dDims&);                                                                  \
  template void s4d_recurrent_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*,     \
                                            const Real*, const Real*, const Real*, const S4dDims&);
SSM_INSTANTIATE(float)
SSM_INSTANTIATE(double)
#undef SSM_INSTANTIATE

}  // namespace ssm
