// `ssm bench kernels` (ssm/cuda.hpp, CudaKernelBench), in the CUDA module:
// times the CUDA SSD kernels (forward, forward+backward) at the two reference
// shapes of docs/KERNELS.md and prints a table: median ms over timed repeats
// after warm-up (CUDA events), the bytes each pass must move at least, the
// bandwidth that achieves, and the floor at the measured device-to-device
// copy bandwidth. `--shape step` times the batched recurrent model step
// (ssm/cuda_stream.hpp) per sample against its state-traffic floor.
// `--shape scan` (or one of its shapes) times the Mamba-1 selective scan
// (ssm/cuda_selective_scan.hpp) the same way as the SSD kernels.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cuda_check.cuh"
#include "module.hpp"
#include "ssm/common.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_selective_scan.hpp"
#include "ssm/cuda_ssd.hpp"
#include "ssm/detector.hpp"
#include "ssm/model.hpp"

namespace ssm {
namespace {

constexpr CudaCheck check_cuda{"bench kernels"};

struct DevBuf {
  float* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) {
    check_cuda(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(float)), "cudaMalloc");
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

// Fills a device buffer with uniform [lo, hi) values from a fast host generator.
void fill(DevBuf& b, uint64_t seed, float lo, float hi) {
  std::vector<float> h(b.n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& v : h) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    v = lo + (hi - lo) * static_cast<float>((s >> 40) * (1.0 / 16777216.0));
  }
  check_cuda(cudaMemcpy(b.p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), "upload");
}

// Second input set: the first one rotated by `shift` elements (different data, no host work).
void rotated_copy(DevBuf& dst, const DevBuf& src, size_t shift) {
  shift %= src.n;
  check_cuda(cudaMemcpy(dst.p, src.p + shift, (src.n - shift) * sizeof(float), cudaMemcpyDeviceToDevice), "copy");
  if (shift)
    check_cuda(cudaMemcpy(dst.p + (src.n - shift), src.p, shift * sizeof(float), cudaMemcpyDeviceToDevice), "copy");
}

template <typename F>
double median_ms(int warmup, int repeats, F&& run) {
  cudaEvent_t a, b;
  check_cuda(cudaEventCreate(&a), "cudaEventCreate");
  check_cuda(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < warmup; ++i) run(i);
  check_cuda(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    check_cuda(cudaEventRecord(a), "cudaEventRecord");
    run(warmup + i);
    check_cuda(cudaEventRecord(b), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(b), "cudaEventSynchronize");
    float t = 0;
    check_cuda(cudaEventElapsedTime(&t, a, b), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Device-to-device copy bandwidth, counting bytes read plus bytes written (GB/s).
double copy_bandwidth() {
  const size_t n = size_t(256) << 20;  // 1 GiB of floats per buffer
  DevBuf a(n), b(n);
  check_cuda(cudaMemset(a.p, 1, n * sizeof(float)), "memset");
  const double ms = median_ms(
      2, 10, [&](int) { check_cuda(cudaMemcpyAsync(b.p, a.p, n * sizeof(float), cudaMemcpyDeviceToDevice), "copy"); });
  return 2.0 * n * sizeof(float) / (ms * 1e-3) / 1e9;
}

struct Shape {
  const char* name;
  SsdDims d;
  double target_fwd_ms, target_fb_ms;  // docs/KERNELS.md
};

void bench_shape(const Shape& sh, const CudaKernelBench& o, double copy_gbs) {
  const SsdDims& d = sh.d;
  const size_t bt = size_t(d.B) * d.T, xs = bt * d.H * d.P, bcs = bt * d.G * d.N, dts = bt * d.H;
  const size_t st = size_t(d.B) * d.H * d.P * d.N;
  SsdCudaConfig cfg;
  cfg.math = o.math == "fp32" ? CudaMath::fp32 : CudaMath::tf32;
  const int Q = o.Q;

  // two input sets, alternated between calls
  std::vector<std::unique_ptr<DevBuf>> x, dtr, Bm, Cm, dy;
  for (int k = 0; k < 2; ++k) {
    x.push_back(std::make_unique<DevBuf>(xs));
    dtr.push_back(std::make_unique<DevBuf>(dts));
    Bm.push_back(std::make_unique<DevBuf>(bcs));
    Cm.push_back(std::make_unique<DevBuf>(bcs));
    dy.push_back(std::make_unique<DevBuf>(xs));
  }
  fill(*x[0], 1, -1, 1);
  fill(*dtr[0], 2, -1, 1);
  fill(*Bm[0], 3, -1, 1);
  fill(*Cm[0], 4, -1, 1);
  fill(*dy[0], 5, -1, 1);
  rotated_copy(*x[1], *x[0], 12345);
  rotated_copy(*dtr[1], *dtr[0], 777);
  rotated_copy(*Bm[1], *Bm[0], 4321);
  rotated_copy(*Cm[1], *Cm[0], 999);
  rotated_copy(*dy[1], *dy[0], 54321);
  DevBuf A_log(d.H), D(d.H), dt_bias(d.H), init(st), dfinal(st);
  {
    std::vector<float> al(d.H), dd(d.H, 1.f), db(d.H);
    for (int h = 0; h < d.H; ++h) {
      al[h] = std::log(1.f + 15.f * (h + 0.5f) / d.H);                           // A in [-16, -1]
      db[h] = std::log(std::expm1(0.001f * std::pow(100.f, (h + 0.5f) / d.H)));  // dt in [1e-3, 1e-1]
    }
    check_cuda(cudaMemcpy(A_log.p, al.data(), d.H * sizeof(float), cudaMemcpyHostToDevice), "upload");
    check_cuda(cudaMemcpy(D.p, dd.data(), d.H * sizeof(float), cudaMemcpyHostToDevice), "upload");
    check_cuda(cudaMemcpy(dt_bias.p, db.data(), d.H * sizeof(float), cudaMemcpyHostToDevice), "upload");
  }
  fill(init, 6, -1, 1);
  fill(dfinal, 7, -1, 1);
  DevBuf y(xs), fin(st), dx(xs), ddt(dts), dA(d.H), dB(bcs), dC(bcs), dDD(d.H), dbias(d.H), dinit(st);
  check_cuda(cudaMemset(dA.p, 0, d.H * sizeof(float)), "memset");
  check_cuda(cudaMemset(dDD.p, 0, d.H * sizeof(float)), "memset");
  check_cuda(cudaMemset(dbias.p, 0, d.H * sizeof(float)), "memset");

  const size_t ws_bytes = std::max(ssd_chunked_forward_cuda_workspace(d, Q), ssd_chunked_backward_cuda_workspace(d, Q));
  void* ws = nullptr;
  check_cuda(cudaMalloc(&ws, ws_bytes), "cudaMalloc workspace");
  cfg.workspace = ws;
  cfg.workspace_bytes = ws_bytes;

  auto fwd = [&](int i) {
    const int k = i & 1;
    ssd_chunked_forward_cuda(y.p, fin.p, x[k]->p, dtr[k]->p, A_log.p, Bm[k]->p, Cm[k]->p, D.p, dt_bias.p, init.p, d, Q,
                             nullptr, cfg);
  };
  auto bwd = [&](int i) {
    const int k = i & 1;
    ssd_chunked_backward_cuda(dx.p, ddt.p, dA.p, dB.p, dC.p, dDD.p, dbias.p, dinit.p, dy[k]->p, dfinal.p, x[k]->p,
                              dtr[k]->p, A_log.p, Bm[k]->p, Cm[k]->p, D.p, dt_bias.p, init.p, d, Q, nullptr, cfg);
  };
  const double t_fwd = median_ms(o.warmup, o.repeats, fwd);
  const double t_bwd = median_ms(o.warmup, o.repeats, bwd);
  const double t_fb = median_ms(o.warmup, o.repeats, [&](int i) {
    fwd(i);
    bwd(i);
  });
  check_cuda(cudaDeviceSynchronize(), "benchmark");
  cudaFree(ws);

  // fewest bytes: every input read once, every output written once (fp32)
  const double state_b = 4.0 * st;
  const double fwd_bytes = 4.0 * (2.0 * xs + 2.0 * bcs + dts) + 2 * state_b;
  const double bwd_bytes = 4.0 * (3.0 * xs + 4.0 * bcs + 2.0 * dts) + 3 * state_b;
  auto row = [&](const char* pass, double ms, double bytes, double target) {
    const double floor_ms = bytes / (copy_gbs * 1e9) * 1e3;
    std::printf("%-6s %-8s %9.3f %10.3f %9.3f %8.0f %6.0f%% %9.2f\n", sh.name, pass, ms, bytes / 1e9, floor_ms,
                bytes / (ms * 1e-3) / 1e9, 100.0 * floor_ms / ms, target);
  };
  row("fwd", t_fwd, fwd_bytes, sh.target_fwd_ms);
  row("bwd", t_bwd, bwd_bytes, sh.target_fb_ms - sh.target_fwd_ms);
  row("fwd+bwd", t_fb, fwd_bytes + bwd_bytes, sh.target_fb_ms);
}

// ---- step: the batched recurrent model step (ssm/cuda_stream.hpp) ----------
// One row: S streams advanced by n samples per launch, timed per sample. The
// floor counts every stream's fp32 state read and written once per launch
// (n samples share that round trip) plus the inputs and outputs.
void bench_step_row(const char* name, const Model& model, int S, int n, int streams_per_block,
                    const CudaKernelBench& o, double copy_gbs, double target_us) {
  BatchedStreamCudaOptions opt;
  opt.streams_per_block = streams_per_block;
  const std::unique_ptr<BatchedStreamDevice> batch(make_batched_stream_device(model, S, nullptr, opt));
  const ModelConfig& c = model.config();
  DevBuf in(size_t(n) * S * c.in_channels), out(size_t(n) * S * c.out_channels);
  fill(in, 11, -1, 1);
  const double us = 1e3 * median_ms(o.warmup, o.repeats, [&](int) { batch->step_many(in.p, out.p, n); }) / n;
  const double bytes = (2.0 * sizeof(float) * batch->state_size() * S) / n +
                       sizeof(float) * double(c.in_channels + c.out_channels) * S;  // per sample
  const double floor_us = bytes / (copy_gbs * 1e9) * 1e6;
  const double tflops = model_flops_per_step(c) * S / (us * 1e-6) / 1e12;
  const std::string cut = streams_per_block ? std::to_string(streams_per_block) : "auto";
  char target[16] = "-";
  if (target_us > 0) std::snprintf(target, sizeof(target), "%.0f", target_us);
  std::printf("%-10s %7d %4d %5s %10.1f %9.1f %9.1f %7.0f %6.0f%% %7.2f %9s\n", name, S, n, cut.c_str(), us,
              bytes / 1e6, floor_us, bytes / (us * 1e-6) / 1e9, 100.0 * floor_us / us, tflops, target);
}

std::string launch_of(const Model& model, int streams) {
  return std::unique_ptr<BatchedStreamDevice>(make_batched_stream_device(model, streams, nullptr, {}))
      ->launch_description();
}

void bench_step(const CudaKernelBench& o, double copy_gbs) {
  // The denoiser architecture the targets name (ModelConfig{}: D=64 L=4 E=128
  // P=32 N=32 K=4; the shipped denoiser reads frames, which this step does
  // not take); the cost does not depend on the weights.
  Model denoiser{ModelConfig{}};
  denoiser.init(1);
  const std::string from = "the default architecture, seeded weights";
  const auto fb = builtin_forecaster_bytes();
  const Model forecaster =
      model_from_safetensors_bytes(std::vector<uint8_t>(fb.begin(), fb.end()), "builtin forecaster");
  std::printf("\nstep = batched recurrent model step, fp32 state, per sample (n samples per launch)\n");
  std::printf("denoiser:   %s\n", from.c_str());
  std::printf("            4096 streams: %s\n", launch_of(denoiser, 4096).c_str());
  std::printf("forecaster: 10000 streams: %s\n", launch_of(forecaster, 10000).c_str());
  std::printf("%-10s %7s %4s %5s %10s %9s %9s %7s %7s %7s %9s\n", "model", "streams", "n", "block", "us/sample",
              "min MB", "floor us", "GB/s", "floor%", "TFLOP/s", "target us");
  for (int n : {1, 8, 32}) bench_step_row("denoiser", denoiser, 4096, n, 0, o, copy_gbs, 100);
  for (int spb : {2, 8, 16}) bench_step_row("denoiser", denoiser, 4096, 1, spb, o, copy_gbs, 100);
  for (int n : {1, 32}) bench_step_row("forecaster", forecaster, 10000, n, 0, o, copy_gbs, 0);
}

// ---- scan: the Mamba-1 selective scan (ssm/cuda_selective_scan.hpp) --------
// fp32, with the gate z and dt_bias + softplus, no initial state (mamba_ssm's
// usual call). The floor counts every input read and every output written once.
struct ScanShape {
  const char* name;
  ScanDims d;
};

// Median ms of the forward, the backward, and the two in a row.
struct FwdBwdTimes {
  double fwd, bwd, fwd_bwd;
};

template <typename Fwd, typename Bwd>
FwdBwdTimes time_fwd_bwd(const CudaKernelBench& o, Fwd&& fwd, Bwd&& bwd) {
  FwdBwdTimes t;
  t.fwd = median_ms(o.warmup, o.repeats, fwd);
  t.bwd = median_ms(o.warmup, o.repeats, bwd);
  t.fwd_bwd = median_ms(o.warmup, o.repeats, [&](int i) {
    fwd(i);
    bwd(i);
  });
  check_cuda(cudaDeviceSynchronize(), "benchmark");
  return t;
}

// Two input sets of n floats, alternated between calls: uniform in [lo, hi),
// and the same rotated by `shift` elements.
struct InputPair {
  DevBuf set[2];
  InputPair(size_t n, uint64_t seed, float lo, float hi, size_t shift) : set{DevBuf(n), DevBuf(n)} {
    fill(set[0], seed, lo, hi);
    rotated_copy(set[1], set[0], shift);
  }
  float* operator[](int k) { return set[k].p; }
};

void bench_scan_shape(const ScanShape& sh, const CudaKernelBench& o, double copy_gbs) {
  const ScanDims& d = sh.d;
  const size_t act = size_t(d.B) * d.T * d.E, bcn = size_t(d.B) * d.T * d.G * d.N, en = size_t(d.E) * d.N;

  InputPair x(act, 21, -1, 1, 12345), dtr(act, 22, -1, 1, 777), z(act, 23, -2, 2, 31), Bm(bcn, 24, -1, 1, 4321),
      Cm(bcn, 25, -1, 1, 999), dy(act, 26, -1, 1, 54321);
  DevBuf A_log(en), D(d.E), dt_bias(d.E);
  {
    std::vector<float> al(en), dd(d.E, 1.f), db(d.E);
    for (int e = 0; e < d.E; ++e) {
      for (int n = 0; n < d.N; ++n) al[size_t(e) * d.N + n] = std::log(float(n + 1));  // A = -(n + 1) (S4D-real)
      db[e] = std::log(std::expm1(0.001f * std::pow(100.f, (e + 0.5f) / d.E)));        // dt in [1e-3, 1e-1]
    }
    check_cuda(cudaMemcpy(A_log.p, al.data(), en * sizeof(float), cudaMemcpyHostToDevice), "upload");
    check_cuda(cudaMemcpy(D.p, dd.data(), d.E * sizeof(float), cudaMemcpyHostToDevice), "upload");
    check_cuda(cudaMemcpy(dt_bias.p, db.data(), d.E * sizeof(float), cudaMemcpyHostToDevice), "upload");
  }
  DevBuf y(act), dx(act), ddt(act), dz(act), dA(en), dB(bcn), dC(bcn), dDD(d.E), dbias(d.E);
  check_cuda(cudaMemset(dA.p, 0, en * sizeof(float)), "memset");
  check_cuda(cudaMemset(dDD.p, 0, d.E * sizeof(float)), "memset");
  check_cuda(cudaMemset(dbias.p, 0, d.E * sizeof(float)), "memset");
  const size_t ws_bytes = selective_scan_backward_cuda_workspace(d);
  void* ws = nullptr;
  check_cuda(cudaMalloc(&ws, ws_bytes), "cudaMalloc workspace");

  auto fwd = [&](int i) {
    const int k = i & 1;
    selective_scan_forward_cuda(y.p, nullptr, x[k], dtr[k], A_log.p, Bm[k], Cm[k], D.p, dt_bias.p, z[k], nullptr, d);
  };
  auto bwd = [&](int i) {
    const int k = i & 1;
    selective_scan_backward_cuda(dx.p, ddt.p, dA.p, dB.p, dC.p, dDD.p, dbias.p, dz.p, nullptr, dy[k], nullptr, x[k],
                                 dtr[k], A_log.p, Bm[k], Cm[k], D.p, dt_bias.p, z[k], nullptr, d, ws, ws_bytes);
  };
  const FwdBwdTimes t = time_fwd_bwd(o, fwd, bwd);
  cudaFree(ws);

  // fewest bytes (fp32): fwd reads x, dt_raw, z, B, C and writes y; bwd reads
  // x, dt_raw, z, dy, B, C and writes dx, ddt_raw, dz, dB, dC
  const double fwd_bytes = 4.0 * (4.0 * act + 2.0 * bcn);
  const double bwd_bytes = 4.0 * (7.0 * act + 4.0 * bcn);
  auto row = [&](const char* pass, double ms, double bytes) {
    const double floor_ms = bytes / (copy_gbs * 1e9) * 1e3;
    std::printf("%-13s %-8s %9.3f %10.3f %9.3f %8.0f %6.0f%% %9.0f\n", sh.name, pass, ms, bytes / 1e9, floor_ms,
                bytes / (ms * 1e-3) / 1e9, 100.0 * floor_ms / ms, ws_bytes / 1048576.0);
  };
  row("fwd", t.fwd, fwd_bytes);
  row("bwd", t.bwd, bwd_bytes);
  row("fwd+bwd", t.fwd_bwd, fwd_bytes + bwd_bytes);
}

void run_bench_scan(const CudaKernelBench& o) {
  require(o.repeats >= 1 && o.warmup >= 0, "bench kernels: --repeats must be >= 1 and --warmup >= 0");
  const double bw = copy_bandwidth();
  std::printf("device: %s\n", cuda_device_description().c_str());
  std::printf("copy bandwidth (read + write): %.0f GB/s; fp32; median of %d after %d warm-up\n", bw, o.repeats,
              o.warmup);
  std::printf("Mamba-1 selective scan, with z, dt_bias + softplus, D; G=1\n");
  std::printf("scan-audio   = B=32 T=16000 E=128 N=16\n");
  std::printf("scan-audio32 = B=32 T=16000 E=128 N=32\n");
  std::printf("scan-mamba   = B=8 T=4096 E=1536 N=16\n");
  std::printf("%-13s %-8s %9s %10s %9s %8s %7s %9s\n", "shape", "pass", "ms", "min GB", "floor ms", "GB/s", "floor%",
              "ws MiB");
  const ScanShape shapes[] = {{"scan-audio", {32, 16000, 128, 1, 16}},
                              {"scan-audio32", {32, 16000, 128, 1, 32}},
                              {"scan-mamba", {8, 4096, 1536, 1, 16}}};
  for (const ScanShape& sh : shapes)
    if (o.shape == "scan" || o.shape == sh.name) bench_scan_shape(sh, o, bw);
}

}  // namespace

void bench_kernels_device(const CudaKernelBench& o) {
  if (!cuda_available()) fail("bench kernels: no usable GPU (" + cuda_device_description() + ")");
  if (o.shape.rfind("scan", 0) == 0) return run_bench_scan(o);
  require(o.math == "tf32" || o.math == "fp32", "bench kernels: --math must be tf32 or fp32, got " + o.math);
  require(o.shape == "all" || o.shape == "big" || o.shape == "audio" || o.shape == "step",
          "bench kernels: --shape must be all, big, audio or step, got " + o.shape);
  require(o.repeats >= 1 && o.warmup >= 0, "bench kernels: --repeats must be >= 1 and --warmup >= 0");
  const double bw = copy_bandwidth();
  std::printf("device: %s\n", cuda_device_description().c_str());
  std::printf("copy bandwidth (read + write): %.0f GB/s; math %s; Q %d; median of %d after %d warm-up\n", bw,
              o.math.c_str(), o.Q, o.repeats, o.warmup);
  std::printf("big   = SSD B=8 T=16384 H=32 P=64 N=128 G=1\n");
  std::printf("audio = SSD B=32 T=16000 H=4 P=32 N=32 G=1\n");
  std::printf("%-6s %-8s %9s %10s %9s %8s %7s %9s\n", "shape", "pass", "ms", "min GB", "floor ms", "GB/s", "floor%",
              "target ms");
  const Shape shapes[] = {{"big", {8, 16384, 32, 64, 1, 128}, 1.7, 6.6},
                          {"audio", {32, 16000, 4, 32, 1, 32}, 0.40, 1.6}};
  for (const Shape& sh : shapes)
    if (o.shape == "all" || o.shape == sh.name) bench_shape(sh, o, bw);
  if (o.shape == "all" || o.shape == "step") bench_step(o, bw);
}

}  // namespace ssm
