#include "ssm/denoise_chain.hpp"

#include <algorithm>
#include <cmath>

#include "ssm/common.hpp"

namespace ssm {

// One channel's own path: its converters and its stream state.
struct DenoiseChain::Channel {
  Resampler down, up;
  Stream stream;
  std::vector<float> x;            // (max_block) the channel's input at the audio rate
  std::vector<float> m_in, m_out;  // (down.max_output(max_block)) at the model rate
  std::vector<float> y;            // (up.max_output(m_in.size())) back at the audio rate
  size_t dropped = 0;              // Aligned: model-rate outputs dropped so far (up to the latency)

  Channel(const Model& model, const DenoiseChainOptions& o)
      : down(o.rate, model.config().sample_rate, o.quality),
        up(model.config().sample_rate, o.rate, o.quality),
        stream(model, o.model_block > 0 ? o.model_block
                                        : static_cast<int>(std::min<size_t>(down.max_output(o.max_block), 4096))) {
    x.resize(o.max_block);
    m_in.resize(down.max_output(o.max_block));
    m_out.resize(m_in.size());
    y.resize(up.max_output(m_in.size()));
  }
};

DenoiseChain::DenoiseChain(const Model& model, const DenoiseChainOptions& o) : model_(model), o_(o) {
  const ModelConfig& c = model.config();
  require(c.in_channels == 1 && c.out_channels == 1, "denoiser chain: the model must be mono in and out");
  require(o.rate > 0, "denoiser chain: the rate must be positive, got " + std::to_string(o.rate));
  require(o.channels >= 1 && o.channels <= 64,
          "denoiser chain: channels must be in 1..64, got " + std::to_string(o.channels));
  require(o.max_block >= 1, "denoiser chain: max_block must be >= 1");
  out_channels_ = o.mono ? 1 : o.channels;
  d_model_ = static_cast<size_t>(c.latency());
  holdback_ = resampler_pair_holdback(o.rate, c.sample_rate, o.quality);
  dry_delay_ = o.timing == ChainTiming::Aligned ? 0 : static_cast<size_t>(std::lround(latency_frames()));
  for (int k = 0; k < out_channels_; ++k) ch_.push_back(std::make_unique<Channel>(model, o));
  mono_.resize(o.max_block);
  dry_cap_ = dry_delay_ + holdback_ + static_cast<size_t>(std::ceil(latency_frames())) + 2 * o.max_block + 1024;
  dry_.assign(dry_cap_ * out_channels_, 0.0f);
  if (o.timing == ChainTiming::Fixed) {
    const size_t variable = ch_[0]->up.max_output(ch_[0]->m_in.size());
    stage_.resize(variable * out_channels_);
    fifo_cap_ = holdback_ + variable + o.max_block;
    fifo_.assign(fifo_cap_ * out_channels_, 0.0f);
  }
  set_wet(o.wet);
  set_attenuation_limit_db(o.attenuation_limit_db);
  reset();
}

DenoiseChain::~DenoiseChain() = default;

int DenoiseChain::in_channels() const { return o_.channels; }
int DenoiseChain::out_channels() const { return out_channels_; }
int DenoiseChain::rate() const { return o_.rate; }

size_t DenoiseChain::max_output(size_t n) const {
  if (o_.timing == ChainTiming::Fixed) return n;
  return ch_[0]->up.max_output(ch_[0]->down.max_output(n));
}

double DenoiseChain::latency_frames() const {
  return static_cast<double>(model_.config().latency()) * o_.rate / model_.config().sample_rate;
}

size_t DenoiseChain::holdback() const { return holdback_; }

size_t DenoiseChain::total_latency() const {
  return dry_delay_ + (o_.timing == ChainTiming::Fixed ? holdback_ : 0);
}

uint64_t DenoiseChain::non_finite() const { return non_finite_; }
uint64_t DenoiseChain::first_non_finite() const { return first_non_finite_; }

void DenoiseChain::set_wet(float wet) {
  if (!std::isfinite(wet)) return;
  wet_ = std::clamp(wet, 0.0f, 1.0f);
  set_attenuation_limit_db(o_.attenuation_limit_db);
}

void DenoiseChain::set_attenuation_limit_db(float db) {
  if (!std::isfinite(db)) return;
  o_.attenuation_limit_db = std::max(db, 0.0f);
  const float g = o_.attenuation_limit_db > 0 ? std::pow(10.0f, -o_.attenuation_limit_db / 20) : 0.0f;
  wet_gain_ = wet_ * (1 - g);
  dry_gain_ = wet_ * g + (1 - wet_);
}

void DenoiseChain::reset() {
  for (auto& c : ch_) {
    c->down.reset();
    c->up.reset();
    c->stream.reset();
    c->dropped = 0;
  }
  std::fill(dry_.begin(), dry_.end(), 0.0f);
  in_count_ = out_count_ = 0;
  fifo_head_ = 0;
  fifo_fill_ = 0;
  if (o_.timing == ChainTiming::Fixed) {
    std::fill(fifo_.begin(), fifo_.end(), 0.0f);
    fifo_fill_ = holdback_;  // the priming silence
  }
}

// Mixes the dry input back into `frames` frames of denoised output (which
// start at out_count_), then counts them out.
void DenoiseChain::mix(float* out, size_t frames) {
  const int C = out_channels_;
  if (dry_gain_ != 0.0f) {
    for (size_t j = 0; j < frames; ++j) {
      const uint64_t pos = out_count_ + j;
      const bool have = pos >= dry_delay_ && pos - dry_delay_ < in_count_;
      const float* dry = dry_.data() + ((pos - dry_delay_) % dry_cap_) * C;
      for (int c = 0; c < C; ++c) out[j * C + c] = wet_gain_ * out[j * C + c] + (have ? dry_gain_ * dry[c] : 0.0f);
    }
  }
  out_count_ += frames;
}

size_t DenoiseChain::run(const float* in, size_t n, float* out) {
  const int C_in = o_.channels, C = out_channels_;
  const bool aligned = o_.timing == ChainTiming::Aligned;
  // The inputs, non-finite ones as silence, per channel (or mixed down).
  for (size_t t = 0; t < n; ++t) {
    float sum = 0;
    for (int c = 0; c < C_in; ++c) {
      float v = in[t * C_in + c];
      if (!std::isfinite(v)) {
        v = 0;
        if (non_finite_++ == 0) first_non_finite_ = in_count_ + t;
      }
      if (o_.mono)
        sum += v;
      else
        ch_[c]->x[t] = v;
    }
    if (o_.mono) ch_[0]->x[t] = sum / static_cast<float>(C_in);
    float* dry = dry_.data() + ((in_count_ + t) % dry_cap_) * C;
    for (int c = 0; c < C; ++c) dry[c] = ch_[c]->x[t];
  }
  size_t frames = 0;
  for (int c = 0; c < C; ++c) {
    Channel& k = *ch_[c];
    const size_t m = k.down.process(k.x.data(), n, k.m_in.data(), k.m_in.size());
    k.stream.process(k.m_in.data(), k.m_out.data(), m);
    const size_t skip = aligned ? std::min(m, d_model_ - k.dropped) : 0;
    k.dropped += skip;
    // Every channel's converters see the same counts: they give the same count.
    frames = k.up.process(k.m_out.data() + skip, m - skip, k.y.data(), k.y.size());
    for (size_t t = 0; t < frames; ++t) out[t * C + c] = k.y[t];
  }
  in_count_ += n;
  mix(out, frames);
  return frames;
}

size_t DenoiseChain::process(const float* in, size_t n, float* out) {
  require(n <= o_.max_block, "denoiser chain: " + std::to_string(n) + " frames in one call, more than max_block " +
                                 std::to_string(o_.max_block));
  if (o_.timing != ChainTiming::Fixed) return run(in, n, out);
  const int C = out_channels_;
  const size_t got = run(in, n, stage_.data());
  // Sized for the most that can wait: never overflows; the priming makes
  // sure n frames are there.
  for (size_t t = 0; t < got && fifo_fill_ < fifo_cap_; ++t, ++fifo_fill_)
    std::copy_n(stage_.data() + t * C, C, fifo_.data() + ((fifo_head_ + fifo_fill_) % fifo_cap_) * C);
  const size_t give = std::min(n, fifo_fill_);
  for (size_t t = 0; t < give; ++t)
    std::copy_n(fifo_.data() + ((fifo_head_ + t) % fifo_cap_) * C, C, out + t * C);
  std::fill(out + give * C, out + n * C, 0.0f);
  fifo_head_ = (fifo_head_ + give) % fifo_cap_;
  fifo_fill_ -= give;
  return n;
}

void DenoiseChain::flush(std::vector<float>& out) {
  const int C = out_channels_;
  const bool aligned = o_.timing == ChainTiming::Aligned;
  if (o_.timing == ChainTiming::Fixed) {
    for (size_t t = 0; t < fifo_fill_; ++t)
      out.insert(out.end(), fifo_.begin() + ((fifo_head_ + t) % fifo_cap_) * C,
                 fifo_.begin() + ((fifo_head_ + t) % fifo_cap_ + 1) * C);
    fifo_fill_ = 0;
  }
  std::vector<std::vector<float>> tail(C);  // (frames) per channel
  for (int c = 0; c < C; ++c) {
    Channel& k = *ch_[c];
    auto through_model = [&](size_t m) {
      k.stream.process(k.m_in.data(), k.m_out.data(), m);
      const size_t skip = aligned ? std::min(m, d_model_ - k.dropped) : 0;
      k.dropped += skip;
      const size_t got = k.up.process(k.m_out.data() + skip, m - skip, k.y.data(), k.y.size());
      tail[c].insert(tail[c].end(), k.y.begin(), k.y.begin() + got);
    };
    through_model(k.down.process(nullptr, 0, k.m_in.data(), k.m_in.size(), true));
    // Aligned: the last d outputs need d more inputs, zeros.
    for (size_t left = aligned ? d_model_ : 0; left > 0;) {
      const size_t m = std::min(left, k.m_in.size());
      std::fill_n(k.m_in.data(), m, 0.0f);
      through_model(m);
      left -= m;
    }
    const size_t got = k.up.process(nullptr, 0, k.y.data(), k.y.size(), true);
    tail[c].insert(tail[c].end(), k.y.begin(), k.y.begin() + got);
  }
  const size_t frames = tail[0].size(), at = out.size();
  out.resize(at + frames * C);
  for (size_t t = 0; t < frames; ++t)
    for (int c = 0; c < C; ++c) out[at + t * C + c] = tail[c][t];
  mix(out.data() + at, frames);
}

}  // namespace ssm
