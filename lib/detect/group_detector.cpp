// Series of one entity scored jointly (GroupDetector, ssm/detector.hpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "detector_parts.hpp"
#include "json_fields.hpp"
#include "ssm/detector.hpp"

namespace ssm {

namespace {

using nlohmann::json;
using namespace detail;

constexpr char kGroupMagic[8] = {'S', 'S', 'M', 'G', 'R', 'P', 'S', '1'};

size_t packed(size_t k) { return k * (k + 1) / 2; }
// Row i, column j <= i of a packed lower triangle.
size_t at(size_t i, size_t j) { return i * (i + 1) / 2 + j; }

void check(bool ok, const std::string& field, const std::string& expected) {
  require(ok, "group config: '" + field + "' " + expected);
}

// The Cholesky factor L of (R + ridge I), R = the covariance scaled to unit
// diagonal (each deviation at least 0.1, so that a field that never moved
// weighs as one that moved a little). False when the matrix is not positive
// definite (it always is with ridge > 0 but for rounding).
bool factorise(GroupState& g, double ridge) {
  const size_t k = g.mean.size();
  for (size_t i = 0; i < k; ++i) g.sd[i] = std::max(std::sqrt(std::max(g.cov[at(i, i)], 0.0)), 0.1);
  std::vector<double>& l = g.factor;
  for (size_t i = 0; i < k; ++i)
    for (size_t j = 0; j <= i; ++j) {
      double v = g.cov[at(i, j)] / (g.sd[i] * g.sd[j]) + (i == j ? ridge : 0.0);
      for (size_t m = 0; m < j; ++m) v -= l[at(i, m)] * l[at(j, m)];
      if (i == j) {
        if (!(v > 0)) return false;
        l[at(i, i)] = std::sqrt(v);
      } else {
        l[at(i, j)] = v / l[at(j, j)];
      }
    }
  return true;
}

}  // namespace

void GroupConfig::validate() const {
  check(std::isfinite(joint.weight) && joint.weight >= 0, "joint.weight", "must be >= 0");
  check(joint.window >= 1 && joint.window <= kMaxShortWindow, "joint.window",
        "must be in 1 .. " + std::to_string(kMaxShortWindow));
  check(std::isfinite(joint.half_life) && joint.half_life >= 1, "joint.half_life", "must be >= 1");
  check(std::isfinite(joint.min_sigma) && joint.min_sigma > 0, "joint.min_sigma", "must be > 0");
  check(std::isfinite(half_life) && half_life >= 1, "half_life", "must be >= 1");
  check(std::isfinite(ridge) && ridge > 0, "ridge", "must be > 0");
  check(refresh >= 1, "refresh", "must be >= 1");
  check(warmup >= 2, "warmup", "must be >= 2");
  check(fields || joint.weight > 0, "fields", "is false and joint.weight is 0 (nothing would score)");
}

GroupConfig GroupConfig::from_json(const json& j, const std::string& source) {
  GroupConfig c;
  detail::JsonFields f(j, source, "", {"joint", "half_life", "ridge", "refresh", "warmup", "fields"});
  if (const json* n = f.find("joint")) read_channel(*n, source, "joint", c.joint);
  f.get("half_life", c.half_life);
  f.get("ridge", c.ridge);
  f.get("refresh", c.refresh);
  f.get("warmup", c.warmup);
  f.get("fields", c.fields);
  detail::validate_config(c, source);
  return c;
}

json GroupConfig::to_json() const {
  return {{"joint", channel_json(joint)},
          {"half_life", half_life},
          {"ridge", ridge},
          {"refresh", refresh},
          {"warmup", warmup},
          {"fields", fields}};
}

GroupDetector::GroupDetector(std::shared_ptr<const Forecaster> forecaster, DetectorConfig cfg, GroupConfig group,
                             std::shared_ptr<const Forecaster> scorer)
    : det_(std::move(forecaster), std::move(cfg), std::move(scorer)), cfg_(group) {
  cfg_.validate();
  a_cov_ = half_life_alpha(cfg_.half_life);
  a_joint_ = half_life_alpha(cfg_.joint.half_life);
  const std::string text = cfg_.to_json().dump();
  const uint64_t df = det_.fingerprint();
  fingerprint_ = fnv1a(fnv1a(1469598103934665603ull, text.data(), text.size()), &df, sizeof(df));
}

GroupState GroupDetector::new_group(int fields) const {
  require(fields >= 1 && fields <= kMaxGroupFields,
          "group detector: " + std::to_string(fields) + " fields (expected 1 .. " + std::to_string(kMaxGroupFields) +
              ")");
  GroupState g;
  const size_t k = static_cast<size_t>(fields);
  g.fields.assign(k, det_.new_series());
  g.mean.assign(k, 0.0);
  g.cov.assign(packed(k), 0.0);
  g.factor.assign(packed(k), 0.0);
  g.sd.assign(k, 1.0);
  return g;
}

size_t GroupDetector::state_bytes(int fields) const {
  const size_t k = static_cast<size_t>(fields);
  return sizeof(GroupState) + k * det_.state_bytes() + (2 * k + 2 * packed(k)) * sizeof(double);
}

GroupResult GroupDetector::update(GroupState& g, int64_t epoch, std::span<const double> values,
                                  std::span<DetectorResult> field_results) const {
  const size_t k = g.fields.size();
  require(values.size() == k, "group detector: a row of " + std::to_string(values.size()) + " values for " +
                                  std::to_string(k) + " fields");
  require(field_results.empty() || field_results.size() == k, "group detector: field_results must hold one per field");
  for (double v : values) require(std::isfinite(v), "group detector: value is not finite");
  if (g.count > 0 && epoch == g.last_epoch) {
    GroupResult r;
    r.kind = PointKind::repeat;
    r.score = g.last_score;
    return r;
  }
  if (g.count > 0 && epoch < g.last_epoch) {
    GroupState copy = g;  // late rows are rare
    GroupResult r = advance(copy, g.last_epoch + 1, values, field_results);
    r.kind = PointKind::out_of_order;
    return r;
  }
  return advance(g, epoch, values, field_results);
}

GroupResult GroupDetector::advance(GroupState& g, int64_t epoch, std::span<const double> values,
                                   std::span<DetectorResult> field_results) const {
  const DetectorConfig& dc = det_.config();
  const size_t k = g.fields.size();
  GroupResult r;
  double z[kMaxGroupFields];
  for (size_t i = 0; i < k; ++i) {
    const DetectorResult fr = det_.update(g.fields[i], epoch, values[i]);
    if (!field_results.empty()) field_results[i] = fr;
    z[i] = fr.z;
    if (cfg_.fields && fr.raw > r.fields) {
      r.fields = fr.raw;
      r.top_field = static_cast<int>(i);
    }
  }
  // The joint error against the factor made from earlier rows.
  double w[kMaxGroupFields];
  if (g.factored) {
    double d2 = 0;
    for (size_t i = 0; i < k; ++i) {
      double v = std::clamp((z[i] - g.mean[i]) / g.sd[i], -dc.norm.z_clip, dc.norm.z_clip);
      for (size_t m = 0; m < i; ++m) v -= g.factor[at(i, m)] * w[m];
      w[i] = v / g.factor[at(i, i)];
      d2 += w[i] * w[i];
    }
    r.distance = d2 / static_cast<double>(k);
  }
  const bool judge = g.count >= dc.learning;
  const double evidence = g.factored ? channel_step(g.joint, cfg_.joint, a_joint_, r.distance, judge) : 0.0;
  r.joint = std::clamp(evidence / dc.decades, 0.0, 1.0);
  r.raw = judge ? std::max(r.fields, r.joint) : 0.0;
  // The moments take the row in (plain running moments for the first rows).
  ++g.count;
  const double a = std::max(a_cov_, 1.0 / static_cast<double>(g.count));
  double d[kMaxGroupFields];
  for (size_t i = 0; i < k; ++i) {
    d[i] = z[i] - g.mean[i];
    g.mean[i] += a * d[i];
  }
  for (size_t i = 0; i < k; ++i)
    for (size_t j = 0; j <= i; ++j) g.cov[at(i, j)] = (1 - a) * (g.cov[at(i, j)] + a * d[i] * d[j]);
  if (g.count >= cfg_.warmup && (g.count - cfg_.warmup) % cfg_.refresh == 0) {
    // A factor that fails (rounding) leaves the last good one in place.
    const std::vector<double> factor = g.factor, sd = g.sd;
    if (factorise(g, cfg_.ridge)) {
      g.factored = true;
    } else {
      g.factor = factor;
      g.sd = sd;
    }
  }
  g.last_epoch = epoch;
  if (r.raw > g.peak) {
    r.score = r.raw;
    g.peak = r.raw;
  } else {
    r.score = r.raw * dc.refractory;
    g.peak *= dc.peak_decay;
  }
  g.last_score = r.score;
  return r;
}

std::vector<uint8_t> GroupDetector::save(const GroupState& g) const {
  Writer w;
  w.out.insert(w.out.end(), kGroupMagic, kGroupMagic + sizeof(kGroupMagic));
  w.put(fingerprint_);
  w.put(static_cast<uint32_t>(g.fields.size()));
  for (const SeriesState& s : g.fields) {
    const std::vector<uint8_t> b = det_.save(s);
    w.put(static_cast<uint32_t>(b.size()));
    w.out.insert(w.out.end(), b.begin(), b.end());
  }
  w.put(g.count);
  w.put(g.last_epoch);
  for (const auto* v : {&g.mean, &g.cov, &g.factor, &g.sd})
    for (double x : *v) w.put(x);
  w.put(static_cast<uint8_t>(g.factored));
  put_channel(w, g.joint, cfg_.joint);
  w.put(g.peak);
  w.put(g.last_score);
  return std::move(w.out);
}

GroupState GroupDetector::load(std::span<const uint8_t> bytes) const {
  require(bytes.size() >= sizeof(kGroupMagic) && std::memcmp(bytes.data(), kGroupMagic, sizeof(kGroupMagic)) == 0,
          "group state: not a group detector state (bad magic)");
  Reader r(bytes.subspan(sizeof(kGroupMagic)));
  require(r.get<uint64_t>() == fingerprint_, "group state: saved by a detector with another forecaster or config");
  const uint32_t k = r.get<uint32_t>();
  require(k >= 1 && k <= kMaxGroupFields, "group state: " + std::to_string(k) + " fields");
  GroupState g = new_group(static_cast<int>(k));
  size_t pos = sizeof(kGroupMagic) + sizeof(uint64_t) + sizeof(uint32_t);
  for (SeriesState& s : g.fields) {
    const uint32_t n = r.get<uint32_t>();
    pos += sizeof(uint32_t);
    require(n <= bytes.size() - pos, "group state: truncated");
    s = det_.load(bytes.subspan(pos, n));
    pos += n;
    for (uint32_t i = 0; i < n; ++i) r.get<uint8_t>();
  }
  g.count = r.get<int64_t>();
  g.last_epoch = r.get<int64_t>();
  require(g.count >= 0, "group state: a negative count");
  for (auto* v : {&g.mean, &g.cov, &g.factor, &g.sd})
    for (double& x : *v) x = r.finite();
  g.factored = r.get<uint8_t>() != 0;
  get_channel(r, g.joint, cfg_.joint, "joint");
  g.peak = r.finite();
  g.last_score = r.finite();
  require(r.left() == 0, "group state: " + std::to_string(r.left()) + " bytes after the end");
  return g;
}

}  // namespace ssm
