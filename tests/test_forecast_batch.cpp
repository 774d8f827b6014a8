// ForecastBatch (ssm/forecast_batch.hpp) against Detector::update value by
// value. Several series send values in a shuffled order, with repeats, late
// (out-of-order) values and a series that leaves and comes back (a server's
// eviction); every result must equal the plain detector's: exactly on the
// CPU, within fp32 summation-order differences on the GPU (which skips with
// the reason on a machine without one).
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ssm/cuda.hpp"
#include "ssm/detector.hpp"
#include "ssm/forecast_batch.hpp"
#include "testing.hpp"

namespace {

constexpr int64_t kT0 = 1396310400;  // 2014-04-01 00:00:00 UTC

using ssm::testing::error_of;

const ssm::Detector& detector() {
  static const ssm::Detector d(ssm::Forecaster::builtin(), ssm::DetectorConfig{});
  return d;
}

// One value of one series, in arrival order.
struct Arrival {
  int series;
  int64_t epoch;
  double value;
  bool leave_after = false;  // the series is detached after this value and attached again from saved bytes
};

// `series` daily-looking series of `n` values (with a level shift in one),
// interleaved at random, with about 2% repeats and 2% late values.
std::vector<Arrival> arrivals(int series, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 1);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int> next(series, 0);
  std::vector<Arrival> out;
  int left = series * n;
  while (left > 0) {
    const int s = static_cast<int>(rng() % series);
    if (next[s] == n) continue;
    const int t = next[s]++;
    --left;
    const double x = 50 + 20 * std::sin(2 * M_PI * t / 288.0 + s) + 2 * noise(rng) + (s == 1 && t > n / 2 ? 30 : 0);
    out.push_back({s, kT0 + 300 * t, x});
    if (t > 0 && u(rng) < 0.02) out.push_back({s, kT0 + 300 * t, x + 1});              // repeat
    if (t > 1 && u(rng) < 0.02) out.push_back({s, kT0 + 300 * (t - 2), x + 5 * noise(rng)});  // late
    if (s == 2 && t == n / 3) out.back().leave_after = true;
  }
  return out;
}

struct Compared {
  double max_score = 0, max_likelihood = 0, max_prediction_rel = 0, max_state = 0;
  size_t mismatched_kinds = 0, values = 0;
};

// Runs the arrivals through a ForecastBatch on `device` and through plain
// Detector::update, and compares every result and the final states.
Compared compare(const std::string& device, int series, int n, int capacity) {
  const ssm::Detector& det = detector();
  ssm::ForecastBatch batch(det, capacity, device);
  // unique_ptr: the batch keeps pointers to the states until its queue runs.
  std::vector<std::unique_ptr<ssm::SeriesState>> batched, plain;
  std::vector<int> slot(series);
  for (int s = 0; s < series; ++s) {
    batched.push_back(std::make_unique<ssm::SeriesState>(det.new_series()));
    plain.push_back(std::make_unique<ssm::SeriesState>(det.new_series()));
    slot[s] = batch.attach(*batched[s]);
  }
  Compared c;
  for (const Arrival& a : arrivals(series, n, 11)) {
    const ssm::DetectorResult got = batch.update(slot[a.series], *batched[a.series], a.epoch, a.value);
    const ssm::DetectorResult want = det.update(*plain[a.series], a.epoch, a.value);
    c.max_score = std::max(c.max_score, std::abs(got.score - want.score));
    c.max_likelihood = std::max(c.max_likelihood, std::abs(got.likelihood - want.likelihood));
    c.max_prediction_rel = std::max(c.max_prediction_rel, std::abs(got.prediction - want.prediction) /
                                                              std::max(1.0, std::abs(want.prediction)));
    c.mismatched_kinds += got.kind != want.kind;
    ++c.values;
    if (a.leave_after) {
      // Evicted and restored: the state travels through its bytes.
      int s = a.series;
      const int old = slot[s];
      int ss[] = {old};
      ssm::SeriesState* st[] = {batched[s].get()};
      batch.fetch(ss, st);
      const std::vector<uint8_t> bytes = det.save(*batched[s]);
      batch.detach(old);
      batched[s] = std::make_unique<ssm::SeriesState>(det.load(bytes));
      slot[s] = batch.attach(*batched[s]);
    }
  }
  std::vector<ssm::SeriesState*> states;
  for (auto& b : batched) states.push_back(b.get());
  batch.fetch(slot, states);
  for (int s = 0; s < series; ++s) {
    const auto& g = batched[s]->model_state;
    const auto& w = plain[s]->model_state;
    for (size_t i = 0; i < w.size(); ++i)
      c.max_state = std::max(c.max_state, std::abs(double(g[i]) - w[i]) / std::max(1.0, std::abs(double(w[i]))));
    c.max_state = std::max(c.max_state, std::abs(double(batched[s]->prediction) - plain[s]->prediction));
  }
  return c;
}

TEST(ForecastBatch, OnTheCpuEqualsTheDetectorValueByValue) {
  // Capacity 5 for 4 series: one free slot for the series that leaves and
  // comes back; a queue that fills runs on its own.
  const Compared c = compare("cpu", 4, 900, 5);
  EXPECT_GT(c.values, 3600u);
  EXPECT_EQ(c.mismatched_kinds, 0u);
  EXPECT_EQ(c.max_score, 0.0);
  EXPECT_EQ(c.max_likelihood, 0.0);
  EXPECT_EQ(c.max_prediction_rel, 0.0);
  EXPECT_EQ(c.max_state, 0.0);
}

TEST(ForecastBatch, AStepIsOwedUntilTheQueueRuns) {
  const ssm::Detector& det = detector();
  ssm::ForecastBatch batch(det, 3, "cpu");
  ssm::SeriesState a = det.new_series(), b = det.new_series(), ref_a = det.new_series(), ref_b = det.new_series();
  const int sa = batch.attach(a), sb = batch.attach(b);
  batch.update(sa, a, kT0, 10);
  det.update(ref_a, kT0, 10);
  EXPECT_EQ(batch.queued(), 1u);
  EXPECT_EQ(a.prediction, 0.0f);  // not stepped yet
  EXPECT_NE(ref_a.prediction, 0.0f);
  batch.update(sb, b, kT0, 20);
  det.update(ref_b, kT0, 20);
  EXPECT_EQ(batch.queued(), 2u);
  // a comes back owing its step: the queue runs before a is scored.
  batch.update(sa, a, kT0 + 60, 11);
  det.update(ref_a, kT0 + 60, 11);
  EXPECT_EQ(batch.queued(), 1u);
  EXPECT_EQ(b.prediction, ref_b.prediction);
  // A repeat owes no step.
  batch.run();
  batch.update(sa, a, kT0 + 60, 11);
  EXPECT_EQ(batch.queued(), 0u);
  EXPECT_EQ(a.prediction, ref_a.prediction);
  EXPECT_EQ(a.model_state, ref_a.model_state);
  EXPECT_EQ(b.model_state, ref_b.model_state);
}

TEST(ForecastBatch, ErrorsNameWhatIsWrong) {
  const ssm::Detector& det = detector();
  EXPECT_NE(error_of([&] { ssm::ForecastBatch b(det, 0, "cpu"); }).find("capacity must be >= 1"), std::string::npos);
  EXPECT_NE(error_of([&] { ssm::ForecastBatch b(det, 2, "gpu"); }).find("device must be \"cpu\" or \"cuda\""),
            std::string::npos);
  ssm::ForecastBatch b(det, 1, "cpu");
  const ssm::SeriesState s = det.new_series();
  b.attach(s);
  EXPECT_NE(error_of([&] { b.attach(s); }).find("all 1 slots are taken"), std::string::npos);
  // A slot used after it was freed, or freed twice, would let two series share a state.
  b.detach(0);
  ssm::SeriesState gone = det.new_series();
  EXPECT_NE(error_of([&] { b.update(0, gone, kT0, 1.0); }).find("update: slot 0 is not attached"), std::string::npos);
  EXPECT_NE(error_of([&] { b.detach(0); }).find("detach: slot 0 is not attached"), std::string::npos);
  EXPECT_NE(error_of([&] { b.detach(5); }).find("slot 5 is not attached"), std::string::npos);
  ssm::SeriesState foreign = s;
  foreign.model_state.pop_back();
  ssm::ForecastBatch b2(det, 1, "cpu");
  EXPECT_NE(error_of([&] { b2.attach(foreign); }).find("another forecaster"), std::string::npos);
  if (!ssm::cuda_available()) {
    const std::string e = error_of([&] { ssm::ForecastBatch g(det, 4, "cuda"); });
    EXPECT_TRUE(e.find("GPU") != std::string::npos || e.find("CUDA") != std::string::npos) << e;
  }
}

TEST(ForecastBatchGpu, EqualsTheCpuDetector) {
  if (!ssm::cuda_available()) GTEST_SKIP() << "no usable GPU: " << ssm::cuda_device_description();
  // Capacity 64 for 6 series: the steps of several arrivals share a launch.
  const Compared c = compare("cuda", 6, 1500, 64);
  std::printf("  gpu vs cpu over %zu values: score %.2e  likelihood %.2e  prediction %.2e  state %.2e\n", c.values,
              c.max_score, c.max_likelihood, c.max_prediction_rel, c.max_state);
  EXPECT_EQ(c.mismatched_kinds, 0u);
  EXPECT_LE(c.max_prediction_rel, 1e-4);
  EXPECT_LE(c.max_state, 1e-4);
  EXPECT_LE(c.max_likelihood, 1e-3);
  EXPECT_LE(c.max_score, 1e-3);
}

}  // namespace
