#include "ssm/streams/pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>

#include "ssm/common.hpp"

namespace ssm {

DenoiseChainOptions DenoiseProcessor::options(int device_rate, size_t max_block, ResampleQuality q,
                                              bool carry_high_band) {
  DenoiseChainOptions o;
  o.rate = device_rate;
  o.max_block = max_block;
  o.quality = q;
  o.timing = ChainTiming::Streaming;
  o.carry_high_band = carry_high_band;
  return o;
}

DenoiseProcessor::DenoiseProcessor(const Model& model, int device_rate, size_t max_block, ResampleQuality q,
                                   bool carry_high_band)
    : chain_(model, options(device_rate, max_block, q, carry_high_band)) {}

size_t DenoiseProcessor::flush(float* out, size_t cap) {
  std::vector<float> tail;
  chain_.flush(tail);
  const size_t n = std::min(cap, tail.size());
  std::copy_n(tail.begin(), n, out);
  return n;
}

Pipeline::Pipeline(BlockProcessor& proc, const PipelineOptions& o, Sink* tap)
    : proc_(proc),
      opt_(o),
      tap_(tap),
      in_ring_(o.ring ? o.ring : std::max<size_t>(o.rate, 4 * o.prefill)),
      out_ring_(o.ring ? o.ring : std::max<size_t>(o.rate, 4 * o.prefill)),
      gaps_(1024) {
  require(o.rate > 0, "pipeline: the rate must be positive");
  require(o.max_block >= 1, "pipeline: max_block must be >= 1");
  require(o.prefill < out_ring_.capacity(), "pipeline: prefill larger than the ring");
  opt_.ring = in_ring_.capacity();
  x_.resize(o.max_block);
  y_.resize(std::max(proc.max_output(o.max_block), o.max_block) + 64);
  if (sem_init(&wake_, 0, 0) != 0) fail("pipeline: cannot create a semaphore");
  if (opt_.playback) out_ring_.push_fill(0.0f, opt_.prefill);
}

Pipeline::~Pipeline() {
  if (thread_.joinable()) {
    stopping_.store(true);
    sem_post(&wake_);
    thread_.join();
  }
  sem_destroy(&wake_);
}

void Pipeline::start() {
  require(!thread_.joinable(), "pipeline: already started");
  stopping_.store(false);
  thread_ = std::thread([this] { run(); });
}

void Pipeline::finish() {
  if (thread_.joinable()) {
    stopping_.store(true);
    sem_post(&wake_);
    thread_.join();
  }
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void Pipeline::audio_callback(const float* in, float* out, size_t frames) noexcept {
  if (in) {
    double ss = 0;
    for (size_t i = 0; i < frames; ++i) ss += double(in[i]) * in[i];
    input_rms_.store(frames ? static_cast<float>(std::sqrt(ss / frames)) : 0.0f, std::memory_order_relaxed);
    // All or nothing: a block that does not fit is dropped whole and its
    // place remembered, so the processing thread can fill it with silence.
    if (in_ring_.write_available() >= frames) {
      in_ring_.push(in, frames);
    } else {
      const Gap g{cb_position_, frames};
      if (gaps_.push(&g, 1) == 0)
        lost_gaps_.fetch_add(frames, std::memory_order_relaxed);
      dropped_frames_.fetch_add(frames, std::memory_order_relaxed);
      dropped_blocks_.fetch_add(1, std::memory_order_relaxed);
    }
    cb_position_ += frames;
    captured_.fetch_add(frames, std::memory_order_relaxed);
    sem_post(&wake_);  // async-signal-safe, never blocks
  }
  if (out) {
    if (debt_) {
      const size_t s = out_ring_.discard(debt_);
      debt_ -= s;
      if (s) skipped_.fetch_add(s, std::memory_order_relaxed);
    }
    const size_t got = out_ring_.pop(out, frames);
    if (got < frames) {
      std::fill(out + got, out + frames, 0.0f);
      debt_ += frames - got;
      underrun_frames_.fetch_add(frames - got, std::memory_order_relaxed);
      underruns_.fetch_add(1, std::memory_order_relaxed);
    }
    played_.fetch_add(frames, std::memory_order_relaxed);
  }
}

void Pipeline::emit(const float* y, size_t n) {
  if (n == 0) return;
  if (opt_.playback) {
    // Every frame goes in, in order: the callback's skipping of late frames
    // counts on it. A full ring means the callback is behind on skipping (after
    // a stall, a burst of late frames); it drains a ring's worth per call, so
    // wait for it here, on the processing thread. Once the device has stopped
    // (finish), nobody plays them: they are dropped.
    for (size_t put = 0; put < n;) {
      put += out_ring_.push(y + put, n - put);
      if (put < n) {
        if (stopping_.load()) break;
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    }
  }
  if (tap_) tap_->write(y, n);
}

void Pipeline::run() noexcept {
  try {
    uint64_t position = 0;  // input frames consumed, dropped ones included
    bool have_gap = false;
    Gap gap{};
    double busy = 0;
    for (;;) {
      const bool last_round = stopping_.load();
      for (;;) {
        if (!have_gap) have_gap = gaps_.pop(&gap, 1) == 1;
        if (have_gap && gap.position <= position) {
          // Silence where dropped input belonged keeps later output in place.
          std::fill(y_.begin(), y_.end(), 0.0f);
          for (uint64_t left = gap.frames; left > 0;) {
            const size_t k = static_cast<size_t>(std::min<uint64_t>(left, y_.size()));
            emit(y_.data(), k);
            left -= k;
          }
          position += gap.frames;
          have_gap = false;
          continue;
        }
        size_t take = std::min(in_ring_.read_available(), opt_.max_block);
        if (have_gap) take = static_cast<size_t>(std::min<uint64_t>(take, gap.position - position));
        if (take == 0) break;
        in_ring_.pop(x_.data(), take);
        const auto t0 = std::chrono::steady_clock::now();
        const size_t n = proc_.process(x_.data(), take, y_.data());
        busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        emit(y_.data(), n);
        position += take;
        processed_.fetch_add(take, std::memory_order_relaxed);
        busy_s_.store(busy, std::memory_order_relaxed);
      }
      if (last_round) break;
      timespec ts{};
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 50'000'000;  // wake now and then to notice a stop
      if (ts.tv_nsec >= 1'000'000'000) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1'000'000'000;
      }
      sem_timedwait(&wake_, &ts);
    }
    if (const uint64_t lost = lost_gaps_.load(); lost > 0) {
      // Gap records that did not fit their ring: the silence goes at the end.
      std::fill(y_.begin(), y_.end(), 0.0f);
      for (uint64_t left = lost; left > 0;) {
        const size_t k = static_cast<size_t>(std::min<uint64_t>(left, y_.size()));
        emit(y_.data(), k);
        left -= k;
      }
    }
    emit(y_.data(), proc_.flush(y_.data(), y_.size()));
    if (tap_) tap_->close();
  } catch (...) {
    error_ = std::current_exception();
  }
}

PipelineStats Pipeline::stats() const {
  PipelineStats s;
  s.captured = captured_.load(std::memory_order_relaxed);
  s.processed = processed_.load(std::memory_order_relaxed);
  s.played = played_.load(std::memory_order_relaxed);
  s.dropped_frames = dropped_frames_.load(std::memory_order_relaxed);
  s.dropped_blocks = dropped_blocks_.load(std::memory_order_relaxed);
  s.underrun_frames = underrun_frames_.load(std::memory_order_relaxed);
  s.underruns = underruns_.load(std::memory_order_relaxed);
  s.skipped_frames = skipped_.load(std::memory_order_relaxed);
  s.device_xruns = device_xruns_.load(std::memory_order_relaxed);
  const double audio = static_cast<double>(s.processed) / opt_.rate;
  s.rtf = audio > 0 ? busy_s_.load(std::memory_order_relaxed) / audio : 0;
  s.input_rms = input_rms_.load(std::memory_order_relaxed);
  s.prefill = opt_.prefill;
  s.device_latency_s = device_latency_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace ssm
