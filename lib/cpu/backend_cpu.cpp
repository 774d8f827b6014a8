// The CPU backends of ssm/backend_ops.hpp: each entry calls the op's CPU
// function, one template for cpu<double> (the reference) and cpu<float>.
#include <cstring>

#include "ssm/backend_ops.hpp"
#include "ssm/layers.hpp"

namespace ssm::ops {
namespace {

template <typename Real>
struct Cpu {
  static Real* alloc(void*, size_t n) { return new Real[n > 0 ? n : 1](); }
  static void release(void*, Real* p) { delete[] p; }
  static void upload(void*, Real* dst, const Real* src, size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(Real));
  }
  static void download(void* ctx, Real* dst, const Real* src, size_t n) { upload(ctx, dst, src, n); }

  static void copy_cols(void*, const CopyCols<Real>& a) {
    for (size_t r = 0; r < a.R; ++r)
      std::memcpy(a.dst + r * a.ld_dst + a.c0_dst, a.src + r * a.ld_src + a.c0_src, sizeof(Real) * a.w);
  }
  static void add_into(void*, const AddInto<Real>& a) {
    for (long i = 0; i < a.n; ++i) a.dst[i] += a.src[i];
  }
  static void linear_forward(void*, const LinearFwd<Real>& a) {
    ssm::linear_forward<Real>(a.y, a.x, a.W, a.bias, a.R, a.I, a.O);
  }
  static void linear_backward(void*, const LinearBwd<Real>& a) {
    ssm::linear_backward<Real>(a.dx, a.dW, a.dbias, a.dy, a.x, a.W, a.R, a.I, a.O);
  }
  static void rmsnorm_forward(void*, const RmsNormFwd<Real>& a) {
    if (a.z) {
      ssm::gated_rmsnorm_forward(a.y, a.rstd, a.x, a.z, a.weight, a.R, a.C, a.G, a.eps);
    } else {
      require(a.G == 1, "cpu rmsnorm_forward: the plain RMSNorm has G = 1, got " + std::to_string(a.G));
      ssm::rmsnorm_forward(a.y, a.rstd, a.x, a.weight, a.R, a.C, a.eps);
    }
  }
  static void rmsnorm_backward(void*, const RmsNormBwd<Real>& a) {
    if (a.z)
      ssm::gated_rmsnorm_backward(a.dx, a.dz, a.dweight, a.dy, a.rstd, a.x, a.z, a.weight, a.R, a.C, a.G);
    else
      ssm::rmsnorm_backward(a.dx, a.dweight, a.dy, a.rstd, a.x, a.weight, a.R, a.C);
  }
  static void silu_forward(void*, const SiluFwd<Real>& a) { ssm::silu_forward(a.y, a.x, a.n); }
  static void silu_backward(void*, const SiluBwd<Real>& a) { ssm::silu_backward(a.dx, a.dy, a.x, a.n); }
  static void gate_forward(void*, const GateFwd<Real>& a) { ssm::sigmoid_gate_forward(a.y, a.x, a.g, a.n); }
  static void gate_backward(void*, const GateBwd<Real>& a) {
    ssm::sigmoid_gate_backward(a.dx, a.dg, a.dy, a.x, a.g, a.n);
  }
  static void log_power_forward(void*, const LogPowerFwd<Real>& a) { ssm::log_power_forward(a.y, a.x, a.n, a.eps); }
  static void log_power_backward(void*, const LogPowerBwd<Real>& a) {
    ssm::log_power_backward(a.dx, a.dy, a.x, a.n, a.eps);
  }
  static void unfold_forward(void*, const UnfoldFwd<Real>& a) {
    ssm::unfold_forward(a.y, a.next_tail, a.x, a.tail, a.dims.B, a.dims.T, a.dims.C, a.dims.W);
  }
  static void unfold_backward(void*, const UnfoldBwd<Real>& a) {
    ssm::unfold_backward(a.dx, a.dy, a.dims.B, a.dims.T, a.dims.C, a.dims.W);
  }
  static void conv1d_forward(void*, const Conv1dFwd<Real>& a) {
    ssm::conv1d_forward(a.y, a.final_tail, a.x, a.weight, a.bias, a.initial_tail, a.d);
  }
  static void conv1d_backward(void*, const Conv1dBwd<Real>& a) {
    ssm::conv1d_backward(a.dx, a.dweight, a.dbias, a.dinitial_tail, a.dy, a.dfinal_tail, a.x, a.weight,
                         a.initial_tail, a.d);
  }
  static void ssd_forward(void*, const SsdFwd<Real>& a) {
    ssm::ssd_chunked_forward(a.y, a.final_state, a.x, a.dt_raw, a.A_log, a.Bm, a.Cm, a.D, a.dt_bias,
                             a.initial_state, a.d, a.Q);
  }
  static void ssd_backward(void*, const SsdBwd<Real>& a) {
    const SsdFwd<Real>& i = a.in;
    ssm::ssd_chunked_backward(a.dx, a.ddt_raw, a.dA_log, a.dBm, a.dCm, a.dD, a.ddt_bias, a.dinitial_state, a.dy,
                              a.dfinal_state, i.x, i.dt_raw, i.A_log, i.Bm, i.Cm, i.D, i.dt_bias, i.initial_state,
                              i.d, i.Q);
  }
  static void scan_forward(void*, const ScanFwd<Real>& a) {
    ssm::selective_scan_blocked_forward(a.y, a.final_state, a.x, a.dt_raw, a.A_log, a.Bm, a.Cm, a.D, a.dt_bias, a.z,
                                        a.initial_state, a.d, a.Q);
  }
  static void scan_backward(void*, const ScanBwd<Real>& a) {
    const ScanFwd<Real>& i = a.in;
    ssm::selective_scan_backward(a.dx, a.ddt_raw, a.dA_log, a.dBm, a.dCm, a.dD, a.ddt_bias, a.dz, a.dinitial_state,
                                 a.dy, a.dfinal_state, i.x, i.dt_raw, i.A_log, i.Bm, i.Cm, i.D, i.dt_bias, i.z,
                                 i.initial_state, i.d, i.Q);
  }
  static void s4d_forward(void*, const S4dFwd<Real>& a) {
    ssm::s4d_conv_forward(a.y, a.final_state, a.kernel, a.x, a.log_dt, a.A_re_log, a.A_im, a.C, a.D, a.d);
  }
  static void s4d_backward(void*, const S4dBwd<Real>& a) {
    const S4dFwd<Real>& i = a.in;
    ssm::s4d_conv_backward(a.dx, a.dlog_dt, a.dA_re_log, a.dA_im, a.dC, a.dD, a.dy, a.kernel, i.x, i.log_dt,
                           i.A_re_log, i.A_im, i.C, i.D, i.d);
  }
  static void attention_forward(void*, const AttnFwd<Real>& a) {
    ssm::attention_forward(a.y, a.lse, a.final_state, a.qkv, a.initial_state, a.d);
  }
  static void attention_backward(void*, const AttnBwd<Real>& a) {
    const AttnFwd<Real>& i = a.in;
    ssm::attention_backward(a.dqkv, a.dinitial_state, a.dy, a.dfinal_state, a.lse, i.qkv, i.initial_state, i.d);
  }
  static void loss_forward(void*, const LossFwd<Real>& a) {
    *a.loss = by_loss_kind(
        a.kind, [&] { return ssm::l1_loss_forward(a.pred, a.target, a.d); },
        [&] { return ssm::l2_loss_forward(a.pred, a.target, a.d); },
        [&] { return ssm::si_sdr_loss_forward(a.pred, a.target, a.d, a.eps); });
  }
  static void loss_backward(void*, const LossBwd<Real>& a) {
    const LossFwd<Real>& i = a.in;
    by_loss_kind(
        i.kind, [&] { ssm::l1_loss_backward(a.dpred, a.dloss, i.pred, i.target, i.d); },
        [&] { ssm::l2_loss_backward(a.dpred, a.dloss, i.pred, i.target, i.d); },
        [&] { ssm::si_sdr_loss_backward(a.dpred, a.dloss, i.pred, i.target, i.d, i.eps); });
  }
  static void adamw_step(void*, const AdamwStep<Real>& a) {
    require(a.table != nullptr, "cpu adamw_step: table must not be null");
    ssm::adamw_update(a.params, a.m, a.v, a.grads, *a.table, a.step, a.lr, a.config);
  }
};

}  // namespace

const OpsTable<double>& cpu_f64() {
  static const OpsTable<double> t = make_ops_table<double, Cpu<double>>("cpu<double>", nullptr);
  return t;
}

const OpsTable<float>& cpu_f32() {
  static const OpsTable<float> t = make_ops_table<float, Cpu<float>>("cpu<float>", nullptr);
  return t;
}

}  // namespace ssm::ops
