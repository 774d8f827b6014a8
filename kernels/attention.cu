// Causal sliding-window attention with ALiBi (ssm/attention.hpp) on the GPU,
// forward and backward: a straightforward version, one thread per (stream,
// step, head) row, correctness first. The CPU reference is lib/cpu/attention.cpp.
//
// Forward: each row runs an online softmax over its window and writes its
// output and log-sum-exp; then the final ring, element by element, and last
// its counters (a separate launch, so that a final_state aliasing the initial
// one is read before it is written).
// Backward, without atomics (the same bits every run): a pass over query rows
// (dq and Σ p dp), then one over key rows, each gathering the queries that see
// it (dk, dv, and the initial ring's share).
#include "attention.cuh"

#include <cmath>

#include "ops.cuh"

namespace ssm::kernels {

namespace {

constexpr int kThreads = 128;

inline int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// The geometry of one call, passed by value to every kernel.
struct Geo {
  int B, T, H, P, W, S;  // S = W - 1 ring slots
  int64_t HP, SS;        // H * P; numbers of state per stream
  float scale;
};

__device__ __forceinline__ void ring_counters(const float* init, const Geo& g, int64_t b, int& head, int& count) {
  head = 0;
  count = 0;
  if (!init) return;
  head = static_cast<int>(init[b * g.SS + g.S * 2 * g.HP]);
  count = static_cast<int>(init[b * g.SS + g.S * 2 * g.HP + 1]);
}

__device__ __forceinline__ int64_t ring_slot(int head, int tau, int S) { return ((head + tau) % S + S) % S; }

// k of step tau (v is HP further) for head h of stream b: this call's qkv, or the ring.
__device__ __forceinline__ const float* key_of(const float* qkv, const float* init, const Geo& g, int64_t b, int head,
                                               int tau, int h) {
  if (tau >= 0) return qkv + (b * g.T + tau) * 3 * g.HP + g.HP + int64_t(h) * g.P;
  return init + b * g.SS + ring_slot(head, tau, g.S) * 2 * g.HP + int64_t(h) * g.P;
}

__device__ __forceinline__ float dotp(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

__device__ __forceinline__ float slope_of(int h, int H) { return exp2f(-8.0f * (h + 1) / H); }

// The slot a new step last wrote, or -1 when the call wrote none there: the
// largest tau < T with slot(tau) = j.
__device__ __forceinline__ int written_by(int j, int head, const Geo& g) {
  const int r = ((j - head) % g.S + g.S) % g.S;
  if (g.T - 1 < r) return -1;
  return r + g.S * ((g.T - 1 - r) / g.S);
}

// Query row (b * T + t) * H + h of this thread, with its stream's counters.
struct QueryRow {
  int64_t row, bt, b;  // bt = b * T + t
  int t, h, head, count;
};

__device__ __forceinline__ bool query_row(QueryRow& r, const float* init, const Geo& g) {
  r.row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r.row >= int64_t(g.B) * g.T * g.H) return false;
  r.h = static_cast<int>(r.row % g.H);
  r.bt = r.row / g.H;
  r.b = r.bt / g.T;
  r.t = static_cast<int>(r.bt % g.T);
  ring_counters(init, g, r.b, r.head, r.count);
  return true;
}

__global__ void attention_forward_kernel(float* y, float* lse, const float* qkv, const float* init, Geo g) {
  QueryRow r;
  if (!query_row(r, init, g)) return;
  const int64_t b = r.b, bt = r.bt;
  const int h = r.h, t = r.t, head = r.head, count = r.count;
  const float* q = qkv + bt * 3 * g.HP + int64_t(h) * g.P;
  const float m = slope_of(h, g.H);
  float* acc = y + bt * g.HP + int64_t(h) * g.P;
  float mx = -INFINITY, l = 0.0f;
  for (int i = 0; i < g.P; ++i) acc[i] = 0.0f;
  for (int tau = max(t - g.W + 1, -count); tau <= t; ++tau) {
    const float* k = key_of(qkv, init, g, b, head, tau, h);
    const float s = g.scale * dotp(q, k, g.P) - m * float(t - tau);
    if (s > mx) {
      const float c = expf(mx - s);  // 0 on the first key
      for (int i = 0; i < g.P; ++i) acc[i] *= c;
      l *= c;
      mx = s;
    }
    const float w = expf(s - mx);
    l += w;
    for (int i = 0; i < g.P; ++i) acc[i] += w * k[g.HP + i];
  }
  for (int i = 0; i < g.P; ++i) acc[i] /= l;
  lse[r.row] = mx + logf(l);
}

// The slots of the final ring: the new step written there, else the initial ring's (zeros without one).
__global__ void attention_final_slots_kernel(float* fin, const float* qkv, const float* init, Geo g) {
  const int64_t n = int64_t(g.B) * g.S * 2 * g.HP;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t per = int64_t(g.S) * 2 * g.HP, b = i / per, e = i % per;
  const int j = static_cast<int>(e / (2 * g.HP));
  const int64_t c = e % (2 * g.HP);
  int head, count;
  ring_counters(init, g, b, head, count);
  const int tau = written_by(j, head, g);
  float v = init ? init[b * g.SS + e] : 0.0f;
  if (tau >= 0) v = qkv[(b * g.T + tau) * 3 * g.HP + g.HP + c];
  fin[b * g.SS + e] = v;
}

__global__ void attention_final_counters_kernel(float* fin, const float* init, Geo g) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= g.B) return;
  int head, count;
  ring_counters(init, g, b, head, count);
  fin[b * g.SS + g.S * 2 * g.HP] = g.S > 0 ? float((head + g.T) % g.S) : 0.0f;
  fin[b * g.SS + g.S * 2 * g.HP + 1] = float(min(count + g.T, g.S));
}

// Per query row: dq, and Σ_tau p dp (= dy . y) for the key pass.
__global__ void attention_dq_kernel(float* dqkv, float* dsum, const float* dy, const float* lse, const float* qkv,
                                    const float* init, Geo g) {
  QueryRow r;
  if (!query_row(r, init, g)) return;
  const int64_t b = r.b, bt = r.bt;
  const int h = r.h, t = r.t, head = r.head, count = r.count;
  const float* q = qkv + bt * 3 * g.HP + int64_t(h) * g.P;
  const float* dyr = dy + bt * g.HP + int64_t(h) * g.P;
  const float m = slope_of(h, g.H), l = lse[r.row];
  const int lo = max(t - g.W + 1, -count);
  float sum = 0.0f;
  for (int tau = lo; tau <= t; ++tau) {
    const float* k = key_of(qkv, init, g, b, head, tau, h);
    const float p = expf(g.scale * dotp(q, k, g.P) - m * float(t - tau) - l);
    sum += p * dotp(dyr, k + g.HP, g.P);
  }
  float* dq = dqkv + bt * 3 * g.HP + int64_t(h) * g.P;
  for (int i = 0; i < g.P; ++i) dq[i] = 0.0f;
  for (int tau = lo; tau <= t; ++tau) {
    const float* k = key_of(qkv, init, g, b, head, tau, h);
    const float p = expf(g.scale * dotp(q, k, g.P) - m * float(t - tau) - l);
    const float ds = p * (dotp(dyr, k + g.HP, g.P) - sum) * g.scale;
    for (int i = 0; i < g.P; ++i) dq[i] += ds * k[i];
  }
  dsum[r.row] = sum;
}

// The initial ring's gradient before the key pass adds the attention's share:
// the final ring's gradient where the call left a slot as it was, else 0.
__global__ void attention_dinit_start_kernel(float* dinit, const float* dfin, const float* init, Geo g) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(g.B) * g.SS) return;
  const int64_t b = i / g.SS, e = i % g.SS;
  float v = 0.0f;
  if (e < int64_t(g.S) * 2 * g.HP && dfin && init) {
    int head, count;
    ring_counters(init, g, b, head, count);
    if (written_by(static_cast<int>(e / (2 * g.HP)), head, g) < 0) v = dfin[i];
  }
  dinit[i] = v;
}

// Per key row tau in [-S, T): dk and dv from the queries t in [tau, tau + W - 1]
// that see it, plus (new steps) the final ring's gradient of the slot it went to.
__global__ void attention_dkv_kernel(float* dqkv, float* dinit, const float* dy, const float* dfin, const float* lse,
                                     const float* dsum, const float* qkv, const float* init, Geo g) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;  // (b * (S + T) + S + tau) * H + h
  if (row >= int64_t(g.B) * (g.S + g.T) * g.H) return;
  const int h = static_cast<int>(row % g.H);
  const int64_t bk = row / g.H, b = bk / (g.S + g.T);
  const int tau = static_cast<int>(bk % (g.S + g.T)) - g.S;
  int head, count;
  ring_counters(init, g, b, head, count);
  if (tau < -count || (tau < 0 && !dinit)) return;
  const int64_t off = int64_t(h) * g.P;
  float* dk = tau >= 0 ? dqkv + (b * g.T + tau) * 3 * g.HP + g.HP + off
                       : dinit + b * g.SS + ring_slot(head, tau, g.S) * 2 * g.HP + off;
  float* dv = dk + g.HP;
  if (tau >= 0) {
    const bool kept = g.S > 0 && tau >= g.T - g.S;  // in the final ring
    const float* df = kept && dfin ? dfin + b * g.SS + ring_slot(head, tau, g.S) * 2 * g.HP + off : nullptr;
    for (int i = 0; i < g.P; ++i) {
      dk[i] = df ? df[i] : 0.0f;
      dv[i] = df ? df[g.HP + i] : 0.0f;
    }
  }
  const float* k = key_of(qkv, init, g, b, head, tau, h);
  const float m = slope_of(h, g.H);
  for (int t = max(tau, 0); t <= min(tau + g.W - 1, g.T - 1); ++t) {
    const int64_t qrow = (b * g.T + t) * g.H + h;
    const float* q = qkv + (b * g.T + t) * 3 * g.HP + off;
    const float* dyr = dy + (b * g.T + t) * g.HP + off;
    const float p = expf(g.scale * dotp(q, k, g.P) - m * float(t - tau) - lse[qrow]);
    const float ds = p * (dotp(dyr, k + g.HP, g.P) - dsum[qrow]) * g.scale;
    for (int i = 0; i < g.P; ++i) {
      dk[i] += ds * q[i];
      dv[i] += p * dyr[i];
    }
  }
}

Geo geometry(const AttnDims& d) {
  Geo g{d.B, d.T, d.H, d.P, d.W, d.W - 1, int64_t(d.H) * d.P, 0, 0.0f};
  g.SS = static_cast<int64_t>(attention_state_size(d.H, d.P, d.W));
  g.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.P)));
  return g;
}

}  // namespace

void attention_forward_launch(float* y, float* lse, float* final_state, const float* qkv, const float* initial_state,
                              const AttnDims& d, cudaStream_t stream) {
  const Geo g = geometry(d);
  const int64_t rows = int64_t(d.B) * d.T * d.H;
  attention_forward_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(y, lse, qkv, initial_state, g);
  check_op_launch("attention_forward_kernel");
  if (!final_state) return;
  const int64_t slots = int64_t(d.B) * g.S * 2 * g.HP;
  if (slots > 0) {
    attention_final_slots_kernel<<<blocks_for(slots), kThreads, 0, stream>>>(final_state, qkv, initial_state, g);
    check_op_launch("attention_final_slots_kernel");
  }
  attention_final_counters_kernel<<<blocks_for(d.B), kThreads, 0, stream>>>(final_state, initial_state, g);
  check_op_launch("attention_final_counters_kernel");
}

void attention_backward_launch(float* dqkv, float* dinitial_state, const float* dy, const float* dfinal_state,
                               const float* lse, const float* qkv, const float* initial_state, const AttnDims& d,
                               cudaStream_t stream) {
  const Geo g = geometry(d);
  const int64_t rows = int64_t(d.B) * d.T * d.H;
  StreamScratch dsum(sizeof(float) * rows, stream, "attention backward");  // (B, T, H)
  attention_dq_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(dqkv, dsum.as<float>(), dy, lse, qkv, initial_state,
                                                                 g);
  check_op_launch("attention_dq_kernel");
  if (dinitial_state) {
    attention_dinit_start_kernel<<<blocks_for(int64_t(d.B) * g.SS), kThreads, 0, stream>>>(
        dinitial_state, dfinal_state, initial_state, g);
    check_op_launch("attention_dinit_start_kernel");
  }
  const int64_t keys = int64_t(d.B) * (g.S + d.T) * d.H;
  attention_dkv_kernel<<<blocks_for(keys), kThreads, 0, stream>>>(dqkv, dinitial_state, dy, dfinal_state, lse,
                                                                  dsum.as<float>(), qkv, initial_state, g);
  check_op_launch("attention_dkv_kernel");
}

}  // namespace ssm::kernels
