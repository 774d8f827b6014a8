// Causal sliding-window attention with ALiBi (ssm/attention.hpp) on the CPU:
// the plain-loop reference of the whole-sequence form, forward and backward,
// and the recurrent step over the ring. (b, h) pairs run in parallel: a head
// reads and writes only its own columns.
#include "ssm/attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "fast_math.hpp"

namespace ssm {

double alibi_slope(int h, int H) { return std::exp2(-8.0 * (h + 1) / H); }

void attention_check_dims(const AttnDims& d) {
  auto pos = [](int v, const char* name) {
    if (v < 1) fail(std::string("attention: AttnDims.") + name + " must be >= 1, got " + std::to_string(v));
  };
  pos(d.B, "B");
  pos(d.T, "T");
  pos(d.H, "H");
  pos(d.P, "P");
  pos(d.W, "W");
}

namespace {

// The ring of one stream (ssm/attention.hpp): S slots of [k | v], then head and count.
template <typename Real>
struct Ring {
  int S = 0, head = 0, count = 0;
  size_t HP = 0;
  const Real* slots = nullptr;  // (S, 2, H, P) or null: empty

  // The entry at relative step tau < 0 (tau = -1 the newest), from the ring.
  const Real* k(int tau) const { return slots + slot(tau) * 2 * HP; }
  const Real* v(int tau) const { return k(tau) + HP; }
  size_t slot(int tau) const { return static_cast<size_t>(((head + tau) % S + S) % S); }
};

// Reads a stream's counters and checks them: a state from outside (a
// snapshot, a caller's buffer) must not index out of the ring.
template <typename Real>
Ring<Real> read_ring(const Real* st, const AttnDims& d) {
  Ring<Real> r;
  r.S = d.W - 1;
  r.HP = static_cast<size_t>(d.H) * d.P;
  if (!st) return r;
  r.slots = st;
  const Real head = st[r.S * 2 * r.HP], count = st[r.S * 2 * r.HP + 1];
  const bool ok = head >= 0 && count >= 0 && head == std::floor(head) && count == std::floor(count) &&
                  count <= r.S && (r.S == 0 ? head == 0 : head < r.S);
  if (!ok)
    fail("attention: state counters (head " + std::to_string(static_cast<double>(head)) + ", count " +
         std::to_string(static_cast<double>(count)) + ") are not a ring position of a window of " +
         std::to_string(d.W));
  r.head = static_cast<int>(head);
  r.count = static_cast<int>(count);
  return r;
}

// The sum in any order (vector lanes): the step's inner loop.
template <typename Real>
SSM_ALWAYS_INLINE Real dot(const Real* a, const Real* b, int n) {
  Real s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Step tau of stream b, head h: in this call's qkv (tau >= 0) or the ring (tau < 0).
template <typename Real>
struct Keys {
  const Real* qkv;
  const Ring<Real>& ring;
  const AttnDims& d;
  int b;
  size_t row(int t) const { return (static_cast<size_t>(b) * d.T + t) * 3 * ring.HP; }
  const Real* q(int t, int h) const { return qkv + row(t) + static_cast<size_t>(h) * d.P; }
  const Real* k(int tau, int h) const {
    return (tau >= 0 ? qkv + row(tau) + ring.HP : ring.k(tau)) + static_cast<size_t>(h) * d.P;
  }
  const Real* v(int tau, int h) const {
    return (tau >= 0 ? qkv + row(tau) + 2 * ring.HP : ring.v(tau)) + static_cast<size_t>(h) * d.P;
  }
  int first(int t) const { return std::max(t - d.W + 1, -ring.count); }  // oldest step step t sees
};

}  // namespace

template <typename Real>
void attention_check_state(const Real* state, const AttnDims& d) {
  read_ring(state, d);
}

template <typename Real>
void attention_forward(Real* y, Real* lse, Real* final_state, const Real* qkv, const Real* initial_state,
                       const AttnDims& d) {
  attention_check_dims(d);
  if (!y || !lse || !qkv) fail("attention_forward: y, lse and qkv must not be null");
  const size_t SS = attention_state_size(d.H, d.P, d.W), HP = static_cast<size_t>(d.H) * d.P;
  std::vector<Ring<Real>> rings(d.B);
  for (int b = 0; b < d.B; ++b) rings[b] = read_ring(initial_state ? initial_state + b * SS : nullptr, d);
  const Real scale = static_cast<Real>(1.0 / std::sqrt(static_cast<double>(d.P)));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h) {
      const Keys<Real> kv{qkv, rings[b], d, b};
      const Real m = static_cast<Real>(alibi_slope(h, d.H));
      std::vector<Real> s(d.W);  // (W) scores of one row
      for (int t = 0; t < d.T; ++t) {
        const int lo = kv.first(t);
        Real mx = -INFINITY;
        for (int tau = lo; tau <= t; ++tau) {
          s[tau - lo] = scale * dot(kv.q(t, h), kv.k(tau, h), d.P) - m * static_cast<Real>(t - tau);
          mx = std::max(mx, s[tau - lo]);
        }
        Real sum = 0;
        for (int tau = lo; tau <= t; ++tau) sum += std::exp(s[tau - lo] - mx);
        Real* yr = y + (static_cast<size_t>(b) * d.T + t) * HP + static_cast<size_t>(h) * d.P;
        std::fill(yr, yr + d.P, Real(0));
        for (int tau = lo; tau <= t; ++tau) {
          const Real p = std::exp(s[tau - lo] - mx) / sum;
          const Real* vr = kv.v(tau, h);
          for (int i = 0; i < d.P; ++i) yr[i] += p * vr[i];
        }
        lse[(static_cast<size_t>(b) * d.T + t) * d.H + h] = mx + std::log(sum);
      }
    }
  if (!final_state) return;
  const int S = d.W - 1;
  for (int b = 0; b < d.B; ++b) {
    Real* fs = final_state + b * SS;
    const Ring<Real>& r = rings[b];
    if (!initial_state)
      std::fill(fs, fs + SS, Real(0));
    else if (fs != initial_state + b * SS)
      std::memcpy(fs, initial_state + b * SS, sizeof(Real) * SS);
    // The new steps that stay in the window, each to the slot the step would put it in.
    for (int tau = std::max(0, d.T - S); tau < d.T; ++tau)
      std::memcpy(fs + r.slot(tau) * 2 * HP, qkv + (static_cast<size_t>(b) * d.T + tau) * 3 * HP + HP,
                  sizeof(Real) * 2 * HP);
    fs[S * 2 * HP] = static_cast<Real>(S > 0 ? (r.head + d.T) % S : 0);
    fs[S * 2 * HP + 1] = static_cast<Real>(std::min(r.count + d.T, S));
  }
}

template <typename Real>
void attention_backward(Real* dqkv, Real* dinitial_state, const Real* dy, const Real* dfinal_state, const Real* lse,
                        const Real* qkv, const Real* initial_state, const AttnDims& d) {
  attention_check_dims(d);
  if (!dqkv || !dy || !lse || !qkv) fail("attention_backward: dqkv, dy, lse and qkv must not be null");
  const size_t SS = attention_state_size(d.H, d.P, d.W), HP = static_cast<size_t>(d.H) * d.P;
  const int S = d.W - 1;
  std::vector<Ring<Real>> rings(d.B);
  for (int b = 0; b < d.B; ++b) rings[b] = read_ring(initial_state ? initial_state + b * SS : nullptr, d);
  std::fill(dqkv, dqkv + static_cast<size_t>(d.B) * d.T * 3 * HP, Real(0));
  if (dinitial_state) std::fill(dinitial_state, dinitial_state + d.B * SS, Real(0));
  const Real scale = static_cast<Real>(1.0 / std::sqrt(static_cast<double>(d.P)));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h) {
      const Ring<Real>& r = rings[b];
      const Keys<Real> kv{qkv, r, d, b};
      const Real m = static_cast<Real>(alibi_slope(h, d.H));
      const size_t off = static_cast<size_t>(h) * d.P;
      // Where the gradient of step tau's k goes (v is HP further): dqkv, or
      // the initial ring (null: not wanted).
      auto dk = [&](int tau) -> Real* {
        if (tau >= 0) return dqkv + kv.row(tau) + HP + off;
        return dinitial_state ? dinitial_state + b * SS + r.slot(tau) * 2 * HP + off : nullptr;
      };
      std::vector<Real> p(d.W), dp(d.W);  // (W) one row's probabilities and their gradients
      for (int t = 0; t < d.T; ++t) {
        const int lo = kv.first(t);
        const Real l = lse[(static_cast<size_t>(b) * d.T + t) * d.H + h];
        const Real* dyr = dy + (static_cast<size_t>(b) * d.T + t) * HP + off;
        const Real* q = kv.q(t, h);
        Real sum = 0;  // Σ p dp = dy . y
        for (int tau = lo; tau <= t; ++tau) {
          p[tau - lo] = std::exp(scale * dot(q, kv.k(tau, h), d.P) - m * static_cast<Real>(t - tau) - l);
          dp[tau - lo] = dot(dyr, kv.v(tau, h), d.P);
          sum += p[tau - lo] * dp[tau - lo];
        }
        Real* dq = dqkv + kv.row(t) + off;
        for (int tau = lo; tau <= t; ++tau) {
          const Real ds = p[tau - lo] * (dp[tau - lo] - sum) * scale;
          const Real* k = kv.k(tau, h);
          for (int i = 0; i < d.P; ++i) dq[i] += ds * k[i];
          if (Real* dkr = dk(tau)) {
            Real* dvr = dkr + HP;
            for (int i = 0; i < d.P; ++i) {
              dkr[i] += ds * q[i];
              dvr[i] += p[tau - lo] * dyr[i];
            }
          }
        }
      }
      if (!dfinal_state) continue;
      // The final ring: slots the call wrote hold new steps, the others copy the initial ring.
      const Real* df = dfinal_state + b * SS;
      std::vector<char> written(static_cast<size_t>(S), 0);
      for (int tau = std::max(0, d.T - S); tau < d.T; ++tau) {
        const size_t j = r.slot(tau);
        written[j] = 1;
        Real* dst = dqkv + kv.row(tau) + HP + off;
        for (int i = 0; i < d.P; ++i) {
          dst[i] += df[j * 2 * HP + off + i];
          dst[HP + i] += df[j * 2 * HP + HP + off + i];
        }
      }
      if (!dinitial_state || !initial_state) continue;
      for (int j = 0; j < S; ++j) {
        if (written[j]) continue;
        Real* dst = dinitial_state + b * SS + static_cast<size_t>(j) * 2 * HP + off;
        for (int i = 0; i < d.P; ++i) {
          dst[i] += df[j * 2 * HP + off + i];
          dst[HP + i] += df[j * 2 * HP + HP + off + i];
        }
      }
    }
}

// Three passes per head over the window, newest first: the scores (one dot
// product per key), their exponentials (a loop that vectorises), the weighted
// sum of the values. The ring is walked as its two contiguous runs of slots,
// newest to oldest: head - 1 down to 0, then S - 1 down.
template <typename Real>
void attention_step(Real* y, Real* state, const Real* qkv, const AttnDims& d, Real* scores) {
  const int S = d.W - 1;
  const size_t HP = static_cast<size_t>(d.H) * d.P;
  Real* slots = state;  // (S, 2, H, P)
  const int head = static_cast<int>(state[S * 2 * HP]), count = static_cast<int>(state[S * 2 * HP + 1]);
  const int run1 = std::min(head, count);  // entries in slots head - 1 .. head - run1
  const Real scale = static_cast<Real>(1.0 / std::sqrt(static_cast<double>(d.P)));
  // Slot of the entry at distance i >= 1.
  auto slot_at = [&](int i) { return static_cast<size_t>(i <= run1 ? head - i : S + head - i); };
  for (int h = 0; h < d.H; ++h) {
    const size_t off = static_cast<size_t>(h) * d.P;
    const Real* q = qkv + off;
    const Real m = static_cast<Real>(alibi_slope(h, d.H));
    scores[0] = scale * dot(q, qkv + HP + off, d.P);
    Real mx = scores[0];
    for (int i = 1; i <= count; ++i) {
      scores[i] = scale * dot(q, slots + slot_at(i) * 2 * HP + off, d.P) - m * static_cast<Real>(i);
      mx = std::max(mx, scores[i]);
    }
    Real l = 0;
#pragma omp simd reduction(+ : l)
    for (int i = 0; i <= count; ++i) {
      scores[i] = decay_exp(scores[i] - mx);
      l += scores[i];
    }
    const Real inv = 1 / l;
    Real* acc = y + off;
    const Real* v0 = qkv + 2 * HP + off;
    for (int j = 0; j < d.P; ++j) acc[j] = scores[0] * inv * v0[j];
    for (int i = 1; i <= count; ++i) {
      const Real w = scores[i] * inv;
      const Real* v = slots + slot_at(i) * 2 * HP + HP + off;
      for (int j = 0; j < d.P; ++j) acc[j] += w * v[j];
    }
  }
  if (S == 0) return;
  std::memcpy(slots + static_cast<size_t>(head) * 2 * HP, qkv + HP, sizeof(Real) * 2 * HP);
  state[S * 2 * HP] = static_cast<Real>((head + 1) % S);
  state[S * 2 * HP + 1] = static_cast<Real>(std::min(count + 1, S));
}

#define SSM_ATTENTION_INSTANTIATE(Real)                                                                        \
  template void attention_forward<Real>(Real*, Real*, Real*, const Real*, const Real*, const AttnDims&);      \
  template void attention_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*,    \
                                         const Real*, const AttnDims&);                                       \
  template void attention_step<Real>(Real*, Real*, const Real*, const AttnDims&, Real*);                     \
  template void attention_check_state<Real>(const Real*, const AttnDims&);
SSM_ATTENTION_INSTANTIATE(float)
SSM_ATTENTION_INSTANTIATE(double)
#undef SSM_ATTENTION_INSTANTIATE

}  // namespace ssm
