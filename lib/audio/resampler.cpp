#include "ssm/resampler.hpp"

#include <samplerate.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ssm/common.hpp"

namespace ssm {

namespace {

int converter(ResampleQuality q) {
  switch (q) {
    case ResampleQuality::Best: return SRC_SINC_BEST_QUALITY;
    case ResampleQuality::Medium: return SRC_SINC_MEDIUM_QUALITY;
    case ResampleQuality::Fastest: return SRC_SINC_FASTEST;
  }
  return SRC_SINC_BEST_QUALITY;
}

}  // namespace

Resampler::Resampler(int from_rate, int to_rate, ResampleQuality q) : from_(from_rate), to_(to_rate) {
  require(from_rate > 0 && to_rate > 0, "resampler: sample rates must be positive, got " + std::to_string(from_rate) +
                                            " Hz -> " + std::to_string(to_rate) + " Hz");
  ratio_ = static_cast<double>(to_rate) / from_rate;
  require(ratio_ >= 1.0 / 256 && ratio_ <= 256,
          "resampler: " + std::to_string(from_rate) + " Hz -> " + std::to_string(to_rate) + " Hz is out of range");
  if (from_rate == to_rate) return;
  int err = 0;
  state_ = src_new(converter(q), 1, &err);
  if (!state_) fail(std::string("resampler: cannot create libsamplerate state: ") + src_strerror(err));
}

Resampler::~Resampler() {
  if (state_) src_delete(state_);
}

Resampler::Resampler(Resampler&& o) noexcept : state_(o.state_), ratio_(o.ratio_), from_(o.from_), to_(o.to_) {
  o.state_ = nullptr;
}

size_t Resampler::max_output(size_t n) const {
  if (!state_) return n;
  // The converter may also release the samples it holds back from earlier
  // calls: less than its filter's reach, which stays under 8192 input frames.
  return static_cast<size_t>(std::ceil(n * ratio_)) + static_cast<size_t>(std::ceil(ratio_ * 8192)) + 64;
}

size_t Resampler::process(const float* in, size_t n, float* out, size_t out_cap, bool end) {
  if (!state_) {
    // (Tested before the message is made: process() runs on audio threads.)
    if (out_cap < n) fail("resampler: output buffer too small");
    if (n && out != in) std::memmove(out, in, n * sizeof(float));
    return n;
  }
  // libsamplerate flushes nothing for a null input pointer, even with no input.
  static const float kNoInput = 0.0f;
  if (!in) in = &kNoInput;
  size_t written = 0;
  SRC_DATA d{};
  d.src_ratio = ratio_;
  for (;;) {
    d.data_in = in;
    d.input_frames = static_cast<long>(n);
    d.data_out = out + written;
    d.output_frames = static_cast<long>(out_cap - written);
    d.end_of_input = end ? 1 : 0;
    if (const int err = src_process(state_, &d)) fail(std::string("resampler: ") + src_strerror(err));
    in += d.input_frames_used;
    n -= static_cast<size_t>(d.input_frames_used);
    written += static_cast<size_t>(d.output_frames_gen);
    if (n == 0 && (!end || d.output_frames_gen == 0)) break;
    if (written >= out_cap && (n != 0 || end)) fail("resampler: output buffer too small");
  }
  return written;
}

void Resampler::reset() {
  if (state_) src_reset(state_);
}

size_t resampler_pair_holdback(int outer_rate, int inner_rate, ResampleQuality q) {
  if (outer_rate == inner_rate) return 0;
  Resampler down(outer_rate, inner_rate, q), up(inner_rate, outer_rate, q);
  const size_t chunk = 8, total = static_cast<size_t>(outer_rate);  // one second: past the filters' reach
  std::vector<float> x(chunk, 0.0f), m(down.max_output(chunk)), y(up.max_output(m.size()));
  size_t fed = 0, got = 0, worst = 0;
  while (fed < total) {
    const size_t k = down.process(x.data(), chunk, m.data(), m.size());
    got += up.process(m.data(), k, y.data(), y.size());
    fed += chunk;
    worst = std::max(worst, fed - std::min(fed, got));
  }
  return worst + chunk;  // measured at chunk ends: allow for the samples in between
}

}  // namespace ssm
