// The online normaliser, the anomaly likelihood and the per-series state.
#include "ssm/detector.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "detector_parts.hpp"
#include "json_fields.hpp"
#include "ssm/timeseries_csv.hpp"

namespace ssm {

static_assert(std::endian::native == std::endian::little, "state bytes are written in host order");

namespace {

using nlohmann::json;
using namespace detail;

using Fields = detail::JsonFields;

void check(bool ok, const std::string& field, const std::string& expected) {
  require(ok, "detector config: '" + field + "' " + expected);
}

void read_normaliser(const json& j, const std::string& source, const std::string& prefix, NormaliserConfig& n) {
  Fields f(j, source, prefix, {"warmup", "half_life", "clip_sigma", "min_std_rel", "min_std_abs", "z_clip"});
  f.get("warmup", n.warmup);
  f.get("half_life", n.half_life);
  f.get("clip_sigma", n.clip_sigma);
  f.get("min_std_rel", n.min_std_rel);
  f.get("min_std_abs", n.min_std_abs);
  f.get("z_clip", n.z_clip);
}

json normaliser_json(const NormaliserConfig& n) {
  return {{"warmup", n.warmup},           {"half_life", n.half_life},     {"clip_sigma", n.clip_sigma},
          {"min_std_rel", n.min_std_rel}, {"min_std_abs", n.min_std_abs}, {"z_clip", n.z_clip}};
}

constexpr char kStateMagic[8] = {'S', 'S', 'M', 'D', 'E', 'T', 'S', '2'};

}  // namespace

// ---------------------------------------------------------------- normaliser

void NormaliserConfig::validate() const {
  check(warmup >= 1 && warmup <= 1000000, "normaliser.warmup", "must be in 1 .. 1000000");
  check(std::isfinite(half_life) && half_life >= 1, "normaliser.half_life", "must be >= 1");
  check(std::isfinite(clip_sigma) && clip_sigma > 0, "normaliser.clip_sigma", "must be > 0");
  check(std::isfinite(min_std_rel) && min_std_rel >= 0, "normaliser.min_std_rel", "must be >= 0");
  check(std::isfinite(min_std_abs) && min_std_abs > 0, "normaliser.min_std_abs", "must be > 0");
  check(std::isfinite(z_clip) && z_clip > 0, "normaliser.z_clip", "must be > 0");
}

double Normaliser::stddev(const NormaliserConfig& c) const {
  return std::max(std::sqrt(std::max(var, 0.0)), c.min_std_rel * std::abs(mean) + c.min_std_abs);
}

double Normaliser::peek(double x, const NormaliserConfig& c) const {
  if (count == 0) return 0;
  return std::clamp((x - mean) / stddev(c), -c.z_clip, c.z_clip);
}

double Normaliser::push(double x, const NormaliserConfig& c) { return push(x, c, half_life_alpha(c.half_life)); }

double Normaliser::push(double x, const NormaliserConfig& c, double a) {
  const double z = peek(x, c);
  ++count;
  if (count == 1) {
    mean = x;
    var = 0;
  } else if (count <= c.warmup) {
    // Running moments (Welford), population variance.
    const double d = x - mean;
    mean += d / count;
    var += (d * (x - mean) - var) / count;
  } else {
    // A spike moves the moments only as far as clip_sigma deviations would,
    // so one outlier does not blind the normaliser to the next.
    const double lim = c.clip_sigma * stddev(c);
    const double d = std::clamp(x - mean, -lim, lim);
    mean += a * d;
    var = (1 - a) * (var + a * d * d);
  }
  return z;
}

// ---------------------------------------------------------------- config

namespace {

void validate_channel(const ChannelConfig& c, const std::string& name) {
  check(std::isfinite(c.weight) && c.weight >= 0, name + ".weight", "must be >= 0");
  check(c.window >= 1 && c.window <= kMaxShortWindow, name + ".window",
        "must be in 1 .. " + std::to_string(kMaxShortWindow));
  check(std::isfinite(c.half_life) && c.half_life >= 1, name + ".half_life", "must be >= 1");
  check(std::isfinite(c.min_sigma) && c.min_sigma > 0, name + ".min_sigma", "must be > 0");
}

}  // namespace

void DetectorConfig::validate() const {
  norm.validate();
  validate_channel(forecast, "forecast");
  validate_channel(level, "level");
  validate_channel(daily, "daily");
  validate_channel(weekly, "weekly");
  validate_channel(learned, "learned");
  check(forecast.weight + level.weight + daily.weight + weekly.weight + learned.weight > 0, "weights",
        "are all 0 (expected at least one channel on)");
  check(std::isfinite(level_half_life) && level_half_life >= 1, "level_half_life", "must be >= 1");
  check(std::isfinite(season_half_life) && season_half_life >= 1, "season_half_life", "must be >= 1");
  check(std::isfinite(season_fit_half_life) && season_fit_half_life >= 1, "season_fit_half_life", "must be >= 1");
  check(season_min_fit >= 0 && season_min_fit < 1, "season_min_fit", "must be in [0, 1)");
  check(learned_gain >= 0 && learned_gain <= 1, "learned_gain", "must be in [0, 1]");
  check(learned_veto >= 0 && learned_veto <= 1, "learned_veto", "must be in [0, 1]");
  check(learned_range >= 0 && learned_range <= 1, "learned_range", "must be in [0, 1]");
  check(learning >= 0, "learning", "must be >= 0");
  check(std::isfinite(decades) && decades > 0, "decades", "must be > 0");
  check(std::isfinite(spatial_tolerance) && spatial_tolerance >= 0, "spatial_tolerance", "must be >= 0");
  check(range_half_life == 0 || (std::isfinite(range_half_life) && range_half_life >= 1), "range_half_life",
        "must be 0 (never forget) or >= 1");
  check(spatial_score >= 0 && spatial_score <= 1, "spatial_score", "must be in [0, 1]");
  check(peak_decay >= 0 && peak_decay <= 1, "peak_decay", "must be in [0, 1]");
  check(refractory >= 0 && refractory <= 1, "refractory", "must be in [0, 1]");
}

DetectorConfig DetectorConfig::from_json(const json& j, const std::string& source) {
  DetectorConfig c;
  Fields f(j, source, "",
           {"normaliser", "forecast", "level", "daily", "weekly", "learned", "level_half_life", "season_half_life",
            "season_fit_half_life", "season_min_fit", "learned_gain", "learned_veto", "learned_range", "learning", "decades", "spatial_tolerance", "spatial_detrend",
            "range_half_life", "spatial_score",
            "peak_decay", "refractory"});
  if (const json* n = f.find("normaliser")) read_normaliser(*n, source, "normaliser", c.norm);
  if (const json* n = f.find("forecast")) read_channel(*n, source, "forecast", c.forecast);
  if (const json* n = f.find("level")) read_channel(*n, source, "level", c.level);
  if (const json* n = f.find("daily")) read_channel(*n, source, "daily", c.daily);
  if (const json* n = f.find("weekly")) read_channel(*n, source, "weekly", c.weekly);
  if (const json* n = f.find("learned")) read_channel(*n, source, "learned", c.learned);
  f.get("level_half_life", c.level_half_life);
  f.get("season_half_life", c.season_half_life);
  f.get("season_fit_half_life", c.season_fit_half_life);
  f.get("season_min_fit", c.season_min_fit);
  f.get("learned_gain", c.learned_gain);
  f.get("learned_veto", c.learned_veto);
  f.get("learned_range", c.learned_range);
  f.get("learning", c.learning);
  f.get("decades", c.decades);
  f.get("spatial_tolerance", c.spatial_tolerance);
  f.get("spatial_detrend", c.spatial_detrend);
  f.get("range_half_life", c.range_half_life);
  f.get("spatial_score", c.spatial_score);
  f.get("peak_decay", c.peak_decay);
  f.get("refractory", c.refractory);
  detail::validate_config(c, source);
  return c;
}

DetectorConfig DetectorConfig::from_file(const std::string& path) {
  return from_json(detail::parse_config_json(read_text_file(path), path), path);
}

json DetectorConfig::to_json() const {
  return {{"normaliser", normaliser_json(norm)},
          {"forecast", channel_json(forecast)},
          {"level", channel_json(level)},
          {"daily", channel_json(daily)},
          {"weekly", channel_json(weekly)},
          {"learned", channel_json(learned)},
          {"level_half_life", level_half_life},
          {"season_half_life", season_half_life},
          {"season_fit_half_life", season_fit_half_life},
          {"season_min_fit", season_min_fit},
          {"learned_gain", learned_gain},
          {"learned_veto", learned_veto},
          {"learned_range", learned_range},
          {"learning", learning},
          {"decades", decades},
          {"spatial_tolerance", spatial_tolerance},
          {"spatial_detrend", spatial_detrend},
          {"range_half_life", range_half_life},
          {"spatial_score", spatial_score},
          {"peak_decay", peak_decay},
          {"refractory", refractory}};
}

// ---------------------------------------------------------------- detector

Detector::Detector(std::shared_ptr<const Forecaster> forecaster, DetectorConfig cfg,
                   std::shared_ptr<const Forecaster> scorer)
    : forecaster_(std::move(forecaster)), scorer_(std::move(scorer)), cfg_(std::move(cfg)) {
  require(forecaster_ != nullptr, "detector: no forecaster");
  cfg_.validate();
  require(scorer_ || cfg_.forecast.weight + cfg_.level.weight + cfg_.daily.weight + cfg_.weekly.weight > 0,
          "detector config: 'weights' are all 0 but the learned channel's, and there is no scorer");
  if (scorer_) {
    require(scorer_->config().out_channels == 1 && scorer_->horizon() == 1,
            "detector: the scorer must have one output (an anomaly likelihood) and horizon 1");
    require(scorer_->config().in_channels == forecaster_->config().in_channels,
            "detector: the scorer must read the forecaster's inputs (in_channels " +
                std::to_string(forecaster_->config().in_channels) + ")");
  }
  a_learned_ = half_life_alpha(cfg_.learned.half_life);
  fast_ = cfg_.norm;
  fast_.half_life = cfg_.level_half_life;
  a_norm_ = half_life_alpha(cfg_.norm.half_life);
  a_fast_ = half_life_alpha(fast_.half_life);
  a_forecast_ = half_life_alpha(cfg_.forecast.half_life);
  a_level_ = half_life_alpha(cfg_.level.half_life);
  a_daily_ = half_life_alpha(cfg_.daily.half_life);
  a_weekly_ = half_life_alpha(cfg_.weekly.half_life);
  a_fit_ = half_life_alpha(cfg_.season_fit_half_life);
  a_season_ = half_life_alpha(cfg_.season_half_life);
  two_outputs_ = forecaster_->config().out_channels == 2;
  range_keep_ = cfg_.range_half_life > 0 ? std::exp2(-1.0 / cfg_.range_half_life) : 1.0;
  // Without a scorer the learned settings change nothing, so they leave the
  // fingerprint (and the states saved before they existed) as it was.
  json cj = cfg_.to_json();
  if (!scorer_)
    for (const char* k : {"learned", "learned_gain", "learned_veto", "learned_range"}) cj.erase(k);
  const std::string text = cj.dump();
  const uint64_t ff = forecaster_->fingerprint();
  fingerprint_ = fnv1a(fnv1a(1469598103934665603ull, text.data(), text.size()), &ff, sizeof(ff));
  if (scorer_) {
    const uint64_t sf = scorer_->fingerprint();
    fingerprint_ = fnv1a(fingerprint_, &sf, sizeof(sf));
  }
}

SeriesState Detector::new_series() const {
  SeriesState s;
  s.model_state.assign(forecaster_->state_size(), 0.0f);
  if (scorer_) s.scorer_state.assign(scorer_->state_size(), 0.0f);
  if (forecaster_->horizon() > 1) s.ahead.assign(2 * static_cast<size_t>(forecaster_->horizon()), 0.0f);
  return s;
}

size_t Detector::state_bytes() const {
  const size_t ahead = forecaster_->horizon() > 1 ? 2 * static_cast<size_t>(forecaster_->horizon()) : 0;
  const size_t scorer = scorer_ ? scorer_->state_size() : 0;
  return sizeof(SeriesState) + (forecaster_->state_size() + ahead + scorer) * sizeof(float);
}

namespace {

constexpr double kMaxMagnitude = 1e150;

// Floor modulo: bins of the day / week for any epoch.
int64_t fmod64(int64_t a, int64_t m) { return ((a % m) + m) % m; }

// How much of the variance a seasonal profile explains.
double season_gate(double fit_resid, double fit_var, double min_fit) {
  if (fit_var <= 0) return 0;
  const double fit = 1 - fit_resid / fit_var;
  return std::clamp((fit - min_fit) / (1 - min_fit), 0.0, 1.0);
}

// The range rule's step: whether v lies beyond the range held so far (hi,
// lo: the two highest / lowest values) by more than `tolerance` of its
// width; then the range, drawn towards `centre` by `keep`, takes v in. An
// extreme that stands apart from the second one by more than the width
// between the second highest and lowest is a glitch: then the second one
// bounds.
bool range_step(double* hi, double* lo, double v, double centre, double keep, double tolerance, bool first) {
  if (first) {
    hi[0] = hi[1] = lo[0] = lo[1] = v;
    return false;
  }
  const double width = hi[1] - lo[1];
  const double top = hi[0] - hi[1] > width ? hi[1] : hi[0];
  const double bottom = lo[1] - lo[0] > width ? lo[1] : lo[0];
  const double margin = tolerance * (top - bottom);
  const bool beyond = v > top + margin || v < bottom - margin;
  for (double* x : {&hi[0], &hi[1], &lo[0], &lo[1]}) *x = centre + (*x - centre) * keep;
  if (v > hi[0]) {
    hi[1] = hi[0];
    hi[0] = v;
  } else {
    hi[1] = std::max(hi[1], v);
  }
  if (v < lo[0]) {
    lo[1] = lo[0];
    lo[0] = v;
  } else {
    lo[1] = std::min(lo[1], v);
  }
  return beyond;
}

}  // namespace

DetectorResult Detector::update(SeriesState& s, int64_t epoch, double value) const {
  DetectorResult r;
  update_deferred(s, epoch, value, r, nullptr);
  return r;
}

bool Detector::update_deferred(SeriesState& s, int64_t epoch, double value, DetectorResult& r,
                               float* step_input) const {
  require(std::isfinite(value), "detector: value is not finite");
  require(s.model_state.size() == forecaster_->state_size() &&
              s.ahead.size() == (forecaster_->horizon() > 1 ? 2 * static_cast<size_t>(forecaster_->horizon()) : 0) &&
              s.scorer_state.size() == (scorer_ ? scorer_->state_size() : 0),
          "detector: series state belongs to another forecaster");
  if (s.count > 0 && epoch == s.last_epoch) {
    r = DetectorResult{};
    r.kind = PointKind::repeat;
    r.score = s.last_score;
    r.likelihood = s.last_likelihood;
    r.prediction = s.last_prediction;
    return false;
  }
  if (s.count > 0 && epoch < s.last_epoch) {
    // Scored as if it came next, on a copy whose step is never taken: late
    // values are rare.
    SeriesState copy = s;
    float unused[kForecastInputs];
    r = advance(copy, s.last_epoch, value, unused);
    r.kind = PointKind::out_of_order;
    return false;
  }
  r = advance(s, epoch, value, step_input);
  return step_input != nullptr;
}

DetectorResult Detector::advance(SeriesState& s, int64_t epoch, double value, float* step_input) const {
  const DetectorConfig& c = cfg_;
  DetectorResult r;
  // Squares and differences of larger magnitudes would overflow a double.
  value = std::clamp(value, -kMaxMagnitude, kMaxMagnitude);
  const bool judge = s.count >= c.learning;
  // Seasonal residuals against the profiles as they were, in units of the
  // slow deviation (as of the previous value).
  const double sd = s.norm.stddev(c.norm), m = s.norm.mean;
  const int db = static_cast<int>(fmod64(epoch, 86400) / 1800);
  const int wb = static_cast<int>(fmod64(epoch / 86400 + 3, 7) * 24 + fmod64(epoch, 86400) / 3600);  // 0 = Monday
  const double rd = s.day_n[db] >= 2 ? std::min(20.0, std::abs(value - s.day[db]) / sd) : 0.0;
  const double rw = s.week_n[wb] >= 2 ? std::min(20.0, std::abs(value - s.week[wb]) / sd) : 0.0;
  const double gate_d = season_gate(s.fit_day, s.fit_var, c.season_min_fit);
  const double gate_w = season_gate(s.fit_week, s.fit_var, c.season_min_fit);

  // The forecast of this value: made one value earlier, or h values earlier
  // by a forecaster of horizon h.
  const int h = forecaster_->horizon();
  const bool forecast_known = s.count >= h;
  const size_t slot = static_cast<size_t>(s.count % h);
  const double mu = h == 1 ? s.prediction : s.ahead[2 * slot];
  const double log_b = h == 1 ? s.log_scale : s.ahead[2 * slot + 1];
  r.prediction = s.count > 0 && forecast_known ? m + mu * sd : value;
  // What the range rule judges: the value, or its distance from the recent
  // level (the fast mean before this value), so that a trend is no news.
  const double ranged = c.spatial_detrend ? value - s.fast.mean : value;
  const double z = s.norm.push(value, c.norm, a_norm_);
  const double zf = s.fast.push(value, fast_, a_fast_);
  // What the models read for this value.
  float local[kForecastInputs];
  float* in = step_input ? step_input : local;
  if (forecaster_->config().in_channels == 1)
    in[0] = static_cast<float>(z);
  else
    forecaster_inputs(in, z, epoch, s.count > 0 ? epoch - s.last_epoch : 0);
  // The forecast error: with a predictive distribution, the surprise of z
  // under it, -ln P(|Z - mu| >= |z - mu|) = |z - mu| / b for a Laplace(mu,
  // b); else the distance from the point forecast.
  r.error = s.count == 0 || !forecast_known ? 0.0
            : two_outputs_ ? std::abs(z - mu) * std::exp(-std::clamp<double>(log_b, -7, 7))
                           : std::abs(z - mu);

  double evidence = channel_step(s.forecast, c.forecast, a_forecast_, r.error, judge);
  evidence += channel_step(s.level, c.level, a_level_, std::abs(zf), judge);
  evidence += gate_d * channel_step(s.daily, c.daily, a_daily_, rd, judge);
  evidence += gate_w * channel_step(s.weekly, c.weekly, a_weekly_, rw, judge);
  if (scorer_) {
    // The learned detector reads this value and judges it at once.
    float p = 0;
    scorer_->step(s.scorer_state.data(), in, &p);
    r.learned = std::clamp(static_cast<double>(p), 0.0, 1.0);
    evidence += channel_step(s.learned, c.learned, a_learned_, r.learned, judge);
  }
  r.likelihood = 1 - std::pow(10.0, -evidence);
  double raw = std::clamp(evidence / c.decades, 0.0, 1.0);
  if (scorer_) raw = std::max(raw, c.learned_gain * r.learned);
  const bool range_counts = !scorer_ || r.learned >= c.learned_veto;

  // Profiles and their fit take the value in after it was judged.
  const double fa = a_fit_, ra = a_season_;
  const double dev2 = (value - m) * (value - m);
  s.fit_day += fa * ((s.day_n[db] >= 2 ? (value - s.day[db]) * (value - s.day[db]) : dev2) - s.fit_day);
  s.fit_week += fa * ((s.week_n[wb] >= 2 ? (value - s.week[wb]) * (value - s.week[wb]) : dev2) - s.fit_week);
  s.fit_var += fa * (dev2 - s.fit_var);
  // Profiles are floats (they are many): kept inside the float range.
  constexpr double fmax = std::numeric_limits<float>::max();
  s.day[db] = static_cast<float>(
      std::clamp(s.day[db] + std::max(1.0 / (s.day_n[db] + 1), ra) * (value - s.day[db]), -fmax, fmax));
  s.week[wb] = static_cast<float>(
      std::clamp(s.week[wb] + std::max(1.0 / (s.week_n[wb] + 1), ra) * (value - s.week[wb]), -fmax, fmax));
  if (s.day_n[db] < UINT16_MAX) ++s.day_n[db];
  if (s.week_n[wb] < UINT16_MAX) ++s.week_n[wb];

  // A value outside the range the series has held (DetectorConfig).
  const double centre = c.spatial_detrend ? 0.0 : s.fast.mean;
  if (range_step(s.hi, s.lo, ranged, centre, range_keep_, c.spatial_tolerance, s.count == 0) && c.spatial_score > 0 &&
      judge && range_counts)
    raw = std::max(raw, c.spatial_score);
  // With a scorer and learned_range, the range of the raw value too, whose
  // new extremes count where the scorer also finds the value anomalous.
  if (scorer_ && c.learned_range > 0 &&
      range_step(s.hi_raw, s.lo_raw, value, s.fast.mean, range_keep_, c.spatial_tolerance, s.count == 0) &&
      c.spatial_score > 0 && judge && r.learned >= c.learned_range)
    raw = std::max(raw, c.spatial_score);
  if (!judge) raw = 0;
  r.z = z;
  r.raw = raw;
  // One event, one detection: a score that does not top the decayed recent
  // peak is lowered.
  if (raw > s.peak) {
    r.score = raw;
    s.peak = raw;
  } else {
    r.score = raw * c.refractory;
    s.peak *= c.peak_decay;
  }
  s.last_epoch = epoch;
  ++s.count;
  s.last_score = r.score;
  s.last_likelihood = r.likelihood;
  s.last_prediction = r.prediction;
  if (!step_input) {  // after the count, as a deferred step's set_forecast comes
    float out[2];
    forecaster_->step(s.model_state.data(), in, out);
    set_forecast(s, out);
  }
  return r;
}

void Detector::set_forecast(SeriesState& s, const float* out) const {
  s.prediction = out[0];
  s.log_scale = two_outputs_ ? out[1] : 0.0f;
  if (const int h = forecaster_->horizon(); h > 1 && s.count > 0) {
    const size_t slot = static_cast<size_t>((s.count - 1) % h);
    s.ahead[2 * slot] = s.prediction;
    s.ahead[2 * slot + 1] = s.log_scale;
  }
}

void Detector::prefetch(const SeriesState& s, int64_t epoch) const {
  auto lines = [](const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    for (size_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 1, 3);
    __builtin_prefetch(c + bytes - 1, 1, 3);
  };
  auto span_of = [](const void* a, const void* b) {
    return static_cast<size_t>(static_cast<const char*>(b) - static_cast<const char*>(a));
  };
  lines(&s.count, span_of(&s.count, &s.forecast));  // counts, normalisers, range
  const std::pair<const ChannelState*, int> channels[] = {
      {&s.forecast, cfg_.forecast.window}, {&s.level, cfg_.level.window},
      {&s.daily, cfg_.daily.window}, {&s.weekly, cfg_.weekly.window}};
  for (const auto& [ch, window] : channels) lines(ch, offsetof(ChannelState, ring) + sizeof(float) * window);
  const int db = static_cast<int>(fmod64(epoch, 86400) / 1800);
  const int wb = static_cast<int>(fmod64(epoch / 86400 + 3, 7) * 24 + fmod64(epoch, 86400) / 3600);
  __builtin_prefetch(&s.day[db], 1, 3);
  __builtin_prefetch(&s.week[wb], 1, 3);
  __builtin_prefetch(&s.day_n[db], 1, 3);
  __builtin_prefetch(&s.week_n[wb], 1, 3);
  lines(&s.fit_day, span_of(&s.fit_day, &s.last_prediction + 1));
  if (const int h = forecaster_->horizon(); h > 1) __builtin_prefetch(s.ahead.data() + 2 * (s.count % h), 1, 3);
  lines(s.model_state.data(), s.model_state.size() * sizeof(float));
  if (scorer_) {
    lines(&s.learned, offsetof(ChannelState, ring) + sizeof(float) * cfg_.learned.window);
    lines(s.scorer_state.data(), s.scorer_state.size() * sizeof(float));
  }
}

namespace {

void put_norm(Writer& w, const Normaliser& n) {
  w.put(n.mean);
  w.put(n.var);
  w.put(n.count);
}

void get_norm(Reader& r, Normaliser& n) {
  n.mean = r.finite();
  n.var = r.finite();
  n.count = r.get<int64_t>();
  require(n.var >= 0 && n.count >= 0, "series state: a negative variance or count");
}

}  // namespace

std::vector<uint8_t> Detector::save(const SeriesState& s) const {
  require(s.model_state.size() == forecaster_->state_size(), "series state: belongs to another forecaster");
  Writer w;
  w.out.reserve(sizeof(SeriesState) + 64 + s.model_state.size() * sizeof(float));
  w.out.insert(w.out.end(), kStateMagic, kStateMagic + sizeof(kStateMagic));
  w.put(fingerprint_);
  w.put(s.count);
  w.put(s.last_epoch);
  put_norm(w, s.norm);
  put_norm(w, s.fast);
  w.put(s.prediction);
  w.put(s.log_scale);
  if (forecaster_->horizon() > 1)
    for (float v : s.ahead) w.put(v);
  for (double v : {s.hi[0], s.hi[1], s.lo[0], s.lo[1]}) w.put(v);
  put_channel(w, s.forecast, cfg_.forecast);
  put_channel(w, s.level, cfg_.level);
  put_channel(w, s.daily, cfg_.daily);
  put_channel(w, s.weekly, cfg_.weekly);
  if (scorer_) {
    put_channel(w, s.learned, cfg_.learned);
    for (double v : {s.hi_raw[0], s.hi_raw[1], s.lo_raw[0], s.lo_raw[1]}) w.put(v);
  }
  for (float v : s.day) w.put(v);
  for (float v : s.week) w.put(v);
  for (uint16_t v : s.day_n) w.put(v);
  for (uint16_t v : s.week_n) w.put(v);
  w.put(s.fit_day);
  w.put(s.fit_week);
  w.put(s.fit_var);
  w.put(s.peak);
  w.put(s.last_score);
  w.put(s.last_likelihood);
  w.put(s.last_prediction);
  w.put(static_cast<uint32_t>(s.model_state.size()));
  for (float v : s.model_state) w.put(v);
  if (scorer_) {
    w.put(static_cast<uint32_t>(s.scorer_state.size()));
    for (float v : s.scorer_state) w.put(v);
  }
  return std::move(w.out);
}

SeriesState Detector::load(std::span<const uint8_t> bytes) const {
  require(bytes.size() >= sizeof(kStateMagic) && std::memcmp(bytes.data(), kStateMagic, sizeof(kStateMagic)) == 0,
          "series state: not a detector state (bad magic)");
  Reader r(bytes.subspan(sizeof(kStateMagic)));
  require(r.get<uint64_t>() == fingerprint_, "series state: saved by a detector with another forecaster or config");
  SeriesState s = new_series();
  s.count = r.get<int64_t>();
  s.last_epoch = r.get<int64_t>();
  require(s.count >= 0, "series state: a negative count");
  get_norm(r, s.norm);
  get_norm(r, s.fast);
  s.prediction = r.get<float>();
  s.log_scale = r.get<float>();
  require(std::isfinite(s.prediction) && std::isfinite(s.log_scale), "series state: a non-finite prediction");
  if (forecaster_->horizon() > 1)
    for (float& v : s.ahead) {
      v = r.get<float>();
      require(std::isfinite(v), "series state: a non-finite forecast ahead");
    }
  for (double* v : {&s.hi[0], &s.hi[1], &s.lo[0], &s.lo[1]}) *v = r.finite();
  get_channel(r, s.forecast, cfg_.forecast, "forecast");
  get_channel(r, s.level, cfg_.level, "level");
  get_channel(r, s.daily, cfg_.daily, "daily");
  get_channel(r, s.weekly, cfg_.weekly, "weekly");
  if (scorer_) {
    get_channel(r, s.learned, cfg_.learned, "learned");
    for (double* v : {&s.hi_raw[0], &s.hi_raw[1], &s.lo_raw[0], &s.lo_raw[1]}) *v = r.finite();
  }
  for (float* profile : {s.day, s.week})
    for (float* v = profile; v < profile + (profile == s.day ? kDayBins : kWeekBins); ++v) {
      *v = r.get<float>();
      require(std::isfinite(*v), "series state: a non-finite seasonal profile value");
    }
  for (uint16_t& v : s.day_n) v = r.get<uint16_t>();
  for (uint16_t& v : s.week_n) v = r.get<uint16_t>();
  s.fit_day = r.finite();
  s.fit_week = r.finite();
  s.fit_var = r.finite();
  s.peak = r.finite();
  s.last_score = r.finite();
  s.last_likelihood = r.finite();
  s.last_prediction = r.finite();
  require(r.get<uint32_t>() == s.model_state.size(), "series state: model state size differs");
  for (float& v : s.model_state) {
    v = r.get<float>();
    require(std::isfinite(v), "series state: a non-finite model state value");
  }
  if (scorer_) {
    require(r.get<uint32_t>() == s.scorer_state.size(), "series state: scorer state size differs");
    for (float& v : s.scorer_state) {
      v = r.get<float>();
      require(std::isfinite(v), "series state: a non-finite scorer state value");
    }
  }
  if (r.left() != 0) fail("series state: " + std::to_string(r.left()) + " bytes after the end");
  return s;
}

}  // namespace ssm
