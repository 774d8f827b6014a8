// The lines the detection server sends: score lines (Graphite), event lines
// (JSON) and its own metrics (Graphite). Appended to a string without locale
// or allocation beyond the string's growth (streams/detect only).
#pragma once
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include "ssm/detector.hpp"

namespace ssm::detect {

inline void put_int(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}
// precision 0: the shortest text that reads back as v.
inline void put_double(std::string& out, double v, int precision) {
  char buf[40];
  auto r = precision > 0 ? std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general, precision)
                         : std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

// "<prefix><name>.score[;tags] <score> <epoch>\n": a tagged path keeps its
// tags after the ".score", so that the score series is tagged as its source.
// The score has `precision` significant digits (0: all it takes to read
// back as the same double).
inline void append_score_line(std::string& out, std::string_view prefix, std::string_view path, double score,
                              int64_t epoch, int precision = 6) {
  const size_t semi = path.find(';');
  out.append(prefix).append(path.substr(0, semi)).append(".score");
  if (semi != std::string_view::npos) out.append(path.substr(semi));
  out.push_back(' ');
  put_double(out, score, precision);
  out.push_back(' ');
  put_int(out, epoch);
  out.push_back('\n');
}

// {"series":..,"time":..,"value":..,"prediction":..,"score":..,"likelihood":..,"kind":..}
// The parser admits no '"', '\' or control bytes in a path, and UTF-8 goes
// into JSON as it is.
inline void append_event_line(std::string& out, std::string_view path, int64_t epoch, double value,
                              const DetectorResult& r) {
  out.append("{\"series\":\"").append(path).append("\",\"time\":");
  put_int(out, epoch);
  out.append(",\"value\":");
  put_double(out, value, 0);
  out.append(",\"prediction\":");
  put_double(out, r.prediction, 0);
  out.append(",\"score\":");
  put_double(out, r.score, 0);
  out.append(",\"likelihood\":");
  put_double(out, r.likelihood, 0);
  out.append(r.kind == PointKind::scored ? ",\"kind\":\"scored\"}\n" : ",\"kind\":\"out_of_order\"}\n");
}

// "<prefix><name> <value> <epoch>\n" (the server's own metrics).
inline void append_metric_line(std::string& out, std::string_view prefix, std::string_view name, uint64_t value,
                               int64_t epoch) {
  out.append(prefix).append(name).push_back(' ');
  put_int(out, static_cast<int64_t>(value));
  out.push_back(' ');
  put_int(out, epoch);
  out.push_back('\n');
}

}  // namespace ssm::detect
