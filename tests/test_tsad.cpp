// Point-wise and point-adjusted F1: a hand-worked series, and the sweep's
// best F1 against scoring every threshold directly.
#include "ssm/tsad.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "ssm/common.hpp"

namespace {

using ssm::TsadCounts;
using ssm::TsadSeries;
using Seg = std::pair<size_t, size_t>;

// 10 rows; segments [2, 4] and [7, 7].
TsadSeries hand_series() {
  return {"hand", {0.1, 0.9, 0.2, 0.8, 0.1, 0.3, 0.0, 0.1, 0.5, 0.2}, {0, 0, 1, 1, 1, 0, 0, 1, 0, 0}};
}

TEST(EvalTsad, SegmentsOfALabelColumn) {
  const auto seg = ssm::tsad_segments(hand_series().labels);
  ASSERT_EQ(seg.size(), 2u);
  EXPECT_EQ(seg[0], Seg(2, 4));
  EXPECT_EQ(seg[1], Seg(7, 7));
  const std::vector<uint8_t> edges{1, 1, 0, 1};
  const auto e = ssm::tsad_segments(edges);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0], Seg(0, 1));
  EXPECT_EQ(e[1], Seg(3, 3));
}

TEST(EvalTsad, CountsWorkedByHand) {
  const TsadSeries s = hand_series();
  // Threshold 0.8: rows 1 (normal) and 3 (anomalous) detected.
  const TsadCounts raw = ssm::tsad_counts(s.scores, s.labels, 0.8, false);
  EXPECT_EQ(raw.tp, 1);
  EXPECT_EQ(raw.fp, 1);
  EXPECT_EQ(raw.fn, 3);
  EXPECT_DOUBLE_EQ(raw.f1(), 2.0 / 6.0);
  // Adjusted: row 3 detects the whole segment [2, 4]; row 7 stays missed.
  const TsadCounts pa = ssm::tsad_counts(s.scores, s.labels, 0.8, true);
  EXPECT_EQ(pa.tp, 3);
  EXPECT_EQ(pa.fp, 1);
  EXPECT_EQ(pa.fn, 1);
  EXPECT_DOUBLE_EQ(pa.f1(), 6.0 / 8.0);
  EXPECT_DOUBLE_EQ(pa.precision(), 0.75);
  EXPECT_DOUBLE_EQ(pa.recall(), 0.75);
  // Threshold 0.1: everything but row 6 detected; adjusted, all 4 anomalous
  // rows found and 5 of the 6 normal rows are false positives.
  const TsadCounts low = ssm::tsad_counts(s.scores, s.labels, 0.1, true);
  EXPECT_EQ(low.tp, 4);
  EXPECT_EQ(low.fp, 5);
  EXPECT_EQ(low.fn, 0);
}

TEST(EvalTsad, BestF1WorkedByHand) {
  // Adjusted, candidates 0.9 (fp 1: f1 0), 0.8 (3/1/1: 0.75), 0.5 (3/2/1:
  // 6/9), 0.3 (3/3/1), 0.2 (row 2 and 9: segment already found, fp 4),
  // 0.1 (segment 7 found: 4/5/0: 8/13 = 0.615): the best is 0.75 at 0.8.
  const TsadCounts pa = ssm::tsad_best_f1({hand_series()}, true);
  EXPECT_DOUBLE_EQ(pa.threshold, 0.8);
  EXPECT_DOUBLE_EQ(pa.f1(), 0.75);
  // Unadjusted: 0.8 gives 1/1/3 (1/3); 0.2 gives rows 2, 3 (tp 2), fp 1, 8, 5, 9
  // -> 2/4/2 (4/10); 0.1: tp 4, fp 5 -> 8/13 = 0.615.
  const TsadCounts raw = ssm::tsad_best_f1({hand_series()}, false);
  EXPECT_DOUBLE_EQ(raw.threshold, 0.1);
  EXPECT_DOUBLE_EQ(raw.f1(), 8.0 / 13.0);
}

TEST(EvalTsad, NoAnomalyOrNoDetectionScoresZero) {
  const TsadSeries quiet{"quiet", {0.1, 0.2, 0.3}, {0, 0, 0}};
  const TsadCounts c = ssm::tsad_best_f1({quiet}, true);
  EXPECT_EQ(c.f1(), 0.0);
  EXPECT_EQ(c.threshold, ssm::kTsadNoDetection);
}

TEST(EvalTsad, SweepEqualsEveryThresholdScoredDirectly) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<TsadSeries> series;
    for (int f = 0; f < 3; ++f) {
      TsadSeries s{"s" + std::to_string(f), {}, {}};
      const size_t n = 50 + rng() % 200;
      uint8_t state = 0;
      for (size_t i = 0; i < n; ++i) {
        if (rng() % 20 == 0) state ^= 1;
        s.labels.push_back(state);
        // Coarse scores, so that ties occur; anomalies score higher on average.
        s.scores.push_back(std::min(1.0, (rng() % 10 + 4.0 * state) / 12.0));
      }
      series.push_back(std::move(s));
    }
    for (bool pa : {false, true}) {
      std::set<double> thresholds{ssm::kTsadNoDetection};
      for (const auto& s : series) thresholds.insert(s.scores.begin(), s.scores.end());
      TsadCounts best;
      best.threshold = ssm::kTsadNoDetection;
      for (auto it = thresholds.rbegin(); it != thresholds.rend(); ++it) {
        const TsadCounts c = ssm::tsad_counts(series, *it, pa);
        if (c.f1() > best.f1()) best = c;
      }
      const TsadCounts swept = ssm::tsad_best_f1(series, pa);
      EXPECT_EQ(swept.threshold, best.threshold) << "trial " << trial << " pa " << pa;
      EXPECT_EQ(swept.tp, best.tp);
      EXPECT_EQ(swept.fp, best.fp);
      EXPECT_EQ(swept.fn, best.fn);
    }
  }
}

TEST(EvalTsad, BadInputNamesTheSeries) {
  const std::vector<double> scores{0.1, 0.2};
  const std::vector<uint8_t> labels{0, 2};
  try {
    ssm::tsad_counts(scores, labels, 0.5, true, "machine-9-9");
    FAIL() << "expected an error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("machine-9-9"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos);
  }
  EXPECT_THROW(ssm::tsad_counts(scores, std::vector<uint8_t>{0}, 0.5, true), ssm::Error);
}

namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

TEST(EvalSmdLayout, ReadsEntitiesInTheDatasetsOwnLayout) {
  const fs::path root = fs::temp_directory_path() / ("ssm_test_smd_" + std::to_string(getpid()));
  fs::remove_all(root);
  for (const char* name : {"machine-1-10", "machine-1-9", "machine-2-1"}) {
    write(root / "train" / (std::string(name) + ".txt"), "0.5,0,1\n0.25,0.125,1\n");
    write(root / "test" / (std::string(name) + ".txt"), "0.5,0,1\n1,2,3\n0,0,0\n");
    write(root / "test_label" / (std::string(name) + ".txt"), "0\n1\n0\n");
  }
  const auto names = ssm::smd_entities(root.string());
  ASSERT_EQ(names, (std::vector<std::string>{"machine-1-9", "machine-1-10", "machine-2-1"}));
  const ssm::SmdEntity e = ssm::read_smd_entity(root.string(), "machine-1-10");
  EXPECT_EQ(e.dims, 3u);
  EXPECT_EQ(e.train_rows(), 2u);
  EXPECT_EQ(e.test_rows(), 3u);
  EXPECT_EQ(e.train[4], 0.125f);
  EXPECT_EQ(e.test[5], 3.0f);
  EXPECT_EQ(e.labels, (std::vector<uint8_t>{0, 1, 0}));
  // Errors name the file and the line.
  write(root / "test" / "machine-2-1.txt", "0.5,0,1\n1,x,3\n0,0,0\n");
  try {
    ssm::read_smd_entity(root.string(), "machine-2-1");
    FAIL() << "expected an error";
  } catch (const ssm::Error& err) {
    EXPECT_NE(std::string(err.what()).find("machine-2-1.txt:2: column 2"), std::string::npos) << err.what();
  }
  write(root / "test" / "machine-2-1.txt", "0.5,0,1\n1,3\n0,0,0\n");
  EXPECT_THROW(ssm::read_smd_entity(root.string(), "machine-2-1"), ssm::Error);
  write(root / "test" / "machine-2-1.txt", "0.5,0,1\n1,2,3\n");
  try {
    ssm::read_smd_entity(root.string(), "machine-2-1");
    FAIL() << "expected an error";
  } catch (const ssm::Error& err) {
    EXPECT_NE(std::string(err.what()).find("3 labels for 2 test rows"), std::string::npos) << err.what();
  }
  fs::remove_all(root);
}

}  // namespace
