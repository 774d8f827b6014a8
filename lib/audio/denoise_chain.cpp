#include "ssm/denoise_chain.hpp"

#include <algorithm>
#include <cmath>

#include "ssm/common.hpp"

namespace ssm {

namespace {

// The carried band's gain is measured per block of the model's output, and
// opens fast (a voice's onset) and closes slower (no pumping between words).
constexpr int kCarryBlockMs = 10;
constexpr double kCarryOpenMs = 5, kCarryCloseMs = 50;
constexpr double kCarryEnergyFloor = 1e-10;  // per sample, -100 dBFS: silence reads as "nothing removed"

// A 4th-order Butterworth high-pass at a quarter of the rate, as two
// second-order sections (bilinear transform, where tan(pi / 4) = 1): the top
// of the model's band, where the carried band's gain is measured.
class QuarterRateHighPass {
 public:
  QuarterRateHighPass() {
    const double q[2] = {0.541196100146197, 1.306562964876377};  // 1 / (2 cos(k pi / 8)), k = 1, 3
    for (int i = 0; i < 2; ++i) {
      const double n = 2 + 1 / q[i];
      b0_[i] = static_cast<float>(1 / n);
      a2_[i] = static_cast<float>((2 - 1 / q[i]) / n);  // a1 = 2 (tan^2 - 1) / n = 0
    }
  }
  float operator()(float x) {
    for (int i = 0; i < 2; ++i) {  // transposed direct form II; b = b0 (1, -2, 1)
      const float y = b0_[i] * x + z_[i][0];
      z_[i][0] = -2 * b0_[i] * x + z_[i][1];
      z_[i][1] = b0_[i] * x - a2_[i] * y;
      x = y;
    }
    return x;
  }
  void reset() { *this = QuarterRateHighPass(); }

 private:
  float b0_[2], a2_[2];  // per section
  float z_[2][2] = {};   // (section, 2) state
};

}  // namespace

// One channel's carry of the band above the model's: the reference
// converter that gives the band the model sees, and the measure of how
// much the model takes out of the top of that band.
struct DenoiseChain::Carry {
  Resampler up;                        // model rate -> audio rate of the model's input alone
  std::vector<float> low;              // (up.max_output(model-rate block)) the band the model sees, audio rate
  uint64_t made = 0;                   // audio frames of high band made so far
  QuarterRateHighPass band_in, band_out;  // the top of the model's band, of its input and of its output
  std::vector<float> waiting;          // (d + 1) ring: band_in of the last inputs, until their estimate comes out
  uint64_t steps = 0;                  // model-rate samples through the stream so far
  double energy_in = 0, energy_out = 0;  // the current block's, in the top of the band
  float gain = 1;                      // smoothed, after the last complete block
  std::vector<float> gains;            // (gains_cap) ring: the smoothed gain after each block
  uint64_t blocks = 0;                 // complete blocks so far

  Carry(int model_rate, const DenoiseChainOptions& o, size_t model_block, size_t d, size_t gains_cap)
      : up(model_rate, o.rate, o.quality), waiting(d + 1, 0.0f), gains(gains_cap, 1.0f) {
    low.resize(up.max_output(model_block));
  }
  void reset() {
    up.reset();
    made = steps = blocks = 0;
    band_in.reset();
    band_out.reset();
    std::fill(waiting.begin(), waiting.end(), 0.0f);
    energy_in = energy_out = 0;
    gain = 1;
  }
};

// One channel's own path: its converters and its stream state.
struct DenoiseChain::Channel {
  Resampler down, up;
  Stream stream;
  std::vector<float> x;            // (max_block) the channel's input at the audio rate
  std::vector<float> m_in, m_out;  // (down.max_output(max_block)) at the model rate
  std::vector<float> y;            // (up.max_output(m_in.size())) back at the audio rate
  size_t dropped = 0;              // Aligned: model-rate outputs dropped so far (up to the latency)
  std::unique_ptr<Carry> carry;    // null unless the band above the model's is carried

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
  if (o.carry_high_band && o.rate > c.sample_rate) {
    carry_block_ = std::max(1, c.sample_rate * kCarryBlockMs / 1000);
    carry_open_ = static_cast<float>(1 - std::exp(-kCarryBlockMs / kCarryOpenMs));
    carry_close_ = static_cast<float>(1 - std::exp(-kCarryBlockMs / kCarryCloseMs));
    // The blocks measured but not yet applied: at most a call's and a
    // flush's model-rate samples, the latency and what the converter holds.
    const size_t model_block = ch_[0]->m_in.size();
    const size_t gains_cap = (2 * model_block + d_model_ + holdback_) / carry_block_ + 4;
    for (auto& k : ch_) k->carry = std::make_unique<Carry>(c.sample_rate, o, model_block, d_model_, gains_cap);
    high_.assign(dry_cap_ * out_channels_, 0.0f);
  }
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

bool DenoiseChain::carries_high_band() const { return ch_[0]->carry != nullptr; }
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
    if (c->carry) c->carry->reset();
  }
  std::fill(dry_.begin(), dry_.end(), 0.0f);
  std::fill(high_.begin(), high_.end(), 0.0f);
  in_count_ = out_count_ = 0;
  fifo_head_ = 0;
  fifo_fill_ = 0;
  if (o_.timing == ChainTiming::Fixed) {
    std::fill(fifo_.begin(), fifo_.end(), 0.0f);
    fifo_fill_ = holdback_;  // the priming silence
  }
}

// The gain of the carried band at output frame `pos`: the smoothed gain
// after block b - 2 of the model's output ramping to that after b - 1, b
// the block that pos falls in. Those blocks are complete before pos comes
// out (the converter back needs input past pos first), so the gain is the
// same whatever the block sizes; only the end of a flush reads past the
// last block, and takes it.
float DenoiseChain::carry_gain(const Carry& k, uint64_t pos) const {
  const uint64_t scaled = pos * static_cast<uint64_t>(model_.config().sample_rate);  // model-rate samples * rate
  const uint64_t per_block = static_cast<uint64_t>(o_.rate) * carry_block_;
  const uint64_t b = scaled / per_block;
  auto gain_before = [&](uint64_t block) {  // after the blocks before `block` (1 before any)
    if (block == 0 || k.blocks == 0) return 1.0f;
    return k.gains[(std::min(block, k.blocks) - 1) % k.gains.size()];
  };
  const float from = gain_before(b >= 1 ? b - 1 : 0), to = gain_before(b);
  const float u = static_cast<float>(static_cast<double>(scaled % per_block) / static_cast<double>(per_block));
  return from + u * (to - from);
}

// Mixes the dry input and the carried band back into `frames` frames of
// denoised output (which start at out_count_), then counts them out.
void DenoiseChain::mix(float* out, size_t frames) {
  const int C = out_channels_;
  const bool carry = !high_.empty() && wet_gain_ != 0.0f;
  if (dry_gain_ != 0.0f || carry) {
    for (size_t j = 0; j < frames; ++j) {
      const uint64_t pos = out_count_ + j;
      const bool have = pos >= dry_delay_ && pos - dry_delay_ < in_count_;
      const size_t at = ((pos - dry_delay_) % dry_cap_) * C;
      const float* dry = dry_.data() + at;
      for (int c = 0; c < C; ++c) {
        float v = out[j * C + c];
        if (carry && pos >= dry_delay_ && pos - dry_delay_ < ch_[c]->carry->made)
          v += carry_gain(*ch_[c]->carry, pos) * high_[at + c];
        out[j * C + c] = wet_gain_ * v + (have ? dry_gain_ * dry[c] : 0.0f);
      }
    }
  }
  out_count_ += frames;
}

// The band the model sees of channel c, from its next m model-rate inputs
// (k.m_in) back at the audio rate, taken from the input the dry ring holds:
// the high band, into its ring. With `end`, what the converter holds too.
void DenoiseChain::split_high_band(int c, size_t m, bool end) {
  const int C = out_channels_;
  Channel& k = *ch_[c];
  Carry& h = *k.carry;
  const size_t got = h.up.process(k.m_in.data(), m, h.low.data(), h.low.size(), end);
  for (size_t t = 0; t < got; ++t) {
    const uint64_t pos = h.made + t;
    const size_t at = (pos % dry_cap_) * C + c;
    high_[at] = (pos < in_count_ ? dry_[at] : 0.0f) - h.low[t];  // past the end the input is silence
  }
  h.made += got;
}

// The model over k.m_in[0, m) (its first d outputs dropped when Aligned)
// back at the audio rate into k.y; returns the frames. With the carry, the
// model's output is measured against its input as it goes.
size_t DenoiseChain::through_model(Channel& k, size_t m) {
  const bool aligned = o_.timing == ChainTiming::Aligned;
  k.stream.process(k.m_in.data(), k.m_out.data(), m);
  if (k.carry) {
    Carry& h = *k.carry;
    const size_t slots = h.waiting.size();
    for (size_t i = 0; i < m; ++i, ++h.steps) {
      // Output step t estimates input step t - d (zeros before the first).
      h.waiting[h.steps % slots] = h.band_in(k.m_in[i]);
      const float in = h.waiting[(h.steps + 1) % slots], out = h.band_out(k.m_out[i]);
      if (aligned && h.steps < d_model_) continue;  // dropped: estimates nothing
      h.energy_in += static_cast<double>(in) * in;
      h.energy_out += static_cast<double>(out) * out;
      const uint64_t fed = h.steps - (aligned ? d_model_ : 0) + 1;  // outputs through to the converter back
      if (fed % carry_block_ != 0) continue;
      const double floor = kCarryEnergyFloor * carry_block_;
      const float ratio = static_cast<float>(std::min(1.0, std::sqrt((h.energy_out + floor) / (h.energy_in + floor))));
      h.gain += (ratio > h.gain ? carry_open_ : carry_close_) * (ratio - h.gain);
      h.gains[h.blocks++ % h.gains.size()] = h.gain;
      h.energy_in = h.energy_out = 0;
    }
  }
  const size_t skip = aligned ? std::min(m, d_model_ - k.dropped) : 0;
  k.dropped += skip;
  return k.up.process(k.m_out.data() + skip, m - skip, k.y.data(), k.y.size());
}

size_t DenoiseChain::run(const float* in, size_t n, float* out) {
  const int C_in = o_.channels, C = out_channels_;
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
  in_count_ += n;
  size_t frames = 0;
  for (int c = 0; c < C; ++c) {
    Channel& k = *ch_[c];
    const size_t m = k.down.process(k.x.data(), n, k.m_in.data(), k.m_in.size());
    if (k.carry) split_high_band(c, m, false);
    // Every channel's converters see the same counts: they give the same count.
    frames = through_model(k, m);
    for (size_t t = 0; t < frames; ++t) out[t * C + c] = k.y[t];
  }
  mix(out, frames);
  return frames;
}

size_t DenoiseChain::process(const float* in, size_t n, float* out) {
  // The message is made only on failure: process() runs on audio threads.
  if (n > o_.max_block)
    fail("denoiser chain: " + std::to_string(n) + " frames in one call, more than max_block " +
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
    auto keep = [&](size_t got) { tail[c].insert(tail[c].end(), k.y.begin(), k.y.begin() + got); };
    const size_t m = k.down.process(nullptr, 0, k.m_in.data(), k.m_in.size(), true);
    if (k.carry) split_high_band(c, m, false);
    keep(through_model(k, m));
    // Aligned: the last d outputs need d more inputs, zeros.
    for (size_t left = aligned ? d_model_ : 0; left > 0;) {
      const size_t z = std::min(left, k.m_in.size());
      std::fill_n(k.m_in.data(), z, 0.0f);
      keep(through_model(k, z));
      left -= z;
    }
    if (k.carry) split_high_band(c, 0, true);
    keep(k.up.process(nullptr, 0, k.y.data(), k.y.size(), true));
  }
  const size_t frames = tail[0].size(), at = out.size();
  out.resize(at + frames * C);
  for (size_t t = 0; t < frames; ++t)
    for (int c = 0; c < C; ++c) out[at + t * C + c] = tail[c][t];
  mix(out.data() + at, frames);
}

}  // namespace ssm
