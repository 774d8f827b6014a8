// The backend interface: one table of ops per backend, each op taking one
// params struct. Implementations: cpu<double> (the reference: plain loops
// and fp64 BLAS), cpu<float> (the same code in fp32) and cuda (fp32 with
// tf32 tensor cores; device pointers). An op a backend does not have is a
// null entry; tests/test_backend_ops.cpp runs every entry of every backend
// against cpu<double>.
//
// Every pointer in an args struct is memory of that backend (host for cpu,
// device for cuda): get it from alloc() and move data with upload() /
// download(). Conventions are those of the ops' own headers (ssm/layers.hpp,
// ssm/conv1d.hpp, ssm/ssd.hpp, ssm/selective_scan.hpp, ssm/s4d.hpp,
// ssm/attention.hpp, ssm/losses.hpp, ssm/optim.hpp): activation gradients are assigned (=),
// parameter gradients accumulate (+=); "or null" buffers may be null.
//
// Adding an op: its two args structs here, one entry in OpsTable, one
// function per backend that has it, one case in tests/test_backend_ops.cpp.
// Adding a backend: a function that fills an OpsTable, and one line in the
// test's list of backends.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "ssm/attention.hpp"
#include "ssm/conv1d.hpp"
#include "ssm/losses.hpp"
#include "ssm/optim.hpp"
#include "ssm/s4d.hpp"
#include "ssm/selective_scan.hpp"
#include "ssm/ssd.hpp"

namespace ssm::ops {

// ---- linear: y = x @ W^T + bias (W is (O, I), PyTorch layout) ----
template <typename Real>
struct LinearFwd {
  Real* y;            // (R, O)
  const Real* x;      // (R, I)
  const Real* W;      // (O, I)
  const Real* bias;   // (O) or null
  int R, I, O;
};
template <typename Real>
struct LinearBwd {
  Real* dx;           // (R, I) or null  =
  Real* dW;           // (O, I) or null  +=
  Real* dbias;        // (O) or null     +=
  const Real* dy;     // (R, O)
  const Real* x;      // (R, I)
  const Real* W;      // (O, I)
  int R, I, O;
};

// ---- RMSNorm, and Mamba-2's gated RMSNorm over G column groups ----
template <typename Real>
struct RmsNormFwd {
  Real* y;             // (R, C)
  Real* rstd;          // (R, G)  saved (G = 1 for the plain norm)
  const Real* x;       // (R, C)
  const Real* z;       // (R, C)  gate; null = the plain RMSNorm
  const Real* weight;  // (C)
  int R, C, G;
  double eps;
};
template <typename Real>
struct RmsNormBwd {
  Real* dx;            // (R, C)  =
  Real* dz;            // (R, C)  =  (null with z)
  Real* dweight;       // (C)     +=
  const Real* dy;      // (R, C)
  const Real* rstd;    // (R, G)  from the forward
  const Real* x;       // (R, C)
  const Real* z;       // (R, C) or null
  const Real* weight;  // (C)
  int R, C, G;
};

// ---- SiLU: y = x * sigmoid(x), elementwise ----
template <typename Real>
struct SiluFwd {
  Real* y;        // (n)  may alias x
  const Real* x;  // (n)
  long n;
};
template <typename Real>
struct SiluBwd {
  Real* dx;        // (n)  =
  const Real* dy;  // (n)
  const Real* x;   // (n)
  long n;
};

// ---- sigmoid gate: y = x * sigmoid(g), elementwise ----
template <typename Real>
struct GateFwd {
  Real* y;        // (n)  may alias x
  const Real* x;  // (n)
  const Real* g;  // (n)  gate logits
  long n;
};
template <typename Real>
struct GateBwd {
  Real* dx;        // (n) or null  =
  Real* dg;        // (n)          =
  const Real* dy;  // (n)
  const Real* x;   // (n)
  const Real* g;   // (n)
  long n;
};

// ---- log power of (cosine, sine) bin pairs: y[i] = log(x[2i]^2 + x[2i+1]^2 + eps) ----
template <typename Real>
struct LogPowerFwd {
  Real* y;        // (n)
  const Real* x;  // (2n)
  long n;
  double eps;
};
template <typename Real>
struct LogPowerBwd {
  Real* dx;        // (2n)  =
  const Real* dy;  // (n)
  const Real* x;   // (2n)
  long n;
  double eps;
};

// ---- the last W frames at each step (ssm/layers.hpp's unfold) ----
struct UnfoldDims {
  int B, T, C, W;
};
template <typename Real>
struct UnfoldFwd {
  Real* y;           // (B, T, W, C)
  Real* next_tail;   // (B, W - 1, C) or null
  const Real* x;     // (B, T, C)
  const Real* tail;  // (B, W - 1, C) or null (zeros)
  UnfoldDims dims;
};
template <typename Real>
struct UnfoldBwd {
  Real* dx;        // (B, T, C)  =
  const Real* dy;  // (B, T, W, C)
  UnfoldDims dims;
};

// ---- data movement: the column blocks of a row-major matrix, and the residual add ----
// Columns [c0_src, c0_src + w) of a (R, ld_src) matrix to columns
// [c0_dst, c0_dst + w) of a (R, ld_dst) one.
template <typename Real>
struct CopyCols {
  Real* dst;        // (R, ld_dst)
  int ld_dst, c0_dst;
  const Real* src;  // (R, ld_src)
  int ld_src, c0_src;
  size_t R;
  int w;
};
// dst[i] += src[i]
template <typename Real>
struct AddInto {
  Real* dst;        // (n)
  const Real* src;  // (n)
  long n;
};

// SSD: ssm::SsdFwd / SsdBwd (ssm/ssd.hpp); S6 scan: ssm::ScanFwd / ScanBwd
// (ssm/selective_scan.hpp), where the CUDA kernels take them too.
using ssm::ScanBwd;
using ssm::ScanFwd;
using ssm::SsdBwd;
using ssm::SsdFwd;

// ---- causal depthwise conv1d ----
template <typename Real>
struct Conv1dFwd {
  Real* y;                   // (B, T, C)
  Real* final_tail;          // (B, K-1, C) or null
  const Real* x;             // (B, T, C)
  const Real* weight;        // (C, K)
  const Real* bias;          // (C) or null
  const Real* initial_tail;  // (B, K-1, C) or null
  Conv1dDims d;
};
template <typename Real>
struct Conv1dBwd {
  Real* dx;                  // (B, T, C)             =
  Real* dweight;             // (C, K)                +=
  Real* dbias;               // (C) or null           +=
  Real* dinitial_tail;       // (B, K-1, C) or null   =
  const Real* dy;            // (B, T, C)
  const Real* dfinal_tail;   // (B, K-1, C) or null
  const Real* x;             // (B, T, C)
  const Real* weight;        // (C, K)
  const Real* initial_tail;  // (B, K-1, C) or null
  Conv1dDims d;
};

// ---- S4D (LTI), convolution mode ----
template <typename Real>
struct S4dFwd {
  Real* y;               // (B, T, H)
  Real* final_state;     // (B, H, N, 2) or null
  Real* kernel;          // (H, T)  saved
  const Real* x;         // (B, T, H)
  const Real* log_dt;    // (H)
  const Real* A_re_log;  // (H, N)
  const Real* A_im;      // (H, N)
  const Real* C;         // (H, N, 2)
  const Real* D;         // (H)
  S4dDims d;
};
template <typename Real>
struct S4dBwd {
  Real* dx;              // (B, T, H)  =
  Real* dlog_dt;         // (H)        +=
  Real* dA_re_log;       // (H, N)     +=
  Real* dA_im;           // (H, N)     +=
  Real* dC;              // (H, N, 2)  +=
  Real* dD;              // (H)        +=
  const Real* dy;        // (B, T, H)
  const Real* kernel;    // (H, T)  from the forward
  S4dFwd<Real> in;       // the forward's inputs (its outputs unused)
};

// ---- causal sliding-window attention with ALiBi (ssm/attention.hpp) ----
// State per stream: a ring of the last W - 1 keys and values and its two
// counters, attention_state_size(H, P, W) numbers.
template <typename Real>
struct AttnFwd {
  Real* y;                    // (B, T, H, P)
  Real* lse;                  // (B, T, H)  saved
  Real* final_state;          // (B, attention_state_size) or null; may be initial_state
  const Real* qkv;            // (B, T, 3, H, P)  [q | k | v]
  const Real* initial_state;  // (B, attention_state_size) or null (the empty ring)
  AttnDims d;
};
template <typename Real>
struct AttnBwd {
  Real* dqkv;                 // (B, T, 3, H, P)                    =
  Real* dinitial_state;       // (B, attention_state_size) or null  =
  const Real* dy;             // (B, T, H, P)
  const Real* dfinal_state;   // (B, attention_state_size) or null
  const Real* lse;            // (B, T, H)  from the forward
  AttnFwd<Real> in;           // the forward's inputs (its outputs unused)
};

// ---- losses on (B, T) signals ----
enum class LossKind { l1, l2, si_sdr };
template <typename Real>
struct LossFwd {
  double* loss;          // (1)  host memory on every backend
  const Real* pred;      // (B, T)
  const Real* target;    // (B, T)
  LossDims d;
  LossKind kind;
  double eps;            // SI-SDR's
};
// The one switch over the kinds: calls l1(), l2() or si_sdr() and returns
// what it returns.
template <typename L1, typename L2, typename SiSdr>
auto by_loss_kind(LossKind k, L1 l1, L2 l2, SiSdr si_sdr) {
  if (k == LossKind::l1) return l1();
  if (k == LossKind::l2) return l2();
  require(k == LossKind::si_sdr, "loss: unknown LossKind " + std::to_string(static_cast<int>(k)));
  return si_sdr();
}
template <typename Real>
struct LossBwd {
  Real* dpred;           // (B, T)  =  dloss * dL/dpred
  double dloss;
  LossFwd<Real> in;      // the forward's inputs (its loss unused)
};

// ---- AdamW over a flat block carved by `table` ----
template <typename Real>
struct AdamwStep {
  Real* params;              // (total)  in/out
  Real* m;                   // (total)  in/out
  Real* v;                   // (total)  in/out
  const Real* grads;         // (total)
  const ParamTable* table;   // the tensors, their offsets and decay multipliers
  int64_t step;              // t after incrementing, >= 1
  double lr;
  AdamWConfig config;
};

// A backend: its memory and its ops. `ctx` is the backend's own state
// (cuda: stream, cuBLAS handle, the per-element decay multipliers).
template <typename Real>
struct OpsTable {
  const char* name;  // "cpu<double>", "cpu<float>", "cuda"
  void* ctx;

  Real* (*alloc)(void* ctx, size_t n);  // n elements; never null (throws)
  void (*release)(void* ctx, Real* p);
  void (*upload)(void* ctx, Real* dst, const Real* src, size_t n);    // host -> backend
  void (*download)(void* ctx, Real* dst, const Real* src, size_t n);  // backend -> host, then waits

  void (*copy_cols)(void* ctx, const CopyCols<Real>&);
  void (*add_into)(void* ctx, const AddInto<Real>&);
  void (*linear_forward)(void* ctx, const LinearFwd<Real>&);
  void (*linear_backward)(void* ctx, const LinearBwd<Real>&);
  void (*rmsnorm_forward)(void* ctx, const RmsNormFwd<Real>&);
  void (*rmsnorm_backward)(void* ctx, const RmsNormBwd<Real>&);
  void (*silu_forward)(void* ctx, const SiluFwd<Real>&);
  void (*silu_backward)(void* ctx, const SiluBwd<Real>&);
  void (*gate_forward)(void* ctx, const GateFwd<Real>&);
  void (*gate_backward)(void* ctx, const GateBwd<Real>&);
  void (*log_power_forward)(void* ctx, const LogPowerFwd<Real>&);
  void (*log_power_backward)(void* ctx, const LogPowerBwd<Real>&);
  void (*unfold_forward)(void* ctx, const UnfoldFwd<Real>&);
  void (*unfold_backward)(void* ctx, const UnfoldBwd<Real>&);
  void (*conv1d_forward)(void* ctx, const Conv1dFwd<Real>&);
  void (*conv1d_backward)(void* ctx, const Conv1dBwd<Real>&);
  void (*ssd_forward)(void* ctx, const SsdFwd<Real>&);
  void (*ssd_backward)(void* ctx, const SsdBwd<Real>&);
  void (*scan_forward)(void* ctx, const ScanFwd<Real>&);
  void (*scan_backward)(void* ctx, const ScanBwd<Real>&);
  void (*s4d_forward)(void* ctx, const S4dFwd<Real>&);
  void (*s4d_backward)(void* ctx, const S4dBwd<Real>&);
  void (*attention_forward)(void* ctx, const AttnFwd<Real>&);
  void (*attention_backward)(void* ctx, const AttnBwd<Real>&);
  void (*loss_forward)(void* ctx, const LossFwd<Real>&);
  void (*loss_backward)(void* ctx, const LossBwd<Real>&);
  void (*adamw_step)(void* ctx, const AdamwStep<Real>&);
};

// Fills a table from a type whose static member functions have the entries'
// names; an entry the type does not have stays null (an op the backend lacks).
template <typename Real, typename Impl>
OpsTable<Real> make_ops_table(const char* name, void* ctx) {
  OpsTable<Real> t{};
  t.name = name;
  t.ctx = ctx;
#define SSM_OPS_ENTRY(f) \
  if constexpr (requires { Impl::f; }) t.f = Impl::f
  SSM_OPS_ENTRY(alloc);
  SSM_OPS_ENTRY(release);
  SSM_OPS_ENTRY(upload);
  SSM_OPS_ENTRY(download);
  SSM_OPS_ENTRY(copy_cols);
  SSM_OPS_ENTRY(add_into);
  SSM_OPS_ENTRY(linear_forward);
  SSM_OPS_ENTRY(linear_backward);
  SSM_OPS_ENTRY(rmsnorm_forward);
  SSM_OPS_ENTRY(rmsnorm_backward);
  SSM_OPS_ENTRY(silu_forward);
  SSM_OPS_ENTRY(silu_backward);
  SSM_OPS_ENTRY(gate_forward);
  SSM_OPS_ENTRY(gate_backward);
  SSM_OPS_ENTRY(log_power_forward);
  SSM_OPS_ENTRY(log_power_backward);
  SSM_OPS_ENTRY(unfold_forward);
  SSM_OPS_ENTRY(unfold_backward);
  SSM_OPS_ENTRY(conv1d_forward);
  SSM_OPS_ENTRY(conv1d_backward);
  SSM_OPS_ENTRY(ssd_forward);
  SSM_OPS_ENTRY(ssd_backward);
  SSM_OPS_ENTRY(scan_forward);
  SSM_OPS_ENTRY(scan_backward);
  SSM_OPS_ENTRY(s4d_forward);
  SSM_OPS_ENTRY(s4d_backward);
  SSM_OPS_ENTRY(attention_forward);
  SSM_OPS_ENTRY(attention_backward);
  SSM_OPS_ENTRY(loss_forward);
  SSM_OPS_ENTRY(loss_backward);
  SSM_OPS_ENTRY(adamw_step);
#undef SSM_OPS_ENTRY
  return t;
}

// The CPU backends (always there).
const OpsTable<double>& cpu_f64();
const OpsTable<float>& cpu_f32();
template <typename Real>
const OpsTable<Real>& cpu() {
  if constexpr (std::is_same_v<Real, double>)
    return cpu_f64();
  else
    return cpu_f32();
}

// The CUDA backend of this process, or null with `why` saying why not (a
// build without CUDA, no usable device).
const OpsTable<float>* cuda(std::string* why = nullptr);
// The same backend with plain fp32 products (no tf32 tensor cores): slower,
// for checks held to fp32 tolerances. Its own context and handle; the same
// default stream.
const OpsTable<float>* cuda_fp32(std::string* why = nullptr);

}  // namespace ssm::ops
