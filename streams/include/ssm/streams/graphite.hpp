// Graphite plaintext protocol parser, incremental: bytes arrive from a socket
// in pieces of any size, points come out through a callback.
//
//   <path> <value> <epoch>\n          e.g. "servers.web-1.cpu 12.5 1700000000\n"
//
// Accepted (what carbon accepts, within the character set below):
//   * "\n" or "\r\n" line ends; fields separated by one or more spaces or
//     tabs; spaces or tabs before the first and after the last field;
//   * path: a name of [A-Za-z0-9._:/@-] and UTF-8 (bytes >= 0x80 forming
//     well-formed UTF-8), its dot-separated components non-empty (no
//     leading or trailing dot, no ".."), then optional carbon tags
//     ";tag=value" (tag: name characters; value: name characters and '=',
//     not starting with '~'; both non-empty). The path with its tags, as
//     sent, is the series' identity (carbon sorts tags; this parser does not);
//   * value: a decimal number (optional sign, fraction, exponent); a value
//     below the smallest subnormal reads as zero. "nan" (any case, signed),
//     which collectd sends for a rate it has no two samples for yet, is
//     counted in nan_values and delivered nowhere: not a point, not an error;
//   * epoch: seconds since 1970, 0 .. 253402300799 (9999-12-31 23:59:59
//     UTC), as digits or any decimal number ("1700000000.25", "1.7e9"),
//     truncated to whole seconds as carbon does with int(float(ts)); "-1"
//     means now (the clock of GraphiteLimits, read at the line);
//   * blank lines (only spaces or tabs) are skipped and counted.
// Rejected, one error per line, counted by kind (GraphiteError):
//   line_too_long    more than max_line bytes before the "\n" (a "\r" counts);
//                    the rest of the line is discarded up to the next "\n",
//                    the buffer never grows past max_line
//   missing_fields   fewer than three fields
//   extra_fields     more than three fields
//   bad_path         a character outside the set, an empty component, a bad tag
//   bad_value        the value is not a decimal number
//   non_finite_value "inf", or a value that overflows a double
//   bad_epoch        the epoch is not a decimal number
//   epoch_range      negative (but -1), or after year 9999
//   binary           a control byte (NUL, < 0x20 but tab, 0x7f), a "\r" that
//                    does not end the line, or bytes >= 0x80 that are not UTF-8
//   partial_line     finish() found a non-blank line without its "\n"; a
//                    partial line is never parsed (it may be truncated)
//
// Steady state allocates nothing: complete lines inside a fed piece are
// parsed in place, a line split across pieces is carried in one fixed buffer
// of max_line bytes, error details are written into a fixed buffer. The
// path and detail views are valid only during the callback.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

namespace ssm {

enum class GraphiteError : uint8_t {
  line_too_long,
  missing_fields,
  extra_fields,
  bad_path,
  bad_value,
  non_finite_value,
  bad_epoch,
  epoch_range,
  binary,
  partial_line,
};
inline constexpr size_t kGraphiteErrorKinds = 10;
// "line_too_long", "missing_fields", ... (the enumerator's name).
std::string_view graphite_error_name(GraphiteError kind);

struct GraphiteLimits {
  size_t max_line = 4096;  // bytes before the "\n"; 16 .. 16 MiB
  int64_t (*clock)() = nullptr;  // seconds since 1970 for the epoch -1; null: the system clock
};

struct GraphiteStats {
  uint64_t bytes = 0;        // fed
  uint64_t lines = 0;        // lines ended by "\n" or, non-blank, by finish(): each is
                             // exactly one point, blank line, nan value or error
  uint64_t points = 0;       // lines delivered to on_point
  uint64_t blank_lines = 0;  // skipped
  uint64_t nan_values = 0;   // well-formed lines whose value is "nan": not delivered
  uint64_t errors = 0;       // sum of by_kind
  std::array<uint64_t, kGraphiteErrorKinds> by_kind{};  // indexed by GraphiteError

  uint64_t count(GraphiteError kind) const { return by_kind[static_cast<size_t>(kind)]; }
};

// A non-owning reference to a callable (no allocation, unlike
// std::function); the callable must outlive the call it is passed to.
template <class Sig>
class GraphiteFnRef;
template <class R, class... A>
class GraphiteFnRef<R(A...)> {
 public:
  GraphiteFnRef() = default;
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, GraphiteFnRef> && std::is_invocable_r_v<R, F&, A...>)
  GraphiteFnRef(F&& f) noexcept  // NOLINT(google-explicit-constructor): passed inline as a lambda
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* obj, A... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(obj))(std::forward<A>(args)...);
        }) {}
  explicit operator bool() const { return call_ != nullptr; }
  R operator()(A... args) const { return call_(obj_, std::forward<A>(args)...); }

 private:
  void* obj_ = nullptr;
  R (*call_)(void*, A...) = nullptr;
};
class GraphiteParser {
 public:
  using PointFn = GraphiteFnRef<void(std::string_view path, double value, int64_t epoch)>;
  using ErrorFn = GraphiteFnRef<void(GraphiteError kind, std::string_view detail)>;

  static constexpr int64_t kMaxEpoch = 253402300799;  // 9999-12-31 23:59:59 UTC

  // Throws ssm::Error if max_line is outside 16 .. 16 MiB.
  explicit GraphiteParser(GraphiteLimits limits = {});

  // Parses every complete line of `bytes` (after what earlier calls left
  // over) and keeps an unterminated tail for the next call. on_error may be
  // empty: errors are still counted. Detail: "line N: what, 'text'".
  void feed(std::span<const char> bytes, PointFn on_point, ErrorFn on_error = {});
  // End of stream: a non-blank partial line is a partial_line error. The
  // parser is then ready for a new stream (statistics keep accumulating).
  void finish(ErrorFn on_error = {});

  GraphiteStats stats() const { return stats_; }
  const GraphiteLimits& limits() const { return limits_; }
  size_t buffered() const { return len_; }               // bytes of a partial line held
  size_t buffer_capacity() const { return limits_.max_line; }  // fixed for the parser's life

 private:
  void append(const char* p, size_t n, ErrorFn on_error);
  void parse_line(std::string_view line, PointFn on_point, ErrorFn on_error);
  void too_long(const char* p, size_t n, ErrorFn on_error);
  // Counts the error and, with a callback, writes "line N: what, 'text'"
  // (text escaped and cut; `more` marks it as the start of a longer line).
  void report(GraphiteError kind, ErrorFn on_error, std::string_view what, std::string_view text,
              bool more = false);

  GraphiteLimits limits_;
  std::unique_ptr<char[]> buf_;  // (max_line) the partial line carried between feeds
  size_t len_ = 0;               // bytes of buf_ in use
  bool discarding_ = false;      // inside a too-long line: drop bytes up to the next "\n"
  GraphiteStats stats_;
  std::array<char, 256> detail_{};  // error message of the current callback
};

}  // namespace ssm
