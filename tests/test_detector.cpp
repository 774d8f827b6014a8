// The anomaly detector: the forecaster's fused step against the model's
// recurrent mode, the online normaliser, the detector's handling of repeats,
// late values and bad input, state bytes, the training data source, the
// training entry point, the built-in model, and `ssm eval nab` end to end
// (on samples/nab, and on nab-dev when it is present).
#include "ssm/detector.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ssm/timeseries_csv.hpp"
#include "detector_testing.hpp"
#include "testing.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using ssm::testing::error_of;

// A fresh folder under the system temp dir, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("ssm_test_detector_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

ssm::ModelConfig small_config(int layers, int d_model, int d_state, int head_dim) {
  ssm::ModelConfig c;
  c.d_model = d_model;
  c.n_layers = layers;
  c.expand = 2;
  c.head_dim = head_dim;
  c.d_state = d_state;
  c.chunk = 16;
  c.sample_rate = 1;
  return c;
}

std::shared_ptr<const ssm::Forecaster> test_forecaster() {
  static const auto f = [] {
    ssm::Model m(small_config(1, 8, 8, 8));
    m.init(7);
    return std::make_shared<const ssm::Forecaster>(m);
  }();
  return f;
}

// A daily-looking series (5-minute steps) with noise; a level shift of
// `shift` from row `at` on.
std::vector<double> make_series(size_t n, uint64_t seed, size_t at = SIZE_MAX, double shift = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 1);
  std::vector<double> x(n);
  for (size_t t = 0; t < n; ++t)
    x[t] = 50 + 20 * std::sin(2 * M_PI * t / 288.0) + 2 * noise(rng) + (t >= at ? shift : 0);
  return x;
}

constexpr int64_t kT0 = 1396310400;  // 2014-04-01 00:00:00 UTC

// ---------------------------------------------------------------- forecaster

TEST(Forecaster, StepEqualsTheModelsRecurrentMode) {
  struct Shape {
    int layers, d_model, d_state, head_dim, in, out;
  };
  for (const Shape& sh : {Shape{1, 8, 8, 8, 1, 1}, Shape{2, 16, 16, 8, 1, 1}, Shape{1, 8, 4, 16, 1, 1},
                          Shape{2, 16, 8, 8, ssm::kForecastInputs, 2}}) {
    ssm::ModelConfig mc = small_config(sh.layers, sh.d_model, sh.d_state, sh.head_dim);
    mc.in_channels = sh.in;
    mc.out_channels = sh.out;
    ssm::Model m(mc);
    m.init(11);
    ssm::Forecaster f(m);
    ssm::Stream stream(m, 1);
    ASSERT_EQ(f.state_size(), stream.state_size());
    std::vector<float> state(f.state_size(), 0.0f), scalar_state = state;
    std::mt19937_64 rng(3);
    std::normal_distribution<float> z(0, 2);
    double max_err = 0;
    for (int t = 0; t < 400; ++t) {
      float in[ssm::kForecastInputs], ref[2] = {}, out[2] = {};
      for (int c = 0; c < sh.in; ++c) in[c] = z(rng);
      stream.process(in, ref, 1);
      f.step(state.data(), in, out);
      for (int c = 0; c < sh.out; ++c) {
        ASSERT_TRUE(std::isfinite(out[c]));
        max_err = std::max(max_err, std::abs(double(out[c]) - ref[c]) / std::max(1.0, std::abs(double(ref[c]))));
      }
      if (sh.in == 1) ASSERT_EQ(out[0], f.step(scalar_state.data(), in[0]));  // the one-input overload
    }
    EXPECT_LE(max_err, 1e-5) << "layers " << sh.layers << " D " << sh.d_model;
    // The same state layout: the stream's snapshot holds our state.
    const auto snap = stream.snapshot();
    std::vector<float> theirs(f.state_size());
    std::memcpy(theirs.data(), snap.data() + snap.size() - theirs.size() * sizeof(float),
                theirs.size() * sizeof(float));
    for (size_t i = 0; i < theirs.size(); ++i) ASSERT_NEAR(theirs[i], state[i], 1e-4 * (1 + std::abs(theirs[i])));
  }
}

TEST(Forecaster, RejectsModelsItCannotStep) {
  ssm::ModelConfig c = small_config(1, 8, 8, 8);
  c.in_channels = 2;
  EXPECT_NE(error_of([&] { ssm::Forecaster f{ssm::Model(c)}; }).find("in_channels"), std::string::npos);
  c = small_config(1, 8, 8, 8);
  c.block = ssm::BlockKind::Mamba1;
  EXPECT_NE(error_of([&] { ssm::Forecaster f{ssm::Model(c)}; }).find("Mamba-2"), std::string::npos);
  c = small_config(1, 128, 8, 8);
  EXPECT_NE(error_of([&] { ssm::Forecaster f{ssm::Model(c)}; }).find("d_model"), std::string::npos);
}

TEST(Forecaster, BuiltinIsTheShippedFile) {
  const auto bytes = ssm::builtin_forecaster_bytes();
  ASSERT_FALSE(bytes.empty());
  const auto f = ssm::Forecaster::builtin();
  EXPECT_EQ(f->config().in_channels, ssm::kForecastInputs);
  EXPECT_EQ(f->config().out_channels, 2);
  EXPECT_LE(f->state_size() * sizeof(float), 8192u);
  const fs::path shipped = fs::path(SSM_SOURCE_DIR) / "models/forecaster/forecaster.safetensors";
  if (!fs::exists(shipped)) GTEST_SKIP() << "no source tree at " << shipped;
  std::ifstream in(shipped, std::ios::binary);
  const std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(file.size(), bytes.size()) << "run models/forecaster/embed.py after retraining";
  EXPECT_EQ(0, std::memcmp(file.data(), bytes.data(), bytes.size()));
  EXPECT_EQ(ssm::Forecaster::load(shipped.string())->fingerprint(), f->fingerprint());
}

// ---------------------------------------------------------------- normaliser

TEST(Normaliser, RunningMomentsThenWeighted) {
  ssm::NormaliserConfig c;
  c.warmup = 4;
  c.half_life = 1;  // weight 1/2 per value after the warm-up
  c.clip_sigma = 1e9;
  c.min_std_abs = 1e-12;
  c.min_std_rel = 0;
  ssm::Normaliser n;
  EXPECT_EQ(n.push(10, c), 0.0);  // nothing known yet
  EXPECT_DOUBLE_EQ(n.mean, 10);
  n.push(12, c);
  n.push(14, c);
  n.push(16, c);
  EXPECT_DOUBLE_EQ(n.mean, 13);
  EXPECT_DOUBLE_EQ(n.var, 5);  // population variance of 10, 12, 14, 16
  // z against the moments before the value.
  EXPECT_DOUBLE_EQ(n.peek(13 + 2 * std::sqrt(5.0), c), 2.0);
  n.push(23, c);  // mean += (23 - 13) / 2, var = (1/2)(5 + (1/2) 100)
  EXPECT_DOUBLE_EQ(n.mean, 18);
  EXPECT_DOUBLE_EQ(n.var, 27.5);
}

TEST(Normaliser, SpikeMovesMomentsOnlySoFarAndZIsClipped) {
  ssm::NormaliserConfig c;
  ssm::Normaliser n;
  std::mt19937_64 rng(1);
  std::normal_distribution<double> g(100, 1);
  for (int i = 0; i < 2000; ++i) n.push(g(rng), c);
  const double var = n.var, mean = n.mean;
  EXPECT_EQ(n.push(1e12, c), c.z_clip);
  EXPECT_LT(n.var, var * 1.05);
  EXPECT_LT(std::abs(n.mean - mean), 0.01);
  // A constant series: the floor keeps s > 0 and z finite.
  ssm::Normaliser k;
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(std::isfinite(k.push(5, c)));
  EXPECT_GT(k.stddev(c), 0);
}

// ---------------------------------------------------------------- detector

TEST(Detector, ScoresStayInRangeOnWildInput) {
  const ssm::Detector det(test_forecaster(), {});
  ssm::SeriesState s = det.new_series();
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-1, 1);
  const double wild[] = {0, 1e300, -1e300, 1e-300, 5, 5, 5, -7e12, 3.5};
  for (int t = 0; t < 3000; ++t) {
    const double v = t % 97 == 0 ? wild[(t / 97) % 9] : 100 * u(rng);
    const auto r = det.update(s, kT0 + 60 * t, v);
    ASSERT_GE(r.score, 0);
    ASSERT_LE(r.score, 1);
    ASSERT_TRUE(std::isfinite(r.likelihood) && std::isfinite(r.prediction) && std::isfinite(r.error)) << t;
  }
  EXPECT_NE(error_of([&] { det.update(s, kT0 + 999999, std::nan("")); }).find("not finite"), std::string::npos);
  EXPECT_NE(error_of([&] { det.update(s, kT0 + 999999, INFINITY); }).find("not finite"), std::string::npos);
}

TEST(Detector, FindsALevelShiftAfterLearning) {
  // Without the new-extreme rule, which would fire on every record value.
  ssm::DetectorConfig dc;
  dc.spatial_score = 0;
  const ssm::Detector det(ssm::Forecaster::builtin(), dc);
  const size_t n = 4000, at = 3000;
  std::mt19937_64 rng(2);
  std::normal_distribution<double> noise(0, 1);
  ssm::SeriesState s = det.new_series();
  double best = 0, before = 0;
  size_t best_t = 0;
  for (size_t t = 0; t < n; ++t) {
    const double x = 50 + 10 * std::sin(2 * M_PI * t / 60.0) + 2 * noise(rng) + (t >= at ? 40 : 0);
    const auto r = det.update(s, kT0 + 300 * static_cast<int64_t>(t), x);
    if (t < static_cast<size_t>(det.config().learning)) EXPECT_EQ(r.score, 0.0);
    if (t < at) before = std::max(before, r.score);
    if (r.score > best) best = r.score, best_t = t;
  }
  EXPECT_GE(best_t, at);
  EXPECT_LE(best_t, at + 40);
  EXPECT_GT(best, 3 * before);
}

// Scores of the default detector with the shipped forecaster over x, one
// value every 5 minutes.
std::vector<double> default_scores(const std::vector<double>& x) {
  const ssm::Detector det(ssm::Forecaster::builtin(), {});
  ssm::SeriesState s = det.new_series();
  std::vector<double> out;
  for (size_t t = 0; t < x.size(); ++t) out.push_back(det.update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]).score);
  return out;
}

constexpr double kEventThreshold = 0.5;  // ssm detect's default --event-threshold

TEST(Detector, OneGlitchDoesNotBlindItToALaterShift) {
  // A series around 10 (sd 1), one value of 1000, then a +20 sd level shift.
  std::mt19937_64 rng(11);
  std::normal_distribution<double> noise(0, 1);
  const size_t glitch = 1000, shift = 2500;
  std::vector<double> x(3000);
  for (size_t t = 0; t < x.size(); ++t) x[t] = 10 + noise(rng) + (t >= shift ? 20 : 0);
  x[glitch] = 1000;
  const auto score = default_scores(x);
  EXPECT_GE(score[glitch], kEventThreshold);
  double at_shift = 0;
  for (size_t t = shift; t < shift + 5; ++t) at_shift = std::max(at_shift, score[t]);
  EXPECT_GE(at_shift, kEventThreshold);
  // The glitch raises no run of events after it.
  int after = 0;
  for (size_t t = glitch + 1; t < shift; ++t) after += score[t] >= kEventThreshold;
  EXPECT_LE(after, 2);
}

TEST(Detector, ASlowTrendIsNotAnAnomalyAtEveryStep) {
  // A filling disk: 20 -> 80 over 3000 values with small noise and
  // quantisation, then a jump of 30 (about 100 sd of the noise).
  const size_t jump = 3000;
  const auto score = default_scores(ssm::testing::filling_disk(jump));
  int events = 0;
  for (size_t t = 0; t < jump; ++t) events += score[t] >= kEventThreshold;
  EXPECT_LE(events, 2);
  double at_jump = 0;
  for (size_t t = jump; t < jump + 5; ++t) at_jump = std::max(at_jump, score[t]);
  EXPECT_GE(at_jump, kEventThreshold);
}

TEST(Detector, TrendsOfEverySlopeAndNoiseRaiseAHandfulOfEventsAtMost) {
  // Drifts from 20 to 80 over 1000 or 3000 values (then flat), noise of
  // 0.05 to 3 sd, with and without quantisation: none is an anomaly, so
  // in 3000 values a handful of events at most (the range of the raw
  // values, spatial_detrend off, raised about 20 to 110 on each of such drifts; the
  // few left are records of the noise itself, as any noisy flat series has).
  int worst = 0;
  uint64_t seed = 20;
  for (double sd : {0.05, 0.3, 1.0, 3.0})
    for (double len : {1000.0, 3000.0})
      for (double q : {0.0, 0.1}) {
        const auto score = default_scores(ssm::testing::drift_series(sd, len, q, seed++));
        int events = 0;
        for (double v : score) events += v >= kEventThreshold;
        EXPECT_LE(events, 8) << "noise " << sd << " over " << len << " values, quantum " << q;
        worst = std::max(worst, events);
      }
  std::printf("  most events of a trend in 3000 values: %d\n", worst);
}

TEST(Detector, TheRangeForgetsAnOldRegime) {
  // A series that sat at a high level long ago returns to it after a long
  // quiet stretch at a low level: with a range that forgets, the return is
  // news again; with one that never forgets, the old level still bounds it.
  std::mt19937_64 rng(13);
  std::normal_distribution<double> noise(0, 1);
  std::vector<double> x(3000);
  for (size_t t = 0; t < x.size(); ++t) x[t] = (t < 300 || t >= 2800 ? 60 : 10) + noise(rng);
  for (double half_life : {200.0, 0.0}) {
    ssm::DetectorConfig dc;
    dc.spatial_detrend = false;  // the range of the values themselves
    dc.range_half_life = half_life;
    const ssm::Detector det(ssm::Forecaster::builtin(), dc);
    ssm::SeriesState s = det.new_series();
    double at_return = 0;
    for (size_t t = 0; t < x.size(); ++t) {
      if (t == 2800) {
        if (half_life > 0) EXPECT_LT(s.hi[1], 20.0);
        else EXPECT_GT(s.hi[1], 60.0);
      }
      const double sc = det.update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]).score;
      if (t >= 2800 && t < 2805) at_return = std::max(at_return, sc);
    }
    if (half_life > 0) EXPECT_GE(at_return, dc.spatial_score);
  }
}

TEST(Detector, RepeatsAndLateValuesChangeNoState) {
  const ssm::Detector det(test_forecaster(), {});
  ssm::SeriesState s = det.new_series();
  const auto x = make_series(600, 3);
  ssm::DetectorResult last;
  for (size_t t = 0; t < 500; ++t) last = det.update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]);
  const int64_t tl = kT0 + 300 * 499;
  const auto before = det.save(s);
  // A repeat of the last epoch (any value) gets the last result.
  const auto rep = det.update(s, tl, 1e6);
  EXPECT_EQ(rep.kind, ssm::PointKind::repeat);
  EXPECT_EQ(rep.score, last.score);
  EXPECT_EQ(rep.likelihood, last.likelihood);
  EXPECT_EQ(rep.prediction, last.prediction);
  EXPECT_EQ(det.save(s), before);
  // A late value is scored (a wild one scores high) and changes nothing.
  const auto late = det.update(s, tl - 3000, 1e6);
  EXPECT_EQ(late.kind, ssm::PointKind::out_of_order);
  EXPECT_GT(late.score, 0.5);
  EXPECT_LE(late.score, 1.0);
  EXPECT_EQ(det.save(s), before);
  // Scoring goes on as if neither had come.
  ssm::SeriesState ref = det.load(before);
  for (size_t t = 500; t < 600; ++t) {
    const auto a = det.update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]);
    const auto b = det.update(ref, kT0 + 300 * static_cast<int64_t>(t), x[t]);
    ASSERT_EQ(a.score, b.score);
    ASSERT_EQ(a.kind, ssm::PointKind::scored);
  }
}

TEST(Detector, StateBytesRestoreExactly) {
  const ssm::Detector det(test_forecaster(), {});
  const auto x = make_series(3000, 4, 2500, 10);
  ssm::SeriesState whole = det.new_series(), part = det.new_series();
  std::vector<double> a, b;
  for (size_t t = 0; t < x.size(); ++t) a.push_back(det.update(whole, kT0 + 300 * int64_t(t), x[t]).score);
  for (size_t t = 0; t < x.size(); ++t) {
    if (t % 700 == 350) part = det.load(det.save(part));  // a restart every 700 values
    b.push_back(det.update(part, kT0 + 300 * int64_t(t), x[t]).score);
  }
  EXPECT_EQ(a, b);
  EXPECT_LE(det.state_bytes(), 16384u);
  EXPECT_EQ(det.save(whole).size() > 0, true);
}

TEST(Detector, AForecasterOfHorizonHIsJudgedOnTheForecastMadeHValuesEarlier) {
  // A six-input, two-output forecaster of horizon 5: value k's error is its
  // surprise under the output the forecaster gave after value k - 5,
  // computed here by stepping the forecaster beside the detector with its
  // own normaliser; none before the fifth value. A restored state continues
  // bit for bit (the outputs ahead travel in the bytes).
  ssm::ModelConfig mc = small_config(1, 8, 8, 8);
  mc.in_channels = ssm::kForecastInputs;
  mc.out_channels = 2;
  ssm::Model m(mc);
  m.init(5);
  const int h = 5;
  auto f = std::make_shared<const ssm::Forecaster>(m, h);
  ASSERT_EQ(f->horizon(), h);
  const ssm::Detector det(f, {});
  const auto x = make_series(1200, 8, 900, 15);
  ssm::SeriesState s = det.new_series(), restored = det.new_series();
  ssm::Normaliser norm;
  std::vector<float> state(f->state_size(), 0.0f);
  std::vector<std::array<float, 2>> outs;
  for (size_t t = 0; t < x.size(); ++t) {
    const int64_t epoch = kT0 + 300 * int64_t(t);
    const double z = norm.push(x[t], det.config().norm);
    const ssm::DetectorResult r = det.update(s, epoch, x[t]);
    if (t == 600) restored = det.load(det.save(s));
    if (t > 600) ASSERT_EQ(det.update(restored, epoch, x[t]).score, r.score) << t;
    if (t < size_t(h)) {
      EXPECT_EQ(r.error, 0.0) << t;
    } else {
      const auto& o = outs[t - h];
      const double want = std::abs(z - o[0]) * std::exp(-std::clamp<double>(o[1], -7, 7));
      ASSERT_NEAR(r.error, want, 1e-9 * (1 + want)) << t;
    }
    float in[ssm::kForecastInputs];
    ssm::forecaster_inputs(in, z, epoch, t > 0 ? 300 : 0);
    std::array<float, 2> o{};
    f->step(state.data(), in, o.data());
    outs.push_back(o);
  }
  // Another horizon is another detector: its states are not taken.
  const ssm::Detector other(std::make_shared<const ssm::Forecaster>(m, 4), {});
  EXPECT_NE(error_of([&] { other.load(det.save(s)); }).find("another forecaster"), std::string::npos);
  EXPECT_NE(error_of([&] { ssm::Forecaster bad(m, ssm::Forecaster::kMaxHorizon + 1); }).find("horizon"),
            std::string::npos);
}

TEST(Detector, StateBytesAreChecked) {
  const ssm::Detector det(test_forecaster(), {});
  ssm::SeriesState s = det.new_series();
  for (int t = 0; t < 50; ++t) det.update(s, kT0 + t, t);
  auto bytes = det.save(s);
  EXPECT_NE(error_of([&] { det.load(std::span(bytes).first(bytes.size() - 1)); }).find("truncated"),
            std::string::npos);
  auto extra = bytes;
  extra.push_back(0);
  EXPECT_NE(error_of([&] { det.load(extra); }).find("after the end"), std::string::npos);
  auto magic = bytes;
  magic[0] = 'X';
  EXPECT_NE(error_of([&] { det.load(magic); }).find("bad magic"), std::string::npos);
  ssm::DetectorConfig other;
  other.learning = 10;
  const ssm::Detector det2(test_forecaster(), other);
  EXPECT_NE(error_of([&] { det2.load(bytes); }).find("another forecaster or config"), std::string::npos);
  // Every byte flipped in turn: an error or a state that scores in range.
  for (size_t i = 8; i < bytes.size(); i += 7) {
    auto bad = bytes;
    bad[i] ^= 0xA5;
    try {
      ssm::SeriesState r = det.load(bad);
      const auto res = det.update(r, kT0 + 1000, 3);
      ASSERT_TRUE(res.score >= 0 && res.score <= 1) << "byte " << i;
    } catch (const ssm::Error&) {
    }
  }
}

TEST(DetectorConfig, JsonRoundTripAndStrictErrors) {
  ssm::DetectorConfig c;
  c.level.window = 12;
  c.daily.log = true;
  c.norm.half_life = 300;
  const auto back = ssm::DetectorConfig::from_json(c.to_json(), "t.json");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_NE(error_of([] { ssm::DetectorConfig::from_json(json{{"levle", {}}}, "t.json"); }).find("'levle'"),
            std::string::npos);
  EXPECT_NE(error_of([] { ssm::DetectorConfig::from_json(json{{"level", {{"window", 0}}}}, "t.json"); })
                .find("level.window"),
            std::string::npos);
  EXPECT_NE(error_of([] { ssm::DetectorConfig::from_json(json{{"normaliser", {{"half_life", "x"}}}}, "t.json"); })
                .find("normaliser.half_life"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              ssm::DetectorConfig::from_json(
                  json{{"forecast", {{"weight", 0}}}, {"level", {{"weight", 0}}}, {"daily", {{"weight", 0}}},
                       {"weekly", {{"weight", 0}}}},
                  "t.json");
            }).find("weights"),
            std::string::npos);
}

// ---------------------------------------------------------------- training

TEST(SeriesSource, DeterministicAndShiftedByOne) {
  ssm::SeriesDataConfig d;
  d.folders = {(fs::path(SSM_SOURCE_DIR) / "samples/nab/data").string()};
  d.synthetic_fraction = 0.5;
  auto src = ssm::make_series_source(d);
  const int B = 6, T = 200;
  std::vector<float> in(B * T), tg(B * T), in2(B * T), tg2(B * T);
  src->batch(in.data(), tg.data(), B, T, 9, 4);
  src->batch(in2.data(), tg2.data(), B, T, 9, 4);
  EXPECT_EQ(in, in2);
  EXPECT_EQ(tg, tg2);
  src->batch(in2.data(), tg2.data(), B, T, 9, 5);
  EXPECT_NE(in, in2);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t + 1 < T; ++t) {
      ASSERT_EQ(in[b * T + t + 1], tg[b * T + t]) << "item " << b << " t " << t;
      ASSERT_TRUE(std::isfinite(in[b * T + t]) && std::abs(in[b * T + t]) <= d.norm.z_clip);
    }
}

TEST(SeriesSource, AHorizonShiftsTheTargetByH) {
  // horizon h: the target of step t is the input of step t + h, for real
  // and synthetic items alike.
  ssm::SeriesDataConfig d;
  d.folders = {(fs::path(SSM_SOURCE_DIR) / "samples/nab/data").string()};
  d.synthetic_fraction = 0.5;
  d.horizon = 7;
  auto src = ssm::make_series_source(d);
  const int B = 6, T = 30;  // the real items fit in the 40-row sample file: no padding
  std::vector<float> in(B * T), tg(B * T);
  src->batch(in.data(), tg.data(), B, T, 9, 4);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t + d.horizon < T; ++t) ASSERT_EQ(in[b * T + t + d.horizon], tg[b * T + t]) << b << " " << t;
  EXPECT_NE(error_of([] { ssm::make_series_source(json{{"horizon", 0}}, "c.json"); }).find("data.horizon"),
            std::string::npos);
}

TEST(SeriesSource, TimeInputsAndTwoChannelTargets) {
  // A forecaster with the time inputs and a predictive distribution: the
  // target's first channel is the next input's z, its second is 0; the
  // phases lie on the unit circle; the gap input is what forecaster_inputs
  // gives for the sample files' 5-minute steps.
  ssm::SeriesDataConfig d;
  d.folders = {(fs::path(SSM_SOURCE_DIR) / "samples/nab/data").string()};
  d.synthetic_fraction = 0.5;
  d.in_channels = ssm::kForecastInputs;
  d.out_channels = 2;
  auto src = ssm::make_series_source(d);
  const int B = 8, T = 300, C = ssm::kForecastInputs;
  std::vector<float> in(B * T * C), tg(B * T * 2);
  src->batch(in.data(), tg.data(), B, T, 3, 1);
  float five_minutes[ssm::kForecastInputs];
  ssm::forecaster_inputs(five_minutes, 0, 0, 300);
  EXPECT_NEAR(five_minutes[5], std::log10(300.0) - 2.5, 1e-6);
  for (int b = 0; b < B; ++b)
    for (int t = 1; t + 1 < T; ++t) {
      const float* x = &in[(b * T + t) * C];
      if (x[1] == 0 && x[2] == 0) continue;  // the zero padding before a short file
      ASSERT_EQ(x[C], tg[(b * T + t) * 2]) << "item " << b << " t " << t;
      ASSERT_EQ(tg[(b * T + t) * 2 + 1], 0.0f);
      ASSERT_NEAR(x[1] * x[1] + x[2] * x[2], 1.0, 1e-5);
      ASSERT_NEAR(x[3] * x[3] + x[4] * x[4], 1.0, 1e-5);
      ASSERT_TRUE(x[5] >= -3 && x[5] <= 3);
    }
  // Monday 00:00 UTC is phase 0 of the week, noon phase 1/2 of the day.
  float mon[ssm::kForecastInputs];
  ssm::forecaster_inputs(mon, 0.5, 1396224000 + 43200, 0);  // 2014-03-31 (a Monday) 12:00
  EXPECT_NEAR(mon[1], 0, 1e-6);
  EXPECT_NEAR(mon[2], -1, 1e-6);
  EXPECT_NEAR(mon[3], std::sin(2 * M_PI * 0.5 / 7), 1e-6);
  EXPECT_EQ(mon[5], 0.0f);
}

TEST(SeriesSource, ConfigErrorsNameTheKey) {
  EXPECT_NE(error_of([] { ssm::make_series_source(json{{"kind", "audio"}}, "c.json"); }).find("data.kind"),
            std::string::npos);
  EXPECT_NE(error_of([] { ssm::make_series_source(json{{"folder", "x"}}, "c.json"); }).find("data.folder"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              ssm::make_series_source(json{{"kind", "series"}, {"folders", {"/nonexistent/ssm"}}}, "c.json");
            }).find("does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([] { ssm::make_series_source(json{{"synthetic_fraction", 0.5}}, "c.json"); })
                .find("no CSV"),
            std::string::npos);
  // Synthetic only needs no folder.
  EXPECT_NO_THROW(ssm::make_series_source(json{{"kind", "series"}, {"synthetic_fraction", 1.0}}, "c.json"));
}

// The training itself is `ssm train`'s (tests/test_train_cli.cpp).
TEST(SeriesTrainConfig, ReadsTheSectionsStrictly) {
  const json cfg = {
      {"model", {{"d_model", 8}, {"n_layers", 1}, {"head_dim", 8}, {"d_state", 8}, {"sample_rate", 1}}},
      {"training", {{"steps", 6}, {"batch", 2}, {"segment", 64}, {"warmup", 1}, {"l1_weight", 0.0}, {"l2_weight", 1.0}}},
      {"data", {{"kind", "series"}, {"synthetic_fraction", 1.0}, {"normaliser", {{"half_life", 500}}}}},
      {"output", {{"dir", "run"}, {"model", "f.safetensors"}, {"log_every", 3}, {"plot", false}}}};
  EXPECT_TRUE(ssm::is_series_train_config(cfg));
  const auto c = ssm::SeriesTrainConfig::from_json(cfg, "t.json");
  EXPECT_EQ(c.model.d_model, 8);
  EXPECT_EQ(c.training.steps, 6);
  EXPECT_EQ(c.training.stft_weight, 0);  // a forecast is judged value by value
  EXPECT_EQ(c.training.l2_weight, 1.0);
  EXPECT_EQ(c.training.lr, ssm::TrainerConfig{}.lr);  // unset: the default
  EXPECT_EQ(c.data.synthetic_fraction, 1.0);
  EXPECT_EQ(c.output.dir, "run");
  EXPECT_EQ(c.output.model, "f.safetensors");
  EXPECT_EQ(c.output.log_every, 3);
  EXPECT_FALSE(c.output.plot);
  EXPECT_EQ(c.output.checkpoint_every, ssm::SeriesTrainConfig::Output{}.checkpoint_every);
  const auto meta = c.model_metadata();
  EXPECT_EQ(json::parse(meta.at("ssm.training")), cfg["training"]);  // as written
  EXPECT_EQ(json::parse(meta.at("ssm.normaliser"))["half_life"], 500);
  EXPECT_EQ(meta.at("ssm.horizon"), "1");

  // The shipped forecaster's config.
  const json shipped = json::parse(ssm::read_text_file(SSM_SOURCE_DIR "/models/forecaster/train.json"));
  EXPECT_TRUE(ssm::is_series_train_config(shipped));
  EXPECT_EQ(ssm::SeriesTrainConfig::from_json(shipped, "train.json").output.model,
            "models/forecaster/forecaster.safetensors");
  // The horizon-32 experiment's config: its model's metadata says so.
  const json h32 = json::parse(ssm::read_text_file(SSM_SOURCE_DIR "/models/forecaster/train_h32.json"));
  const auto c32 = ssm::SeriesTrainConfig::from_json(h32, "train_h32.json");
  EXPECT_EQ(c32.data.horizon, 32);
  EXPECT_EQ(c32.model_metadata().at("ssm.horizon"), "32");

  struct Case {
    std::function<void(json&)> edit;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["training"]["stepz"] = 1; }, "unknown key 'training.stepz'"},
      {[](json& j) { j["training"]["stft_weight"] = 1; }, "unknown key 'training.stft_weight'"},
      {[](json& j) { j["training"]["warmup"] = 7; }, "t.json: training config: need 0 <= 'warmup' <= 'steps'"},
      {[](json& j) { j["training"]["l2_weight"] = 0; }, "every loss weight is 0"},
      {[](json& j) { j["output"]["folder"] = "x"; }, "unknown key 'output.folder'"},
      {[](json& j) { j["output"]["dir"] = 3; }, "'output.dir' must be a string"},
      {[](json& j) { j["output"]["log_every"] = 0; }, "'output.log_every' must be >= 1"},
      {[](json& j) { j["output"]["keep_checkpoints"] = -1; }, "'output.keep_checkpoints' must be >= 0"},
      {[](json& j) { j.erase("output"); }, "the section 'output' is missing"},
      {[](json& j) { j["data"]["synthetic_fraction"] = 2; }, "'data.synthetic_fraction' must be in [0, 1]"},
      {[](json& j) { j["model"]["width"] = 1; }, "width"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    json j = cfg;
    cases[i].edit(j);
    const std::string e = error_of([&] { ssm::SeriesTrainConfig::from_json(j, "t.json"); });
    EXPECT_NE(e.find(cases[i].expect), std::string::npos) << "case " << i << ": " << e;
  }
  for (const json& other : {json{{"data", {{"speech", "x"}}}}, json{{"data", {{"kind", "audio"}}}}, json{{"data", 3}},
                            json::array(), json{{"data", {{"kind", 1}}}}})
    EXPECT_FALSE(ssm::is_series_train_config(other)) << other.dump();
}

// ---------------------------------------------------------------- ssm eval nab

std::string run(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  *status = pclose(p);
  return out;
}

double profile_score(const std::string& out, const std::string& profile) {
  const size_t at = out.find(profile);
  if (at == std::string::npos) return NAN;
  const size_t s = out.find("score", at);
  return std::stod(out.substr(s + 5));
}

TEST(EvalNab, SampleCorpusEndToEnd) {
  TempDir dir;
  const std::string bin = SSM_BINARY_DIR "/apps/ssm";
  const std::string nab = std::string(SSM_SOURCE_DIR) + "/samples/nab";
  int status = -1;
  const std::string out = run(bin + " eval nab --data " + nab + "/data --labels " + nab + "/labels.json --out " +
                                  dir.path.string() + " --threads 1",
                              &status);
  ASSERT_EQ(status, 0) << out;
  for (const char* p : {"standard", "reward_low_FP_rate", "reward_low_FN_rate"})
    EXPECT_TRUE(std::isfinite(profile_score(out, p))) << out;
  // NAB's layout: <out>/<detector>/<category>/<detector>_<file>.csv.
  const fs::path res = dir.path / "ssm/artificialWithAnomaly/ssm_art_daily_jumpsup_excerpt.csv";
  ASSERT_TRUE(fs::exists(res)) << out;
  const auto scores = ssm::read_timeseries_csv(res.string(), {.value_column = "anomaly_score"});
  const auto data = ssm::read_timeseries_csv(nab + "/data/artificialWithAnomaly/art_daily_jumpsup_excerpt.csv");
  ASSERT_EQ(scores.rows.size(), data.rows.size());
  for (const auto& r : scores.rows) ASSERT_TRUE(r.value >= 0 && r.value <= 1);
  EXPECT_TRUE(fs::exists(dir.path / "scores.json"));
  // A bad setting is an error naming it.
  const std::string bad = run(bin + " eval nab --data " + nab + "/data --labels " + nab +
                                  "/labels.json --set level.window=0",
                              &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(bad.find("level.window"), std::string::npos) << bad;
}

TEST(EvalNab, NabDevReachesTheTarget) {
  const std::string root = std::string(SSM_SOURCE_DIR) + "/../shared/data/nab-dev";
  if (!fs::exists(root + "/labels.json")) GTEST_SKIP() << "nab-dev is not present at " << root;
  int status = -1;
  const std::string out = run(std::string(SSM_BINARY_DIR "/apps/ssm") + " eval nab --data " + root +
                                  "/data --labels " + root + "/labels.json",
                              &status);
  ASSERT_EQ(status, 0) << out;
  std::printf("%s", out.c_str());
  // The first "standard" line is the out-of-fold (headline) score.
  EXPECT_GE(profile_score(out, "standard"), 70.0) << out;
}

}  // namespace
