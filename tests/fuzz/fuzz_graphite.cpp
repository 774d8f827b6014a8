// libFuzzer target for the incremental Graphite plaintext parser. The last
// bytes of the input choose the line limit and where the stream is cut; the
// rest is the stream. The same stream fed whole and fed in those pieces
// (empty ones included) must give the same points, errors (with the same
// details) and statistics; the counts must add up, every point must be
// well formed, and the carried buffer must stay within the line limit.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "ssm/streams/graphite.hpp"

using ssm_fuzz::check;

namespace {

struct Log {
  std::vector<std::string> events;  // "P path value-bits epoch" or "E kind detail"
  ssm::GraphiteStats stats;
};

// The path rules restated independently: name[;tag=value]..., the name's
// characters [A-Za-z0-9._:/@-] or bytes >= 0x80 (their UTF-8 is checked on
// the whole line), non-empty dot-separated components.
bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-' || c == ':' || c == '/' || c == '@' || static_cast<unsigned char>(c) >= 0x80;
}
bool path_ok(std::string_view p) {
  const std::string_view name = p.substr(0, p.find(';'));
  if (name.empty() || name.front() == '.' || name.back() == '.' || name.find("..") != name.npos) return false;
  for (char c : name)
    if (!name_char(c)) return false;
  if (name.size() == p.size()) return true;
  for (std::string_view tags = p.substr(name.size() + 1);;) {
    const std::string_view tag = tags.substr(0, tags.find(';'));
    const size_t eq = tag.find('=');
    if (eq == 0 || eq == tag.npos || eq + 1 == tag.size() || tag[eq + 1] == '~') return false;
    for (size_t i = 0; i < tag.size(); ++i)
      if (!name_char(tag[i]) && !(i >= eq && tag[i] == '=')) return false;
    if (tag.size() == tags.size()) return true;
    tags.remove_prefix(tag.size() + 1);
  }
}

int64_t fixed_clock() { return 1750000000; }

Log run(std::string_view bytes, const std::vector<size_t>& cuts, size_t max_line) {
  ssm::GraphiteParser parser(ssm::GraphiteLimits{max_line, fixed_clock});
  Log log;
  auto on_point = [&](std::string_view path, double value, int64_t epoch) {
    check(path_ok(path), "point with a bad path");
    check(std::isfinite(value), "point with a non-finite value");
    check(epoch >= 0 && epoch <= ssm::GraphiteParser::kMaxEpoch, "point with an epoch out of range");
    uint64_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    log.events.push_back("P " + std::string(path) + " " + std::to_string(bits) + " " + std::to_string(epoch));
  };
  auto on_error = [&](ssm::GraphiteError kind, std::string_view detail) {
    check(detail.size() < 256, "error detail longer than its buffer");
    log.events.push_back("E " + std::string(ssm::graphite_error_name(kind)) + " " + std::string(detail));
  };
  size_t at = 0;
  for (size_t cut : cuts) {
    parser.feed(std::span<const char>(bytes.data() + at, cut - at), on_point, on_error);
    check(parser.buffered() <= parser.buffer_capacity(), "buffer grew past the line limit");
    at = cut;
  }
  parser.feed(std::span<const char>(bytes.data() + at, bytes.size() - at), on_point, on_error);
  parser.finish(on_error);
  check(parser.buffered() == 0, "finish() left bytes buffered");
  log.stats = parser.stats();
  return log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // Small limits reach the too-long paths with short inputs.
  const size_t max_line = in.ConsumeBool() ? 4096 : in.ConsumeIntegralInRange<size_t>(16, 96);
  const int pieces = in.ConsumeIntegralInRange(0, 16);
  std::vector<uint16_t> cut_at;
  for (int i = 0; i < pieces; ++i) cut_at.push_back(in.ConsumeIntegral<uint16_t>());
  const std::string bytes = in.ConsumeRemainingBytesAsString();
  std::vector<size_t> cuts;  // sorted offsets into bytes; repeats give empty pieces
  for (uint16_t c : cut_at) cuts.push_back(bytes.empty() ? 0 : c % (bytes.size() + 1));
  std::sort(cuts.begin(), cuts.end());

  const Log whole = run(bytes, {}, max_line);
  const Log split = run(bytes, cuts, max_line);
  check(whole.events == split.events, "a split stream gave other points or errors");
  const ssm::GraphiteStats& s = whole.stats;
  check(s.bytes == bytes.size() && split.stats.bytes == s.bytes, "byte count");
  check(s.lines == split.stats.lines && s.points == split.stats.points && s.errors == split.stats.errors &&
            s.blank_lines == split.stats.blank_lines && s.nan_values == split.stats.nan_values &&
            s.by_kind == split.stats.by_kind,
        "a split stream gave other statistics");
  uint64_t by_kind = 0;
  for (uint64_t n : s.by_kind) by_kind += n;
  check(by_kind == s.errors, "errors by kind do not add up");
  check(s.lines == s.points + s.blank_lines + s.nan_values + s.errors,
        "lines are not points + blank lines + nan values + errors");
  check(whole.events.size() == s.points + s.errors, "a point or an error was counted but not reported");
  return 0;
}
