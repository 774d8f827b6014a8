// Pieces the series detector and the group detector share: half-life
// weights, the fingerprint hash, the evidence channel's step and the state
// bytes' writer and checked reader.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "ssm/common.hpp"
#include "json_fields.hpp"
#include "ssm/detector.hpp"

#include <nlohmann/json.hpp>

namespace ssm::detail {


// 1 - 2^(-1/h): the weight whose influence halves after h values.
inline double half_life_alpha(double h) { return 1.0 - std::exp2(-1.0 / h); }

inline uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}


// Little-endian field writer / checked reader of a state's bytes.
class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
  std::vector<uint8_t> out;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  template <typename T>
  T get() {
    // Messages are built only on failure: a state is read per series at restore and takeover.
    if (pos_ + sizeof(T) > b_.size()) fail("series state: truncated (" + std::to_string(b_.size()) + " bytes)");
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  double finite() {
    const double v = get<double>();
    require(std::isfinite(v), "series state: a non-finite field");
    return v;
  }
  size_t left() const { return b_.size() - pos_; }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};


// Adds error e to a channel and returns its weighted evidence (-log10 of the
// tail of the window average against the long-run moments, 0 while
// `judge` is false or nothing is known yet); the moments then take the
// average in.
inline double channel_step(ChannelState& s, const ChannelConfig& c, double alpha, double e, bool judge) {
  if (c.weight <= 0) return 0;
  if (c.log) e = std::log(e + 0.1);
  if (s.filled == c.window) s.sum -= s.ring[s.pos];
  s.ring[s.pos] = static_cast<float>(e);
  s.sum += s.ring[s.pos];
  s.pos = (s.pos + 1) % c.window;
  s.filled = std::min(s.filled + 1, c.window);
  if (s.pos == 0) {  // recomputed once per lap, so rounding never accumulates
    s.sum = 0;
    for (int i = 0; i < s.filled; ++i) s.sum += s.ring[i];
  }
  const double mean = s.sum / s.filled;
  double evidence = 0;
  if (judge && s.count > 0) {
    const double sigma = std::max(std::sqrt(std::max(s.var, 0.0)), c.min_sigma);
    const double tail = 0.5 * std::erfc((mean - s.mean) / sigma / std::sqrt(2.0));  // accurate far out
    evidence = c.weight * -std::log10(std::max(tail, 1e-300));
  }
  ++s.count;
  const double a = std::max(alpha, 1.0 / s.count);
  const double d = mean - s.mean;
  s.mean += a * d;
  s.var = (1 - a) * (s.var + a * d * d);
  return evidence;
}


inline void put_channel(Writer& w, const ChannelState& c, const ChannelConfig& cfg) {
  for (int i = 0; i < cfg.window; ++i) w.put(c.ring[i]);
  w.put(static_cast<int32_t>(c.pos));
  w.put(static_cast<int32_t>(c.filled));
  w.put(c.sum);
  w.put(c.mean);
  w.put(c.var);
  w.put(c.count);
}

inline void get_channel(Reader& r, ChannelState& c, const ChannelConfig& cfg, const char* name) {
  auto bad = [name](const char* what) { fail(std::string("series state: channel ") + name + ": " + what); };
  for (int i = 0; i < cfg.window; ++i) {
    c.ring[i] = r.get<float>();
    if (!std::isfinite(c.ring[i])) bad("a non-finite error");
  }
  c.pos = r.get<int32_t>();
  c.filled = r.get<int32_t>();
  if (!(c.filled >= 0 && c.filled <= cfg.window && c.pos >= 0 && c.pos < cfg.window))
    bad("window position out of range");
  c.sum = r.finite();
  c.mean = r.finite();
  c.var = r.finite();
  c.count = r.get<int64_t>();
  if (!(c.var >= 0 && c.count >= 0)) bad("a negative variance or count");
}

// A channel's section of a config: strict, errors name `source` and `name`.
inline void read_channel(const nlohmann::json& j, const std::string& source, const std::string& name, ChannelConfig& c) {
  JsonFields f(j, source, name, {"weight", "window", "half_life", "min_sigma", "log"});
  f.get("weight", c.weight);
  f.get("window", c.window);
  f.get("half_life", c.half_life);
  f.get("min_sigma", c.min_sigma);
  f.get("log", c.log);
}

inline nlohmann::json channel_json(const ChannelConfig& c) {
  return {{"weight", c.weight},
          {"window", c.window},
          {"half_life", c.half_life},
          {"min_sigma", c.min_sigma},
          {"log", c.log}};
}

}  // namespace ssm::detail
