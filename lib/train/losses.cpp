#include "ssm/losses.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <numbers>
#include <string>

#include "ssm/fft.hpp"

namespace ssm {

namespace {

void check_io(const std::string& fn, const void* a, const void* b, const void* c, const LossDims& d) {
  loss_check_dims(d);
  require(a && b && c, fn + ": null buffer (pred, target or dpred)");
}

// Below this many samples a parallel region costs more than it saves (and
// far more on a loaded machine, where a descheduled thread stalls the barrier).
constexpr int64_t kParallelMin = 1 << 15;

bool parallel_worth(const LossDims& d) { return int64_t(d.B) * d.T >= kParallelMin; }

// Per-item sums are added in item order, so results do not depend on the
// number of threads.
double sum_in_order(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

template <typename T>
struct AlignedArray {
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T[], Free> p;
  explicit AlignedArray(size_t n) {
    const size_t bytes = (std::max<size_t>(n, 1) * sizeof(T) + 63) / 64 * 64;
    p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    require(p != nullptr, "losses: cannot allocate " + std::to_string(bytes) + " bytes of scratch");
  }
  T* get() const { return p.get(); }
};

// Elements of T that fill whole 64-byte lines.
template <typename T>
size_t padded(size_t n) {
  const size_t per_line = std::max<size_t>(64 / sizeof(T), 1);
  return (n + per_line - 1) / per_line * per_line;
}

template <typename Real>
std::vector<Real> hann(int n) {
  std::vector<Real> w(n);  // (n)
  for (int j = 0; j < n; ++j) w[j] = static_cast<Real>(0.5 - 0.5 * std::cos(2 * std::numbers::pi * j / n));
  return w;
}

template <typename Real>
int sign(Real x) {
  return (x > 0) - (x < 0);
}

}  // namespace

void loss_check_dims(const LossDims& d) {
  require(d.B >= 1, "LossDims.B (batch) must be >= 1, got " + std::to_string(d.B));
  require(d.T >= 1, "LossDims.T (samples) must be >= 1, got " + std::to_string(d.T));
}

// ---------------------------------------------------------------- L1 / L2

namespace {

// mean over B*T of f(pred - target), the difference taken in double.
template <typename Real, typename F>
double pointwise_mean(const char* fn, const Real* pred, const Real* target, const LossDims& d, F f) {
  check_io(fn, pred, target, pred, d);
  const int64_t T = d.T;
  std::vector<double> part(d.B);  // (B)
#pragma omp parallel for schedule(static) if (parallel_worth(d))
  for (int b = 0; b < d.B; ++b) {
    double s = 0;
    for (int64_t t = b * T; t < (b + 1) * T; ++t) s += f(double(pred[t]) - double(target[t]));
    part[b] = s;
  }
  return sum_in_order(part) / (double(d.B) * double(d.T));
}

// dpred = (dloss / (B*T)) * df(pred - target).
template <typename Real, typename F>
void pointwise_backward(const char* fn, Real* dpred, double dloss, const Real* pred, const Real* target,
                        const LossDims& d, F df) {
  check_io(fn, dpred, pred, target, d);
  const int64_t n = int64_t(d.B) * d.T;
  const double k = dloss / double(n);
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dpred[i] = static_cast<Real>(k * df(double(pred[i]) - double(target[i])));
}

}  // namespace

template <typename Real>
double l1_loss_forward(const Real* pred, const Real* target, const LossDims& d) {
  return pointwise_mean("l1_loss_forward", pred, target, d, [](double e) { return std::fabs(e); });
}

template <typename Real>
void l1_loss_backward(Real* dpred, double dloss, const Real* pred, const Real* target, const LossDims& d) {
  pointwise_backward("l1_loss_backward", dpred, dloss, pred, target, d, [](double e) { return double(sign(e)); });
}

template <typename Real>
double l2_loss_forward(const Real* pred, const Real* target, const LossDims& d) {
  return pointwise_mean("l2_loss_forward", pred, target, d, [](double e) { return e * e; });
}

template <typename Real>
void l2_loss_backward(Real* dpred, double dloss, const Real* pred, const Real* target, const LossDims& d) {
  pointwise_backward("l2_loss_backward", dpred, dloss, pred, target, d, [](double e) { return 2 * e; });
}

// ---------------------------------------------------------------- Laplace NLL

template <typename Real>
double laplace_nll_forward(const Real* pred, const Real* target, const LossDims& d) {
  check_io("laplace_nll_forward", pred, target, pred, d);
  const int64_t T = d.T;
  std::vector<double> part(d.B);  // (B)
#pragma omp parallel for schedule(static) if (parallel_worth(d))
  for (int b = 0; b < d.B; ++b) {
    double s = 0;
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      const double ls = pred[2 * t + 1];
      s += std::fabs(double(target[2 * t]) - double(pred[2 * t])) * std::exp(-ls) + ls + std::numbers::ln2;
    }
    part[b] = s;
  }
  return sum_in_order(part) / (double(d.B) * double(d.T));
}

template <typename Real>
void laplace_nll_backward(Real* dpred, double dloss, const Real* pred, const Real* target, const LossDims& d) {
  check_io("laplace_nll_backward", dpred, pred, target, d);
  const int64_t n = int64_t(d.B) * d.T;
  const double k = dloss / double(n);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const double e = double(target[2 * i]) - double(pred[2 * i]), inv_b = std::exp(-double(pred[2 * i + 1]));
    dpred[2 * i] = static_cast<Real>(k * -sign(e) * inv_b);
    dpred[2 * i + 1] = static_cast<Real>(k * (1 - std::fabs(e) * inv_b));
  }
}

// ---------------------------------------------------------------- SI-SDR

namespace {

// The sums of one item that the value and its gradient need (see losses.hpp).
struct SiSdrItem {
  double mean_p, mean_r;  // means of pred and target
  double rr, pr;          // <r, r>, <p, r>
  double alpha;           // (<p, r> + eps) / (<r, r> + eps)
  double ee, er;          // <e, e>, <e, r> with e = alpha r - p
  double num, den;        // |alpha r|^2 + eps, |e|^2 + eps
  double value;           // dB
};

template <typename Real>
SiSdrItem si_sdr_item(const Real* pred,    // (T)
                      const Real* target,  // (T)
                      int T, double eps) {
  SiSdrItem s{};
  for (int t = 0; t < T; ++t) {
    s.mean_p += pred[t];
    s.mean_r += target[t];
  }
  s.mean_p /= T;
  s.mean_r /= T;
  for (int t = 0; t < T; ++t) {
    const double p = pred[t] - s.mean_p, r = target[t] - s.mean_r;
    s.rr += r * r;
    s.pr += p * r;
  }
  s.alpha = (s.pr + eps) / (s.rr + eps);
  // e summed directly rather than expanded: no cancellation when pred ~ target.
  for (int t = 0; t < T; ++t) {
    const double p = pred[t] - s.mean_p, r = target[t] - s.mean_r;
    const double e = s.alpha * r - p;
    s.ee += e * e;
    s.er += e * r;
  }
  s.num = s.alpha * s.alpha * s.rr + eps;
  s.den = s.ee + eps;
  s.value = 10 * std::log10(s.num / s.den);
  return s;
}

}  // namespace

template <typename Real>
void si_sdr(double* out, const Real* pred, const Real* target, const LossDims& d, double eps) {
  check_io("si_sdr", out, pred, target, d);
  require(eps >= 0 && std::isfinite(eps), "si_sdr: eps must be finite and >= 0");
  const int64_t T = d.T;
#pragma omp parallel for schedule(static) if (parallel_worth(d))
  for (int b = 0; b < d.B; ++b) out[b] = si_sdr_item(pred + b * T, target + b * T, d.T, eps).value;
}

template <typename Real>
double si_sdr_loss_forward(const Real* pred, const Real* target, const LossDims& d, double eps) {
  std::vector<double> v(d.B > 0 ? d.B : 0);  // (B)
  si_sdr(v.data(), pred, target, d, eps);
  return -sum_in_order(v) / d.B;
}

template <typename Real>
void si_sdr_loss_backward(Real* dpred, double dloss, const Real* pred, const Real* target, const LossDims& d,
                          double eps) {
  check_io("si_sdr_loss_backward", dpred, pred, target, d);
  require(eps >= 0 && std::isfinite(eps), "si_sdr_loss_backward: eps must be finite and >= 0");
  const int64_t T = d.T;
  const double k10 = 10 / std::numbers::ln10;
#pragma omp parallel for schedule(static) if (parallel_worth(d))
  for (int b = 0; b < d.B; ++b) {
    const Real* pb = pred + b * T;
    const Real* rb = target + b * T;
    const SiSdrItem s = si_sdr_item(pb, rb, d.T, eps);
    // d si_sdr / dp = k10 [ (2 alpha rr / c) r / num - ((2 er / c) r - 2 e) / den ],  c = rr + eps,
    // using d alpha / dp = r / c. r and e have zero mean, so the gradient
    // through the mean removal of pred adds nothing.
    const double c = s.rr + eps;
    const double kr = k10 * (2 * s.alpha * s.rr / (c * s.num) - 2 * s.er / (c * s.den));
    const double ke = k10 * 2 / s.den;
    const double scale = -dloss / d.B;
    Real* g = dpred + b * T;
    for (int t = 0; t < d.T; ++t) {
      const double p = pb[t] - s.mean_p, r = rb[t] - s.mean_r;
      const double e = s.alpha * r - p;
      g[t] = static_cast<Real>(scale * (kr * r + ke * e));
    }
  }
}

// ---------------------------------------------------------------- STFT loss

void stft_loss_check_config(const StftLossConfig& c) {
  require(!c.fft_sizes.empty(), "StftLossConfig.fft_sizes must not be empty");
  require(c.fft_sizes.size() == c.hops.size(),
          "StftLossConfig.hops must have as many entries as fft_sizes (" + std::to_string(c.fft_sizes.size()) +
              "), got " + std::to_string(c.hops.size()));
  for (size_t i = 0; i < c.fft_sizes.size(); ++i) {
    const int n = c.fft_sizes[i], h = c.hops[i];
    require(n >= 2, "StftLossConfig.fft_sizes[" + std::to_string(i) + "] must be >= 2, got " + std::to_string(n));
    require(h >= 1 && h <= n, "StftLossConfig.hops[" + std::to_string(i) + "] must be in [1, fft_sizes[" +
                                  std::to_string(i) + "] = " + std::to_string(n) + "], got " + std::to_string(h));
  }
  require(c.power_floor > 0 && std::isfinite(c.power_floor), "StftLossConfig.power_floor must be finite and > 0");
  require(c.log_eps >= 0 && std::isfinite(c.log_eps), "StftLossConfig.log_eps must be finite and >= 0");
}

int stft_frames(int T, int n, int hop) {
  require(T >= 1 && n >= 1 && hop >= 1, "stft_frames: T, n and hop must be >= 1");
  return T <= n ? 1 : 1 + (T - n + hop - 1) / hop;
}

namespace {

// Direct DFT of every frame of every item: re, im and |S|, all (B, F, K).
template <typename Real>
void reference_stft(std::vector<double>& re, std::vector<double>& im, std::vector<double>& mag,
                    const Real* x,  // (B, T)
                    const LossDims& d, int n, int hop, double power_floor) {
  const int F = stft_frames(d.T, n, hop), K = n / 2 + 1;
  const std::vector<double> w = hann<double>(n);  // (n)
  re.assign(size_t(d.B) * F * K, 0);
  im.assign(re.size(), 0);
  mag.assign(re.size(), 0);
  for (int b = 0; b < d.B; ++b)
    for (int f = 0; f < F; ++f)
      for (int k = 0; k < K; ++k) {
        double sr = 0, si = 0;
        for (int j = 0; j < n && f * hop + j < d.T; ++j) {
          const double v = w[j] * double(x[size_t(b) * d.T + f * hop + j]);
          const double ang = 2 * std::numbers::pi * double((int64_t(k) * j) % n) / n;
          sr += v * std::cos(ang);
          si -= v * std::sin(ang);
        }
        const size_t i = (size_t(b) * F + f) * K + k;
        re[i] = sr;
        im[i] = si;
        mag[i] = std::sqrt(sr * sr + si * si + power_floor);
      }
}

}  // namespace

template <typename Real>
double mrstft_loss_reference_forward(const Real* pred, const Real* target, const LossDims& d,
                                     const StftLossConfig& c) {
  check_io("mrstft_loss_reference_forward", pred, target, pred, d);
  stft_loss_check_config(c);
  double loss = 0;
  std::vector<double> re, im, mp, mr;  // (B, F, K)
  for (size_t r = 0; r < c.fft_sizes.size(); ++r) {
    reference_stft(re, im, mp, pred, d, c.fft_sizes[r], c.hops[r], c.power_floor);
    reference_stft(re, im, mr, target, d, c.fft_sizes[r], c.hops[r], c.power_floor);
    double num = 0, den = 0, mag = 0;
    for (size_t i = 0; i < mp.size(); ++i) {
      num += (mr[i] - mp[i]) * (mr[i] - mp[i]);
      den += mr[i] * mr[i];
      mag += std::fabs(std::log(mr[i] + c.log_eps) - std::log(mp[i] + c.log_eps));
    }
    loss += std::sqrt(num) / std::sqrt(den) + mag / double(mp.size());
  }
  return loss;
}

template <typename Real>
void mrstft_loss_reference_backward(Real* dpred, double dloss, const Real* pred, const Real* target,
                                    const LossDims& d, const StftLossConfig& c) {
  check_io("mrstft_loss_reference_backward", dpred, pred, target, d);
  stft_loss_check_config(c);
  std::vector<double> g(size_t(d.B) * d.T, 0.0);  // (B, T)
  std::vector<double> re, im, mp, unused, mr;     // (B, F, K)
  for (size_t r = 0; r < c.fft_sizes.size(); ++r) {
    const int n = c.fft_sizes[r], hop = c.hops[r];
    const int F = stft_frames(d.T, n, hop), K = n / 2 + 1;
    reference_stft(unused, unused, mr, target, d, n, hop, c.power_floor);
    reference_stft(re, im, mp, pred, d, n, hop, c.power_floor);
    double num = 0, den = 0;
    for (size_t i = 0; i < mp.size(); ++i) {
      num += (mr[i] - mp[i]) * (mr[i] - mp[i]);
      den += mr[i] * mr[i];
    }
    const double a = num > 0 ? 1 / (std::sqrt(num) * std::sqrt(den)) : 0;
    const double inv_m = 1 / double(mp.size());
    const std::vector<double> w = hann<double>(n);  // (n)
    for (int b = 0; b < d.B; ++b)
      for (int f = 0; f < F; ++f)
        for (int k = 0; k < K; ++k) {
          const size_t i = (size_t(b) * F + f) * K + k;
          // dL/d|S_pred|, then through |S| = sqrt(re^2 + im^2 + floor) and the DFT.
          const double dm = -(mr[i] - mp[i]) * a -
                            sign(std::log(mr[i] + c.log_eps) - std::log(mp[i] + c.log_eps)) * inv_m /
                                (mp[i] + c.log_eps);
          const double gre = dm * re[i] / mp[i], gim = dm * im[i] / mp[i];
          for (int j = 0; j < n && f * hop + j < d.T; ++j) {
            const double ang = 2 * std::numbers::pi * double((int64_t(k) * j) % n) / n;
            g[size_t(b) * d.T + f * hop + j] += w[j] * (gre * std::cos(ang) - gim * std::sin(ang));
          }
        }
  }
  for (size_t i = 0; i < g.size(); ++i) dpred[i] = static_cast<Real>(dloss * g[i]);
}

template <typename Real>
MultiResStftLoss<Real>::MultiResStftLoss(const StftLossConfig& c) : config_(c) {
  stft_loss_check_config(c);
  saved_.resize(c.fft_sizes.size());
  for (size_t r = 0; r < saved_.size(); ++r) {
    saved_[r].n = c.fft_sizes[r];
    saved_[r].hop = c.hops[r];
    saved_[r].K = c.fft_sizes[r] / 2 + 1;
    saved_[r].window = hann<Real>(c.fft_sizes[r]);
  }
}

namespace {

// Windowed frame f of one item, zero-padded past the end of the signal.
template <typename Real>
inline void load_frame(Real* buf,        // (n)
                       const Real* x,    // (T)
                       const Real* w,    // (n)
                       int T, int n, int start) {
  const int len = std::min(n, T - start);
  for (int j = 0; j < len; ++j) buf[j] = w[j] * x[start + j];
  std::fill(buf + std::max(len, 0), buf + n, Real(0));
}

// Makes the aligned plans of size n before a parallel region, where a
// planning error could not be thrown.
template <typename Real>
void warm_plans(const RealFft<Real>& fft) {
  const int n = fft.size();
  AlignedArray<Real> buf(n);
  AlignedArray<std::complex<Real>> spec(n / 2 + 1);
  std::fill(buf.get(), buf.get() + n, Real(0));
  fft.forward(spec.get(), buf.get());
  fft.inverse_destroy(buf.get(), spec.get());
}

}  // namespace

template <typename Real>
double MultiResStftLoss<Real>::forward(const Real* pred, const Real* target, const LossDims& d) {
  check_io("MultiResStftLoss::forward", pred, target, pred, d);
  dims_ = LossDims{0, 0};  // invalid until this forward completes
  const int nthreads = omp_get_max_threads();
  const Real floor = static_cast<Real>(config_.power_floor);
  const Real le = static_cast<Real>(config_.log_eps);
  double loss = 0;
  for (Saved& s : saved_) {
    const int n = s.n, hop = s.hop, K = s.K;
    const int F = s.F = stft_frames(d.T, n, hop);
    const size_t bins = size_t(d.B) * F * K;
    s.u.resize(bins);
    s.diff.resize(bins);
    s.q.resize(bins);
    const RealFft<Real> fft(n);
    warm_plans(fft);
    // Per-thread scratch: one frame and two spectra, each on its own cache lines.
    const size_t nf = padded<Real>(n), nk = padded<std::complex<Real>>(K);
    AlignedArray<Real> frames(nf * nthreads);                       // (threads, n)
    AlignedArray<std::complex<Real>> specs(2 * nk * nthreads);      // (threads, 2, K)
    std::vector<double> num(d.B), den(d.B), mag(d.B);               // (B)
#pragma omp parallel num_threads(nthreads) if (parallel_worth(d))
    {
      const int tid = omp_get_thread_num();
      Real* buf = frames.get() + tid * nf;                  // (n)
      std::complex<Real>* sp = specs.get() + 2 * tid * nk;  // (K)  prediction
      std::complex<Real>* sr = sp + nk;                     // (K)  reference
#pragma omp for schedule(dynamic)
      for (int b = 0; b < d.B; ++b) {
        const Real* xp = pred + size_t(b) * d.T;
        const Real* xr = target + size_t(b) * d.T;
        double sn = 0, sd = 0, sm = 0;
        for (int f = 0; f < F; ++f) {
          load_frame(buf, xp, s.window.data(), d.T, n, f * hop);
          fft.forward(sp, buf);
          load_frame(buf, xr, s.window.data(), d.T, n, f * hop);
          fft.forward(sr, buf);
          const size_t o = (size_t(b) * F + f) * K;
          for (int k = 0; k < K; ++k) {
            const Real pr = sp[k].real(), pi = sp[k].imag();
            const Real rr = sr[k].real(), ri = sr[k].imag();
            const Real mp = std::sqrt(pr * pr + pi * pi + floor);
            const Real mr = std::sqrt(rr * rr + ri * ri + floor);
            const Real diff = mr - mp;
            // One log of the ratio instead of a difference of two logs.
            const Real lg = std::log((mr + le) / (mp + le));
            const Real inv_mp = Real(1) / mp;
            s.u[o + k] = std::complex<Real>(pr * inv_mp, pi * inv_mp);
            s.diff[o + k] = diff;
            // sign(lg) == sign(diff): log is increasing.
            s.q[o + k] = static_cast<Real>(sign(diff)) / (mp + le);
            sn += double(diff) * double(diff);
            sd += double(mr) * double(mr);
            sm += std::fabs(double(lg));
          }
        }
        num[b] = sn;
        den[b] = sd;
        mag[b] = sm;
      }
    }
    s.sc_num = std::sqrt(sum_in_order(num));
    s.sc_den = std::sqrt(sum_in_order(den));
    loss += s.sc_num / s.sc_den + sum_in_order(mag) / double(bins);
  }
  dims_ = d;
  return loss;
}

template <typename Real>
void MultiResStftLoss<Real>::backward(Real* dpred, double dloss, const LossDims& d) {
  loss_check_dims(d);
  require(dpred != nullptr, "MultiResStftLoss::backward: null dpred");
  require(dims_.B > 0, "MultiResStftLoss::backward: no forward to take the gradient of");
  require(d.B == dims_.B && d.T == dims_.T,
          "MultiResStftLoss::backward: dims (B=" + std::to_string(d.B) + ", T=" + std::to_string(d.T) +
              ") differ from the last forward's (B=" + std::to_string(dims_.B) + ", T=" + std::to_string(dims_.T) +
              ")");
  const int nthreads = omp_get_max_threads();
  std::fill(dpred, dpred + size_t(d.B) * d.T, Real(0));
  for (const Saved& s : saved_) {
    const int n = s.n, hop = s.hop, K = s.K, F = s.F;
    const RealFft<Real> fft(n);
    warm_plans(fft);
    // dL/d|S_pred| = -diff / (||S_ref - S_pred|| ||S_ref||) - q / (B F K)
    const double bins = double(d.B) * F * K;
    const Real ka = static_cast<Real>(s.sc_num > 0 ? -dloss / (s.sc_num * s.sc_den) : 0.0);
    const Real kq = static_cast<Real>(-dloss / bins);
    const size_t nf = padded<Real>(n), nk = padded<std::complex<Real>>(K);
    AlignedArray<Real> frames(nf * nthreads);               // (threads, n)
    AlignedArray<std::complex<Real>> specs(nk * nthreads);  // (threads, K)
#pragma omp parallel num_threads(nthreads) if (parallel_worth(d))
    {
      const int tid = omp_get_thread_num();
      Real* buf = frames.get() + tid * nf;             // (n)
      std::complex<Real>* x = specs.get() + tid * nk;  // (K)
#pragma omp for schedule(dynamic)
      for (int b = 0; b < d.B; ++b) {
        Real* g = dpred + size_t(b) * d.T;
        for (int f = 0; f < F; ++f) {
          const size_t o = (size_t(b) * F + f) * K;
          // The unnormalised c2r inverse counts bins 1 .. ceil(n/2)-1 twice
          // (their conjugates); the adjoint of the one-sided DFT counts them
          // once, hence the halves.
          for (int k = 0; k < K; ++k) {
            const Real gm = ka * s.diff[o + k] + kq * s.q[o + k];
            const Real h = (k == 0 || 2 * k == n) ? gm : Real(0.5) * gm;
            x[k] = std::complex<Real>(h * s.u[o + k].real(), h * s.u[o + k].imag());
          }
          fft.inverse_destroy(buf, x);
          const int start = f * hop, len = std::min(n, d.T - start);
          for (int j = 0; j < len; ++j) g[start + j] += s.window[j] * buf[j];
        }
      }
    }
  }
}

#define SSM_INSTANTIATE(Real)                                                                                    \
  template double l1_loss_forward<Real>(const Real*, const Real*, const LossDims&);                             \
  template void l1_loss_backward<Real>(Real*, double, const Real*, const Real*, const LossDims&);               \
  template double l2_loss_forward<Real>(const Real*, const Real*, const LossDims&);                             \
  template void l2_loss_backward<Real>(Real*, double, const Real*, const Real*, const LossDims&);               \
  template void si_sdr<Real>(double*, const Real*, const Real*, const LossDims&, double);                       \
  template double laplace_nll_forward<Real>(const Real*, const Real*, const LossDims&);                         \
  template void laplace_nll_backward<Real>(Real*, double, const Real*, const Real*, const LossDims&);           \
  template double si_sdr_loss_forward<Real>(const Real*, const Real*, const LossDims&, double);                 \
  template void si_sdr_loss_backward<Real>(Real*, double, const Real*, const Real*, const LossDims&, double);   \
  template double mrstft_loss_reference_forward<Real>(const Real*, const Real*, const LossDims&,                \
                                                      const StftLossConfig&);                                   \
  template void mrstft_loss_reference_backward<Real>(Real*, double, const Real*, const Real*, const LossDims&,  \
                                                     const StftLossConfig&);                                    \
  template class MultiResStftLoss<Real>;
SSM_INSTANTIATE(float)
SSM_INSTANTIATE(double)
#undef SSM_INSTANTIATE

}  // namespace ssm
