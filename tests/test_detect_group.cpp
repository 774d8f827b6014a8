// Series scored jointly (GroupDetector): generated groups whose answer is
// known. A fault that shows only in the joint behaviour (two fields that
// moved together part) must score higher jointly than any field does alone;
// one that shows in one field alone still scores; independent noise raises
// no more events jointly than alone; a restored group continues bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "ssm/detector.hpp"
#include "testing.hpp"

namespace {

using ssm::testing::error_of;

constexpr int64_t kT0 = 1700000000;
constexpr int64_t kStep = 60;
constexpr double kPi = 3.14159265358979323846;

// rows x fields values, row-major.
struct Rows {
  int fields = 0;
  std::vector<double> v;
  size_t rows() const { return v.size() / fields; }
  std::span<const double> row(size_t r) const { return {v.data() + r * fields, static_cast<size_t>(fields)}; }
};

// Two fields following one sine (period 97 rows, not a daily rhythm) with
// small independent noise; from row `brk` on (a zero crossing) the second
// one runs against the first. Each field's values stay as they were in
// level, range and rhythm: only their relation changes.
Rows correlation_break(size_t n, size_t brk, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 0.05);
  Rows r{2, {}};
  for (size_t t = 0; t < n; ++t) {
    const double s = std::sin(2 * kPi * static_cast<double>(t) / 97.0);
    r.v.push_back(10 + s + noise(rng));
    r.v.push_back(20 + (t >= brk ? -s : s) + noise(rng));
  }
  return r;
}

struct Scores {
  std::vector<double> joint, alone;  // per row: the group's, and the highest of the fields' own detectors
};

Scores score_both(const Rows& rows, const ssm::GroupConfig& gc = {}) {
  const ssm::GroupDetector group(ssm::Forecaster::builtin(), {}, gc);
  const ssm::Detector& det = group.detector();
  ssm::GroupState g = group.new_group(rows.fields);
  std::vector<ssm::SeriesState> alone(rows.fields, det.new_series());
  Scores s;
  for (size_t t = 0; t < rows.rows(); ++t) {
    const int64_t epoch = kT0 + kStep * static_cast<int64_t>(t);
    s.joint.push_back(group.update(g, epoch, rows.row(t)).score);
    double best = 0;
    for (int f = 0; f < rows.fields; ++f) best = std::max(best, det.update(alone[f], epoch, rows.row(t)[f]).score);
    s.alone.push_back(best);
  }
  return s;
}

double max_in(const std::vector<double>& v, size_t a, size_t b) {
  double m = 0;
  for (size_t i = a; i < b && i < v.size(); ++i) m = std::max(m, v[i]);
  return m;
}

TEST(DetectGroup, ACorrelationBreakScoresHigherJointlyThanAlone) {
  const size_t brk = 97 * 40, n = brk + 1500;
  for (uint32_t seed : {1u, 2u, 3u}) {
    const Scores s = score_both(correlation_break(n, brk, seed));
    const double joint = max_in(s.joint, brk, brk + 200), alone = max_in(s.alone, brk, brk + 200);
    EXPECT_GE(joint, 0.5) << "seed " << seed;
    EXPECT_GT(joint, alone + 0.2) << "seed " << seed << ": the fields alone see it as much";
    // Before the break the joint score raises nothing of that height.
    EXPECT_LT(max_in(s.joint, 400, brk), joint - 0.2) << "seed " << seed;
  }
}

TEST(DetectGroup, WithoutTheJointChannelTheBreakIsMissed) {
  // The same group with the joint channel off scores as its fields do: the
  // test above is the joint channel's doing.
  const size_t brk = 97 * 40, n = brk + 1500;
  ssm::GroupConfig off;
  off.joint.weight = 0;
  const Scores s = score_both(correlation_break(n, brk, 1), off);
  EXPECT_LT(max_in(s.joint, brk, brk + 200), 0.5);
}

TEST(DetectGroup, AFaultInOneFieldAloneStillScores) {
  // Four independent noisy fields; field 2 shifts by 8 sigma at row 3000.
  std::mt19937 rng(5);
  std::normal_distribution<double> noise(0.0, 1.0);
  Rows r{4, {}};
  for (size_t t = 0; t < 4000; ++t)
    for (int f = 0; f < 4; ++f) r.v.push_back(50 + 10 * f + noise(rng) + (f == 2 && t >= 3000 ? 8.0 : 0.0));
  const ssm::GroupDetector group(ssm::Forecaster::builtin(), {}, {});
  ssm::GroupState g = group.new_group(4);
  double best = 0;
  int field = -1;
  for (size_t t = 0; t < r.rows(); ++t) {
    const ssm::GroupResult res = group.update(g, kT0 + kStep * static_cast<int64_t>(t), r.row(t));
    if (t >= 3000 && t < 3050 && res.score > best) {
      best = res.score;
      field = res.top_field;
    }
  }
  EXPECT_GE(best, 0.5);
  EXPECT_EQ(field, 2);
}

TEST(DetectGroup, IndependentNoiseRaisesNoMoreEventsJointlyThanAlone) {
  std::mt19937 rng(9);
  std::normal_distribution<double> noise(0.0, 1.0);
  Rows r{6, {}};
  for (size_t t = 0; t < 6000; ++t)
    for (int f = 0; f < 6; ++f) r.v.push_back(100 + noise(rng));
  const Scores s = score_both(r);
  int joint = 0, alone = 0;
  for (size_t t = 0; t < s.joint.size(); ++t) {
    joint += s.joint[t] >= 0.5;
    alone += s.alone[t] >= 0.5;
  }
  // Six fields alone: their new extremes of pure noise. Jointly: as few.
  EXPECT_LE(joint, std::max(alone, 3)) << "alone " << alone;
}

TEST(DetectGroup, ARestoredGroupContinuesBitForBit) {
  const Rows rows = correlation_break(5000, 97 * 30, 4);
  const ssm::GroupDetector group(ssm::Forecaster::builtin(), {}, {});
  ssm::GroupState a = group.new_group(2);
  std::vector<double> straight, restored;
  for (size_t t = 0; t < rows.rows(); ++t)
    straight.push_back(group.update(a, kT0 + kStep * static_cast<int64_t>(t), rows.row(t)).score);
  ssm::GroupState b = group.new_group(2);
  for (size_t t = 0; t < rows.rows(); ++t) {
    if (t == 2500) {
      const std::vector<uint8_t> bytes = group.save(b);
      b = group.load(bytes);
    }
    restored.push_back(group.update(b, kT0 + kStep * static_cast<int64_t>(t), rows.row(t)).score);
  }
  ASSERT_EQ(straight.size(), restored.size());
  for (size_t t = 0; t < straight.size(); ++t) ASSERT_EQ(straight[t], restored[t]) << "row " << t;
  // The saved bytes round-trip and belong to this config only.
  const std::vector<uint8_t> bytes = group.save(b);
  EXPECT_EQ(group.save(group.load(bytes)), bytes);
  ssm::GroupConfig other;
  other.ridge = 0.1;
  const ssm::GroupDetector g2(ssm::Forecaster::builtin(), {}, other);
  EXPECT_NE(error_of([&] { g2.load(bytes); }).find("another forecaster or config"), std::string::npos);
  std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 3);
  EXPECT_NE(error_of([&] { group.load(cut); }).find("truncated"), std::string::npos);
}

TEST(DetectGroup, RepeatsLateRowsAndBadInput) {
  const ssm::GroupDetector group(ssm::Forecaster::builtin(), {}, {});
  ssm::GroupState g = group.new_group(3);
  const std::vector<double> row{1, 2, 3};
  for (int t = 0; t < 10; ++t) group.update(g, kT0 + kStep * t, row);
  const auto before = group.save(g);
  EXPECT_EQ(group.update(g, kT0 + kStep * 9, row).kind, ssm::PointKind::repeat);
  EXPECT_EQ(group.update(g, kT0, row).kind, ssm::PointKind::out_of_order);
  EXPECT_EQ(group.save(g), before) << "a repeat or a late row changed the state";
  EXPECT_NE(error_of([&] { group.update(g, kT0 + kStep * 10, std::vector<double>{1, 2}); }).find("3 fields"),
            std::string::npos);
  EXPECT_NE(error_of([&] { group.update(g, kT0 + kStep * 10, std::vector<double>{1, NAN, 3}); }).find("not finite"),
            std::string::npos);
  EXPECT_NE(error_of([&] { group.new_group(0); }).find("fields"), std::string::npos);
  EXPECT_NE(error_of([&] { group.new_group(ssm::kMaxGroupFields + 1); }).find("fields"), std::string::npos);
}

TEST(DetectGroup, ConfigIsStrictAndStateStaysSmallPerField) {
  const nlohmann::json j = {{"joint", {{"weight", 2}}}, {"ridge", 0.2}};
  const ssm::GroupConfig c = ssm::GroupConfig::from_json(j, "test.json");
  EXPECT_EQ(c.joint.weight, 2);
  EXPECT_EQ(c.ridge, 0.2);
  EXPECT_EQ(ssm::GroupConfig::from_json(c.to_json(), "again").to_json(), c.to_json());
  EXPECT_NE(error_of([] { ssm::GroupConfig::from_json({{"ridge", 0}}, "test.json"); }).find("ridge"),
            std::string::npos);
  EXPECT_NE(error_of([] { ssm::GroupConfig::from_json({{"bogus", 1}}, "test.json"); }).find("bogus"),
            std::string::npos);
  // The joint parts of a 38-field group (SMD's machines) cost less per field
  // than a series' own state.
  const ssm::GroupDetector group(ssm::Forecaster::builtin(), {}, {});
  const size_t per_field = group.state_bytes(38) / 38, series = group.detector().state_bytes();
  EXPECT_LT(per_field, 2 * series);
  EXPECT_LE(per_field, 16 * 1024u);
}

}  // namespace
