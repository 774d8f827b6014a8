#include "ssm/timeseries_csv.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace ssm {

namespace {

// Years 0001..9999: the range the "YYYY-MM-DD" form can write.
constexpr int64_t kMinEpoch = -62135596800;  // 0001-01-01 00:00:00
constexpr int64_t kMaxEpoch = 253402300799;  // 9999-12-31 23:59:59
constexpr size_t kMaxSkippedErrors = 10;

// Text from files goes into messages: keep it bounded.
std::string quote_text(std::string_view s) {
  constexpr size_t kMax = 80;
  std::string out = "'";
  for (char c : s.substr(0, kMax)) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '\'';
  if (s.size() > kMax) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

unsigned digits_value(std::string_view s) {
  unsigned v = 0;
  for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
  return v;
}

// A parsed timestamp: whole seconds plus whether a non-zero fraction followed.
struct Stamp {
  int64_t seconds = 0;
  bool fraction = false;
};

// Returns an empty string on success, else what was expected.
std::string parse_stamp(std::string_view s, Stamp* out) {
  if (s.empty()) return "a timestamp, got an empty field";
  // Epoch seconds: an optionally signed integer.
  std::string_view digits = s.front() == '-' ? s.substr(1) : s;
  if (all_digits(digits)) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v < kMinEpoch || v > kMaxEpoch)
      return "epoch seconds within years 0001..9999";
    *out = {v, false};
    return {};
  }
  constexpr const char* kForm = "'YYYY-MM-DD HH:MM:SS' (or 'T' between date and time, or epoch seconds)";
  if (!s.empty() && s.back() == 'Z') s.remove_suffix(1);
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' ||
      s[16] != ':')
    return kForm;
  std::string_view ys = s.substr(0, 4), mos = s.substr(5, 2), ds = s.substr(8, 2), hs = s.substr(11, 2),
                   mis = s.substr(14, 2), ss = s.substr(17, 2);
  for (auto f : {ys, mos, ds, hs, mis, ss})
    if (!all_digits(f)) return kForm;
  bool fraction = false;
  if (s.size() > 19) {
    std::string_view frac = s.substr(19);
    if (frac.size() < 2 || frac[0] != '.' || !all_digits(frac.substr(1))) return kForm;
    fraction = frac.find_first_not_of("0", 1) != std::string_view::npos;
  }
  const int64_t y = digits_value(ys);
  const unsigned mo = digits_value(mos), d = digits_value(ds), h = digits_value(hs), mi = digits_value(mis),
                 sec = digits_value(ss);
  static constexpr unsigned kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1) return "a year 0001..9999";
  if (mo < 1 || mo > 12) return "a month 01..12";
  if (d < 1 || d > kDays[mo - 1] + (mo == 2 && is_leap(y) ? 1 : 0)) return "a day that exists in that month";
  if (h > 23 || mi > 59 || sec > 59) return "a time 00:00:00..23:59:59";
  *out = {days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec, fraction};
  return {};
}

// Decimal exponent of the leading non-zero digit of a number that from_chars
// found out of range: > 0 means overflow, otherwise underflow. Saturates.
int64_t magnitude(std::string_view s) {
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) s.remove_prefix(1);
  int64_t lead = 0, int_digits = 0, frac_pos = 0;
  bool found = false, in_frac = false;
  size_t i = 0;
  for (; i < s.size() && s[i] != 'e' && s[i] != 'E'; ++i) {
    if (s[i] == '.') {
      in_frac = true;
      continue;
    }
    if (in_frac) ++frac_pos; else ++int_digits;
    if (!found && s[i] != '0') {
      found = true;
      lead = in_frac ? -frac_pos : int_digits;  // int part: fixed below once its length is known
    }
  }
  if (found && lead > 0) lead = int_digits - lead;  // position counted from the decimal point
  int64_t exp = 0;
  if (i < s.size()) {
    std::string_view e = s.substr(i + 1);
    bool neg = !e.empty() && e.front() == '-';
    if (!e.empty() && (e.front() == '-' || e.front() == '+')) e.remove_prefix(1);
    for (char c : e) exp = std::min<int64_t>(exp * 10 + (c - '0'), int64_t{1} << 40);
    if (neg) exp = -exp;
  }
  return lead + exp;
}

}  // namespace

NumberParse parse_number(std::string_view s, double* out) {
  if (s.empty()) return NumberParse::not_a_number;
  // from_chars rejects a leading '+', which people do write.
  std::string_view body = s.front() == '+' ? s.substr(1) : s;
  if (body.empty() || body.front() == '+' || (body.front() == '-' && s.front() == '+'))
    return NumberParse::not_a_number;
  double v = 0;
  auto [p, ec] = std::from_chars(body.data(), body.data() + body.size(), v, std::chars_format::general);
  if (p != body.data() + body.size() || (ec != std::errc() && ec != std::errc::result_out_of_range))
    return NumberParse::not_a_number;
  if (ec == std::errc::result_out_of_range) {
    if (magnitude(body) > 0) return NumberParse::not_finite;
    v = body.front() == '-' ? -0.0 : 0.0;  // below the smallest subnormal: rounds to zero
  }
  if (!std::isfinite(v)) return NumberParse::not_finite;
  *out = v;
  return NumberParse::ok;
}

namespace {

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  for (;;) {
    size_t comma = line.find(',', start);
    std::string_view f = trim(line.substr(start, comma == std::string_view::npos ? line.npos : comma - start));
    // Quotes around a field are a common spreadsheet export habit; they carry no meaning here.
    if (f.size() >= 2 && f.front() == '"' && f.back() == '"') f = f.substr(1, f.size() - 2);
    fields.push_back(f);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return fields;
}

}  // namespace

std::vector<int64_t> TimeSeries::epochs() const {
  std::vector<int64_t> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = rows[i].epoch;
  return out;
}

std::vector<double> TimeSeries::values() const {
  std::vector<double> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = rows[i].value;
  return out;
}

int64_t parse_timestamp(std::string_view text) {
  Stamp st;
  std::string why = parse_stamp(text, &st);
  if (why.empty() && st.fraction) why = "whole seconds (a fractional second that is all zeros)";
  if (!why.empty()) fail("timestamp " + quote_text(text) + ": expected " + why);
  return st.seconds;
}

std::string format_timestamp(int64_t epoch) {
  if (epoch < kMinEpoch || epoch > kMaxEpoch)
    fail("format_timestamp: epoch " + std::to_string(epoch) + " is outside years 0001..9999");
  // Inverse of days_from_civil (same source).
  int64_t z = (epoch >= 0 ? epoch : epoch - 86399) / 86400;
  const int64_t secs = epoch - z * 86400;
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02u %02lld:%02lld:%02lld", static_cast<long long>(y), m, d,
                static_cast<long long>(secs / 3600), static_cast<long long>(secs / 60 % 60),
                static_cast<long long>(secs % 60));
  return buf;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path + ": read error");
  return std::move(ss).str();
}

TimeSeries read_timeseries_csv(const std::string& path, const TimeSeriesCsvOptions& options) {
  return parse_timeseries_csv(read_text_file(path), path, options);
}

TimeSeries parse_timeseries_csv(std::string_view text, const std::string& source,
                                const TimeSeriesCsvOptions& options) {
  TimeSeries ts;
  ts.source = source;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  size_t pos = 0, line_no = 0;
  auto next_line = [&](std::string_view* line) {
    if (pos >= text.size()) return false;
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string_view::npos ? text.size() : nl;
    *line = text.substr(pos, end - pos);
    if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
    pos = end + 1;
    ++line_no;
    return true;
  };
  auto where = [&](size_t line) { return source + ":" + std::to_string(line) + ": "; };

  std::string_view line;
  if (!next_line(&line) || trim(line).empty())
    fail(where(1) + "expected a header naming the columns 'timestamp' and '" + options.value_column + "'");
  const std::vector<std::string_view> header = split_fields(line);
  size_t ts_col = header.size(), value_col = header.size();
  for (size_t c = 0; c < header.size(); ++c) {
    for (size_t prev = 0; prev < c; ++prev)
      require(!iequals(header[prev], header[c]), where(1) + "column " + quote_text(header[c]) + " appears twice");
    if (iequals(header[c], "timestamp")) ts_col = c;
    if (iequals(header[c], options.value_column)) value_col = c;
  }
  require(ts_col < header.size() && value_col < header.size(),
          where(1) + "expected a header naming the columns 'timestamp' and '" + options.value_column + "', got " +
              quote_text(line));

  auto bad_row = [&](size_t line, const std::string& why) {
    std::string msg = where(line) + why;
    if (!options.lenient) fail(msg);
    ++ts.skipped;
    if (ts.skipped_errors.size() < kMaxSkippedErrors) ts.skipped_errors.push_back(std::move(msg));
  };

  // Blank lines are fine only at the end: a blank in the middle may hide a lost row.
  size_t pending_blanks = 0, first_blank = 0;
  while (next_line(&line)) {
    if (trim(line).empty()) {
      if (pending_blanks++ == 0) first_blank = line_no;
      continue;
    }
    if (pending_blanks > 0) {
      for (size_t k = 0; k < pending_blanks; ++k) bad_row(first_blank + k, "blank line before the end of the file");
      pending_blanks = 0;
    }
    const std::vector<std::string_view> fields = split_fields(line);
    if (fields.size() != header.size()) {
      bad_row(line_no, "expected " + std::to_string(header.size()) + " comma-separated fields, got " +
                           std::to_string(fields.size()) + " in " + quote_text(line));
      continue;
    }
    TimeSeriesRow row;
    Stamp st;
    std::string why = parse_stamp(fields[ts_col], &st);
    if (why.empty() && st.fraction) why = "whole seconds (a fractional second that is all zeros)";
    if (!why.empty()) {
      bad_row(line_no, "timestamp " + quote_text(fields[ts_col]) + ": expected " + why);
      continue;
    }
    NumberParse np = parse_number(fields[value_col], &row.value);
    if (np != NumberParse::ok) {
      bad_row(line_no, "column '" + options.value_column + "' " + quote_text(fields[value_col]) + ": expected " +
                           (np == NumberParse::not_finite ? "a finite number" : "a decimal number"));
      continue;
    }
    row.epoch = st.seconds;
    row.timestamp.assign(fields[ts_col]);
    if (!ts.rows.empty()) {
      if (row.epoch == ts.rows.back().epoch) ++ts.repeated;
      if (row.epoch < ts.rows.back().epoch) ++ts.backward;
    }
    ts.rows.push_back(std::move(row));
  }
  return ts;
}

// ---- NAB labels ----------------------------------------------------------

NabLabels read_nab_labels(const std::string& path) { return parse_nab_labels(read_text_file(path), path); }

NabLabels parse_nab_labels(std::string_view json_text, const std::string& source) {
  using json = nlohmann::json;
  json doc;
  try {
    doc = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    fail(source + ": invalid JSON: " + e.what());
  }
  require(doc.is_object(), source + ": expected a JSON object {\"category/file.csv\": [[start, end], ...]}");
  NabLabels labels;
  for (const auto& [key, list] : doc.items()) {
    const std::string where = source + ": " + quote_text(key);
    require(list.is_array(), where + ": expected a list of [start, end] windows");
    std::vector<NabWindow> windows;
    for (size_t k = 0; k < list.size(); ++k) {
      const json& w = list[k];
      const std::string wwhere = where + " window " + std::to_string(k);
      require(w.is_array() && w.size() == 2 && w[0].is_string() && w[1].is_string(),
              wwhere + ": expected [\"start\", \"end\"] (two timestamp strings)");
      Stamp a, b;
      for (int e = 0; e < 2; ++e) {
        const std::string& text = w[e].get_ref<const std::string&>();
        std::string why = parse_stamp(text, e == 0 ? &a : &b);
        require(why.empty(), wwhere + ": " + (e == 0 ? "start " : "end ") + quote_text(text) + ": expected " + why);
      }
      // Round inwards: the window keeps exactly the whole-second rows inside [start, end].
      NabWindow win{a.seconds + (a.fraction ? 1 : 0), b.seconds};
      require(win.first <= win.second, wwhere + ": start " + quote_text(w[0].get_ref<const std::string&>()) +
                                           " is after end " + quote_text(w[1].get_ref<const std::string&>()));
      // NAB's own check: windows in order, not overlapping (they may touch).
      require(windows.empty() || win.first >= windows.back().second,
              wwhere + ": starts before the previous window ends (windows must be sorted and not overlap)");
      windows.push_back(win);
    }
    labels.emplace(key, std::move(windows));
  }
  return labels;
}

}  // namespace ssm
