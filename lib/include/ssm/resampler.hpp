// Streaming sample-rate conversion of a mono signal through libsamplerate:
// fed piece by piece, it gives the same samples as converting the whole
// signal at once (ssm::resample), with the output aligned to the input (no
// added delay, only samples held back until the filter has seen enough).
// Nothing allocates after construction, so the processing thread of a live
// pipeline and a plugin's run() can use it.
#pragma once
#include <cstddef>

typedef struct SRC_STATE_tag SRC_STATE;

namespace ssm {

enum class ResampleQuality { Best, Medium, Fastest };

class Resampler {
 public:
  Resampler(int from_rate, int to_rate, ResampleQuality q = ResampleQuality::Best);
  ~Resampler();
  Resampler(const Resampler&) = delete;
  Resampler& operator=(const Resampler&) = delete;
  Resampler(Resampler&& o) noexcept;

  bool passthrough() const { return state_ == nullptr; }
  double ratio() const { return ratio_; }
  // Output frames that n input frames can produce at most (with the held-back
  // samples of earlier calls); size `out` for this.
  size_t max_output(size_t n) const;

  // Converts all of `in` (n frames); returns the frames written to `out`
  // (at most `out_cap`, which must be >= max_output(n)). With `end`, the held
  // back samples are flushed too and the stream is over until reset().
  size_t process(const float* in, size_t n, float* out, size_t out_cap, bool end = false);
  void reset();

 private:
  SRC_STATE* state_ = nullptr;  // null when the rates are equal
  double ratio_ = 1.0;
  int from_ = 0, to_ = 0;
};

// Frames (at `outer_rate`) that a pair outer -> inner -> outer can hold back
// at most: after k inputs it has produced at least k - holdback outputs, so
// an output primed with this much silence never runs dry. Measured on
// silence, since libsamplerate does not state it; 0 when the rates are equal.
size_t resampler_pair_holdback(int outer_rate, int inner_rate, ResampleQuality q);

}  // namespace ssm
