// Time-series CSV and NAB labels readers: timestamps of every accepted form
// checked against epochs worked out by hand, line ends, repeated / backward
// rows kept and counted, one test per rejection (strict and lenient), the
// sample corpus files, and random input that may only ever raise ssm::Error.
#include "ssm/timeseries_csv.hpp"
#include "testing.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace {

using ssm::NumberParse;
using ssm::parse_timeseries_csv;
using ssm::parse_timestamp;

const std::string kSamples = SSM_SOURCE_DIR "/samples/nab";

using ssm::testing::error_of;

// 2014-04-01: 44 years after 1970 with 11 leap days (72, 76, ..., 2012)
// -> 44*365 + 11 = 16071 days, plus Jan 31 + Feb 28 + Mar 31 = 90 days:
// 16161 days * 86400 = 1396310400.
constexpr int64_t k20140401 = 1396310400;

TEST(Timestamp, AcceptedForms) {
  EXPECT_EQ(parse_timestamp("2014-04-01 00:00:00"), k20140401);
  EXPECT_EQ(parse_timestamp("2014-04-01T00:05:00"), k20140401 + 300);
  EXPECT_EQ(parse_timestamp("2014-04-01T00:05:00Z"), k20140401 + 300);
  EXPECT_EQ(parse_timestamp("2014-04-01 00:00:00.000000"), k20140401);
  EXPECT_EQ(parse_timestamp("1396310400"), k20140401);
  EXPECT_EQ(parse_timestamp("0"), 0);
  // One second before the epoch, by either form.
  EXPECT_EQ(parse_timestamp("1969-12-31 23:59:59"), -1);
  EXPECT_EQ(parse_timestamp("-1"), -1);
  // 2016 is a leap year: 2016-02-29 = 2014-04-01 + 699 days (275 to 2015-01-01,
  // 365 to 2016-01-01, 59 to Feb 29), then 12:34:56 = 45296 s.
  EXPECT_EQ(parse_timestamp("2016-02-29 12:34:56"), k20140401 + 699 * 86400 + 45296);
  // The ends of the range.
  EXPECT_EQ(parse_timestamp("0001-01-01 00:00:00"), -62135596800);
  EXPECT_EQ(parse_timestamp("9999-12-31 23:59:59"), 253402300799);
}

TEST(Timestamp, Rejections) {
  for (const char* bad : {"", "2014-04-01", "2014-4-01 00:00:00", "2014-04-01 00:00", "2014/04/01 00:00:00",
                          "2015-02-29 00:00:00", "2014-13-01 00:00:00", "2014-04-31 00:00:00",
                          "2014-04-01 24:00:00", "2014-04-01 00:60:00", "2014-04-01 00:00:60",
                          "0000-01-01 00:00:00", "2014-04-01 00:00:00.5", "2014-04-01 00:00:00.",
                          "2014-04-01 00:00:00 ", "1e9", "12a", "253402300800", "-62135596801"}) {
    const std::string msg = error_of([&] { parse_timestamp(bad); });
    EXPECT_NE(msg.find("expected"), std::string::npos) << "'" << bad << "' -> " << msg;
  }
  // 1900 is not a leap year (divisible by 100), 2000 is (by 400).
  EXPECT_NE(error_of([] { parse_timestamp("1900-02-29 00:00:00"); }), "");
  EXPECT_EQ(error_of([] { parse_timestamp("2000-02-29 00:00:00"); }), "");
}

TEST(Timestamp, FormatRoundTrip) {
  EXPECT_EQ(ssm::format_timestamp(k20140401), "2014-04-01 00:00:00");
  EXPECT_EQ(ssm::format_timestamp(-1), "1969-12-31 23:59:59");
  EXPECT_EQ(ssm::format_timestamp(253402300799), "9999-12-31 23:59:59");
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> u(-62135596800, 253402300799);
  for (int k = 0; k < 2000; ++k) {
    const int64_t t = u(rng);
    ASSERT_EQ(parse_timestamp(ssm::format_timestamp(t)), t);
  }
  EXPECT_NE(error_of([] { ssm::format_timestamp(253402300800); }), "");
}

TEST(Number, StrictDecimal) {
  double v = -7;
  EXPECT_EQ(ssm::parse_number("18.32", &v), NumberParse::ok);
  EXPECT_EQ(v, 18.32);
  EXPECT_EQ(ssm::parse_number("+5", &v), NumberParse::ok);
  EXPECT_EQ(v, 5.0);
  EXPECT_EQ(ssm::parse_number("-2.5e3", &v), NumberParse::ok);
  EXPECT_EQ(v, -2500.0);
  EXPECT_EQ(ssm::parse_number("1e-400", &v), NumberParse::ok);  // below the smallest subnormal
  EXPECT_EQ(v, 0.0);
  EXPECT_EQ(ssm::parse_number("0.0000000000000000000000000000000000000000000000000000000000000001e-300", &v),
            NumberParse::ok);
  EXPECT_EQ(v, 0.0);
  EXPECT_EQ(ssm::parse_number("1e400", &v), NumberParse::not_finite);
  EXPECT_EQ(ssm::parse_number("123456789e301", &v), NumberParse::not_finite);
  EXPECT_EQ(ssm::parse_number("nan", &v), NumberParse::not_finite);
  EXPECT_EQ(ssm::parse_number("-inf", &v), NumberParse::not_finite);
  for (const char* bad : {"", "abc", "0x10", "1,5", " 1", "1 ", "++1", "+-1", "1e", "--1", "+"})
    EXPECT_EQ(ssm::parse_number(bad, &v), NumberParse::not_a_number) << "'" << bad << "'";
}

TEST(TimeSeriesCsv, NabLayoutLf) {
  const auto ts = parse_timeseries_csv(
      "timestamp,value\n"
      "2014-04-01 00:00:00,18.32\n"
      "2014-04-01 00:05:00,-1.5e2\n",
      "a.csv");
  EXPECT_EQ(ts.source, "a.csv");
  ASSERT_EQ(ts.rows.size(), 2u);
  EXPECT_EQ(ts.rows[0].epoch, k20140401);
  EXPECT_EQ(ts.rows[0].value, 18.32);
  EXPECT_EQ(ts.rows[0].timestamp, "2014-04-01 00:00:00");
  EXPECT_EQ(ts.rows[1].epoch, k20140401 + 300);
  EXPECT_EQ(ts.rows[1].value, -150.0);
  EXPECT_EQ(ts.repeated, 0u);
  EXPECT_EQ(ts.backward, 0u);
  EXPECT_EQ(ts.epochs(), (std::vector<int64_t>{k20140401, k20140401 + 300}));
  EXPECT_EQ(ts.values(), (std::vector<double>{18.32, -150.0}));
}

TEST(TimeSeriesCsv, CrlfBomTrailingBlanksNoFinalNewline) {
  const auto a = parse_timeseries_csv("\xEF\xBB\xBFtimestamp,value\r\n1396310400,1\r\n1396310460,2\r\n\r\n\n  \n", "a");
  ASSERT_EQ(a.rows.size(), 2u);
  EXPECT_EQ(a.rows[1].epoch, k20140401 + 60);
  EXPECT_EQ(a.rows[1].value, 2.0);
  const auto b = parse_timeseries_csv("timestamp,value\n2014-04-01T00:00:00,3", "b");
  ASSERT_EQ(b.rows.size(), 1u);
  EXPECT_EQ(b.rows[0].value, 3.0);
  EXPECT_EQ(parse_timeseries_csv("timestamp,value\n", "c").rows.size(), 0u);
}

TEST(TimeSeriesCsv, RepeatedAndBackwardKeptInFileOrder) {
  // Times 0, 60, 60 (repeat), 30 (backward), 90: every row stays, in order.
  const auto ts = parse_timeseries_csv("timestamp,value\n0,1\n60,2\n60,3\n30,4\n90,5\n", "r");
  ASSERT_EQ(ts.rows.size(), 5u);
  EXPECT_EQ(ts.epochs(), (std::vector<int64_t>{0, 60, 60, 30, 90}));
  EXPECT_EQ(ts.values(), (std::vector<double>{1, 2, 3, 4, 5}));
  EXPECT_EQ(ts.repeated, 1u);
  EXPECT_EQ(ts.backward, 1u);
}

TEST(TimeSeriesCsv, HeaderColumnsAnyOrderExtraIgnored) {
  const auto ts = parse_timeseries_csv("value,timestamp,label\n7.5,2014-04-01 00:00:00,1\n", "h");
  ASSERT_EQ(ts.rows.size(), 1u);
  EXPECT_EQ(ts.rows[0].value, 7.5);
  EXPECT_EQ(ts.rows[0].epoch, k20140401);
  // A NAB results file, reading its score column.
  ssm::TimeSeriesCsvOptions opt;
  opt.value_column = "anomaly_score";
  const auto r = parse_timeseries_csv("timestamp,value,anomaly_score\n0,10,0.25\n", "res", opt);
  EXPECT_EQ(r.rows[0].value, 0.25);
}

TEST(TimeSeriesCsv, StrictErrorsNameFileAndLine) {
  struct Case {
    const char* text;
    const char* expect;  // substring of the message
  };
  const Case cases[] = {
      {"", "f.csv:1: expected a header"},
      {"time,value\n0,1\n", "f.csv:1: expected a header"},
      {"timestamp,value,timestamp\n", "f.csv:1: column 'timestamp' appears twice"},
      {"timestamp,value\n0,1\n60\n", "f.csv:3: expected 2 comma-separated fields, got 1"},
      {"timestamp,value\n0,1\n60,2,3\n", "f.csv:3: expected 2 comma-separated fields, got 3"},
      {"timestamp,value\n2014-02-30 00:00:00,1\n", "f.csv:2: timestamp '2014-02-30 00:00:00': expected a day"},
      {"timestamp,value\n0,abc\n", "f.csv:2: column 'value' 'abc': expected a decimal number"},
      {"timestamp,value\n0,nan\n", "f.csv:2: column 'value' 'nan': expected a finite number"},
      {"timestamp,value\n0,\n", "f.csv:2: column 'value' '': expected a decimal number"},
      {"timestamp,value\n0,1\n\n60,2\n", "f.csv:3: blank line before the end of the file"},
  };
  for (const auto& c : cases) {
    const std::string msg = error_of([&] { parse_timeseries_csv(c.text, "f.csv"); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "input: " << c.text << "\nmessage: " << msg;
  }
}

TEST(TimeSeriesCsv, LenientSkipsAndCounts) {
  ssm::TimeSeriesCsvOptions opt;
  opt.lenient = true;
  // Lines 3 (bad value), 4 and 5 (blank in the middle), 7 (bad time) are skipped.
  const auto ts = parse_timeseries_csv("timestamp,value\n0,1\n60,x\n\n\n120,3\nnever,4\n180,5\n", "l.csv", opt);
  EXPECT_EQ(ts.epochs(), (std::vector<int64_t>{0, 120, 180}));
  EXPECT_EQ(ts.skipped, 4u);
  ASSERT_EQ(ts.skipped_errors.size(), 4u);
  EXPECT_EQ(ts.skipped_errors[0].rfind("l.csv:3:", 0), 0u) << ts.skipped_errors[0];
  EXPECT_EQ(ts.skipped_errors[1].rfind("l.csv:4:", 0), 0u) << ts.skipped_errors[1];
  EXPECT_EQ(ts.skipped_errors[2].rfind("l.csv:5:", 0), 0u) << ts.skipped_errors[2];
  EXPECT_EQ(ts.skipped_errors[3].rfind("l.csv:7:", 0), 0u) << ts.skipped_errors[3];
  // The header is never skipped.
  EXPECT_NE(error_of([&] { parse_timeseries_csv("x,y\n0,1\n", "l.csv", opt); }), "");
}

TEST(TimeSeriesCsv, SampleFiles) {
  // 40 rows, LF, 5-minute steps from 2014-04-01 00:00:00.
  const auto art = ssm::read_timeseries_csv(kSamples + "/data/artificialWithAnomaly/art_daily_jumpsup_excerpt.csv");
  ASSERT_EQ(art.rows.size(), 40u);
  EXPECT_EQ(art.rows[0].epoch, k20140401);
  EXPECT_EQ(art.rows[39].epoch, k20140401 + 39 * 300);
  EXPECT_EQ(art.rows[0].value, 19.761251902999998);
  // 21 rows, CRLF, hourly, with one repeated timestamp (rows 9 and 10).
  const auto ex = ssm::read_timeseries_csv(kSamples + "/data/realAdExchange/exchange-2_cpc_excerpt.csv");
  ASSERT_EQ(ex.rows.size(), 21u);
  EXPECT_EQ(ex.repeated, 1u);
  EXPECT_EQ(ex.backward, 0u);
  EXPECT_EQ(ex.rows[9].timestamp, "2011-08-24 12:00:01");
  EXPECT_EQ(ex.rows[10].timestamp, "2011-08-24 12:00:01");
  EXPECT_EQ(ex.rows[9].value, 0.13125);
  EXPECT_EQ(ex.rows[10].value, 0.119452887538);
  const std::string missing = error_of([] { ssm::read_timeseries_csv(kSamples + "/no_such_file.csv"); });
  EXPECT_NE(missing.find("no_such_file.csv: cannot open"), std::string::npos) << missing;
}

TEST(NabLabels, ParseAndRoundInwards) {
  const auto labels = ssm::parse_nab_labels(
      R"({"a/x.csv": [["2014-04-01 00:00:00.000000", "2014-04-01 01:00:00.000000"],
                       ["2014-04-01 02:00:00.250000", "2014-04-01 03:00:00.750000"]],
          "b/y.csv": []})",
      "labels.json");
  ASSERT_EQ(labels.size(), 2u);
  const auto& w = labels.at("a/x.csv");
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0], (ssm::NabWindow{k20140401, k20140401 + 3600}));
  // 02:00:00.25 rounds up to 02:00:01, 03:00:00.75 down to 03:00:00.
  EXPECT_EQ(w[1], (ssm::NabWindow{k20140401 + 7201, k20140401 + 10800}));
  EXPECT_TRUE(labels.at("b/y.csv").empty());
}

TEST(NabLabels, Rejections) {
  struct Case {
    const char* json;
    const char* expect;
  };
  const Case cases[] = {
      {"{", "labels.json: invalid JSON"},
      {"[]", "expected a JSON object"},
      {R"({"a.csv": 3})", "'a.csv': expected a list"},
      {R"({"a.csv": [["2014-04-01 00:00:00"]]})", "'a.csv' window 0: expected [\"start\", \"end\"]"},
      {R"({"a.csv": [[1, 2]]})", "'a.csv' window 0: expected [\"start\", \"end\"]"},
      {R"({"a.csv": [["2014-04-01 00:00:00", "2014-04-31 00:00:00"]]})", "'a.csv' window 0: end"},
      {R"({"a.csv": [["2014-04-02 00:00:00", "2014-04-01 00:00:00"]]})", "is after end"},
      {R"({"a.csv": [["2014-04-01 00:00:00.6", "2014-04-01 00:00:00.9"]]})", "is after end"},
      {R"({"a.csv": [["2014-04-01 00:00:00", "2014-04-01 02:00:00"],
                     ["2014-04-01 01:00:00", "2014-04-01 03:00:00"]]})",
       "'a.csv' window 1: starts before the previous window ends"},
  };
  for (const auto& c : cases) {
    const std::string msg = error_of([&] { ssm::parse_nab_labels(c.json, "labels.json"); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "input: " << c.json << "\nmessage: " << msg;
  }
  // Windows may touch, as NAB allows.
  EXPECT_EQ(error_of([] {
              ssm::parse_nab_labels(R"({"a.csv": [["2014-04-01 00:00:00", "2014-04-01 01:00:00"],
                                                   ["2014-04-01 01:00:00", "2014-04-01 02:00:00"]]})",
                                    "labels.json");
            }),
            "");
}

TEST(TimeSeriesCsv, RandomInputOnlyEverThrowsSsmError) {
  std::mt19937_64 rng(11);
  using namespace std::string_literals;
  const std::string alphabet = "0123456789-: T.,\r\nZetimsapvlu\xEF\xBB\xBF\x00+e"s;  // NUL included
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text = iter % 2 ? "timestamp,value\n" : "";
    const size_t n = rng() % 200;
    for (size_t i = 0; i < n; ++i)
      text += iter % 3 == 0 ? static_cast<char>(rng()) : alphabet[rng() % alphabet.size()];
    for (bool lenient : {false, true}) {
      ssm::TimeSeriesCsvOptions opt;
      opt.lenient = lenient;
      try {
        const auto ts = parse_timeseries_csv(text, "fuzz", opt);
        for (const auto& r : ts.rows) ASSERT_TRUE(std::isfinite(r.value));
      } catch (const ssm::Error&) {
      }
      try {
        ssm::parse_nab_labels(text, "fuzz");
      } catch (const ssm::Error&) {
      }
    }
  }
}

}  // namespace
