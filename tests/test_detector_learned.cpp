// The learned detector: the anomaly target of the series data (anomalies
// injected into generated and real series, the target decaying from each
// onset), and the detector's `learned` channel fed by a scorer model (its
// step, its state bytes, its refusals).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "ssm/detector.hpp"
#include "ssm/model.hpp"
#include "detector_testing.hpp"
#include "testing.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ssm::testing::error_of;

ssm::ModelConfig scorer_config(int in, int out) {
  ssm::ModelConfig c;
  c.d_model = 8;
  c.n_layers = 1;
  c.expand = 2;
  c.head_dim = 8;
  c.d_state = 8;
  c.chunk = 16;
  c.sample_rate = 1;
  c.in_channels = in;
  c.out_channels = out;
  return c;
}

std::shared_ptr<const ssm::Forecaster> model_of(int in, int out, uint64_t seed) {
  ssm::Model m(scorer_config(in, out));
  m.init(seed);
  return std::make_shared<const ssm::Forecaster>(m);
}

// A scorer whose likelihood stays near 0.3: its head's weights scaled by
// 0.01, its bias 0.3.
std::shared_ptr<const ssm::Forecaster> calm_scorer(uint64_t seed) {
  ssm::Model m(scorer_config(ssm::kForecastInputs, 1));
  m.init(seed);
  float* w = m.params().at("head.weight");
  for (size_t i = 0, n = m.table().numel("head.weight"); i < n; ++i) w[i] *= 0.01f;
  m.params().at("head.bias")[0] = 0.3f;
  return std::make_shared<const ssm::Forecaster>(m);
}

// Rows of one item whose target is positive, split into runs.
struct Onset {
  int start, length;
};
std::vector<Onset> runs_of(const float* y, int T) {
  std::vector<Onset> runs;
  for (int t = 0; t < T; ++t)
    if (y[t] > 0 && (t == 0 || y[t - 1] == 0)) runs.push_back({t, 0});
    else if (y[t] == 0 && t > 0 && y[t - 1] > 0) runs.back().length = t - runs.back().start;
  if (!runs.empty() && runs.back().length == 0) runs.back().length = T - runs.back().start;
  return runs;
}

TEST(SeriesSourceAnomaly, TargetsDecayFromEachOnsetAndTheInputsJumpThere) {
  ssm::SeriesDataConfig d;
  d.synthetic_fraction = 1;
  d.anomaly_target = true;
  d.anomaly_window = 16;
  d.warmup_skip = 256;
  d.in_channels = ssm::kForecastInputs;
  auto src = ssm::make_series_source(d);
  const int B = 64, T = 512, C = ssm::kForecastInputs;
  std::vector<float> in(static_cast<size_t>(B) * T * C), y(static_cast<size_t>(B) * T);
  src->batch(in.data(), y.data(), B, T, 3, 1);
  std::vector<float> in2 = in, y2 = y;
  src->batch(in2.data(), y2.data(), B, T, 3, 1);
  EXPECT_EQ(in, in2);  // a pure function of (seed, step, item)
  EXPECT_EQ(y, y2);

  int with = 0;
  double jump_at_onset = 0, jump_elsewhere = 0;
  int n_onset = 0, n_elsewhere = 0;
  const double decay = std::exp(-1.0 / d.anomaly_window);
  for (int b = 0; b < B; ++b) {
    const float* yb = y.data() + static_cast<size_t>(b) * T;
    const float* xb = in.data() + static_cast<size_t>(b) * T * C;
    const auto runs = runs_of(yb, T);
    with += !runs.empty();
    for (int t = 0; t < T; ++t) {
      ASSERT_GE(yb[t], 0.0f);
      ASSERT_LE(yb[t], 1.0f);
      ASSERT_TRUE(std::isfinite(xb[t * C]));
    }
    for (const Onset& r : runs) {
      ASSERT_GE(r.start, 32) << "item " << b;  // onsets leave rows of normal series before them
      EXPECT_FLOAT_EQ(yb[r.start], 1.0f) << "item " << b;
      // Within a run the target decays by e^(-1/window) a row (or restarts
      // at 1 where a second onset comes), and never lasts beyond 4 windows
      // of one onset.
      for (int t = r.start + 1; t < r.start + r.length; ++t)
        if (yb[t] != 1.0f) ASSERT_NEAR(yb[t], yb[t - 1] * decay, 1e-5) << "item " << b << " t " << t;
      ASSERT_LE(r.length, 2 * 4 * d.anomaly_window);
      if (r.start > 0) {
        jump_at_onset += std::abs(xb[r.start * C] - xb[(r.start - 1) * C]);
        ++n_onset;
      }
    }
    for (int t = 1; t < T; ++t)
      if (yb[t] == 0 && yb[t - 1] == 0) {
        jump_elsewhere += std::abs(xb[t * C] - xb[(t - 1) * C]);
        ++n_elsewhere;
      }
  }
  // About 70% of the items hold an anomaly (a few kinds are left out where
  // they would not show, as a flat line on a flat series).
  EXPECT_GE(with, B * 45 / 100);
  EXPECT_LE(with, B * 90 / 100);
  // The normalised value moves more at an onset than between normal rows.
  ASSERT_GT(n_onset, 10);
  EXPECT_GT(jump_at_onset / n_onset, 2.0 * jump_elsewhere / n_elsewhere);
}

TEST(SeriesSourceAnomaly, RealSeriesGetAnomaliesInjectedToo) {
  // A real series of pure noise around 100 (no anomaly of its own): every
  // positive target marks an injected one, where z leaves the noise.
  const fs::path dir = fs::temp_directory_path() / ("ssm_test_learned_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "noise.csv");
    f << "timestamp,value\n";
    std::mt19937_64 rng(5);
    std::normal_distribution<double> N(0, 1);
    for (int t = 0; t < 3000; ++t) {
      const int64_t e = 1400000000 + 300 * t;
      const std::time_t tt = e;
      char buf[32];
      std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&tt));
      f << buf << "," << 100 + N(rng) << "\n";
    }
  }
  ssm::SeriesDataConfig d;
  d.folders = {dir.string()};
  d.synthetic_fraction = 0;
  d.anomaly_target = true;
  d.warmup_skip = 256;
  auto src = ssm::make_series_source(d);
  const int B = 48, T = 512;
  std::vector<float> in(static_cast<size_t>(B) * T), y(in.size());
  src->batch(in.data(), y.data(), B, T, 1, 2);
  fs::remove_all(dir);
  int with = 0, n_runs = 0, n_before = 0;
  double peak_at = 0, peak_before = 0, worst_before = 0;
  for (int b = 0; b < B; ++b) {
    const float* yb = y.data() + static_cast<size_t>(b) * T;
    const float* xb = in.data() + static_cast<size_t>(b) * T;
    const auto runs = runs_of(yb, T);
    with += !runs.empty();
    // The rows before the first onset are the noise as it was.
    const int first = runs.empty() ? T : runs[0].start;
    double m = 0;
    for (int t = 0; t < first; ++t) m = std::max(m, std::abs(double(xb[t])));
    peak_before += m;
    worst_before = std::max(worst_before, m);
    ++n_before;
    for (const Onset& r : runs) {
      double p = 0;  // the largest |z| in the first rows of the anomaly
      for (int t = r.start; t < std::min(T, r.start + 16); ++t) p = std::max(p, std::abs(double(xb[t])));
      peak_at += p;
      ++n_runs;
    }
  }
  EXPECT_GE(with, B / 2);
  // Noise of 1 around 100: |z| stays within about 4.5 before the first
  // onset, and the anomalies lift it well above.
  EXPECT_LT(worst_before, 5.0);
  ASSERT_GT(n_runs, 0);
  EXPECT_GT(peak_at / n_runs, 1.5 * peak_before / n_before);
}

TEST(SeriesSourceAnomaly, ConfigKeysAndErrors) {
  const auto d = ssm::series_data_config_from_json(json{{"target", "anomaly"}, {"anomaly_window", 8}}, "c.json");
  EXPECT_TRUE(d.anomaly_target);
  EXPECT_EQ(d.anomaly_window, 8);
  EXPECT_FALSE(ssm::series_data_config_from_json(json{{"target", "next"}}, "c.json").anomaly_target);
  EXPECT_NE(error_of([] { ssm::series_data_config_from_json(json{{"target", "later"}}, "c.json"); }).find("data.target"),
            std::string::npos);
  EXPECT_NE(error_of([] { ssm::series_data_config_from_json(json{{"anomaly_window", 0}}, "c.json"); })
                .find("data.anomaly_window"),
            std::string::npos);
  ssm::SeriesDataConfig two;
  two.anomaly_target = true;
  two.synthetic_fraction = 1;
  two.out_channels = 2;
  EXPECT_NE(error_of([&] { ssm::make_series_source(two); }).find("out_channels 1"), std::string::npos);
}

// A daily-looking series with noise, one value every 5 minutes.
std::vector<double> series(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0, 1);
  std::vector<double> x(n);
  for (size_t t = 0; t < n; ++t) x[t] = 50 + 20 * std::sin(2 * M_PI * t / 288.0) + 2 * N(rng);
  return x;
}

constexpr int64_t kT0 = 1396310400;

TEST(DetectorLearned, TheLearnedChannelIsTheScorersOutputJudged) {
  // The result's `learned` is the scorer's output for the inputs the
  // forecaster reads, stepped once per accepted value: recomputed here by
  // stepping the scorer on the same inputs (forecaster_inputs of z).
  const auto f = model_of(ssm::kForecastInputs, 2, 3);
  const auto sc = model_of(ssm::kForecastInputs, 1, 4);
  ssm::DetectorConfig cfg;
  cfg.learned.weight = 1;
  const ssm::Detector det(f, cfg, sc);
  ssm::SeriesState s = det.new_series();
  ASSERT_EQ(s.scorer_state.size(), sc->state_size());
  std::vector<float> ref_state(sc->state_size(), 0.0f);
  const auto x = series(1500, 1);
  int64_t last = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    const int64_t e = kT0 + 300 * static_cast<int64_t>(t);
    const ssm::DetectorResult r = det.update(s, e, x[t]);
    float in[ssm::kForecastInputs], p = 0;
    ssm::forecaster_inputs(in, r.z, e, t > 0 ? e - last : 0);
    sc->step(ref_state.data(), in, &p);
    ASSERT_DOUBLE_EQ(r.learned, std::clamp(double(p), 0.0, 1.0)) << t;
    last = e;
  }
  // A repeat steps nothing.
  const auto before = s.scorer_state;
  det.update(s, last, 1e6);
  EXPECT_EQ(s.scorer_state, before);
}

TEST(DetectorLearned, WeightZeroIsTheDetectorWithoutAScorer) {
  const auto f = model_of(ssm::kForecastInputs, 2, 3);
  ssm::DetectorConfig off;
  off.learned.weight = 0;
  const ssm::Detector with(f, off, model_of(ssm::kForecastInputs, 1, 4)), without(f, off);
  ssm::SeriesState a = with.new_series(), b = without.new_series();
  auto x = series(2000, 2);
  for (size_t t = 1200; t < x.size(); ++t) x[t] += 30;  // a level shift
  for (size_t t = 0; t < x.size(); ++t) {
    const int64_t e = kT0 + 300 * static_cast<int64_t>(t);
    ASSERT_EQ(with.update(a, e, x[t]).score, without.update(b, e, x[t]).score) << t;
  }
}

TEST(DetectorLearned, AVetoOfOneSilencesTheRangeRule) {
  // learned_veto: a new extreme raises the floor only where the scorer's
  // likelihood reaches the veto. At 1 (never reached by this scorer, whose
  // outputs the loop checks) the detector scores as with the range rule
  // off; at 0 as without a scorer.
  const auto f = model_of(ssm::kForecastInputs, 2, 3);
  const auto sc = calm_scorer(4);
  ssm::DetectorConfig veto, off, plain;
  veto.learned.weight = off.learned.weight = plain.learned.weight = 0;
  veto.learned_veto = 1;
  off.spatial_score = 0;
  const ssm::Detector vetoed(f, veto, sc), no_range(f, off, sc), with(f, plain, sc), without(f, plain);
  ssm::SeriesState a = vetoed.new_series(), b = no_range.new_series(), c = with.new_series(), d = without.new_series();
  auto x = series(2500, 6);
  for (size_t t = 1500; t < x.size(); ++t) x[t] += 60;  // a new extreme the range rule floors at 0.71
  double floored = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    const int64_t e = kT0 + 300 * static_cast<int64_t>(t);
    const auto ra = vetoed.update(a, e, x[t]);
    ASSERT_GT(ra.learned, 0.1);
    ASSERT_LT(ra.learned, 0.5);
    ASSERT_EQ(ra.score, no_range.update(b, e, x[t]).score) << t;
    const auto rc = with.update(c, e, x[t]);
    ASSERT_EQ(rc.score, without.update(d, e, x[t]).score) << t;
    floored = std::max(floored, rc.score);
  }
  EXPECT_GE(floored, plain.spatial_score);  // the range rule did fire without the veto
}

TEST(DetectorLearned, StateBytesRestoreExactlyAndAreChecked) {
  const auto f = model_of(ssm::kForecastInputs, 2, 3);
  const auto sc = model_of(ssm::kForecastInputs, 1, 4);
  ssm::DetectorConfig cfg;
  cfg.learned = {1, 4, 1000, 0.05, false};
  cfg.learned_range = 0.01;  // the raw range is part of the state
  const ssm::Detector det(f, cfg, sc);
  const auto x = series(1200, 5);
  ssm::SeriesState s = det.new_series();
  for (size_t t = 0; t < 700; ++t) det.update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]);
  const auto bytes = det.save(s);
  ssm::SeriesState r = det.load(bytes);
  for (size_t t = 700; t < x.size(); ++t) {
    const int64_t e = kT0 + 300 * static_cast<int64_t>(t);
    const auto a = det.update(s, e, x[t]), b = det.update(r, e, x[t]);
    ASSERT_EQ(a.score, b.score) << t;
    ASSERT_EQ(a.learned, b.learned) << t;
  }
  // Another scorer's detector, or none, refuses the bytes.
  const ssm::Detector other(f, cfg, model_of(ssm::kForecastInputs, 1, 5)), none(f, cfg);
  EXPECT_NE(error_of([&] { other.load(bytes); }).find("another forecaster or config"), std::string::npos);
  EXPECT_NE(error_of([&] { none.load(bytes); }).find("another forecaster or config"), std::string::npos);
  EXPECT_EQ(det.state_bytes(), none.state_bytes() + sc->state_size() * sizeof(float));
}

TEST(DetectorLearned, RefusesScorersItCannotUse) {
  const auto f = model_of(ssm::kForecastInputs, 2, 3);
  EXPECT_NE(error_of([&] { ssm::Detector d(f, {}, model_of(ssm::kForecastInputs, 2, 4)); }).find("one output"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ssm::Detector d(f, {}, model_of(1, 1, 4)); }).find("in_channels"), std::string::npos);
  ssm::DetectorConfig only_learned;
  only_learned.forecast.weight = only_learned.level.weight = only_learned.daily.weight = only_learned.weekly.weight = 0;
  only_learned.learned.weight = 1;
  EXPECT_NE(error_of([&] { ssm::Detector d(f, only_learned); }).find("no scorer"), std::string::npos);
  EXPECT_NO_THROW(ssm::Detector(f, only_learned, model_of(ssm::kForecastInputs, 1, 4)));
  EXPECT_NE(error_of([] { ssm::DetectorConfig::from_json(json{{"learned", {{"windo", 2}}}}, "c.json"); })
                .find("learned"),
            std::string::npos);
  EXPECT_EQ(ssm::DetectorConfig::from_json(json{{"learned", {{"window", 3}}}}, "c.json").learned.window, 3);
}

// The learned detector shipped in models/detector-ssm/ (not compiled in).
std::shared_ptr<const ssm::Forecaster> shipped_scorer() {
  static const auto sc = ssm::Forecaster::load((fs::path(SSM_SOURCE_DIR) / "models/detector-ssm/detector.safetensors").string());
  return sc;
}

int events_of(const ssm::Detector& det, const std::vector<double>& x, size_t from = 0, size_t to = SIZE_MAX) {
  ssm::SeriesState s = det.new_series();
  int events = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    const double score = det.update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]).score;
    events += t >= from && t < to && score >= 0.5;
  }
  return events;
}

TEST(DetectorLearned, TheShippedScorerVetoesTheRecordsOfATrendButNotAJump) {
  // The range of the raw value (spatial_detrend false) makes every new high
  // of a drift an event; with the shipped scorer's veto (learned_veto
  // 0.02) a new extreme counts only where the scorer finds the value
  // anomalous. Drifts from 20 to 80 over 1000 or 3000 values, noise of 0.05
  // to 3, quantised or not (none is an anomaly); then a filling disk with a
  // jump of 30 at its end (an anomaly).
  ssm::DetectorConfig raw_range, vetoed;
  raw_range.spatial_detrend = vetoed.spatial_detrend = false;
  raw_range.learned.weight = vetoed.learned.weight = 0;
  vetoed.learned_veto = 0.02;
  const auto f = ssm::Forecaster::builtin();
  const ssm::Detector without(f, raw_range), with(f, vetoed, shipped_scorer());
  int total_without = 0, total_with = 0, worst_with = 0;
  uint64_t seed = 20;
  for (double sd : {0.05, 0.3, 1.0, 3.0})
    for (double len : {1000.0, 3000.0})
      for (double q : {0.0, 0.1}) {
        const auto x = ssm::testing::drift_series(sd, len, q, seed++);
        total_without += events_of(without, x);
        const int e = events_of(with, x);
        total_with += e;
        worst_with = std::max(worst_with, e);
      }
  std::printf("  events of 16 drifts: %d with the raw range, %d with the scorer's veto (at most %d in one)\n",
              total_without, total_with, worst_with);
  EXPECT_GE(total_without, 500);
  EXPECT_LE(total_with, 40);
  EXPECT_LE(worst_with, 10);

  const size_t jump = 3000;
  const auto disk = ssm::testing::filling_disk(jump);
  EXPECT_LE(events_of(with, disk, 0, jump), 2);
  EXPECT_GE(events_of(with, disk, jump, jump + 5), 1);
}

}  // namespace
