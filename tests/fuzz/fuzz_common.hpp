// Shared by the fuzz targets. A target checks more than "no crash": a broken
// promise of the parser (a wrong count, a round trip that changes the value,
// an error type other than ssm::Error) aborts with a message, which libFuzzer
// reports like a crash and saves the input for a regression test.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

namespace ssm_fuzz {

[[noreturn]] inline void broken(const std::string& what) {
  std::fprintf(stderr, "fuzz target: broken invariant: %s\n", what.c_str());
  std::abort();
}

// The const char* form costs nothing when the check holds: use it in loops.
inline void check(bool ok, const char* what) {
  if (!ok) broken(what);
}
inline void check(bool ok, const std::string& what) {
  if (!ok) broken(what);
}

}  // namespace ssm_fuzz
