// Launchers of the training losses on CUDA (ssm/cuda_losses.hpp): argument
// checks, buffers and the cuFFT plans; kernels/losses.cu does the work.
#include "losses.cuh"

#include "cuda_check.cuh"

#include <cuda_runtime_api.h>
#include <cufft.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "ssm/common.hpp"
#include "ssm/cuda_losses.hpp"

namespace ssm {
namespace {

using kernels::kLossPartials;

constexpr CudaCheck check_cuda{"losses cuda"};

const char* cufft_error_name(cufftResult r) {
  switch (r) {
    case CUFFT_SUCCESS:
      return "success";
    case CUFFT_INVALID_PLAN:
      return "invalid plan";
    case CUFFT_ALLOC_FAILED:
      return "allocation failed";
    case CUFFT_INVALID_TYPE:
      return "invalid type";
    case CUFFT_INVALID_VALUE:
      return "invalid value";
    case CUFFT_INTERNAL_ERROR:
      return "internal error";
    case CUFFT_EXEC_FAILED:
      return "execution failed";
    case CUFFT_SETUP_FAILED:
      return "setup failed (no GPU or no driver?)";
    case CUFFT_INVALID_SIZE:
      return "invalid size";
    case CUFFT_UNALIGNED_DATA:
      return "unaligned data";
    case CUFFT_INVALID_DEVICE:
      return "invalid device";
    case CUFFT_NO_WORKSPACE:
      return "no workspace";
    case CUFFT_NOT_IMPLEMENTED:
      return "not implemented";
    case CUFFT_NOT_SUPPORTED:
      return "not supported";
    default:
      return "error";
  }
}

void check_cufft(cufftResult r, const std::string& what) {
  if (r != CUFFT_SUCCESS)
    fail("losses cuda: " + what + ": cuFFT " + cufft_error_name(r) + " (" + std::to_string(static_cast<int>(r)) + ")");
}

void require_ptr(const void* p, const char* fn, const char* name) {
  require(p != nullptr, std::string(fn) + ": " + name + " must not be null");
}

void check_inputs(const char* fn, const float* pred, const float* target, const LossDims& d) {
  loss_check_dims(d);
  require_ptr(pred, fn, "pred");
  require_ptr(target, fn, "target");
}

void check_eps(const char* fn, double eps) {
  require(eps >= 0 && std::isfinite(eps), std::string(fn) + ": eps must be finite and >= 0");
}

// Copies n doubles to the host and waits for `stream`: the one sync of a forward.
void copy_to_host(double* host, const double* dev, size_t n, cudaStream_t stream) {
  check_cuda(cudaMemcpyAsync(host, dev, n * sizeof(double), cudaMemcpyDeviceToHost, stream),
             "copying the loss to the host");
  check_cuda(cudaStreamSynchronize(stream), "waiting for the loss");
}

// Device doubles for one call, allocated and freed in stream order.
class StreamScratch {
 public:
  StreamScratch(int64_t count, cudaStream_t stream) : stream_(stream) {
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(double);
    check_cuda(cudaMallocAsync(&ptr_, bytes, stream), "cudaMallocAsync of " + std::to_string(bytes) + " bytes");
  }
  ~StreamScratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  double* get() const { return static_cast<double*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// ---------------------------------------------------------------- L1 / L2

double pointwise_forward(const char* fn, const float* pred, const float* target, const LossDims& d, bool l1,
                         cudaStream_t stream) {
  check_inputs(fn, pred, target, d);
  StreamScratch ws(kLossPartials + 1, stream);
  double* partials = ws.get();               // (kLossPartials)
  double* total = partials + kLossPartials;  // (1)
  kernels::pointwise_loss_partials_launch(partials, pred, target, int64_t(d.B) * d.T, l1, stream);
  kernels::loss_sum_partials_launch(total, partials, 1, 1, stream);
  double sum = 0;
  copy_to_host(&sum, total, 1, stream);
  return sum / (double(d.B) * double(d.T));
}

void pointwise_backward(const char* fn, float* dpred, double dloss, const float* pred, const float* target,
                        const LossDims& d, bool l1, cudaStream_t stream) {
  check_inputs(fn, pred, target, d);
  require_ptr(dpred, fn, "dpred");
  const int64_t n = int64_t(d.B) * d.T;
  kernels::pointwise_loss_backward_launch(dpred, dloss / double(n), pred, target, n, l1, stream);
}

// ---------------------------------------------------------------- SI-SDR

void check_si_sdr(const char* fn, const float* pred, const float* target, const LossDims& d, double eps) {
  check_inputs(fn, pred, target, d);
  check_eps(fn, eps);
  require(int64_t(d.B) * kernels::si_sdr_chunks(d.T) <= INT_MAX,
          std::string(fn) + ": LossDims.B = " + std::to_string(d.B) + " is too large for one launch");
}

}  // namespace

double l1_loss_forward_cuda(const float* pred, const float* target, const LossDims& d, cudaStream_t stream) {
  return pointwise_forward("l1_loss_forward_cuda", pred, target, d, true, stream);
}

void l1_loss_backward_cuda(float* dpred, double dloss, const float* pred, const float* target, const LossDims& d,
                           cudaStream_t stream) {
  pointwise_backward("l1_loss_backward_cuda", dpred, dloss, pred, target, d, true, stream);
}

double l2_loss_forward_cuda(const float* pred, const float* target, const LossDims& d, cudaStream_t stream) {
  return pointwise_forward("l2_loss_forward_cuda", pred, target, d, false, stream);
}

void l2_loss_backward_cuda(float* dpred, double dloss, const float* pred, const float* target, const LossDims& d,
                           cudaStream_t stream) {
  pointwise_backward("l2_loss_backward_cuda", dpred, dloss, pred, target, d, false, stream);
}

double si_sdr_loss_forward_cuda(const float* pred, const float* target, const LossDims& d, double eps,
                                cudaStream_t stream) {
  check_si_sdr("si_sdr_loss_forward_cuda", pred, target, d, eps);
  const int64_t stat_count = int64_t(d.B) * kernels::kSiSdrStats;
  StreamScratch ws(stat_count + kernels::si_sdr_scratch_doubles(d.B, d.T), stream);
  double* stats = ws.get();  // (B, kSiSdrStats)
  kernels::si_sdr_stats_launch(stats, stats + stat_count, pred, target, d.B, d.T, eps, stream);
  std::vector<double> host(static_cast<size_t>(stat_count));  // (B, kSiSdrStats)
  copy_to_host(host.data(), stats, host.size(), stream);
  // Items summed in order, as the CPU.
  double sum = 0;
  for (int b = 0; b < d.B; ++b) sum += host[size_t(b) * kernels::kSiSdrStats + kernels::kValue];
  return -sum / d.B;
}

void si_sdr_loss_backward_cuda(float* dpred, double dloss, const float* pred, const float* target, const LossDims& d,
                               double eps, cudaStream_t stream) {
  check_si_sdr("si_sdr_loss_backward_cuda", pred, target, d, eps);
  require_ptr(dpred, "si_sdr_loss_backward_cuda", "dpred");
  const int64_t stat_count = int64_t(d.B) * kernels::kSiSdrStats;
  StreamScratch ws(stat_count + kernels::si_sdr_scratch_doubles(d.B, d.T), stream);
  double* stats = ws.get();  // (B, kSiSdrStats)
  kernels::si_sdr_stats_launch(stats, stats + stat_count, pred, target, d.B, d.T, eps, stream);
  kernels::si_sdr_backward_launch(dpred, stats, pred, target, d.B, d.T, dloss, stream);
}

// ---------------------------------------------------------------- STFT loss

namespace {

// Device memory that only grows. The owner waits for the work in flight
// before it grows (Impl::grow).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }

  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void reallocate(size_t bytes, const char* what) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    check_cuda(cudaMalloc(&ptr_, bytes), std::string("cudaMalloc of ") + std::to_string(bytes) + " bytes for " + what);
    bytes_ = bytes;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A cuFFT plan for one (fft size, batch, direction); the work area is shared.
struct FftPlan {
  int n = 0;
  long long batch = 0;
  bool inverse = false;  // Z2D, else D2Z
  cufftHandle handle = 0;
  size_t work_bytes = 0;
  uint64_t last_use = 0;
};

}  // namespace

struct MultiResStftLossCuda::Impl {
  struct Resolution {
    int n = 0, hop = 0, K = 0;
    int F = 0;                 // of the last forward
    size_t window_offset = 0;  // into windows
    DeviceBuffer spec;         // (2, B, F, K) double2  S_pred then S_ref, of the last forward
    double sc_num = 0;         // ||S_ref| - |S_pred||_F
    double sc_den = 0;         // ||S_ref||_F
  };

  StftLossConfig config;
  std::vector<Resolution> res;
  std::vector<double> host_windows;  // (sum of n)  periodic Hann of every resolution, fp64 as the CPU
  DeviceBuffer windows;              // (sum of n)
  bool windows_uploaded = false;
  DeviceBuffer frames;          // (2, B, F, n) double of the largest resolution; backward: (B, F, n)
  DeviceBuffer grad;            // (B, F, K) double2 of the largest resolution
  DeviceBuffer acc;             // (B, T) double  gradient summed over the resolutions before the last
  DeviceBuffer sums;            // (R, kLossPartials, 3) partials, then (R, 3) sums
  DeviceBuffer work;            // cuFFT work area, the largest plan's
  double* host_sums = nullptr;  // (R, 3) pinned
  std::vector<FftPlan> plans;   // at most max_plans, least recently used evicted
  size_t max_plans = 0;
  uint64_t clock = 0;
  LossDims dims{0, 0};  // of the last forward; B == 0 before any
  // Recorded after every call's work, so that a call on another stream (and
  // the destructor) can wait for the previous one.
  cudaEvent_t last_work = nullptr;
  bool pending = false;

  explicit Impl(const StftLossConfig& c) : config(c) {
    stft_loss_check_config(c);
    size_t offset = 0;
    for (size_t r = 0; r < c.fft_sizes.size(); ++r) {
      Resolution s;
      s.n = c.fft_sizes[r];
      s.hop = c.hops[r];
      s.K = s.n / 2 + 1;
      s.window_offset = offset;
      offset += size_t(s.n);
      for (int j = 0; j < s.n; ++j)
        host_windows.push_back(0.5 - 0.5 * std::cos(2 * std::numbers::pi * j / s.n));  // hann<double> of the CPU
      res.push_back(std::move(s));
    }
    // The forward and inverse plans of every resolution, for a few dims.
    max_plans = 8 * res.size();
  }

  ~Impl() {
    if (pending) cudaEventSynchronize(last_work);
    for (FftPlan& p : plans) cufftDestroy(p.handle);
    if (host_sums) cudaFreeHost(host_sums);
    if (last_work) cudaEventDestroy(last_work);
  }

  // Orders this call after the previous one, wherever that ran.
  void begin(cudaStream_t stream) {
    if (!last_work) check_cuda(cudaEventCreateWithFlags(&last_work, cudaEventDisableTiming), "cudaEventCreate");
    if (pending) check_cuda(cudaStreamWaitEvent(stream, last_work, 0), "cudaStreamWaitEvent");
  }
  // Marks the end of a call's work on every way out (a failure part-way too).
  struct CallScope {
    Impl& impl;
    cudaStream_t stream;
    ~CallScope() {
      if (impl.last_work && cudaEventRecord(impl.last_work, stream) == cudaSuccess) impl.pending = true;
    }
  };

  // Waits until no work of ours is in flight: before memory or a plan goes.
  void quiesce(cudaStream_t stream) {
    if (pending) check_cuda(cudaEventSynchronize(last_work), "waiting for the previous call");
    check_cuda(cudaStreamSynchronize(stream), "waiting for the stream");
  }

  void grow(DeviceBuffer& b, size_t bytes, cudaStream_t stream, const char* what) {
    if (b.bytes() >= bytes) return;
    quiesce(stream);
    b.reallocate(bytes, what);
  }

  FftPlan& plan(int n, long long batch, bool inverse, cudaStream_t stream) {
    for (FftPlan& p : plans)
      if (p.n == n && p.batch == batch && p.inverse == inverse) {
        p.last_use = ++clock;
        return p;
      }
    if (plans.size() >= max_plans) {
      auto oldest = std::min_element(plans.begin(), plans.end(),
                                     [](const FftPlan& a, const FftPlan& b) { return a.last_use < b.last_use; });
      quiesce(stream);
      cufftDestroy(oldest->handle);
      plans.erase(oldest);
    }
    FftPlan p;
    p.n = n;
    p.batch = batch;
    p.inverse = inverse;
    const std::string what = std::string(inverse ? "Z2D" : "D2Z") + " plan of size " + std::to_string(n) + ", batch " +
                             std::to_string(batch);
    check_cufft(cufftCreate(&p.handle), "cufftCreate for a " + what);
    long long size = n, real_dist = n, complex_dist = n / 2 + 1;
    cufftResult r = cufftSetAutoAllocation(p.handle, 0);
    if (r == CUFFT_SUCCESS) {
      if (inverse)
        r = cufftMakePlanMany64(p.handle, 1, &size, &complex_dist, 1, complex_dist, &real_dist, 1, real_dist, CUFFT_Z2D,
                                batch, &p.work_bytes);
      else
        r = cufftMakePlanMany64(p.handle, 1, &size, &real_dist, 1, real_dist, &complex_dist, 1, complex_dist, CUFFT_D2Z,
                                batch, &p.work_bytes);
    }
    if (r != CUFFT_SUCCESS) cufftDestroy(p.handle);
    check_cufft(r, "making a " + what);
    p.last_use = ++clock;
    plans.push_back(p);
    return plans.back();
  }

  // The plan with the work area and stream set, ready to execute.
  const FftPlan& ready_plan(int n, long long batch, bool inverse, cudaStream_t stream) {
    FftPlan& p = plan(n, batch, inverse, stream);
    grow(work, std::max<size_t>(p.work_bytes, 256), stream, "the cuFFT work area");
    check_cufft(cufftSetStream(p.handle, stream), "cufftSetStream");
    check_cufft(cufftSetWorkArea(p.handle, work.as<void>()), "cufftSetWorkArea");
    return p;
  }

  kernels::StftShape shape(const Resolution& s, const LossDims& d) const {
    return kernels::StftShape{d.B, d.T, s.n, s.hop, s.F, s.K};
  }

  // Everything forward and backward need at dims d, before any work is enqueued.
  void prepare(const LossDims& d, cudaStream_t stream) {
    size_t frames_bytes = 0, grad_bytes = 0;
    for (Resolution& s : res) {
      s.F = stft_frames(d.T, s.n, s.hop);
      require(2LL * d.B * s.F <= INT_MAX, "MultiResStftLossCuda: " + std::to_string(d.B) + " items of " +
                                              std::to_string(s.F) + " frames (fft size " + std::to_string(s.n) +
                                              ") exceed one launch; split the batch");
      const size_t rows = size_t(d.B) * size_t(s.F);
      frames_bytes = std::max(frames_bytes, 2 * rows * size_t(s.n) * sizeof(double));
      grad_bytes = std::max(grad_bytes, rows * size_t(s.K) * sizeof(double2));
      grow(s.spec, 2 * rows * size_t(s.K) * sizeof(double2), stream, "the saved spectra");
    }
    grow(frames, frames_bytes, stream, "the STFT frames");
    grow(grad, grad_bytes, stream, "the spectrum gradient");
    if (res.size() > 1) grow(acc, size_t(d.B) * size_t(d.T) * sizeof(double), stream, "the gradient sum");
    grow(sums, res.size() * (kLossPartials + 1) * 3 * sizeof(double), stream, "the loss sums");
    if (!host_sums)
      check_cuda(cudaMallocHost(reinterpret_cast<void**>(&host_sums), res.size() * 3 * sizeof(double)),
                 "cudaMallocHost of the loss sums");
    if (!windows_uploaded) {
      grow(windows, host_windows.size() * sizeof(double), stream, "the windows");
      check_cuda(cudaMemcpyAsync(windows.as<double>(), host_windows.data(), host_windows.size() * sizeof(double),
                                 cudaMemcpyHostToDevice, stream),
                 "uploading the windows");
      windows_uploaded = true;
    }
    for (const Resolution& s : res) {
      ready_plan(s.n, 2LL * d.B * s.F, false, stream);
      ready_plan(s.n, 1LL * d.B * s.F, true, stream);
    }
  }
};

MultiResStftLossCuda::MultiResStftLossCuda(const StftLossConfig& c) : impl_(std::make_unique<Impl>(c)) {}

MultiResStftLossCuda::~MultiResStftLossCuda() = default;

const StftLossConfig& MultiResStftLossCuda::config() const { return impl_->config; }

double MultiResStftLossCuda::forward(const float* pred, const float* target, const LossDims& d, cudaStream_t stream) {
  check_inputs("MultiResStftLossCuda::forward", pred, target, d);
  Impl& m = *impl_;
  m.dims = LossDims{0, 0};  // invalid until this forward completes
  m.begin(stream);
  const Impl::CallScope scope{m, stream};
  m.prepare(d, stream);
  const size_t R = m.res.size();
  double* partials = m.sums.as<double>();             // (R, kLossPartials, 3)
  double* totals = partials + R * kLossPartials * 3;  // (R, 3)
  const double* windows = m.windows.as<double>();
  for (size_t r = 0; r < R; ++r) {
    const Impl::Resolution& s = m.res[r];
    const kernels::StftShape sh = m.shape(s, d);
    kernels::stft_frames_launch(m.frames.as<double>(), pred, target, windows + s.window_offset, sh, stream);
    const FftPlan& p = m.ready_plan(s.n, 2LL * d.B * s.F, false, stream);
    check_cufft(cufftExecD2Z(p.handle, m.frames.as<double>(), s.spec.as<cufftDoubleComplex>()),
                "cufftExecD2Z of fft size " + std::to_string(s.n));
    kernels::stft_sums_launch(partials + r * kLossPartials * 3, s.spec.as<double2>(), sh, m.config.power_floor,
                              m.config.log_eps, stream);
  }
  kernels::loss_sum_partials_launch(totals, partials, static_cast<int>(R), 3, stream);
  copy_to_host(m.host_sums, totals, R * 3, stream);
  double loss = 0;
  for (size_t r = 0; r < R; ++r) {
    Impl::Resolution& s = m.res[r];
    const double* t = m.host_sums + 3 * r;  // (3)  sum diff^2, sum |S_ref|^2, sum |log ratio|
    s.sc_num = std::sqrt(t[0]);
    s.sc_den = std::sqrt(t[1]);
    loss += s.sc_num / s.sc_den + t[2] / (double(d.B) * s.F * s.K);
  }
  m.dims = d;
  return loss;
}

void MultiResStftLossCuda::backward(float* dpred, double dloss, const LossDims& d, cudaStream_t stream) {
  loss_check_dims(d);
  require_ptr(dpred, "MultiResStftLossCuda::backward", "dpred");
  Impl& m = *impl_;
  require(m.dims.B > 0, "MultiResStftLossCuda::backward: no forward to take the gradient of");
  require(d.B == m.dims.B && d.T == m.dims.T, "MultiResStftLossCuda::backward: dims (B=" + std::to_string(d.B) +
                                                  ", T=" + std::to_string(d.T) +
                                                  ") differ from the last forward's (B=" + std::to_string(m.dims.B) +
                                                  ", T=" + std::to_string(m.dims.T) + ")");
  m.begin(stream);
  const Impl::CallScope scope{m, stream};
  const size_t R = m.res.size();
  const double* windows = m.windows.as<double>();
  for (size_t r = 0; r < R; ++r) {
    const Impl::Resolution& s = m.res[r];
    const kernels::StftShape sh = m.shape(s, d);
    // dL/d|S_pred| = ka (|S_ref| - |S_pred|) + kq sign(...) / (|S_pred| + log_eps), dloss included
    const double ka = s.sc_num > 0 ? -dloss / (s.sc_num * s.sc_den) : 0.0;
    const double kq = -dloss / (double(d.B) * s.F * s.K);
    kernels::stft_grad_spectrum_launch(m.grad.as<double2>(), s.spec.as<double2>(), sh, ka, kq, m.config.power_floor,
                                       m.config.log_eps, stream);
    const FftPlan& p = m.ready_plan(s.n, 1LL * d.B * s.F, true, stream);
    // Z2D overwrites its input: grad is scratch.
    check_cufft(cufftExecZ2D(p.handle, m.grad.as<cufftDoubleComplex>(), m.frames.as<double>()),
                "cufftExecZ2D of fft size " + std::to_string(s.n));
    // The first resolution starts the sum, the last writes dpred.
    const bool first = r == 0, last = r + 1 == R;
    kernels::stft_overlap_add_launch(last ? nullptr : m.acc.as<double>(), last ? dpred : nullptr,
                                     first ? nullptr : m.acc.as<double>(), m.frames.as<double>(),
                                     windows + s.window_offset, sh, stream);
  }
}

}  // namespace ssm
