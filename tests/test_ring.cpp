// The SPSC ring: semantics on one thread, then a producer and a consumer on
// two threads moving a counting sequence in random pieces (scripts/sanitize
// tsan runs these under ThreadSanitizer).
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "ssm/streams/ring.hpp"

TEST(Ring, CapacityIsAPowerOfTwo) {
  EXPECT_EQ(ssm::SpscRing<float>(1).capacity(), 1u);
  EXPECT_EQ(ssm::SpscRing<float>(5).capacity(), 8u);
  EXPECT_EQ(ssm::SpscRing<float>(1024).capacity(), 1024u);
  EXPECT_THROW(ssm::SpscRing<float>(0), ssm::Error);
}

TEST(Ring, PartialPushPopWrapDiscardFill) {
  ssm::SpscRing<int> r(8);
  std::vector<int> a(10);
  std::iota(a.begin(), a.end(), 0);
  EXPECT_EQ(r.push(a.data(), 10), 8u);  // only what fits
  EXPECT_EQ(r.write_available(), 0u);
  EXPECT_EQ(r.read_available(), 8u);
  int b[8];
  EXPECT_EQ(r.pop(b, 5), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b[i], i);
  EXPECT_EQ(r.push(a.data() + 8, 2), 2u);  // wraps around the end
  EXPECT_EQ(r.discard(2), 2u);
  EXPECT_EQ(r.push_fill(-1, 10), 5u);  // 7, 8, 9 are left: 5 free
  EXPECT_EQ(r.pop(b, 8), 8u);
  const int want[8] = {7, 8, 9, -1, -1, -1, -1, -1};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(b[i], want[i]);
  EXPECT_EQ(r.pop(b, 1), 0u);
  EXPECT_EQ(r.discard(3), 0u);
}

TEST(Ring, TwoThreadsMoveASequenceIntact) {
  ssm::SpscRing<uint32_t> r(1024);
  const uint32_t total = 2'000'000;
  std::thread producer([&] {
    std::mt19937 rng(1);
    std::vector<uint32_t> chunk(700);
    uint32_t next = 0;
    while (next < total) {
      const uint32_t n = std::min<uint32_t>(1 + rng() % 700, total - next);
      for (uint32_t i = 0; i < n; ++i) chunk[i] = next + i;
      uint32_t put = 0;
      while (put < n) {
        put += static_cast<uint32_t>(r.push(chunk.data() + put, n - put));
        if (put < n) std::this_thread::yield();
      }
      next += n;
    }
  });
  std::mt19937 rng(2);
  std::vector<uint32_t> got(700);
  uint32_t expect = 0;
  bool ok = true;
  while (expect < total) {
    const size_t n = r.pop(got.data(), 1 + rng() % 700);
    for (size_t i = 0; i < n; ++i) ok &= got[i] == expect++;
    if (n == 0) std::this_thread::yield();
  }
  producer.join();
  EXPECT_TRUE(ok);
  EXPECT_EQ(r.read_available(), 0u);
}
