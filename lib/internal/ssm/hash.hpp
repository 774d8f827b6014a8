// 64-bit FNV-1a, the one hash of the library: fingerprints of configs and
// weights (a snapshot restores only into the model it came from) and the
// checksums of state files. Not for anything an adversary chooses.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ssm {

constexpr uint64_t kFnv1aBasis = 1469598103934665603ull;

// Continues the hash `h` over n bytes; chain calls to hash several pieces.
inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnv1aBasis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

inline uint64_t fnv1a(std::string_view text, uint64_t h = kFnv1aBasis) { return fnv1a(text.data(), text.size(), h); }

}  // namespace ssm
