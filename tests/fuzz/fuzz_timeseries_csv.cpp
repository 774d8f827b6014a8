// libFuzzer target for the time-series CSV reader (parse_timeseries_csv) and
// the strict number and timestamp parsers under it. The last bytes choose the
// options (strict or lenient, which value column); the rest is the file.
//
// Any text must either parse or throw ssm::Error. Of a parsed series: every
// value is finite, every epoch is within years 0001..9999 and equals
// parse_timestamp of the timestamp as written, format_timestamp /
// parse_timestamp round-trip it, the repeat and backward counts match the
// rows, strict mode skips nothing and lenient mode keeps at most ten reasons.
// A lenient parse keeps exactly the rows a strict parse of the same text
// keeps when the strict one succeeds. parse_number agrees with strtod on
// every number it accepts.
#include <fuzzer/FuzzedDataProvider.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz_common.hpp"
#include "ssm/common.hpp"
#include "ssm/timeseries_csv.hpp"

using ssm_fuzz::broken;
using ssm_fuzz::check;

namespace {

void check_series(const ssm::TimeSeries& ts, bool lenient) {
  size_t repeated = 0, backward = 0;
  for (size_t i = 0; i < ts.rows.size(); ++i) {
    const ssm::TimeSeriesRow& r = ts.rows[i];
    check(std::isfinite(r.value), "a row with a non-finite value");
    if (ssm::parse_timestamp(r.timestamp) != r.epoch) broken("the epoch differs from its timestamp's: " + r.timestamp);
    check(ssm::parse_timestamp(ssm::format_timestamp(r.epoch)) == r.epoch, "format_timestamp does not round-trip");
    if (i > 0) {
      repeated += r.epoch == ts.rows[i - 1].epoch;
      backward += r.epoch < ts.rows[i - 1].epoch;
    }
  }
  check(repeated == ts.repeated && backward == ts.backward, "repeat or backward counts do not match the rows");
  check(lenient || ts.skipped == 0, "strict mode skipped rows");
  check(ts.skipped_errors.size() <= 10 && ts.skipped_errors.size() <= ts.skipped, "skip reasons miscounted");
}

// parse_number accepts a subset of what strtod reads; where it accepts, both
// must give the same double (to the bit, zero's sign included).
void check_number(const std::string& text) {
  double v = 0;
  const ssm::NumberParse r = ssm::parse_number(text, &v);
  if (r != ssm::NumberParse::ok) return;
  check(std::isfinite(v), "parse_number accepted a non-finite value");
  check(text.find_first_of("xXpP \t\n") == std::string::npos, "parse_number accepted hex or spaces: " + text);
  char* end = nullptr;
  const double s = std::strtod(text.c_str(), &end);
  check(end == text.c_str() + text.size(), "parse_number accepted what strtod does not: " + text);
  check(std::memcmp(&s, &v, sizeof s) == 0, "parse_number and strtod differ on: " + text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  ssm::TimeSeriesCsvOptions opt;
  const int mode = in.ConsumeIntegralInRange(0, 3);
  opt.value_column = mode == 3 ? "anomaly_score" : "value";
  const std::string text = in.ConsumeRemainingBytesAsString();

  if (mode == 2) {  // a single number, and a single timestamp
    if (text.find('\0') == std::string::npos) check_number(text);
    try {
      const int64_t e = ssm::parse_timestamp(text);
      check(ssm::parse_timestamp(ssm::format_timestamp(e)) == e, "format_timestamp does not round-trip");
    } catch (const ssm::Error&) {
    }
    return 0;
  }

  bool strict_ok = false;
  ssm::TimeSeries strict;
  try {
    strict = ssm::parse_timeseries_csv(text, "fuzz input", opt);
    strict_ok = true;
    check_series(strict, false);
  } catch (const ssm::Error&) {
  }
  opt.lenient = true;
  try {
    const ssm::TimeSeries lenient = ssm::parse_timeseries_csv(text, "fuzz input", opt);
    check_series(lenient, true);
    if (strict_ok) {
      check(lenient.skipped == 0 && lenient.rows.size() == strict.rows.size(), "lenient and strict disagree");
      for (size_t i = 0; i < lenient.rows.size(); ++i)
        check(lenient.rows[i].epoch == strict.rows[i].epoch && lenient.rows[i].timestamp == strict.rows[i].timestamp &&
                  std::memcmp(&lenient.rows[i].value, &strict.rows[i].value, sizeof(double)) == 0,
              "lenient and strict rows differ");
    }
  } catch (const ssm::Error&) {
    check(!strict_ok, "lenient mode threw where strict mode parsed");
  }
  return 0;
}
