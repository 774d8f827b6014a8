// libFuzzer target for the anomaly detector's saved series state
// (Detector::load), which `ssm detect` reads back from its state file at
// start. Any bytes must either load or throw ssm::Error; a loaded state must
// save back to the same bytes, score further values, and still save and load.
//
// A state names the forecaster and config it belongs to by a fingerprint in
// bytes 8..15; the target writes the current detector's there, so that the
// seeds stay useful when the shipped forecaster or the defaults change and
// the fuzzer spends its time on the fields behind it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "ssm/common.hpp"
#include "ssm/detector.hpp"

using ssm_fuzz::check;

namespace {

const ssm::Detector& detector() {
  static const ssm::Detector d(ssm::Forecaster::builtin(), ssm::DetectorConfig{});
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ssm::Detector& d = detector();
  static const std::vector<uint8_t> fresh = d.save(d.new_series());
  std::vector<uint8_t> bytes(data, data + size);
  if (bytes.size() >= 16) std::memcpy(bytes.data() + 8, fresh.data() + 8, 8);

  ssm::SeriesState s;
  try {
    s = d.load(bytes);
  } catch (const ssm::Error&) {
    return 0;  // rejected: the expected outcome for most inputs
  }
  check(d.save(s) == bytes, "a loaded state saves to other bytes");
  // Further values at epochs the server can deliver (GraphiteParser: 0 ..
  // kMaxEpoch): after the saved one where there is room, else out of order.
  const double values[] = {0.0, s.hi[1], 1e6, s.lo[1], -3.5};
  constexpr int64_t kMaxEpoch = 253402300799;
  int64_t epoch = s.last_epoch >= 0 && s.last_epoch <= kMaxEpoch ? s.last_epoch : 1700000000;
  for (double v : values) {
    epoch = std::min(epoch + 300, kMaxEpoch);
    // Only that scoring runs (ASan and UBSan watch it). The score itself is
    // not checked: load() takes any finite moments, and ones far outside
    // what updates can produce (a channel mean near the largest double) give
    // a NaN score; see docs/HARDENING.md.
    (void)d.update(s, epoch, v);
  }
  const std::vector<uint8_t> saved = d.save(s);
  ssm::SeriesState again;
  try {
    again = d.load(saved);
  } catch (const ssm::Error&) {
    return 0;  // such a state can turn NaN, which load() refuses (see above)
  }
  check(d.save(again) == saved, "a state that scored on does not round-trip");
  return 0;
}
