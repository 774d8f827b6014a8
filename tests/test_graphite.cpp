// Graphite plaintext parser: the same byte stream split at every point (and
// fed byte by byte) gives the same points and errors; one case per error
// kind, counted and named; a long line is dropped with a fixed buffer and the
// next line still parses; random bytes never crash and keep the counts whole.
#include "ssm/streams/graphite.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "ssm/common.hpp"

// Counts heap allocations of this test program, to check the parser's steady state.
static std::atomic<uint64_t> g_allocations{0};
void* operator new(size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace {

using ssm::GraphiteError;
using ssm::GraphiteParser;

// What a parser reported, in order, as comparable text.
struct Log {
  std::vector<std::string> events;  // "P path value epoch" or "E kind detail"
  ssm::GraphiteStats stats;
};

std::string point_text(std::string_view path, double value, int64_t epoch) {
  char buf[64];
  std::snprintf(buf, sizeof buf, " %.17g %lld", value, static_cast<long long>(epoch));
  return "P " + std::string(path) + buf;
}

// Feeds `bytes` cut at the given offsets (sorted), then finish().
Log run(std::string_view bytes, const std::vector<size_t>& cuts, ssm::GraphiteLimits limits = {}) {
  GraphiteParser parser(limits);
  Log log;
  auto on_point = [&](std::string_view path, double value, int64_t epoch) {
    log.events.push_back(point_text(path, value, epoch));
  };
  auto on_error = [&](GraphiteError kind, std::string_view detail) {
    log.events.push_back("E " + std::string(ssm::graphite_error_name(kind)) + " " + std::string(detail));
  };
  size_t at = 0;
  for (size_t cut : cuts) {
    parser.feed(std::span<const char>(bytes.data() + at, cut - at), on_point, on_error);
    at = cut;
  }
  parser.feed(std::span<const char>(bytes.data() + at, bytes.size() - at), on_point, on_error);
  parser.finish(on_error);
  log.stats = parser.stats();
  return log;
}

Log run_whole(std::string_view bytes, ssm::GraphiteLimits limits = {}) { return run(bytes, {}, limits); }

void expect_same(const Log& a, const Log& b, const std::string& what) {
  ASSERT_EQ(a.events, b.events) << what;
  EXPECT_EQ(a.stats.lines, b.stats.lines) << what;
  EXPECT_EQ(a.stats.points, b.stats.points) << what;
  EXPECT_EQ(a.stats.blank_lines, b.stats.blank_lines) << what;
  EXPECT_EQ(a.stats.nan_values, b.stats.nan_values) << what;
  EXPECT_EQ(a.stats.by_kind, b.stats.by_kind) << what;
  EXPECT_EQ(a.stats.bytes, b.stats.bytes) << what;
}

// One line of every kind, good and bad, with both line ends; a long line for a
// 64-byte limit; and a partial line at the end.
std::string mixed_stream() {
  std::string s;
  s += "servers.web-1.cpu 12.5 1700000000\n";
  s += "a.b 1 1700000001\r\n";
  s += "\t a.b \t -2.5e-3   1700000002.75  \n";  // spaces and tabs around and between
  s += "\n";
  s += "   \r\n";
  s += "only.two 1\n";
  s += "a b c d\n";
  s += "a..b 1 1700000003\n";
  s += "a.b abc 1700000004\n";
  s += "a.b nan 1700000005\n";  // collectd's missing rate: a nan value, no error
  s += "a.b inf 1700000005\n";
  s += "a.b 1 17000x\n";
  s += "a.b 1 -5\n";
  s += std::string(100, 'x') + " 1 1700000006\n";  // over 64 bytes
  s += "a.b 1 1700000007\n";
  s += std::string("a.b\0 1 1700000008\n", 18);
  s += "a.b 1\r 1700000009\n";
  s += "ok:path_1 +3 0\n";
  s += "partial.line 1 17000";
  return s;
}

TEST(Graphite, ParsesGoodLines) {
  const Log log = run_whole(
      "servers.web-1.cpu 12.5 1700000000\n"
      "a.b 1 1700000001\r\n"
      "\t a.b \t -2.5e-3   1700000002.75  \n"
      "Az09._-:x 1e-400 253402300799\n");
  EXPECT_EQ(log.events, (std::vector<std::string>{
                            point_text("servers.web-1.cpu", 12.5, 1700000000),
                            point_text("a.b", 1, 1700000001),
                            point_text("a.b", -2.5e-3, 1700000002),  // fraction truncated
                            point_text("Az09._-:x", 0.0, 253402300799),  // underflow reads as 0
                        }));
  EXPECT_EQ(log.stats.lines, 4u);
  EXPECT_EQ(log.stats.points, 4u);
  EXPECT_EQ(log.stats.errors, 0u);
}

// What carbon accepts and collectd sends: tagged paths (kept whole, as the
// series' identity), '/', '@' and UTF-8 in names, float and exponent epochs
// (truncated), -1 meaning now, and "nan" values counted apart from errors.
int64_t fixed_clock() { return 1750000000; }

TEST(Graphite, AcceptsCarbonAndCollectdConventions) {
  ssm::GraphiteLimits limits;
  limits.clock = fixed_clock;
  const Log log = run_whole(
      "cpu.user;host=web-1;dc=eu 1 1700000000\n"
      "disk;path=/var/log;mode=a=b 2 1700000001\n"
      "collectd/host@example.com/if_octets.rx 3 1700000002\n"
      "caf\xc3\xa9.\xe6\xb8\xa9\xe5\xba\xa6.\xf0\x9f\x94\xa5 4 1700000003\n"
      "a.b 5 1.7e9\n"
      "a.b 6 1700000004.999\n"
      "a.b 7 +1700000005\n"
      "a.b 8 -1\n"
      "a.b 9 -1.0\n"
      "a.b nan 1700000006\n"
      "a.b -NaN 1700000007\n"
      "a.b NAN -1\n",
      limits);
  EXPECT_EQ(log.events, (std::vector<std::string>{
                            point_text("cpu.user;host=web-1;dc=eu", 1, 1700000000),
                            point_text("disk;path=/var/log;mode=a=b", 2, 1700000001),
                            point_text("collectd/host@example.com/if_octets.rx", 3, 1700000002),
                            point_text("caf\xc3\xa9.\xe6\xb8\xa9\xe5\xba\xa6.\xf0\x9f\x94\xa5", 4, 1700000003),
                            point_text("a.b", 5, 1700000000),
                            point_text("a.b", 6, 1700000004),
                            point_text("a.b", 7, 1700000005),
                            point_text("a.b", 8, 1750000000),
                            point_text("a.b", 9, 1750000000),
                        }));
  EXPECT_EQ(log.stats.nan_values, 3u);
  EXPECT_EQ(log.stats.errors, 0u);
  EXPECT_EQ(log.stats.lines, 12u);
  // Without a clock of its own, -1 is the system's now.
  const int64_t before = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
  const Log now = run_whole("a.b 1 -1\n");
  const int64_t after = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
  ASSERT_EQ(now.stats.points, 1u);
  const int64_t got = std::stoll(now.events[0].substr(now.events[0].rfind(' ') + 1));
  EXPECT_GE(got, before);
  EXPECT_LE(got, after);
}

TEST(Graphite, EachErrorKindIsCountedAndNamed) {
  struct Case {
    std::string line;
    GraphiteError kind;
    std::string detail;  // substring of the detail
  };
  const std::vector<Case> cases = {
      {"only.two 1\n", GraphiteError::missing_fields, "line 1: expected 'path value epoch', 'only.two 1'"},
      {"onlypath\n", GraphiteError::missing_fields, "'onlypath'"},
      {"a b c d\n", GraphiteError::extra_fields, "'a b c d'"},
      {"a..b 1 1\n", GraphiteError::bad_path, "'a..b'"},
      {".a 1 1\n", GraphiteError::bad_path, "'.a'"},
      {"a. 1 1\n", GraphiteError::bad_path, "'a.'"},
      {"a;tag 1 1\n", GraphiteError::bad_path, "'a;tag'"},
      {"a;=1 1 1\n", GraphiteError::bad_path, "'a;=1'"},
      {"a;t= 1 1\n", GraphiteError::bad_path, "'a;t='"},
      {"a;t=~x 1 1\n", GraphiteError::bad_path, "'a;t=~x'"},
      {"a;t=1; 1 1\n", GraphiteError::bad_path, "'a;t=1;'"},
      {";t=1 1 1\n", GraphiteError::bad_path, "';t=1'"},
      {"a..b;t=1 1 1\n", GraphiteError::bad_path, "'a..b;t=1'"},
      {"a#b 1 1\n", GraphiteError::bad_path, "'a#b'"},
      {"a\"b 1 1\n", GraphiteError::bad_path, "'a\"b'"},
      {"a.b abc 1\n", GraphiteError::bad_value, "value: expected a decimal number, 'abc'"},
      {"a.b 0x10 1\n", GraphiteError::bad_value, "'0x10'"},
      {"a.b 1,5 1\n", GraphiteError::bad_value, "'1,5'"},
      {"a.b inf 1\n", GraphiteError::non_finite_value, "value: expected a finite number, 'inf'"},
      {"a.b -inf 1\n", GraphiteError::non_finite_value, "'-inf'"},
      {"a.b 1e999 1\n", GraphiteError::non_finite_value, "'1e999'"},
      {"a.b 1 17000x\n", GraphiteError::bad_epoch, "epoch: expected seconds since 1970 (a number, or -1: now), '17000x'"},
      {"a.b 1 1.7e\n", GraphiteError::bad_epoch, "'1.7e'"},
      {"a.b 1 0x10\n", GraphiteError::bad_epoch, "'0x10'"},
      {"a.b 1 -\n", GraphiteError::bad_epoch, "'-'"},
      {"a.b 1 -5\n", GraphiteError::epoch_range, "'-5'"},
      {"a.b 1 -1.5\n", GraphiteError::epoch_range, "'-1.5'"},
      {"a.b 1 -2\n", GraphiteError::epoch_range, "'-2'"},
      {"a.b 1 3e11\n", GraphiteError::epoch_range, "'3e11'"},
      {"a.b 1 1e999\n", GraphiteError::epoch_range, "'1e999'"},
      {"a.b 1 253402300800\n", GraphiteError::epoch_range, "'253402300800'"},
      {"a.b 1 99999999999999999999999\n", GraphiteError::epoch_range, "epoch: expected 0 .. 253402300799"},
      {std::string("a.b\0 1 1\n", 9), GraphiteError::binary, "control byte, 'a.b\\x00 1 1'"},
      {"a.b 1\r 1\n", GraphiteError::binary, "'a.b 1\\x0d 1'"},
      {"a.b \xff 1\n", GraphiteError::binary, "bytes that are not UTF-8, 'a.b \\xff 1'"},
      {"caf\xc3 1 1\n", GraphiteError::binary, "not UTF-8"},          // cut sequence
      {"a\xc0\xaf 1 1\n", GraphiteError::binary, "not UTF-8"},       // overlong '/'
      {"a\xed\xa0\x80 1 1\n", GraphiteError::binary, "not UTF-8"},  // a surrogate
      {"a\xf4\x90\x80\x80 1 1\n", GraphiteError::binary, "not UTF-8"},  // above U+10FFFF
      {"a.b 1 1\x7f\n", GraphiteError::binary, "control byte"},
      {"a.b 1 1\r\r\n", GraphiteError::binary, "'a.b 1 1\\x0d\\x0d'"},
      {"a.b 1 1", GraphiteError::partial_line, "line 1: no newline before the end of the stream, 'a.b 1 1'"},
  };
  for (const auto& c : cases) {
    const Log log = run_whole(c.line);
    ASSERT_EQ(log.events.size(), 1u) << c.line;
    const std::string expected = "E " + std::string(ssm::graphite_error_name(c.kind)) + " ";
    EXPECT_EQ(log.events[0].rfind(expected, 0), 0u) << c.line << " -> " << log.events[0];
    EXPECT_NE(log.events[0].find(c.detail), std::string::npos) << c.line << " -> " << log.events[0];
    EXPECT_EQ(log.stats.count(c.kind), 1u);
    EXPECT_EQ(log.stats.errors, 1u);
    EXPECT_EQ(log.stats.points, 0u);
  }
  // Every kind has its own name.
  for (size_t k = 0; k < ssm::kGraphiteErrorKinds; ++k)
    for (size_t j = 0; j < k; ++j)
      EXPECT_NE(ssm::graphite_error_name(static_cast<GraphiteError>(k)),
                ssm::graphite_error_name(static_cast<GraphiteError>(j)));
}

TEST(Graphite, MixedStreamCounts) {
  const Log log = run_whole(mixed_stream(), {64});
  const auto& s = log.stats;
  EXPECT_EQ(s.lines, 19u);  // the partial line included
  EXPECT_EQ(s.nan_values, 1u);
  EXPECT_EQ(s.points, 5u);  // the first three, a.b ... 1700000007, ok:path_1
  EXPECT_EQ(s.blank_lines, 2u);
  EXPECT_EQ(s.count(GraphiteError::missing_fields), 1u);
  EXPECT_EQ(s.count(GraphiteError::extra_fields), 1u);
  EXPECT_EQ(s.count(GraphiteError::bad_path), 1u);
  EXPECT_EQ(s.count(GraphiteError::bad_value), 1u);
  EXPECT_EQ(s.count(GraphiteError::non_finite_value), 1u);
  EXPECT_EQ(s.count(GraphiteError::bad_epoch), 1u);
  EXPECT_EQ(s.count(GraphiteError::epoch_range), 1u);
  EXPECT_EQ(s.count(GraphiteError::line_too_long), 1u);
  EXPECT_EQ(s.count(GraphiteError::binary), 2u);
  EXPECT_EQ(s.count(GraphiteError::partial_line), 1u);
  EXPECT_EQ(s.errors, 11u);
  EXPECT_EQ(log.events.back(), "E partial_line line 19: no newline before the end of the stream, 'partial.line 1 17000'");
  EXPECT_EQ(log.events[log.events.size() - 2], point_text("ok:path_1", 3, 0));
}

TEST(Graphite, EverySplitPointGivesTheSameResult) {
  const std::string bytes = mixed_stream();
  const ssm::GraphiteLimits limits{64};
  const Log whole = run_whole(bytes, limits);
  for (size_t cut = 0; cut <= bytes.size(); ++cut) expect_same(run(bytes, {cut}, limits), whole, "cut " + std::to_string(cut));
  // Byte by byte.
  std::vector<size_t> every(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) every[i] = i;
  expect_same(run(bytes, every, limits), whole, "byte by byte");
  // Every pair of cuts on a shorter stream (also cuts inside "\r\n").
  const std::string small = "a.b 1 10\r\nc.d 2.5 20\n\nbad\nx.y 3 30\r\n";
  const Log small_whole = run_whole(small);
  for (size_t i = 0; i <= small.size(); ++i)
    for (size_t j = i; j <= small.size(); ++j) expect_same(run(small, {i, j}), small_whole, "cuts " + std::to_string(i) + "," + std::to_string(j));
}

TEST(Graphite, LongLineIsDroppedWithoutGrowthAndTheNextLineParses) {
  const ssm::GraphiteLimits limits{64};
  GraphiteParser parser(limits);
  std::vector<std::string> points;
  std::vector<std::string> errors;
  auto on_point = [&](std::string_view p, double v, int64_t e) { points.push_back(point_text(p, v, e)); };
  auto on_error = [&](GraphiteError k, std::string_view d) { errors.push_back(std::string(d)); };
  // 10000 bytes of one line in 7-byte pieces, then its end and a valid line.
  const std::string chunk = "abcdefg";
  for (int i = 0; i < 10000 / 7; ++i) {
    parser.feed(chunk, on_point, on_error);
    ASSERT_LE(parser.buffered(), 64u);
    ASSERT_EQ(parser.buffer_capacity(), 64u);
  }
  parser.feed(std::string_view("tail 1 1\nok.next 4 40\n"), on_point, on_error);
  parser.finish(on_error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("line 1: longer than the line limit, 'abcdefgabcdefg", 0), 0u) << errors[0];
  EXPECT_EQ(points, (std::vector<std::string>{point_text("ok.next", 4, 40)}));
  EXPECT_EQ(parser.stats().lines, 2u);
  EXPECT_EQ(parser.stats().count(GraphiteError::line_too_long), 1u);
  EXPECT_EQ(parser.buffered(), 0u);

  // Exactly at the limit is accepted; one byte more is not (a "\r" counts).
  const std::string long65 = "p " + std::string(52, '1') + " 1234567890";
  ASSERT_EQ(long65.size(), 65u);
  EXPECT_EQ(run_whole(long65 + "\n", limits).stats.count(GraphiteError::line_too_long), 1u);
  const std::string good64 = "p " + std::string(51, '1') + " 1234567890";
  ASSERT_EQ(good64.size(), 64u);
  EXPECT_EQ(run_whole(good64 + "\n", limits).stats.points, 1u);
  EXPECT_EQ(run_whole(good64 + "\r\n", limits).stats.count(GraphiteError::line_too_long), 1u);
  // A too-long partial line at the end is one error, not two.
  const Log tail = run_whole(std::string(100, 'z'), limits);
  EXPECT_EQ(tail.stats.errors, 1u);
  EXPECT_EQ(tail.stats.count(GraphiteError::line_too_long), 1u);
  EXPECT_EQ(tail.stats.lines, 1u);
}

TEST(Graphite, SteadyStateDoesNotAllocate) {
  // Good and bad lines, some split across pieces, some too long.
  std::string bytes;
  for (int i = 0; i < 200; ++i) {
    bytes += "servers.web-" + std::to_string(i % 7) + ".cpu " + std::to_string(i) + ".5 " +
             std::to_string(1700000000 + i) + (i % 3 ? "\n" : "\r\n");
    if (i % 10 == 0) bytes += "bad line here now\n" + std::string(300, 'y') + "\n";
  }
  GraphiteParser parser(ssm::GraphiteLimits{128});
  double sum = 0;
  uint64_t errors = 0;
  auto on_point = [&](std::string_view, double v, int64_t) { sum += v; };
  auto on_error = [&](GraphiteError, std::string_view d) { errors += d.size() > 0; };
  const uint64_t before = g_allocations.load();
  for (size_t at = 0; at < bytes.size(); at += 37)
    parser.feed(std::span<const char>(bytes.data() + at, std::min<size_t>(37, bytes.size() - at)), on_point, on_error);
  parser.finish(on_error);
  EXPECT_EQ(g_allocations.load() - before, 0u);
  {
    const uint64_t probe_before = g_allocations.load();
    auto probe = std::make_unique<std::string>(100, 'x');  // the counter does see allocations
    EXPECT_GT(g_allocations.load() - probe_before, 0u);
  }
  EXPECT_EQ(parser.stats().points, 200u);
  EXPECT_EQ(errors, 40u);  // 20 bad lines, 20 too long
  EXPECT_EQ(sum, 200 * 0.5 + 199 * 200 / 2);
}

TEST(Graphite, FinishEndsTheStream) {
  GraphiteParser parser;
  int points = 0;
  auto on_point = [&](std::string_view, double, int64_t) { ++points; };
  parser.feed(std::string_view("a.b 1 1\na.b 2"), on_point);
  parser.finish();  // no error callback: still counted
  EXPECT_EQ(parser.stats().count(GraphiteError::partial_line), 1u);
  // A fresh stream on the same parser: the old partial line is gone.
  parser.feed(std::string_view(" 2\n"), on_point);
  EXPECT_EQ(parser.stats().count(GraphiteError::missing_fields), 1u);
  // Only whitespace left at the end is not a partial line.
  parser.feed(std::string_view("c.d 3 3\n \t\r"), on_point);
  parser.finish();
  EXPECT_EQ(parser.stats().count(GraphiteError::partial_line), 1u);
  EXPECT_EQ(points, 2);
}

TEST(Graphite, LimitsAreChecked) {
  EXPECT_THROW(GraphiteParser(ssm::GraphiteLimits{0}), ssm::Error);
  EXPECT_THROW(GraphiteParser(ssm::GraphiteLimits{15}), ssm::Error);
  EXPECT_THROW(GraphiteParser(ssm::GraphiteLimits{size_t{1} << 30}), ssm::Error);
  EXPECT_NO_THROW(GraphiteParser(ssm::GraphiteLimits{16}));
}

TEST(Graphite, RandomBytesNeverCrashAndEveryLineIsAccountedFor) {
  std::mt19937_64 rng(99);
  const std::string alphabet = std::string("ab.:_-019 \t\r\n\n\n+-e.nanif;=/@~") + '\0' + "\xff\xc3\xa9";
  for (int iter = 0; iter < 400; ++iter) {
    std::string bytes;
    const size_t n = rng() % 2000;
    for (size_t i = 0; i < n; ++i) {
      if (rng() % 8 == 0)
        bytes += "m.x " + std::to_string(static_cast<int>(rng() % 100)) + " " + std::to_string(rng() % 100000) + "\n";
      else
        bytes += iter % 2 ? static_cast<char>(rng()) : alphabet[rng() % alphabet.size()];
    }
    std::vector<size_t> cuts;
    for (size_t at = 0; at < bytes.size(); at += 1 + rng() % 97) cuts.push_back(at);
    const ssm::GraphiteLimits limits{16 + rng() % 200};
    const Log split = run(bytes, cuts, limits);
    expect_same(split, run_whole(bytes, limits), "iteration " + std::to_string(iter));
    const auto& s = split.stats;
    // Every line is exactly one of: a point, a blank line, a nan value, an error.
    EXPECT_EQ(s.lines, s.points + s.blank_lines + s.nan_values + s.errors);
    EXPECT_EQ(s.bytes, bytes.size());
    uint64_t sum = 0;
    for (auto c : s.by_kind) sum += c;
    EXPECT_EQ(sum, s.errors);
  }
}

}  // namespace
