// Lock-free single-producer / single-consumer ring of samples between an audio
// callback and a processing thread. Capacity is a power of two; the two
// indices only grow (wrapping at 2^64) and are published with release and read
// with acquire, so the producer's samples are visible before the index that
// announces them. push/pop never allocate, lock or wait: they move what fits.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <memory>
#include <type_traits>

#include "ssm/common.hpp"

namespace ssm {

template <typename T>
class SpscRing {
  static_assert(std::is_trivially_copyable_v<T>, "the ring copies elements with memcpy");
  static_assert(std::atomic<size_t>::is_always_lock_free, "the ring needs lock-free atomics");

 public:
  // Allocates here only: at least `min_capacity` elements, rounded up to a power of two.
  explicit SpscRing(size_t min_capacity) {
    require(min_capacity >= 1 && min_capacity <= (size_t{1} << 40), "ring: capacity out of range");
    size_t cap = 1;
    while (cap < min_capacity) cap <<= 1;
    buf_.reset(new T[cap]());
    mask_ = cap - 1;
  }

  size_t capacity() const { return mask_ + 1; }
  // Elements the consumer can pop now (exact for the consumer, a lower bound elsewhere).
  size_t read_available() const {
    return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_relaxed);
  }
  // Elements the producer can push now (exact for the producer, a lower bound elsewhere).
  size_t write_available() const {
    return capacity() - (head_.load(std::memory_order_relaxed) - tail_.load(std::memory_order_acquire));
  }

  // Producer: copies min(n, free) elements in; returns how many.
  size_t push(const T* data, size_t n) {
    const size_t h = head_.load(std::memory_order_relaxed);
    const size_t t = tail_.load(std::memory_order_acquire);
    const size_t m = std::min(n, capacity() - (h - t));
    const size_t at = h & mask_, first = std::min(m, capacity() - at);
    std::memcpy(buf_.get() + at, data, first * sizeof(T));
    std::memcpy(buf_.get(), data + first, (m - first) * sizeof(T));
    head_.store(h + m, std::memory_order_release);
    return m;
  }
  // Producer: min(n, free) copies of `value`; returns how many.
  size_t push_fill(const T& value, size_t n) {
    const size_t h = head_.load(std::memory_order_relaxed);
    const size_t t = tail_.load(std::memory_order_acquire);
    const size_t m = std::min(n, capacity() - (h - t));
    for (size_t i = 0; i < m; ++i) buf_[(h + i) & mask_] = value;
    head_.store(h + m, std::memory_order_release);
    return m;
  }

  // Consumer: copies min(n, available) elements out; returns how many.
  size_t pop(T* data, size_t n) {
    const size_t t = tail_.load(std::memory_order_relaxed);
    const size_t h = head_.load(std::memory_order_acquire);
    const size_t m = std::min(n, h - t);
    const size_t at = t & mask_, first = std::min(m, capacity() - at);
    std::memcpy(data, buf_.get() + at, first * sizeof(T));
    std::memcpy(data + first, buf_.get(), (m - first) * sizeof(T));
    tail_.store(t + m, std::memory_order_release);
    return m;
  }
  // Consumer: drops min(n, available) elements; returns how many.
  size_t discard(size_t n) {
    const size_t t = tail_.load(std::memory_order_relaxed);
    const size_t m = std::min(n, head_.load(std::memory_order_acquire) - t);
    tail_.store(t + m, std::memory_order_release);
    return m;
  }

 private:
  std::unique_ptr<T[]> buf_;  // (capacity)
  size_t mask_ = 0;
  // On separate cache lines: each is written by one side only.
  alignas(64) std::atomic<size_t> head_{0};  // next write index (producer)
  alignas(64) std::atomic<size_t> tail_{0};  // next read index (consumer)
};

}  // namespace ssm
