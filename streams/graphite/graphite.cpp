#include "ssm/streams/graphite.hpp"

#include <algorithm>
#include <chrono>
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

// ASCII characters of a path's name part; bytes >= 0x80 (UTF-8) are allowed too.
bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-' || c == ':' || c == '/' || c == '@' || static_cast<unsigned char>(c) >= 0x80;
}

// Printable ASCII, tab or a byte of a UTF-8 sequence (checked separately).
bool is_text(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 0x20 && u < 0x7f) || c == '\t' || u >= 0x80;
}

// Well-formed UTF-8: no overlong forms, no surrogates, at most U+10FFFF.
bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if ((u & 0xe0) == 0xc0) {
      n = 1, cp = u & 0x1f, min = 0x80;
    } else if ((u & 0xf0) == 0xe0) {
      n = 2, cp = u & 0x0f, min = 0x800;
    } else if ((u & 0xf8) == 0xf0) {
      n = 3, cp = u & 0x07, min = 0x10000;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

// name[;tag=value]...: the name's dot-separated components non-empty; tag
// names and values non-empty, without ';' '=' (in names) or '~' first (in
// values), as carbon's tagged series are.
bool valid_path(std::string_view p) {
  const size_t semi = p.find(';');
  const std::string_view name = p.substr(0, semi);
  if (name.empty() || name.front() == '.' || name.back() == '.') return false;
  char prev = 0;
  for (char c : name) {
    if (!is_name_char(c) || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  if (semi == std::string_view::npos) return true;
  std::string_view tags = p.substr(semi + 1);
  for (;;) {
    const size_t end = tags.find(';');
    const std::string_view tag = tags.substr(0, end);
    const size_t eq = tag.find('=');
    if (eq == 0 || eq == std::string_view::npos || eq + 1 == tag.size() || tag[eq + 1] == '~') return false;
    for (char c : tag.substr(0, eq))
      if (!is_name_char(c)) return false;
    for (char c : tag.substr(eq + 1))
      if (!is_name_char(c) && c != '=') return false;
    if (end == std::string_view::npos) return true;
    tags.remove_prefix(end + 1);
  }
}

enum class EpochParse { ok, now, bad, range };

// Seconds since 1970, truncated to whole seconds as carbon does with
// int(float(ts)): digits[.digits] (the common case, read exactly), any other
// decimal number ("1.7e9", "+1700000000") through a double; "-1" means now.
EpochParse parse_epoch(std::string_view s, int64_t* out) {
  size_t i = 0;
  int64_t v = 0;
  bool over = false;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    if (!over) v = v * 10 + (s[i] - '0');
    over = over || v > GraphiteParser::kMaxEpoch;
  }
  bool plain = i > 0;
  if (plain && i < s.size()) {
    if (s[i] != '.') {
      plain = false;
    } else {
      for (size_t k = i + 1; k < s.size() && plain; ++k) plain = s[k] >= '0' && s[k] <= '9';
    }
  }
  if (plain) {
    if (over) return EpochParse::range;
    *out = v;
    return EpochParse::ok;
  }
  double d = 0;
  switch (parse_number(s, &d)) {
    case NumberParse::ok: break;
    case NumberParse::not_a_number: return EpochParse::bad;
    case NumberParse::not_finite: return EpochParse::range;
  }
  if (d == -1) return EpochParse::now;
  if (d < 0 || d >= static_cast<double>(GraphiteParser::kMaxEpoch) + 1) return EpochParse::range;
  *out = static_cast<int64_t>(d);
  return EpochParse::ok;
}

bool is_nan_text(std::string_view s) {
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) s.remove_prefix(1);
  return s.size() == 3 && (s[0] | 0x20) == 'n' && (s[1] | 0x20) == 'a' && (s[2] | 0x20) == 'n';
}

int64_t system_clock_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
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
  if (!limits_.clock) limits_.clock = system_clock_seconds;
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
  bool high = false;
  for (char c : line) {
    if (!is_text(c)) {
      ++stats_.lines;
      report(GraphiteError::binary, on_error, "control byte", whole);
      return;
    }
    high = high || static_cast<unsigned char>(c) >= 0x80;
  }
  if (high && !valid_utf8(line)) {
    ++stats_.lines;
    report(GraphiteError::binary, on_error, "bytes that are not UTF-8", whole);
    return;
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
                  "path: expected name[;tag=value...], the name of [A-Za-z0-9._:/@-] or UTF-8 in non-empty "
                  "dot-separated components",
                  fields[0]);
  double value = 0;
  switch (parse_number(fields[1], &value)) {
    case NumberParse::ok: break;
    case NumberParse::not_a_number:
      return report(GraphiteError::bad_value, on_error, "value: expected a decimal number", fields[1]);
    case NumberParse::not_finite:
      if (is_nan_text(fields[1])) {
        ++stats_.nan_values;  // collectd's "no rate yet": counted, not an error
        return;
      }
      return report(GraphiteError::non_finite_value, on_error, "value: expected a finite number", fields[1]);
  }
  int64_t epoch = 0;
  switch (parse_epoch(fields[2], &epoch)) {
    case EpochParse::ok: break;
    case EpochParse::now: epoch = limits_.clock(); break;
    case EpochParse::bad:
      return report(GraphiteError::bad_epoch, on_error, "epoch: expected seconds since 1970 (a number, or -1: now)",
                    fields[2]);
    case EpochParse::range:
      return report(GraphiteError::epoch_range, on_error, "epoch: expected 0 .. 253402300799 (year 9999) or -1",
                    fields[2]);
  }
  ++stats_.points;
  on_point(fields[0], value, epoch);
}

}  // namespace ssm
