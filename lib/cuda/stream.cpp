// The work of BatchedStreamCuda (ssm/cuda_stream.hpp) in the CUDA module
// (lib/cuda/module.hpp): packs the model's weights for the batched step
// kernel (kernels/model_step.cu), owns every stream's state on the device, and
// chooses how the streams are cut into thread blocks.
#include "model_step.cuh"

#include "cuda_check.cuh"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../model/layer_offsets.hpp"
#include "device_array.hpp"
#include "ssm/common.hpp"
#include "ssm/cuda.hpp"
#include "module.hpp"
#include "ssm/cuda_stream.hpp"

namespace ssm {
namespace {

constexpr CudaCheck check_cuda{"BatchedStreamCuda"};

int pow2_at_least(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Budget of shared memory per block that still lets two blocks share an SM
// with room left for the L1 that caches the weights.
constexpr size_t kSmemBudget = 96 * 1024;

// BatchedStreamDevice on the kernels; the public class forwards to it.
class BatchedStreamKernels final : public BatchedStreamDevice {
 public:
  using Options = BatchedStreamCudaOptions;
  BatchedStreamKernels(const Model& model, int streams, cudaStream_t stream, const Options& options);
  const ModelConfig& config() const override;
  int streams() const override;
  size_t state_size() const override;
  void step_many(const float* in, float* out, int n) override;
  void step_many_host(const float* in, float* out, int n) override;
  void step_subset_host(const int* slots, const float* in, float* out, int count) override;
  void reset(int stream) override;
  void reset_all() override;
  void get_state(int stream, float* dst) const override;
  void set_state(int stream, const float* src) override;
  void get_states(const int* slots, int count, float* dst) const override;
  std::string launch_description() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace

struct BatchedStreamKernels::Impl {
  ModelConfig cfg;
  int S = 0;
  cudaStream_t stream = nullptr;
  kernels::StepArgs args{};  // weights, state and the cut; in, out and n are set per launch
  int n_chunk = 1;           // samples per launch at most
  int blocks = 0;
  size_t tail_floats = 0;  // (K-1) * Cc per stream and layer
  size_t ssm_floats = 0;   // E * N per stream and layer
  DeviceArray<float> weights;    // packed, see kernels::StepArgs
  DeviceArray<float> ssm;        // (L, S, E, N)
  DeviceArray<float> tail;       // (L, S, K-1, Cc)
  DeviceArray<float> in_stage;   // (n, S, in_channels)  for the host variants
  DeviceArray<float> out_stage;  // (n, S, out_channels)
  // step_subset_host / get_states: the chosen streams' slots and a compact
  // copy of their state, (L, count, E, N) and (L, count, K-1, Cc).
  DeviceArray<int> slots;
  DeviceArray<float> compact_ssm, compact_tail;
  std::vector<uint8_t> seen;  // (S) distinctness check of a slot list

  Impl(const Model& model, int streams, cudaStream_t st, const Options& opt);
  void pack_weights(const Model& model);
  void choose_cut(int streams_per_block);
  size_t smem_bytes(int n) const {
    kernels::StepArgs a = args;
    a.n = n;
    return kernels::model_step_smem_bytes(a);
  }
  // Enqueues the copy of the listed streams' states into the compact
  // buffers (grown first, with the staging buffers, to hold count streams
  // and n_in / n_out floats of input and output).
  void gather(const int* host_slots, int count, size_t n_in, size_t n_out) {
    const size_t n = static_cast<size_t>(count), L = cfg.n_layers;
    if (slots.capacity() < n || in_stage.capacity() < n_in || out_stage.capacity() < n_out ||
        compact_ssm.capacity() < L * n * ssm_floats || compact_tail.capacity() < L * n * tail_floats) {
      check_cuda(cudaStreamSynchronize(stream), "waiting for the stream");  // it may still use them
      slots.grow(n);
      in_stage.grow(n_in);
      out_stage.grow(n_out);
      compact_ssm.grow(L * n * ssm_floats);
      compact_tail.grow(L * n * tail_floats);
    }
    check_cuda(cudaMemcpyAsync(slots.data(), host_slots, n * sizeof(int), cudaMemcpyHostToDevice, stream),
               "copying the slots");
    kernels::state_rows_copy(true, ssm.data(), compact_ssm.data(), slots.data(), count, S, cfg.n_layers, ssm_floats,
                             stream);
    kernels::state_rows_copy(true, tail.data(), compact_tail.data(), slots.data(), count, S, cfg.n_layers,
                             tail_floats, stream);
  }
  void check_index(int i, const char* fn) const {
    require(i >= 0 && i < S, std::string("BatchedStreamCuda::") + fn + ": stream " + std::to_string(i) +
                                 " is out of range [0, " + std::to_string(S) + ")");
  }
};

BatchedStreamKernels::Impl::Impl(const Model& model, int streams, cudaStream_t st, const Options& opt)
    : cfg(model.config()), S(streams), stream(st) {
  cfg.validate();
  require(cfg.block == BlockKind::Mamba2,
          "BatchedStreamCuda: Mamba-1 models are not supported on the GPU yet (use ssm::Stream on the CPU)");
  require(!cfg.masking(), "BatchedStreamCuda: models with a masking head (mask_bins " + std::to_string(cfg.mask_bins) +
                              ") stream on the CPU (ssm::Stream)");
  require(cfg.frame == 1, "BatchedStreamCuda: models that read frames (frame " + std::to_string(cfg.frame) +
                              ") are streamed on the CPU only");
  require(streams >= 1, "BatchedStreamCuda: streams must be >= 1, got " + std::to_string(streams));
  const int N = cfg.d_state;
  const int vec = N % 4 == 0 ? 4 : 1;
  require(N / vec <= 32, "BatchedStreamCuda: d_state N = " + std::to_string(N) +
                             " is beyond the GPU step (N <= 128 when a multiple of 4, otherwise N <= 32)");
  require(opt.streams_per_block >= 0 && opt.streams_per_block <= 1024,
          "BatchedStreamCuda: Options::streams_per_block must be in [0, 1024], got " +
              std::to_string(opt.streams_per_block));
  require(cuda_available(), "BatchedStreamCuda: no usable GPU (" + cuda_device_description() + ")");

  const int K1 = cfg.d_conv - 1, Cc = cfg.conv_channels(), E = cfg.inner();
  tail_floats = static_cast<size_t>(K1) * Cc;
  ssm_floats = static_cast<size_t>(E) * N;

  args.S = S;
  args.L = cfg.n_layers;
  args.D = cfg.d_model;
  args.E = E;
  args.H = cfg.heads();
  args.P = cfg.head_dim;
  args.G = cfg.n_groups;
  args.N = N;
  args.K = cfg.d_conv;
  args.ci = cfg.in_channels;
  args.co = cfg.out_channels;
  args.eps = static_cast<float>(cfg.norm_eps);
  args.vec = vec;
  args.lanes_per_row = pow2_at_least(N / vec);
  choose_cut(opt.streams_per_block);

  pack_weights(model);
  const size_t L = cfg.n_layers, Sz = S;
  ssm.grow(L * Sz * ssm_floats);
  tail.grow(L * Sz * tail_floats);
  args.ssm_state = ssm.data();
  args.conv_tail = tail.data();
  check_cuda(cudaMemsetAsync(ssm.data(), 0, ssm.capacity() * sizeof(float), stream), "zeroing the SSM states");
  check_cuda(cudaMemsetAsync(tail.data(), 0, tail.capacity() * sizeof(float), stream), "zeroing the conv tails");
}

// Streams per block St: a block's state (St * E rows of N floats, LPR lanes
// per row) is held in at most kStepMaxUnits units per thread when it fits,
// which keeps it in registers across the samples of a launch. Few streams
// per GPU get fewer per block, so that every SM has blocks to run.
void BatchedStreamKernels::Impl::choose_cut(int streams_per_block) {
  int dev = 0, sms = 1, smem_optin = 48 * 1024;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
             "cudaDeviceGetAttribute");
  const int E = args.E;
  const int row_groups = kernels::kStepThreads / args.lanes_per_row;  // rows one unit index covers
  const int rows_in_registers = kernels::kStepMaxUnits * row_groups;
  const bool automatic = streams_per_block == 0;
  int St = streams_per_block;
  if (automatic) {
    St = std::clamp(rows_in_registers / E, 1, 32);
    St = std::min(St, std::max(1, ceil_div(S, 2 * sms)));
  }
  St = std::min(St, S);
  auto set_cut = [&](int st) {
    args.streams_per_block = st;
    // Counted in 64 bits: a cut too wide for shared memory is refused below.
    const long long rows = static_cast<long long>(st) * E, unit_rows = row_groups;
    const long long units = std::min<long long>(kernels::kStepMaxUnits, (rows + unit_rows - 1) / unit_rows);
    args.units = pow2_at_least(static_cast<int>(units));
    args.passes =
        static_cast<int>(std::min<long long>((rows + args.units * unit_rows - 1) / (args.units * unit_rows), 1 << 30));
  };
  set_cut(St);
  while (smem_bytes(1) > static_cast<size_t>(smem_optin) && automatic && St > 1) {
    St /= 2;
    set_cut(St);
  }
  require(smem_bytes(1) <= static_cast<size_t>(smem_optin),
          "BatchedStreamCuda: " + std::to_string(St) + " streams per block need " + std::to_string(smem_bytes(1)) +
              " bytes of shared memory, the device allows " + std::to_string(smem_optin) +
              (automatic ? " (the model is too wide for the GPU step)" : " (use fewer streams per block)"));
  const size_t limit = std::min<size_t>(smem_optin, std::max(kSmemBudget, smem_bytes(1)));
  n_chunk = 1;
  while (n_chunk < kernels::kStepMaxChunk && smem_bytes(n_chunk + 1) <= limit) ++n_chunk;
  kernels::model_step_prepare(args.vec, args.units, smem_bytes(n_chunk));
  blocks = ceil_div(S, St);
}

void BatchedStreamKernels::Impl::pack_weights(const Model& model) {
  const ParamTable& t = model.table();
  const float* P = model.params().data();
  const int D = cfg.d_model, E = cfg.inner(), H = cfg.heads(), Cc = cfg.conv_channels(), K = cfg.d_conv;
  const int F = 2 * E + 2 * cfg.n_groups * cfg.d_state + H;
  std::vector<float> w;
  auto put = [&](const float* src, size_t n) {
    const size_t at = w.size();
    w.insert(w.end(), src, src + n);
    return at;
  };
  // W (O, I) as WT (I, O)
  auto put_transposed = [&](const float* W, int O, int I) {
    const size_t at = w.size();
    w.resize(at + static_cast<size_t>(O) * I);
    for (int o = 0; o < O; ++o)
      for (int k = 0; k < I; ++k) w[at + static_cast<size_t>(k) * O + o] = W[static_cast<size_t>(o) * I + k];
    return at;
  };
  args.enc_w = put(P + t.offset("encoder.weight"), static_cast<size_t>(D) * cfg.in_channels);
  args.enc_b = put(P + t.offset("encoder.bias"), D);
  args.norm_f = put(P + t.offset("norm_f.weight"), D);
  args.head_w = put(P + t.offset("head.weight"), static_cast<size_t>(cfg.out_channels) * D);
  args.head_b = put(P + t.offset("head.bias"), cfg.out_channels);
  args.layer0 = w.size();
  const std::vector<LayerOffsets> layers = model_layer_offsets(cfg, t);
  std::vector<float> A(H);  // (H)
  for (int l = 0; l < cfg.n_layers; ++l) {
    const LayerOffsets& o = layers[l];
    const size_t base = w.size();
    kernels::StepLayerOffsets lo{};
    lo.norm = put(P + o.norm, D) - base;
    lo.in_wT = put_transposed(P + o.in_proj, F, D) - base;
    lo.conv_w = put(P + o.conv_w, static_cast<size_t>(Cc) * K) - base;
    lo.conv_b = put(P + o.conv_b, Cc) - base;
    lo.dt_bias = put(P + o.dt_bias, H) - base;
    // As the CPU step computes it: -exp of the float A_log, in float.
    for (int h = 0; h < H; ++h) A[h] = -std::exp(P[o.A_log + h]);
    lo.A = put(A.data(), H) - base;
    lo.D = put(P + o.D, H) - base;
    lo.mixer_norm = put(P + o.mixer_norm, E) - base;
    lo.out_wT = put_transposed(P + o.out_proj, D, E) - base;
    if (l == 0) {
      args.lo = lo;
      args.layer_stride = w.size() - base;
    }
  }
  weights.grow(w.size());
  check_cuda(cudaMemcpy(weights.data(), w.data(), w.size() * sizeof(float), cudaMemcpyHostToDevice),
             "copying the weights");
  args.weights = weights.data();
}

BatchedStreamKernels::BatchedStreamKernels(const Model& model, int streams, cudaStream_t stream,
                                           const Options& options)
    : impl_(std::make_unique<Impl>(model, streams, stream, options)) {}

BatchedStreamDevice* make_batched_stream_device(const Model& model, int streams, cudaStream_t stream,
                                                const BatchedStreamCudaOptions& options) {
  return new BatchedStreamKernels(model, streams, stream, options);
}

const ModelConfig& BatchedStreamKernels::config() const { return impl_->cfg; }
int BatchedStreamKernels::streams() const { return impl_->S; }
size_t BatchedStreamKernels::state_size() const { return impl_->cfg.n_layers * (impl_->tail_floats + impl_->ssm_floats); }

void BatchedStreamKernels::step_many(const float* in, float* out, int n) {
  Impl& m = *impl_;
  require(n >= 0, "BatchedStreamCuda::step_many: n must be >= 0, got " + std::to_string(n));
  if (n == 0) return;
  require(in != nullptr && out != nullptr, "BatchedStreamCuda::step: in and out must not be null");
  const size_t S = m.S;
  for (int t0 = 0; t0 < n; t0 += m.n_chunk) {
    kernels::StepArgs a = m.args;
    a.n = std::min(m.n_chunk, n - t0);
    a.in = in + static_cast<size_t>(t0) * S * a.ci;
    a.out = out + static_cast<size_t>(t0) * S * a.co;
    kernels::model_step_launch(a, m.stream);
  }
}

void BatchedStreamKernels::step_many_host(const float* in, float* out, int n) {
  Impl& m = *impl_;
  require(n >= 0, "BatchedStreamCuda::step_many_host: n must be >= 0, got " + std::to_string(n));
  if (n == 0) return;
  require(in != nullptr && out != nullptr, "BatchedStreamCuda::step_host: in and out must not be null");
  const size_t n_in = static_cast<size_t>(n) * m.S * m.cfg.in_channels;
  const size_t n_out = static_cast<size_t>(n) * m.S * m.cfg.out_channels;
  // The stream may still read the staging buffers: wait before replacing them.
  if (m.in_stage.capacity() < n_in || m.out_stage.capacity() < n_out) {
    check_cuda(cudaStreamSynchronize(m.stream), "waiting for the stream");
    if (m.in_stage.capacity() < n_in) m.in_stage.grow(n_in);
    if (m.out_stage.capacity() < n_out) m.out_stage.grow(n_out);
  }
  check_cuda(cudaMemcpyAsync(m.in_stage.data(), in, n_in * sizeof(float), cudaMemcpyHostToDevice, m.stream),
             "copying the input");
  step_many(m.in_stage.data(), m.out_stage.data(), n);
  check_cuda(cudaMemcpyAsync(out, m.out_stage.data(), n_out * sizeof(float), cudaMemcpyDeviceToHost, m.stream),
             "copying the output");
  check_cuda(cudaStreamSynchronize(m.stream), "the step");
}

namespace {

// Range and distinctness of a slot list, named after `fn`.
void check_slots(const int* slots, int count, int S, std::vector<uint8_t>& seen, const char* fn) {
  require(count >= 0, std::string("BatchedStreamCuda::") + fn + ": count must be >= 0, got " + std::to_string(count));
  require(count == 0 || slots != nullptr, std::string("BatchedStreamCuda::") + fn + ": slots must not be null");
  seen.assign(static_cast<size_t>(S), 0);
  for (int i = 0; i < count; ++i) {
    const int s = slots[i];
    require(s >= 0 && s < S, std::string("BatchedStreamCuda::") + fn + ": slots[" + std::to_string(i) + "] = " +
                                 std::to_string(s) + " is out of range [0, " + std::to_string(S) + ")");
    require(!seen[s], std::string("BatchedStreamCuda::") + fn + ": stream " + std::to_string(s) +
                          " is listed twice (each stream advances at most once per call)");
    seen[s] = 1;
  }
}

}  // namespace

// The chosen streams' states are gathered into a compact batch, stepped as
// a batch of `count` streams, and scattered back: two extra passes over
// their state, none over the others'.
void BatchedStreamKernels::step_subset_host(const int* slots, const float* in, float* out, int count) {
  Impl& m = *impl_;
  check_slots(slots, count, m.S, m.seen, "step_subset_host");
  if (count == 0) return;
  require(in != nullptr && out != nullptr, "BatchedStreamCuda::step_subset_host: in and out must not be null");
  const size_t n = static_cast<size_t>(count);
  const size_t n_in = n * m.cfg.in_channels, n_out = n * m.cfg.out_channels;
  m.gather(slots, count, n_in, n_out);
  check_cuda(cudaMemcpyAsync(m.in_stage.data(), in, n_in * sizeof(float), cudaMemcpyHostToDevice, m.stream),
             "copying the input");
  const int Lc = m.cfg.n_layers;
  kernels::StepArgs a = m.args;
  a.S = count;
  a.n = 1;
  a.ssm_state = m.compact_ssm.data();
  a.conv_tail = m.compact_tail.data();
  a.in = m.in_stage.data();
  a.out = m.out_stage.data();
  kernels::model_step_launch(a, m.stream);
  kernels::state_rows_copy(false, m.ssm.data(), m.compact_ssm.data(), m.slots.data(), count, m.S, Lc, m.ssm_floats,
                           m.stream);
  kernels::state_rows_copy(false, m.tail.data(), m.compact_tail.data(), m.slots.data(), count, m.S, Lc,
                           m.tail_floats, m.stream);
  check_cuda(cudaMemcpyAsync(out, m.out_stage.data(), n_out * sizeof(float), cudaMemcpyDeviceToHost, m.stream),
             "copying the output");
  check_cuda(cudaStreamSynchronize(m.stream), "the step of a subset");
}

void BatchedStreamKernels::get_states(const int* slots, int count, float* dst) const {
  Impl& m = *impl_;
  check_slots(slots, count, m.S, m.seen, "get_states");
  if (count == 0) return;
  require(dst != nullptr, "BatchedStreamCuda::get_states: dst must not be null");
  const size_t n = static_cast<size_t>(count), L = m.cfg.n_layers;
  m.gather(slots, count, 0, 0);
  std::vector<float> ssm(L * n * m.ssm_floats), tail(L * n * m.tail_floats);  // (L, count, ·)
  check_cuda(cudaMemcpyAsync(ssm.data(), m.compact_ssm.data(), ssm.size() * sizeof(float), cudaMemcpyDeviceToHost,
                             m.stream),
             "reading the SSM states");
  if (!tail.empty())
    check_cuda(cudaMemcpyAsync(tail.data(), m.compact_tail.data(), tail.size() * sizeof(float),
                               cudaMemcpyDeviceToHost, m.stream),
               "reading the conv tails");
  check_cuda(cudaStreamSynchronize(m.stream), "reading states");
  // Stream's layout per stream and layer: conv tail, then SSM state.
  const size_t layer = m.tail_floats + m.ssm_floats, per_stream = L * layer;
  for (size_t i = 0; i < n; ++i)
    for (size_t l = 0; l < L; ++l) {
      float* d = dst + i * per_stream + l * layer;
      std::copy_n(tail.data() + (l * n + i) * m.tail_floats, m.tail_floats, d);
      std::copy_n(ssm.data() + (l * n + i) * m.ssm_floats, m.ssm_floats, d + m.tail_floats);
    }
}

void BatchedStreamKernels::reset(int stream) {
  Impl& m = *impl_;
  m.check_index(stream, "reset");
  for (int l = 0; l < m.cfg.n_layers; ++l) {
    const size_t slot = static_cast<size_t>(l) * m.S + stream;  // (layer, stream)
    check_cuda(cudaMemsetAsync(m.ssm.data() + slot * m.ssm_floats, 0, m.ssm_floats * sizeof(float), m.stream),
               "resetting an SSM state");
    if (m.tail_floats)
      check_cuda(cudaMemsetAsync(m.tail.data() + slot * m.tail_floats, 0, m.tail_floats * sizeof(float), m.stream),
                 "resetting a conv tail");
  }
}

void BatchedStreamKernels::reset_all() {
  Impl& m = *impl_;
  check_cuda(cudaMemsetAsync(m.ssm.data(), 0, m.ssm.capacity() * sizeof(float), m.stream), "resetting the SSM states");
  check_cuda(cudaMemsetAsync(m.tail.data(), 0, m.tail.capacity() * sizeof(float), m.stream), "resetting the conv tails");
}

// Stream's layout per layer: conv tail (K-1, Cc), then SSM state (E, N).
void BatchedStreamKernels::get_state(int stream, float* dst) const {
  const Impl& m = *impl_;
  m.check_index(stream, "get_state");
  require(dst != nullptr, "BatchedStreamCuda::get_state: dst must not be null");
  const size_t layer = m.tail_floats + m.ssm_floats;
  for (int l = 0; l < m.cfg.n_layers; ++l) {
    const size_t slot = static_cast<size_t>(l) * m.S + stream;
    float* d = dst + l * layer;
    if (m.tail_floats)
      check_cuda(cudaMemcpyAsync(d, m.tail.data() + slot * m.tail_floats, m.tail_floats * sizeof(float),
                                 cudaMemcpyDeviceToHost, m.stream),
                 "reading a conv tail");
    check_cuda(cudaMemcpyAsync(d + m.tail_floats, m.ssm.data() + slot * m.ssm_floats, m.ssm_floats * sizeof(float),
                               cudaMemcpyDeviceToHost, m.stream),
               "reading an SSM state");
  }
  check_cuda(cudaStreamSynchronize(m.stream), "reading a state");
}

void BatchedStreamKernels::set_state(int stream, const float* src) {
  Impl& m = *impl_;
  m.check_index(stream, "set_state");
  require(src != nullptr, "BatchedStreamCuda::set_state: src must not be null");
  const size_t layer = m.tail_floats + m.ssm_floats, n = m.cfg.n_layers * layer;
  for (size_t i = 0; i < n; ++i)
    require(std::isfinite(src[i]), "BatchedStreamCuda::set_state: value " + std::to_string(i) + " is not finite");
  for (int l = 0; l < m.cfg.n_layers; ++l) {
    const size_t slot = static_cast<size_t>(l) * m.S + stream;
    const float* s = src + l * layer;
    if (m.tail_floats)
      check_cuda(cudaMemcpyAsync(m.tail.data() + slot * m.tail_floats, s, m.tail_floats * sizeof(float),
                                 cudaMemcpyHostToDevice, m.stream),
                 "writing a conv tail");
    check_cuda(cudaMemcpyAsync(m.ssm.data() + slot * m.ssm_floats, s + m.tail_floats, m.ssm_floats * sizeof(float),
                               cudaMemcpyHostToDevice, m.stream),
               "writing an SSM state");
  }
  check_cuda(cudaStreamSynchronize(m.stream), "writing a state");
}

std::string BatchedStreamKernels::launch_description() const {
  const Impl& m = *impl_;
  const kernels::StepArgs& a = m.args;
  std::string s = std::to_string(a.streams_per_block) + " streams per block (" + std::to_string(m.blocks) +
                  " blocks of " + std::to_string(kernels::kStepThreads) + " threads), ";
  s += a.passes == 1 ? "state in registers across the samples of a launch"
                     : "state streamed in " + std::to_string(a.passes) + " passes per sample";
  s += ", up to " + std::to_string(m.n_chunk) + " samples per launch, " + std::to_string(m.smem_bytes(1) / 1024) + "-" +
       std::to_string(m.smem_bytes(m.n_chunk) / 1024) + " KiB shared memory per block";
  return s;
}

}  // namespace ssm
