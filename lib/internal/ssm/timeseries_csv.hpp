// Time series in CSV (the Numenta Anomaly Benchmark layout) and NAB's label
// file.
//
//   timestamp,value                 header: names the columns (any order; other
//   2014-04-01 00:00:00,18.32       columns are allowed and ignored)
//   2014-04-01 00:05:00,17.90       one row per line, LF or CRLF
//
// Timestamps: "YYYY-MM-DD HH:MM:SS", "YYYY-MM-DDTHH:MM:SS" (optionally with a
// fractional second that is all zeros and a trailing 'Z'), or epoch seconds
// (an integer). All are UTC; times are kept as int64 epoch seconds.
//
// Rows stay in file order. Repeated and backward timestamps occur in NAB's
// own data and are kept as they are; the reader only counts them. A bad row
// (wrong field count, bad timestamp, value not a finite number, blank line
// before the end) throws ssm::Error naming the file and line, or, with
// `lenient`, is skipped and counted (a bad header always throws). Blank
// lines at the end of the file, a UTF-8 byte-order mark and a missing final
// newline are accepted.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ssm/common.hpp"

namespace ssm {

struct TimeSeriesRow {
  int64_t epoch = 0;      // seconds since 1970-01-01 00:00:00 UTC
  double value = 0;       // finite
  std::string timestamp;  // the timestamp field as written in the file
};

struct TimeSeries {
  std::string source;               // file name (or the name given to the parser)
  std::vector<TimeSeriesRow> rows;  // file order
  size_t repeated = 0;              // rows whose epoch equals the previous row's
  size_t backward = 0;              // rows whose epoch is before the previous row's
  size_t skipped = 0;               // bad rows skipped (lenient mode only)
  std::vector<std::string> skipped_errors;  // the first few skip reasons, "file:line: ..."

  std::vector<int64_t> epochs() const;  // (rows.size())
  std::vector<double> values() const;   // (rows.size())
};

struct TimeSeriesCsvOptions {
  bool lenient = false;                // skip and count bad rows instead of throwing
  std::string value_column = "value";  // e.g. "anomaly_score" to read a NAB results file
};

TimeSeries read_timeseries_csv(const std::string& path, const TimeSeriesCsvOptions& options = {});
// Parses CSV text already in memory; errors name `source`.
TimeSeries parse_timeseries_csv(std::string_view text, const std::string& source,
                                const TimeSeriesCsvOptions& options = {});

// One of the accepted timestamp forms -> epoch seconds; throws ssm::Error
// whose message starts with "timestamp '...'" and says what was expected.
// Years 0001..9999. A non-zero fractional second is rejected (rows are whole
// seconds; label windows round it, see below).
int64_t parse_timestamp(std::string_view text);
// Epoch seconds -> "YYYY-MM-DD HH:MM:SS" (UTC).
std::string format_timestamp(int64_t epoch);

// A strict decimal number: the whole text, optional sign, digits, optional
// fraction and exponent; no spaces or hex. "nan", "inf" and overflow are
// not_finite; a value below the smallest subnormal becomes (signed) zero.
enum class NumberParse { ok, not_a_number, not_finite };
NumberParse parse_number(std::string_view text, double* out);

// NAB's labels.json: {"category/file.csv": [["start", "end"], ...], ...}.
// Label timestamps may carry a fractional second ("... 01:45:00.000000").
// A window is the closed range [start, end] in epoch seconds: a fractional
// start rounds up and a fractional end rounds down, which keeps exactly the
// whole-second rows that lie inside the written range. Checked: the top level
// is an object, each value a list of [start, end] string pairs, start <= end,
// and the windows of a file sorted and not overlapping. Errors name the file,
// the key and the window index.
using NabWindow = std::pair<int64_t, int64_t>;  // [start, end], epoch seconds, inclusive
using NabLabels = std::map<std::string, std::vector<NabWindow>>;

NabLabels read_nab_labels(const std::string& path);
NabLabels parse_nab_labels(std::string_view json_text, const std::string& source);

// The whole contents of a file; throws ssm::Error naming the path.
std::string read_text_file(const std::string& path);

}  // namespace ssm
