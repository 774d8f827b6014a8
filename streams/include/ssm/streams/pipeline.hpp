// The real-time block pipeline:
//
//   audio callback --in ring--> processing thread (BlockProcessor) --out ring--> audio callback
//                                        \--> tap (e.g. a file sink)
//
// The callback side (audio_callback) never allocates, locks, logs or blocks:
// it copies samples into and out of lock-free SPSC rings, updates counters
// and posts a semaphore. Everything else runs on the processing thread.
//
// Timing: the output ring starts with `prefill` frames of silence, so output
// frame j carries processed frame j - prefill; that is the buffering latency.
// When processing falls behind:
//  - input that does not fit the in ring is dropped whole (a dropped block);
//    the processing thread puts the same number of silent frames in its place,
//    so later output keeps its position;
//  - output missing at a callback is played as silence (an underrun) and the
//    late frames are skipped when they arrive, so latency does not drift.
// Both are counted and reported by stats().
#pragma once
#include <semaphore.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "ssm/denoise_chain.hpp"
#include "ssm/model.hpp"
#include "ssm/streams/io.hpp"
#include "ssm/resampler.hpp"
#include "ssm/streams/ring.hpp"

namespace ssm {

// The processing thread's work on a block, mono at the device rate. The count
// out may differ from the count in (a resampler holds samples back).
class BlockProcessor {
 public:
  virtual ~BlockProcessor() = default;
  virtual size_t max_output(size_t n) const = 0;
  // in (n) -> out (returned count <= max_output(n)).
  virtual size_t process(const float* in, size_t n, float* out) = 0;
  // At the end of the stream: what is still held back, into out (<= cap).
  virtual size_t flush(float* out, size_t cap) { return 0; }
  // Frames (device rate) a stream of inputs can be ahead of the outputs it
  // has produced so far, at most; the pipeline primes its output for this.
  virtual size_t holdback() const { return 0; }
};

// The denoiser as a processor: the library's DenoiseChain, Streaming, mono
// at the device rate. The model's latency (its lookahead and frame wait) is
// not removed (a live stream cannot look ahead): it adds model_latency_frames().
class DenoiseProcessor : public BlockProcessor {
 public:
  DenoiseProcessor(const Model& model, int device_rate, size_t max_block,
                   ResampleQuality q = ResampleQuality::Medium, bool carry_high_band = true);
  size_t max_output(size_t n) const override { return chain_.max_output(n); }
  size_t process(const float* in, size_t n, float* out) override { return chain_.process(in, n, out); }
  size_t flush(float* out, size_t cap) override;
  size_t holdback() const override { return chain_.holdback(); }
  double model_latency_frames() const { return chain_.latency_frames(); }
  DenoiseChain& chain() { return chain_; }

 private:
  static DenoiseChainOptions options(int device_rate, size_t max_block, ResampleQuality q, bool carry_high_band);
  DenoiseChain chain_;
};

struct PipelineOptions {
  int rate = 16000;             // device frames per second
  size_t max_block = 1024;      // frames the processor takes at once
  size_t prefill = 0;           // output frames of silence before the first processed one
  size_t ring = 0;              // ring capacity in frames; 0 = the larger of 1 s and 4 x prefill
  bool playback = true;         // whether the callback wants output
};

struct PipelineStats {
  uint64_t captured = 0;         // frames the callback received
  uint64_t processed = 0;        // frames through the processor
  uint64_t played = 0;           // frames the callback played
  uint64_t dropped_frames = 0;   // input frames dropped because processing fell behind
  uint64_t dropped_blocks = 0;   // callbacks whose input was dropped
  uint64_t underrun_frames = 0;  // output frames played as silence for lack of processed audio
  uint64_t underruns = 0;        // callbacks that ran short
  uint64_t skipped_frames = 0;   // late frames skipped to keep the latency (as many as underrun_frames, once caught up)
  uint64_t device_xruns = 0;     // xruns the audio backend reported
  double rtf = 0;                // processing seconds per audio second
  float input_rms = 0;           // RMS of the last callback's input
  size_t prefill = 0;            // the buffering latency in frames
  double device_latency_s = -1;  // output DAC time - input ADC time of a callback, when known
  uint64_t xruns() const { return dropped_blocks + underruns + device_xruns; }
};

class Pipeline {
 public:
  // `tap`, when given, receives every processed frame (and the silence put in
  // place of dropped input) on the processing thread.
  Pipeline(BlockProcessor& proc, const PipelineOptions& o, Sink* tap = nullptr);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Starts the processing thread; call before the device starts calling back.
  void start();
  // After the device has stopped: processes everything captured, flushes the
  // processor into the tap and joins the thread. An error the processing
  // thread met (e.g. the tap's disk full) is rethrown here.
  void finish();

  // The real-time side: in (frames) captured or null, out (frames) to play or null.
  void audio_callback(const float* in, float* out, size_t frames) noexcept;
  void note_device_xrun() noexcept { device_xruns_.fetch_add(1, std::memory_order_relaxed); }
  void note_device_latency(double seconds) noexcept { device_latency_.store(seconds, std::memory_order_relaxed); }

  PipelineStats stats() const;
  size_t prefill() const { return opt_.prefill; }
  int rate() const { return opt_.rate; }

 private:
  struct Gap {
    uint64_t position;  // input frame where the dropped frames belonged
    uint64_t frames;
  };
  void run() noexcept;
  void emit(const float* y, size_t n);

  BlockProcessor& proc_;
  PipelineOptions opt_;
  Sink* tap_;
  SpscRing<float> in_ring_, out_ring_;
  SpscRing<Gap> gaps_;
  sem_t wake_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;

  // Callback-side state (touched by the callback only).
  uint64_t cb_position_ = 0;  // input frames seen
  uint64_t debt_ = 0;         // output frames owed: played as silence, to be skipped

  std::vector<float> x_, y_;  // (max_block), (max_output(max_block)) processing scratch

  std::atomic<uint64_t> captured_{0}, processed_{0}, played_{0}, dropped_frames_{0}, dropped_blocks_{0},
      underrun_frames_{0}, underruns_{0}, skipped_{0}, device_xruns_{0}, lost_gaps_{0};
  std::atomic<double> busy_s_{0};
  std::atomic<float> input_rms_{0};
  std::atomic<double> device_latency_{-1};
};

}  // namespace ssm
