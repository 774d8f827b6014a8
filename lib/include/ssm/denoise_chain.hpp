// The denoiser chain, the one path from audio to denoised audio that the
// file CLI, the live pipeline, the LADSPA plugin and the C API all take:
//
//   in (n, C) -> per channel: non-finite -> 0, audio rate -> model rate,
//   Stream (its own state), model rate -> audio rate -> dry/wet and
//   attenuation limit -> out (m, C)
//
// Every channel is denoised with its own stream state (stereo stays stereo);
// with `mono` the channels are mixed down first and one stream runs.
//
// Timing, chosen once:
//  - Aligned (files): output frame i estimates the clean input frame i. The
//    model's latency d (its lookahead and frame wait) is taken out at the
//    model rate: its first d outputs are dropped, and flush() feeds d zeros.
//    Output and input have the same length up to the converters' rounding.
//  - Streaming (the live pipeline): output frame j estimates input frame
//    j - latency_frames(); process() returns what the converters let go.
//  - Fixed (plugins, the C API): process() returns exactly n frames: the
//    output starts with holdback() frames of silence, then the Streaming
//    output, so output j estimates input j - total_latency().
//
// Dry/wet and the attenuation limit (DeepFilterNet's atten_lim_db) mix the
// input back in, delayed to line up with the denoised signal:
//   g = 10^(-limit/20) (0 when the limit is 0: none)
//   out = wet * ((1 - g) * denoised + g * dry) + (1 - wet) * dry
// so the limit caps how far the chain may pull any sound down, and wet 0 is
// the input alone. At rates where the model latency is not a whole number of
// frames the dry path is delayed by the nearest whole number.
//
// The band above the model's (carry_high_band; at rates above the model's
// only): the converters keep what lies below half the model's rate, so
// each channel's high band is its input less that input through the same
// conversion (the model's input brought back to the audio rate):
//   high = x - up(down(x))      (exact complement: low + high = x)
// It joins the denoised signal, delayed as the dry path is, at a gain that
// follows how much the model took out of the top of its own band (the
// quarter of its rate up to half, 4-8 kHz at 16 kHz): per 10 ms block of
// the model's output, sqrt(band energy out / band energy in), at most 1,
// smoothed (fast to open, slower to close), applied a block late so that
// it is known before any output needs it (causal: every block size and
// timing gives the same samples) and ramped linearly across a block:
//   denoised_full = denoised + gain * high
// The mix above then works on the full band, so the attenuation limit and
// dry/wet hold above the model's band as they do within it.
//
// process() allocates nothing and takes no lock (the plugin's run() and the
// C API call it on audio threads); the constructor and flush() allocate.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ssm/model.hpp"
#include "ssm/resampler.hpp"

namespace ssm {

enum class ChainTiming { Aligned, Streaming, Fixed };

struct DenoiseChainOptions {
  int rate = 16000;       // the audio's frames per second
  int channels = 1;       // interleaved channels of the input
  bool mono = false;      // mix the channels down and write one channel
  size_t max_block = 4096;  // frames per process() call at most
  int model_block = 0;      // samples per pass through the model; 0: what max_block gives, at most 4096
  ResampleQuality quality = ResampleQuality::Best;
  ChainTiming timing = ChainTiming::Aligned;
  float attenuation_limit_db = 0;  // > 0: the most the chain may attenuate; 0: no limit
  float wet = 1;                   // 0..1: share of the denoised signal
  // Rates above the model's: carry the band above the model's range through
  // at the model's attenuation (true), or drop it as the converters do (false).
  bool carry_high_band = true;
};

class DenoiseChain {
 public:
  // The model must outlive the chain; it is mono in and out.
  DenoiseChain(const Model& model, const DenoiseChainOptions& o);
  ~DenoiseChain();
  DenoiseChain(const DenoiseChain&) = delete;
  DenoiseChain& operator=(const DenoiseChain&) = delete;

  int in_channels() const;
  int out_channels() const;
  int rate() const;
  // Output frames n input frames may give at most (Fixed: n).
  size_t max_output(size_t n) const;

  // in (n, in_channels) -> out (returned frames, out_channels), n <= max_block.
  // Non-finite input samples are taken as 0 (counted by non_finite()). With
  // Fixed timing, in and out may be the same buffer (equal channel counts).
  size_t process(const float* in, size_t n, float* out);
  // The end of the stream: appends to `out` (frames, out_channels) what the
  // converters and, when Aligned, the model's latency still hold. The chain
  // is then over until reset().
  void flush(std::vector<float>& out);
  // Forgets the past: the next process() starts from silence.
  void reset();

  // The controls (take effect at the next process()); out-of-range values
  // are clamped: limit >= 0 dB, wet in [0, 1]. Non-finite ones are ignored.
  void set_attenuation_limit_db(float db);
  void set_wet(float wet);

  // Whether the band above the model's range is carried through (the
  // option, at a rate above the model's).
  bool carries_high_band() const;

  // The model's latency at the audio rate (frames; not whole at some rates).
  double latency_frames() const;
  // Frames the converters can hold back (0 at the model's rate).
  size_t holdback() const;
  // Frames from an input to the output that estimates it: 0 when Aligned,
  // round(latency_frames()) when Streaming, plus holdback() when Fixed.
  size_t total_latency() const;
  uint64_t non_finite() const;
  uint64_t first_non_finite() const;  // the input frame of the first one

 private:
  struct Channel;
  struct Carry;
  void mix(float* out, size_t frames);
  size_t run(const float* in, size_t n, float* out);
  size_t through_model(Channel& k, size_t m);
  void split_high_band(int c, size_t m, bool end);
  float carry_gain(const Carry& k, uint64_t pos) const;

  const Model& model_;
  DenoiseChainOptions o_;
  int out_channels_;
  size_t d_model_;   // model latency in model-rate samples (dropped when Aligned)
  size_t dry_delay_;  // frames the dry path is delayed by
  size_t holdback_;
  std::vector<std::unique_ptr<Channel>> ch_;
  std::vector<float> mono_;                 // (max_block) one channel's input
  std::vector<float> dry_;                  // (dry_cap, out_channels) ring of the inputs, for the mix
  std::vector<float> high_;                 // carry: (dry_cap, out_channels) ring of the inputs' high band
  size_t dry_cap_ = 0;
  uint64_t in_count_ = 0, out_count_ = 0;   // frames in and out of the variable-rate part
  std::vector<float> fifo_;                 // Fixed: (fifo_cap, out_channels) ring of mixed output
  size_t fifo_cap_ = 0, fifo_head_ = 0, fifo_fill_ = 0;
  std::vector<float> stage_;                // Fixed: (max_output(max_block), out_channels) one call's output
  uint64_t non_finite_ = 0, first_non_finite_ = 0;
  float wet_ = 1, dry_gain_ = 0, wet_gain_ = 1;
  int carry_block_ = 1;                      // carry: model-rate samples per measured block
  float carry_open_ = 0, carry_close_ = 0;   // carry: per-block smoothing of a rising / falling gain
};

}  // namespace ssm
