// The recurrent mode on the GPU for many independent streams of one model:
// every call advances all S streams by one sample (or n samples) with one
// kernel launch per call (per 32 samples for long bursts). It computes what S
// ssm::Stream objects compute (DESIGN.md §2.4; fp32 throughout, tests compare
// them at <= 1e-4), for serving thousands of sensor streams at once.
//
// Mamba-2 models only: a Mamba-1 model throws ssm::Error. The kernels take
// N <= 128 when N is a multiple of 4, otherwise N <= 32.
//
// Each stream's state has the floats of ssm::Stream (Stream::state_size(),
// the floats of Stream::snapshot() after its 24-byte header; per layer: conv
// tail (K-1, Cc), then SSM state (H, P, N)), so a series can move between a
// CPU Stream and a slot of the batch with get_state / set_state.
//
// Cost floor of one step (counted for the default denoiser, D=64 L=4 E=128
// P=32 N=32 K=4, with 4096 streams). Every stream's state is read and written
// once per launch: per layer E*N = 4096 SSM floats + (K-1)*Cc = 576 conv
// floats, 74.75 KB per stream for the 4 layers, 306 MB for 4096 streams,
// 612 MB moved per step. At the H100's 3.35 TB/s peak that is 183 us (about
// 205 us at the ~3 TB/s a copy reaches): 100 us per step cannot be met with an
// fp32 state in device memory, whatever the arithmetic does; the on-chip
// storage (registers + shared memory, ~60 MB) holds a fifth of it. A bf16
// state would halve the bytes (still ~100 us) and drift from the fp32 CPU
// stream by its rounding every step, so it is not offered. The arithmetic,
// ~78 kFLOP per stream and layer (model_flops_per_step: in_proj 41.5k,
// out_proj 16.4k, state update and readout 16.4k, the rest ~4k), is 1.28
// GFLOP per step: ~19 us at the fp32 FMA peak (67 TFLOP/s).
// step_many() is the way under 100 us per sample: the state stays in
// registers across the n samples of a launch, so its bytes count once per n
// samples (612/n MB) and the arithmetic becomes the floor.
//
// Threads: one object is used by one thread at a time. All work goes on the
// CUDA stream given at construction, in call order.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "ssm/model.hpp"

// The CUDA runtime's stream type, declared without its headers.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace ssm {

struct BatchedStreamCudaOptions {
  // Streams each thread block advances (weights fetched once per block serve
  // them all). 0: chosen from the model's sizes so that a block's SSM state
  // fits in registers, fewer when there are few streams for the GPU.
  int streams_per_block = 0;
};

class BatchedStreamCuda {
 public:
  using Options = BatchedStreamCudaOptions;

  // Copies the model's weights to the current device once (the model need
  // not outlive this object) and zeroes the state of `streams` streams.
  // Throws ssm::Error when there is no usable GPU, for a Mamba-1 model, or
  // when a size is beyond the kernels (naming it).
  BatchedStreamCuda(const Model& model, int streams, cudaStream_t stream = nullptr, Options options = {});
  ~BatchedStreamCuda();
  BatchedStreamCuda(BatchedStreamCuda&&) noexcept;
  BatchedStreamCuda& operator=(BatchedStreamCuda&&) noexcept;

  const ModelConfig& config() const;
  int streams() const;        // S
  size_t state_size() const;  // floats per stream, = Stream::state_size()

  // Device pointers. in (S, in_channels) -> out (S, out_channels): every
  // stream advances by one sample. Enqueued on the stream; returns at once.
  void step(const float* in, float* out);
  // n >= 0 samples per stream, time-major: in (n, S, in_channels) ->
  // out (n, S, out_channels). Equals n calls of step(), in fewer launches.
  void step_many(const float* in, float* out, int n);

  // Host pointers, same shapes: copies in, runs, copies out, returns when done.
  void step_host(const float* in, float* out);
  void step_many_host(const float* in, float* out, int n);

  // Advances only the listed streams by one sample (host pointers): slots
  // (count) distinct stream indices, in (count, in_channels) -> out (count,
  // out_channels), out[i] being stream slots[i]'s. The others keep their
  // state. For callers whose streams do not all have a sample at once (a
  // server scoring the series that sent a value); returns when done. Throws
  // ssm::Error for an index out of range or listed twice.
  void step_subset_host(const int* slots, const float* in, float* out, int count);

  void reset(int stream);  // that stream's state to zeros
  void reset_all();

  // One stream's state, state_size() floats in Stream's layout (host memory).
  // get_state waits for the work before it; set_state checks that every value
  // is finite and throws ssm::Error otherwise.
  void get_state(int stream, float* dst) const;
  void set_state(int stream, const float* src);
  // The states of `count` distinct streams in one transfer: dst (count,
  // state_size()), row i that of stream slots[i].
  void get_states(const int* slots, int count, float* dst) const;

  // How the launches are cut: streams per block, whether the state stays in
  // registers across the samples of a launch, samples per launch.
  std::string launch_description() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
