// Training data for the forecaster: synthetic series and NAB-format CSVs,
// normalised online as the detector does; and the config `ssm train` reads
// for a forecaster.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "json_fields.hpp"
#include "ssm/detector.hpp"
#include "ssm/timeseries_csv.hpp"

namespace ssm {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// splitmix64: a seed per (seed, step, item) so that items do not depend on
// the order they are made in.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A synthetic series of n raw values at epochs t0 + k * interval (a few rows
// dropped, so that gaps occur): a sum of a level, a trend, periodic parts
// (sine, square, a peak per period as daily load; periods of a few to a few
// hundred rows, or a day or a week of the timestamps), a random walk, noise,
// level shifts and spikes, each present with some probability, at scales and
// offsets across orders of magnitude (the normaliser must cope).
// With `clean`, no level shifts or spikes (an anomaly target labels those it injects itself).
void synthetic_series(std::vector<double>& x, std::vector<int64_t>& epochs, size_t n, std::mt19937_64& rng,
                      bool clean = false) {
  std::uniform_real_distribution<double> U(0, 1);
  std::normal_distribution<double> Nd(0, 1);
  auto chance = [&](double p) { return U(rng) < p; };
  constexpr int64_t intervals[] = {60, 300, 300, 600, 1800, 3600};
  const int64_t interval = intervals[static_cast<size_t>(U(rng) * 6) % 6];
  const int64_t t0 = 1300000000 + static_cast<int64_t>(U(rng) * 4e8) / interval * interval;
  const double drop = chance(0.3) ? U(rng) * 0.02 : 0.0;
  x.assign(n, 0.0);
  epochs.assign(n, 0);
  const double scale = std::pow(10.0, U(rng) * 6 - 2);
  const double level = chance(0.7) ? scale * (U(rng) * 20 - 5) : 0.0;
  const double trend = chance(0.3) ? scale * (U(rng) * 2 - 1) * 5.0 / n : 0.0;
  const int periodic = static_cast<int>(U(rng) * 3);  // 0..2 periodic parts
  struct Part {
    int kind;
    double period, amp, phase, duty;  // period in seconds
  };
  std::vector<Part> parts;
  for (int i = 0; i < periodic; ++i) {
    const double rows = std::exp(std::log(6.0) + U(rng) * (std::log(400.0) - std::log(6.0)));
    const double u = U(rng);
    const double period = u < 0.35 ? 86400.0 : u < 0.5 ? 604800.0 : rows * static_cast<double>(interval);
    parts.push_back({static_cast<int>(U(rng) * 3), period, scale * (0.2 + U(rng) * 3), U(rng) * 2 * M_PI,
                     0.1 + 0.8 * U(rng)});
  }
  const double noise = scale * (chance(0.15) ? 0.0 : std::exp(std::log(0.01) + U(rng) * std::log(300.0)));
  const bool heavy = chance(0.2);  // Laplace-like noise
  const double walk = chance(0.25) ? scale * 0.05 * U(rng) : 0.0;
  const double shift_p = !clean && chance(0.3) ? U(rng) * 0.01 : 0.0;
  const double spike_p = !clean && chance(0.3) ? U(rng) * 0.01 : 0.0;
  const double quant = chance(0.2) ? scale * (0.05 + U(rng)) : 0.0;  // integer-like steps
  double w = 0, shift = 0;
  int64_t epoch = t0;
  for (size_t t = 0; t < n; ++t) {
    epoch += interval;
    while (drop > 0 && U(rng) < drop) epoch += interval;
    epochs[t] = epoch;
    double v = level + trend * t;
    for (const Part& p : parts) {
      const double ph = std::fmod(static_cast<double>(epoch - t0) / p.period * 2 * M_PI + p.phase, 2 * M_PI);
      if (p.kind == 0)
        v += p.amp * std::sin(ph);
      else if (p.kind == 1)
        v += p.amp * (ph < p.duty * 2 * M_PI ? 1.0 : -1.0);
      else  // a peak once per period, as daily load
        v += p.amp * std::exp(-std::pow((ph - M_PI) / (p.duty * 2), 2));
    }
    w += walk * Nd(rng);
    if (shift_p > 0 && U(rng) < shift_p) shift += scale * (U(rng) * 8 - 4);
    double e = Nd(rng);
    if (heavy) e = (U(rng) < 0.5 ? -1 : 1) * -std::log(std::max(U(rng), 1e-12)) / std::sqrt(2.0);
    v += w + shift + noise * e;
    if (spike_p > 0 && U(rng) < spike_p) v += scale * (U(rng) * 20 - 10);
    if (quant > 0) v = std::round(v / quant) * quant;
    x[t] = v;
  }
}


// Anomalies injected into rows [lo + 32, x.size() - 8) of a raw series, with the
// target they give: y[t] = exp(-(t - onset) / window) from an anomaly's
// onset while it lasts (at most 4 windows), 0 elsewhere; the highest where
// two overlap. Kinds: a spike (1 to 3 values), a level shift (for good or
// for 50 to 400 rows), a change of variance, a trend break, a flat line, a
// dropout to 0, a change of rhythm (the series read at half or twice its
// pace). Sizes are in units of the series' own spread before the onset
// (its deviation, and the deviation of its first differences for the
// noise-like kinds), so they are as visible on every scale.
void inject_anomalies(std::vector<double>& x, std::vector<float>& y, size_t lo, int window, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> U(0, 1);
  std::normal_distribution<double> Nd(0, 1);
  const size_t n = x.size();
  y.assign(n, 0.0f);
  if (n < lo + 48) return;
  // Each block of 512 rows holds one anomaly with probability 0.6 (the
  // first one starts 32 rows in): long windows hold long normal stretches
  // and several anomalies.
  const size_t first = lo + 32, last_onset = n - 8;
  for (size_t block = first; block < last_onset; block += 512) {
    if (U(rng) >= 0.6) continue;
    const size_t span = std::min<size_t>(512, last_onset - block);
    const size_t onset = block + static_cast<size_t>(U(rng) * static_cast<double>(span));
    // The spread before the onset (the last 256 rows at most).
    const size_t from = onset > 256 ? onset - 256 : 0;
    double m = 0, v = 0, dv = 0;
    for (size_t t = from; t < onset; ++t) m += x[t];
    m /= static_cast<double>(onset - from);
    for (size_t t = from; t < onset; ++t) v += (x[t] - m) * (x[t] - m);
    for (size_t t = from + 1; t < onset; ++t) dv += (x[t] - x[t - 1]) * (x[t] - x[t - 1]);
    const double sd = std::sqrt(v / static_cast<double>(onset - from));
    const double dsd = std::sqrt(dv / static_cast<double>(std::max<size_t>(onset - from - 1, 1)) / 2);
    const double scale = std::max({sd, dsd, 1e-3 * std::abs(m), 1e-6});
    const double sign = U(rng) < 0.5 ? -1.0 : 1.0;
    const int kind = static_cast<int>(U(rng) * 7) % 7;
    size_t end = n;  // rows [onset, end) are anomalous
    switch (kind) {
      case 0: {  // spike
        end = std::min(n, onset + 1 + static_cast<size_t>(U(rng) * 3));
        const double h = sign * (3 + U(rng) * 9) * scale;
        for (size_t t = onset; t < end; ++t) x[t] += h;
        break;
      }
      case 1: {  // level shift
        if (U(rng) < 0.5) end = std::min(n, onset + 50 + static_cast<size_t>(U(rng) * 350));
        const double h = sign * (2 + U(rng) * 6) * scale;
        for (size_t t = onset; t < end; ++t) x[t] += h;
        break;
      }
      case 2: {  // variance change
        if (U(rng) < 0.5) end = std::min(n, onset + 30 + static_cast<size_t>(U(rng) * 300));
        const double k = (2 + U(rng) * 6) * std::max(dsd, 0.3 * scale);
        for (size_t t = onset; t < end; ++t) x[t] += k * Nd(rng);
        break;
      }
      case 3: {  // trend break: 3 to 10 deviations away after 20 to 100 rows
        const double slope = sign * (3 + U(rng) * 7) * scale / (20 + U(rng) * 80);
        for (size_t t = onset; t < n; ++t) x[t] += slope * static_cast<double>(t - onset + 1);
        break;
      }
      case 4: {  // flat line (an anomaly only where the series moved)
        end = std::min(n, onset + 20 + static_cast<size_t>(U(rng) * 200));
        if (dsd < 0.05 * scale) end = onset;
        for (size_t t = onset; t < end; ++t) x[t] = x[onset - 1];
        break;
      }
      case 5: {  // dropout to 0 (an anomaly only where 0 is far)
        end = std::min(n, onset + 3 + static_cast<size_t>(U(rng) * 100));
        if (std::abs(m) < 2 * scale) end = onset;
        for (size_t t = onset; t < end; ++t) x[t] = 0;
        break;
      }
      default: {  // change of rhythm: read at twice or half the pace
        end = std::min(n, onset + 50 + static_cast<size_t>(U(rng) * 300));
        const double pace = U(rng) < 0.5 ? 2.0 : 0.5;
        if (dsd > 0.5 * sd) end = onset;  // no rhythm to change: the noise dominates
        std::vector<double> orig(x.begin() + static_cast<std::ptrdiff_t>(onset), x.end());
        const double base = x[onset - 1];
        for (size_t t = onset; t < end; ++t) {
          const size_t k = static_cast<size_t>(static_cast<double>(t - onset) * pace);
          x[t] = k < orig.size() ? orig[k] : base;
        }
        break;
      }
    }
    const size_t last = std::min(end, onset + static_cast<size_t>(4 * window));
    for (size_t t = onset; t < last; ++t)
      y[t] = std::max(y[t], static_cast<float>(std::exp(-static_cast<double>(t - onset) / window)));
  }
}

// One normalised series: z_t and the epochs.
struct NormalisedSeries {
  std::vector<float> z;
  std::vector<int64_t> epochs;
  std::vector<double> raw;  // the values (kept for an anomaly target only)
};

class SeriesBatchSource : public BatchSource {
 public:
  explicit SeriesBatchSource(const SeriesDataConfig& d) : cfg_(d) {
    cfg_.norm.validate();
    require(d.in_channels == 1 || d.in_channels == kForecastInputs,
            "series data: in_channels must be 1 or " + std::to_string(kForecastInputs));
    require(d.out_channels == 1 || d.out_channels == 2, "series data: out_channels must be 1 or 2");
    require(d.horizon >= 1 && d.horizon <= Forecaster::kMaxHorizon,
            "series data: horizon must be in 1 .. " + std::to_string(Forecaster::kMaxHorizon));
    require(!d.anomaly_target || d.out_channels == 1, "series data: an anomaly target needs out_channels 1");
    require(d.anomaly_window >= 1 && d.anomaly_window <= 10000, "series data: anomaly_window must be in 1 .. 10000");
    for (const auto& folder : d.folders) {
      std::error_code ec;
      require(fs::is_directory(folder, ec), "series data: folder '" + folder + "' does not exist");
      std::vector<std::string> files;
      for (auto it = fs::recursive_directory_iterator(folder, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec))
        if (it->is_regular_file() && it->path().extension() == ".csv") files.push_back(it->path().string());
      require(!ec, "series data: cannot scan folder '" + folder + "': " + ec.message());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        const TimeSeries ts = read_timeseries_csv(f, {.lenient = true});
        if (ts.rows.size() < 16 + static_cast<size_t>(d.horizon)) continue;  // a window needs rows past it
        Normaliser n;
        NormalisedSeries s;
        for (const auto& row : ts.rows) {
          s.z.push_back(static_cast<float>(n.push(row.value, cfg_.norm)));
          s.epochs.push_back(row.epoch);
          if (d.anomaly_target) s.raw.push_back(row.value);
        }
        real_.push_back(std::move(s));
        total_ += ts.rows.size();
      }
    }
    require(cfg_.synthetic_fraction >= 1 || !real_.empty(),
            "series data: no CSV file with 16 + horizon or more rows in the folders, and synthetic_fraction < 1");
  }

  size_t real_series() const { return real_.size(); }

  void batch(float* in, float* target, int B, int T, uint64_t seed, int64_t step) override {
    if (cfg_.anomaly_target) return anomaly_batch(in, target, B, T, seed, step);
    const size_t ni = static_cast<size_t>(cfg_.in_channels), no = static_cast<size_t>(cfg_.out_channels);
    const size_t h = static_cast<size_t>(cfg_.horizon);
    std::vector<double> x;
    NormalisedSeries syn;
    for (int b = 0; b < B; ++b) {
      std::mt19937_64 rng(mix(mix(mix(seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(b)));
      std::uniform_real_distribution<double> U(0, 1);
      float* xi = in + static_cast<size_t>(b) * T * ni;
      float* yi = target + static_cast<size_t>(b) * T * no;
      std::fill(xi, xi + T * ni, 0.0f);
      std::fill(yi, yi + T * no, 0.0f);
      // Rows [start, start + m] of series s fill steps [off, off + m) (a
      // window longer than the series is zero-padded on the left).
      const NormalisedSeries* s = nullptr;
      size_t start = 0, m = static_cast<size_t>(T), off = 0;
      if (real_.empty() || U(rng) < cfg_.synthetic_fraction) {
        const size_t n = static_cast<size_t>(cfg_.warmup_skip) + T + h;
        synthetic_series(x, syn.epochs, n, rng);
        Normaliser nm;
        syn.z.resize(n);
        for (size_t i = 0; i < n; ++i) syn.z[i] = static_cast<float>(nm.push(x[i], cfg_.norm));
        s = &syn;
        start = static_cast<size_t>(cfg_.warmup_skip);
      } else {
        // A series in proportion to its length, then a window of it.
        size_t pick = static_cast<size_t>(U(rng) * total_), k = 0;
        while (k + 1 < real_.size() && pick >= real_[k].z.size()) pick -= real_[k++].z.size();
        s = &real_[k];
        const size_t need = static_cast<size_t>(T) + h, len = s->z.size();
        if (len >= need) {
          const size_t lo = std::min(static_cast<size_t>(cfg_.warmup_skip), len - need);
          start = lo + static_cast<size_t>(U(rng) * (len - need - lo + 1));
        } else {
          m = len - h;
          off = static_cast<size_t>(T) - m;
        }
      }
      for (size_t i = 0; i < m; ++i) {
        const size_t r = start + i;
        float* xr = xi + (off + i) * ni;
        if (ni == 1)
          xr[0] = s->z[r];
        else
          forecaster_inputs(xr, s->z[r], s->epochs[r], r > 0 ? s->epochs[r] - s->epochs[r - 1] : 0);
        yi[(off + i) * no] = s->z[r + h];
      }
    }
  }

 private:
  // The anomaly target: a series (synthetic without its own shifts and
  // spikes, or a window of a real one) with anomalies injected into its
  // last T rows, normalised online from its first row; the target at t is
  // inject_anomalies' y_t.
  void anomaly_batch(float* in, float* target, int B, int T, uint64_t seed, int64_t step) {
    const size_t ni = static_cast<size_t>(cfg_.in_channels);
    const size_t skip = static_cast<size_t>(cfg_.warmup_skip), n = skip + static_cast<size_t>(T);
    std::vector<double> x;
    std::vector<int64_t> epochs;
    std::vector<float> y;
    for (int b = 0; b < B; ++b) {
      std::mt19937_64 rng(mix(mix(mix(seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(b)));
      std::uniform_real_distribution<double> U(0, 1);
      float* xi = in + static_cast<size_t>(b) * T * ni;
      float* yi = target + static_cast<size_t>(b) * T;
      std::fill(xi, xi + T * ni, 0.0f);
      std::fill(yi, yi + T, 0.0f);
      size_t lo = skip;  // rows of x before lo only warm the normaliser
      if (real_.empty() || U(rng) < cfg_.synthetic_fraction) {
        synthetic_series(x, epochs, n, rng, true);
      } else {
        size_t pick = static_cast<size_t>(U(rng) * total_), k = 0;
        while (k + 1 < real_.size() && pick >= real_[k].z.size()) pick -= real_[k++].z.size();
        const NormalisedSeries& s = real_[k];
        const size_t len = s.raw.size();
        const size_t first = len > n ? static_cast<size_t>(U(rng) * static_cast<double>(len - n + 1)) : 0;
        const size_t m = std::min(n, len);
        x.assign(s.raw.begin() + first, s.raw.begin() + first + m);
        epochs.assign(s.epochs.begin() + first, s.epochs.begin() + first + m);
        lo = m > static_cast<size_t>(T) ? m - T : std::min<size_t>(m / 4, 64);
      }
      inject_anomalies(x, y, lo, cfg_.anomaly_window, rng);
      Normaliser nm;
      const size_t off = static_cast<size_t>(T) - (x.size() - lo);  // rows fill the window's end
      for (size_t r = 0; r < x.size(); ++r) {
        const double z = nm.push(x[r], cfg_.norm);
        if (r < lo) continue;
        float* xr = xi + (off + r - lo) * ni;
        if (ni == 1)
          xr[0] = static_cast<float>(z);
        else
          forecaster_inputs(xr, z, epochs[r], r > 0 ? epochs[r] - epochs[r - 1] : 0);
        yi[off + r - lo] = y[r];
      }
    }
  }

  SeriesDataConfig cfg_;
  std::vector<NormalisedSeries> real_;  // each CSV, normalised from its start
  size_t total_ = 0;
};

using Fields = detail::JsonFields;

}  // namespace

SeriesDataConfig series_data_config_from_json(const json& j, const std::string& source) {
  const Fields f(j, source, "data",
                 {"kind", "folders", "synthetic_fraction", "warmup_skip", "horizon", "normaliser", "target",
                  "anomaly_window"});
  SeriesDataConfig d;
  if (auto it = j.find("kind"); it != j.end())
    require(it->is_string() && it->get<std::string>() == "series",
            source + ": 'data.kind' must be \"series\" for a forecaster, got " + it->dump());
  if (auto it = j.find("folders"); it != j.end()) {
    if (it->is_string()) {
      d.folders = {it->get<std::string>()};
    } else {
      require(it->is_array(), source + ": 'data.folders' must be a folder name or a list of them");
      for (const auto& f : *it) {
        require(f.is_string() && !f.get<std::string>().empty(),
                source + ": 'data.folders' must be a list of non-empty folder names");
        d.folders.push_back(f.get<std::string>());
      }
    }
  }
  f.get("synthetic_fraction", d.synthetic_fraction);
  f.get("warmup_skip", d.warmup_skip);
  f.get("horizon", d.horizon);
  if (auto it = j.find("target"); it != j.end()) {
    require(it->is_string() && (it->get<std::string>() == "next" || it->get<std::string>() == "anomaly"),
            source + ": 'data.target' must be \"next\" (a forecaster) or \"anomaly\" (a detector), got " +
                it->dump());
    d.anomaly_target = it->get<std::string>() == "anomaly";
  }
  f.get("anomaly_window", d.anomaly_window);
  require(d.anomaly_window >= 1 && d.anomaly_window <= 10000, source + ": 'data.anomaly_window' must be in 1 .. 10000");
  require(d.horizon >= 1 && d.horizon <= Forecaster::kMaxHorizon,
          source + ": 'data.horizon' must be in 1 .. " + std::to_string(Forecaster::kMaxHorizon));
  require(d.synthetic_fraction >= 0 && d.synthetic_fraction <= 1,
          source + ": 'data.synthetic_fraction' must be in [0, 1]");
  require(d.warmup_skip >= 0 && d.warmup_skip <= 100000, source + ": 'data.warmup_skip' must be in 0 .. 100000");
  if (auto it = j.find("normaliser"); it != j.end()) {
    // The detector config reader knows the normaliser's keys.
    d.norm = DetectorConfig::from_json(json{{"normaliser", *it}}, source + " (data)").norm;
  }
  return d;
}

std::unique_ptr<BatchSource> make_series_source(const SeriesDataConfig& data) {
  return std::make_unique<SeriesBatchSource>(data);
}

std::unique_ptr<BatchSource> make_series_source(const json& data_section, const std::string& source) {
  return make_series_source(series_data_config_from_json(data_section, source));
}

SeriesTrainConfig SeriesTrainConfig::from_json(const json& j, const std::string& source) {
  const Fields top(j, source, "", {"model", "training", "data", "output"});
  for (const char* k : {"model", "training", "data", "output"})
    require(top.find(k), source + ": the section '" + std::string(k) + "' is missing");
  SeriesTrainConfig c;
  c.model = ModelConfig::from_json(j.at("model"), source);
  const Fields tf(j.at("training"), source, "training",
                  {"steps", "batch", "segment", "lr", "min_lr", "warmup", "weight_decay", "clip", "l1_weight",
                   "l2_weight", "nll_weight", "seed", "threads"});
  TrainerConfig& t = c.training;
  t.stft_weight = 0;
  tf.get("steps", t.steps);
  tf.get("batch", t.batch);
  tf.get("segment", t.segment);
  tf.get("lr", t.lr);
  tf.get("min_lr", t.min_lr);
  tf.get("warmup", t.warmup);
  tf.get("weight_decay", t.weight_decay);
  tf.get("clip", t.clip);
  tf.get("l1_weight", t.l1_weight);
  tf.get("l2_weight", t.l2_weight);
  tf.get("nll_weight", t.nll_weight);
  tf.get("seed", t.seed);
  tf.get("threads", t.threads);
  detail::validate_config(t, source);
  c.training_json = j.at("training").dump();
  c.data = series_data_config_from_json(j.at("data"), source);
  c.data.in_channels = c.model.in_channels;
  c.data.out_channels = c.model.out_channels;
  require(c.model.out_channels == 2 || t.nll_weight == 0,
          source + ": 'training.nll_weight' needs a model with out_channels 2 (mu, log b)");
  require(c.model.out_channels == 1 || (t.l1_weight == 0 && t.l2_weight == 0 && t.nll_weight > 0),
          source + ": a model with out_channels 2 is a predictive distribution: train it with 'nll_weight' only");

  const json& oj = j.at("output");
  const Fields of(oj, source, "output", {"dir", "model", "log_every", "checkpoint_every", "keep_checkpoints", "plot"});
  Output& o = c.output;
  for (auto [key, out] : {std::pair{"dir", &o.dir}, std::pair{"model", &o.model}})
    if (const json* v = of.find(key)) {
      require(v->is_string(), source + ": 'output." + key + "' must be a string, got " + v->dump());
      *out = v->get<std::string>();
    }
  of.get("log_every", o.log_every);
  of.get("checkpoint_every", o.checkpoint_every);
  of.get("keep_checkpoints", o.keep_checkpoints);
  of.get("plot", o.plot);
  require(o.log_every >= 1, source + ": 'output.log_every' must be >= 1");
  require(o.checkpoint_every >= 0, source + ": 'output.checkpoint_every' must be >= 0");
  require(o.keep_checkpoints >= 0, source + ": 'output.keep_checkpoints' must be >= 0");
  return c;
}

std::map<std::string, std::string> SeriesTrainConfig::model_metadata() const {
  std::map<std::string, std::string> m{{"ssm.normaliser", DetectorConfig{.norm = data.norm}.to_json()["normaliser"].dump()},
                                       {"ssm.training", training_json},
                                       {"ssm.horizon", std::to_string(data.horizon)}};
  if (data.anomaly_target) m["ssm.target"] = "anomaly";
  return m;
}

bool is_series_train_config(const json& j) {
  if (!j.is_object()) return false;
  const auto d = j.find("data");
  if (d == j.end() || !d->is_object()) return false;
  const auto k = d->find("kind");
  return k != d->end() && k->is_string() && k->get<std::string>() == "series";
}

}  // namespace ssm
