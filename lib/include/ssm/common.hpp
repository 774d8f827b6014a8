// Shared vocabulary of the library: the error type and the letters of
// DESIGN.md §1 (B batch, T time, D width, E inner, H heads, P head dim,
// N state, G groups, K conv width, Q chunk, L layers).
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ssm {

// Every error the library reports: the message names the file / field /
// tensor and what was expected.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& what) { throw Error(what); }

inline void require(bool ok, const std::string& what) {
  if (!ok) fail(what);
}
// A literal message becomes a string only when the check fails, so checks
// on hot paths (the audio threads, a detector's update per value) allocate nothing.
inline void require(bool ok, const char* what) {
  if (!ok) fail(what);
}

}  // namespace ssm
