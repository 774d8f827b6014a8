#include "ssm/streams/graphite.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "ssm/common.hpp"
#include "ssm/timeseries_csv.hpp"  // parse_number

namespace ssm {

namespace {

constexpr size_t kMinLine = 16;
constexpr size_t kMaxLine = size_t{16} << 20;
constexpr size_t kDetailText = 64;  // bytes of the offending text quoted in a detail

bool is_space(char c) { return c == ' ' || c == '\t'; }

bool is_path_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-' || c == ':';
}

// Printable ASCII or tab: anything else in a line is binary.
bool is_text(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 0x20 && u < 0x7f) || c == '\t';
}

bool valid_path(std::string_view p) {
  if (p.front() == '.' || p.back() == '.') return false;
  char prev = 0;
  for (char c : p) {
    if (!is_path_char(c) || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

enum class EpochParse { ok, bad, range };

// digits[.digits], truncated to whole seconds; '-' only to name it negative.
EpochParse parse_epoch(std::string_view s, int64_t* out) {
  if (s.front() == '-') {
    s.remove_prefix(1);
    if (!s.empty() && s.front() >= '0' && s.front() <= '9') return EpochParse::range;
    return EpochParse::bad;
  }
  size_t i = 0;
  int64_t v = 0;
  bool over = false;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    if (!over) v = v * 10 + (s[i] - '0');
    over = over || v > GraphiteParser::kMaxEpoch;
  }
  if (i == 0) return EpochParse::bad;
  if (i < s.size()) {
    if (s[i] != '.') return EpochParse::bad;
    for (++i; i < s.size(); ++i)
      if (s[i] < '0' || s[i] > '9') return EpochParse::bad;
  }
  if (over) return EpochParse::range;
  *out = v;
  return EpochParse::ok;
}

// Bounded writer into the fixed detail buffer; escapes what is not printable.
struct DetailWriter {
  char* p;
  char* end;  // one before the buffer's end: room for the terminator
  void put(char c) {
    if (p < end) *p++ = c;
  }
  void text(std::string_view s) {
    for (char c : s) put(c);
  }
  void number(uint64_t v) {
    char tmp[24];
    int n = std::snprintf(tmp, sizeof tmp, "%llu", static_cast<unsigned long long>(v));
    text(std::string_view(tmp, static_cast<size_t>(std::max(n, 0))));
  }
  void escaped(std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : s.substr(0, kDetailText)) {
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u < 0x7f && c != '\\' && c != '\'') {
        put(c);
      } else {
        put('\\');
        put('x');
        put(kHex[u >> 4]);
        put(kHex[u & 15]);
      }
    }
    if (s.size() > kDetailText) text("...");
  }
};

}  // namespace

std::string_view graphite_error_name(GraphiteError kind) {
  switch (kind) {
    case GraphiteError::line_too_long: return "line_too_long";
    case GraphiteError::missing_fields: return "missing_fields";
    case GraphiteError::extra_fields: return "extra_fields";
    case GraphiteError::bad_path: return "bad_path";
    case GraphiteError::bad_value: return "bad_value";
    case GraphiteError::non_finite_value: return "non_finite_value";
    case GraphiteError::bad_epoch: return "bad_epoch";
    case GraphiteError::epoch_range: return "epoch_range";
    case GraphiteError::binary: return "binary";
    case GraphiteError::partial_line: return "partial_line";
  }
  return "unknown";
}

GraphiteParser::GraphiteParser(GraphiteLimits limits) : limits_(limits) {
  require(limits.max_line >= kMinLine && limits.max_line <= kMaxLine,
          "GraphiteLimits.max_line: expected " + std::to_string(kMinLine) + " .. " + std::to_string(kMaxLine) +
              " bytes, got " + std::to_string(limits.max_line));
  buf_ = std::make_unique<char[]>(limits.max_line);
}

void GraphiteParser::report(GraphiteError kind, ErrorFn on_error, std::string_view what, std::string_view text,
                            bool more) {
  ++stats_.errors;
  ++stats_.by_kind[static_cast<size_t>(kind)];
  if (!on_error) return;
  DetailWriter w{detail_.data(), detail_.data() + detail_.size() - 1};
  w.text("line ");
  w.number(stats_.lines + (kind == GraphiteError::line_too_long || kind == GraphiteError::partial_line ? 1 : 0));
  w.text(": ");
  w.text(what);
  w.text(", '");
  w.escaped(text);
  if (more && text.size() <= kDetailText) w.text("...");
  w.put('\'');
  *w.p = '\0';
  on_error(kind, std::string_view(detail_.data(), static_cast<size_t>(w.p - detail_.data())));
}

void GraphiteParser::too_long(const char* p, size_t n, ErrorFn on_error) {
  // Quote the line's first bytes, the same however the line was split: they
  // may lie partly in the buffer and partly in the new piece.
  char head[kDetailText];
  const size_t q = std::min(limits_.max_line, kDetailText);  // the line has more than max_line bytes
  const size_t from_buf = std::min(len_, q);
  std::memcpy(head, buf_.get(), from_buf);
  std::memcpy(head + from_buf, p, std::min(q - from_buf, n));
  report(GraphiteError::line_too_long, on_error, "longer than the line limit", std::string_view(head, q), true);
}

void GraphiteParser::append(const char* p, size_t n, ErrorFn on_error) {
  if (discarding_) return;
  if (n > limits_.max_line - len_) {
    too_long(p, n, on_error);
    discarding_ = true;
    len_ = 0;
    return;
  }
  std::memcpy(buf_.get() + len_, p, n);
  len_ += n;
}

void GraphiteParser::feed(std::span<const char> bytes, PointFn on_point, ErrorFn on_error) {
  stats_.bytes += bytes.size();
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  while (p < end) {
    const auto* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    if (!nl) {
      append(p, static_cast<size_t>(end - p), on_error);
      return;
    }
    const auto n = static_cast<size_t>(nl - p);
    if (len_ == 0 && !discarding_) {
      // The common case: a whole line inside this piece, parsed where it lies.
      if (n > limits_.max_line) {
        too_long(p, n, on_error);
        ++stats_.lines;
      } else {
        parse_line(std::string_view(p, n), on_point, on_error);
      }
    } else {
      append(p, n, on_error);
      if (discarding_) {
        ++stats_.lines;  // the end of a too-long line, already reported
        discarding_ = false;
      } else {
        parse_line(std::string_view(buf_.get(), len_), on_point, on_error);
      }
      len_ = 0;
    }
    p = nl + 1;
  }
}

void GraphiteParser::finish(ErrorFn on_error) {
  std::string_view rest(buf_.get(), len_);
  while (!rest.empty() && (is_space(rest.back()) || rest.back() == '\r')) rest.remove_suffix(1);
  if (discarding_) {
    ++stats_.lines;  // a too-long line cut by the end of the stream, already reported
  } else if (!rest.empty()) {
    report(GraphiteError::partial_line, on_error, "no newline before the end of the stream", rest);
    ++stats_.lines;
  }
  len_ = 0;
  discarding_ = false;
}

void GraphiteParser::parse_line(std::string_view line, PointFn on_point, ErrorFn on_error) {
  const std::string_view whole = line;  // for messages
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  for (char c : line) {
    if (!is_text(c)) {
      ++stats_.lines;
      report(GraphiteError::binary, on_error, "byte outside printable ASCII", whole);
      return;
    }
  }
  ++stats_.lines;

  // Split on runs of spaces / tabs; a fourth field is only counted.
  std::string_view fields[3];
  size_t count = 0, i = 0;
  for (;;) {
    while (i < line.size() && is_space(line[i])) ++i;
    if (i == line.size()) break;
    const size_t start = i;
    while (i < line.size() && !is_space(line[i])) ++i;
    if (count == 3) {
      ++count;
      break;
    }
    fields[count++] = line.substr(start, i - start);
  }
  if (count == 0) {
    ++stats_.blank_lines;
    return;
  }
  if (count < 3) return report(GraphiteError::missing_fields, on_error, "expected 'path value epoch'", whole);
  if (count > 3) return report(GraphiteError::extra_fields, on_error, "expected 'path value epoch'", whole);

  if (!valid_path(fields[0]))
    return report(GraphiteError::bad_path, on_error,
                  "path: expected [A-Za-z0-9._:-] in non-empty dot-separated components", fields[0]);
  double value = 0;
  switch (parse_number(fields[1], &value)) {
    case NumberParse::ok: break;
    case NumberParse::not_a_number:
      return report(GraphiteError::bad_value, on_error, "value: expected a decimal number", fields[1]);
    case NumberParse::not_finite:
      return report(GraphiteError::non_finite_value, on_error, "value: expected a finite number", fields[1]);
  }
  int64_t epoch = 0;
  switch (parse_epoch(fields[2], &epoch)) {
    case EpochParse::ok: break;
    case EpochParse::bad:
      return report(GraphiteError::bad_epoch, on_error, "epoch: expected seconds as digits[.digits]", fields[2]);
    case EpochParse::range:
      return report(GraphiteError::epoch_range, on_error, "epoch: expected 0 .. 253402300799 (year 9999)",
                    fields[2]);
  }
  ++stats_.points;
  on_point(fields[0], value, epoch);
}

}  // namespace ssm
