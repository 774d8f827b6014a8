// NAB scorer: hand-made files whose scores are worked out in the comments,
// the incremental threshold sweep against direct scoring, the sample corpus
// in samples/nab, results files, and (when the data is present) the whole
// nab-dev corpus: the null detector must score 0 and an oracle 100.
//
// Arithmetic used below: σ(y) = 2 / (1 + e^{5y}) - 1 = -tanh(5y / 2), so
// σ(-1) = tanh(2.5) = 0.9866142982 and a true positive at y is worth
// tp · tanh(-2.5 y) / tanh(2.5).
#include "ssm/nab.hpp"
#include "testing.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ssm::NabFile;
using ssm::NabResult;
using ssm::nab_low_fn;
using ssm::nab_low_fp;
using ssm::nab_standard;

constexpr int64_t kT0 = 1396310400;  // 2014-04-01 00:00:00, row 0 of the made-up files
constexpr double kTol = 1e-9;

using ssm::testing::error_of;

// n rows one minute apart; windows given by their first and last row;
// `hits` maps rows to scores (every other row scores 0).
NabFile make_file(const std::string& name, size_t n, const std::vector<std::pair<size_t, size_t>>& window_rows,
                  const std::map<size_t, double>& hits) {
  NabFile f;
  f.name = name;
  for (size_t i = 0; i < n; ++i) f.times.push_back(kT0 + 60 * static_cast<int64_t>(i));
  f.scores.assign(n, 0.0);
  for (const auto& [row, s] : hits) f.scores.at(row) = s;
  for (const auto& [a, b] : window_rows) f.windows.emplace_back(f.times.at(a), f.times.at(b));
  return f;
}

// The standard case of most tests: 40 rows (probation floor(0.15 * 40) = 6),
// one window on rows 20..29 (w = 10), detections scored 1, threshold 0.5.
NabResult score_one(const std::map<size_t, double>& hits, const ssm::NabProfile& profile = nab_standard()) {
  return ssm::nab_score({make_file("f.csv", 40, {{20, 29}}, hits)}, profile, 0.5);
}

TEST(Nab, ProbationLength) {
  // min(floor(0.15 n), 750)
  EXPECT_EQ(ssm::nab_probation_rows(0), 0u);
  EXPECT_EQ(ssm::nab_probation_rows(6), 0u);     // 0.9
  EXPECT_EQ(ssm::nab_probation_rows(7), 1u);     // 1.05
  EXPECT_EQ(ssm::nab_probation_rows(40), 6u);    // 6.0
  EXPECT_EQ(ssm::nab_probation_rows(4032), 604u);  // 604.8
  EXPECT_EQ(ssm::nab_probation_rows(4999), 749u);  // 749.85
  EXPECT_EQ(ssm::nab_probation_rows(5000), 750u);
  EXPECT_EQ(ssm::nab_probation_rows(15902), 750u);
}

TEST(Nab, ScaledSigmoid) {
  EXPECT_NEAR(ssm::nab_sigmoid(-1), 0.9866142982, 1e-10);
  EXPECT_EQ(ssm::nab_sigmoid(0), 0.0);
  EXPECT_NEAR(ssm::nab_sigmoid(1), -0.9866142982, 1e-10);
  EXPECT_NEAR(ssm::nab_sigmoid(3), -0.9999993882, 1e-10);  // -tanh(7.5): y = 3 is not past 3
  EXPECT_EQ(ssm::nab_sigmoid(3.0001), -1.0);
  EXPECT_EQ(ssm::nab_sigmoid(1e300), -1.0);
}

TEST(Nab, WindowRows) {
  const std::vector<int64_t> t{0, 60, 120, 180, 240};
  using Rows = std::vector<std::pair<size_t, size_t>>;
  auto rows = [&](std::vector<ssm::NabWindow> w, std::span<const int64_t> times) {
    return ssm::nab_window_rows(times, w, "t.csv");
  };
  EXPECT_EQ(rows({{60, 180}}, t), (Rows{{1, 3}}));  // exact limits
  EXPECT_EQ(rows({{30, 150}}, t), (Rows{{1, 2}}));  // between rows: rows 60 and 120 lie inside
  EXPECT_EQ(rows({{-100, 10}}, t), (Rows{{0, 0}}));
  EXPECT_EQ(rows({{200, 999}}, t), (Rows{{4, 4}}));
  EXPECT_EQ(rows({{0, 60}, {60, 180}}, t), (Rows{{0, 1}, {2, 3}}));  // touching: the shared row goes to the first
  // A repeated end time: the window ends on its first row, as NAB's timestamps.index() does.
  const std::vector<int64_t> rep{0, 60, 60, 120};
  EXPECT_EQ(rows({{0, 60}}, rep), (Rows{{0, 1}}));
  // Windows that cover no row, or are out of order.
  EXPECT_NE(error_of([&] { rows({{130, 170}}, t); }).find("t.csv: window 0 [1970-01-01 00:02:10, "
                                                         "1970-01-01 00:02:50]: covers no row"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rows({{300, 400}}, t); }).find("covers no row"), std::string::npos);
  EXPECT_NE(error_of([&] { rows({{0, 60}, {120, 180}, {0, 10}}, t); }).find("window 2"), std::string::npos);
  EXPECT_NE(error_of([&] { rows({{60, 0}}, t); }).find("start is after end"), std::string::npos);
}

TEST(Nab, DetectionAtLeftEdgeIsWorthTp) {
  // Row 20: y = -(29 - 20 + 1) / 10 = -1, worth tp · σ(-1) / σ(-1) = 1.
  const NabResult r = score_one({{20, 1.0}});
  EXPECT_NEAR(r.raw, 1.0, kTol);
  EXPECT_EQ(r.tp, 1);
  EXPECT_EQ(r.fn, 0);
  EXPECT_EQ(r.fp, 0);
  EXPECT_EQ(r.tn, 24);  // scored rows 6..39 = 34, minus the 10 window rows
}

TEST(Nab, DetectionAtRightEdge) {
  // Row 29: y = -1 / 10, worth tanh(0.25) / tanh(2.5) = 0.2449187 / 0.9866143 = 0.2482415.
  EXPECT_NEAR(score_one({{29, 1.0}}).raw, 0.2482415498, 1e-9);
  // Row 24: y = -6 / 10, worth tanh(1.5) / tanh(2.5) = 0.9051483 / 0.9866143 = 0.9174287.
  EXPECT_NEAR(score_one({{24, 1.0}}).raw, 0.9174286804, 1e-9);
}

TEST(Nab, OnlyTheEarliestDetectionInAWindowCounts) {
  // Rows 25, 22, 28: row 22 has y = -8 / 10, worth tanh(2) / tanh(2.5) = 0.9771068.
  const NabResult r = score_one({{25, 1.0}, {22, 1.0}, {28, 1.0}});
  EXPECT_NEAR(r.raw, 0.9771068409, 1e-9);
  EXPECT_EQ(r.tp, 1);  // windows, not rows
  EXPECT_EQ(r.fp, 0);
}

TEST(Nab, FalsePositiveAfterAWindow) {
  // Row 30, just past the window: y = (30 - 29) / (10 - 1) = 1/9,
  // σ = -tanh(2.5 / 9) = -0.2708471, times fp 0.11 = -0.0297932; the missed window -1.
  NabResult r = score_one({{30, 1.0}});
  EXPECT_NEAR(r.raw, -1.0297931830, 1e-9);
  EXPECT_EQ(r.fp, 1);
  EXPECT_EQ(r.fn, 1);
  EXPECT_EQ(r.tn, 23);
  // Row 33: y = 4/9, -0.11 · tanh(10/9) = -0.0884900.
  EXPECT_NEAR(score_one({{33, 1.0}}).raw, -1.0884900280, 1e-9);
  // Far past the window, 80 rows (probation 12): row 57 has y = 28/9 > 3, σ = -1: -0.11.
  auto far = [](size_t row) {
    return ssm::nab_score({make_file("f.csv", 80, {{20, 29}}, {{row, 1.0}})}, nab_standard(), 0.5).raw;
  };
  EXPECT_NEAR(far(57), -1.11, kTol);
  // Row 56 has y = 27/9 = 3 exactly: σ(3) = -tanh(7.5), not yet -1.
  EXPECT_NEAR(far(56), -1.0 - 0.11 * 0.9999993882, 1e-10);
  EXPECT_GT(far(56), far(57));
}

TEST(Nab, FalsePositiveBeforeAnyWindowCostsFp) {
  // Row 10 (after probation, before the only window): -0.11, and the window is missed: -1.
  const NabResult r = score_one({{10, 1.0}});
  EXPECT_NEAR(r.raw, -1.11, kTol);
  EXPECT_EQ(r.fp, 1);
  // reward_low_FP doubles the cost: -0.22 - 1.
  EXPECT_NEAR(score_one({{10, 1.0}}, nab_low_fp()).raw, -1.22, kTol);
  // A file without windows: every detection costs -fp.
  EXPECT_NEAR(ssm::nab_score({make_file("n.csv", 40, {}, {{10, 1.0}, {30, 1.0}})}, nab_standard(), 0.5).raw,
              -0.22, kTol);
}

TEST(Nab, MissedWindowCostsFn) {
  EXPECT_NEAR(score_one({}).raw, -1.0, kTol);
  EXPECT_NEAR(score_one({}, nab_low_fp()).raw, -1.0, kTol);
  EXPECT_NEAR(score_one({}, nab_low_fn()).raw, -2.0, kTol);
  EXPECT_EQ(score_one({}).fn, 1);
  EXPECT_EQ(score_one({}).tn, 24);
}

TEST(Nab, ProbationRowsAreNotScored) {
  // Row 3 is inside the probation (rows 0..5): no false positive.
  NabResult r = score_one({{3, 1.0}});
  EXPECT_NEAR(r.raw, -1.0, kTol);
  EXPECT_EQ(r.fp, 0);
  // A window on rows 4..13 (w = 10) straddling the probation: the detection at
  // row 4 is not seen, the one at row 6 is: y = -(13 - 6 + 1) / 10 = -0.8,
  // worth tanh(2) / tanh(2.5) = 0.9771068.
  const auto straddle = [](const std::map<size_t, double>& hits) {
    return ssm::nab_score({make_file("p.csv", 40, {{4, 13}}, hits)}, nab_standard(), 0.5);
  };
  EXPECT_NEAR(straddle({{4, 1.0}, {6, 1.0}}).raw, 0.9771068409, 1e-9);
  EXPECT_NEAR(straddle({{4, 1.0}}).raw, -1.0, kTol);  // found only in probation = missed
  // A window wholly inside the probation (rows 1..4) is neither found nor
  // missed, but it still counts in the perfect score.
  const auto inside = [](const std::map<size_t, double>& hits) {
    return ssm::nab_score({make_file("q.csv", 40, {{1, 4}}, hits)}, nab_standard(), 0.5);
  };
  r = inside({{2, 1.0}});
  EXPECT_NEAR(r.raw, 0.0, kTol);
  EXPECT_EQ(r.tp + r.fn, 0);
  // It is still the previous window of a false positive at row 10:
  // y = (10 - 4) / (4 - 1) = 2, -0.11 · tanh(5) = -0.1099899.
  EXPECT_NEAR(inside({{10, 1.0}}).raw, -0.11 * 0.9999092043, 1e-9);
  EXPECT_EQ(ssm::nab_perfect_score({make_file("q.csv", 40, {{1, 4}}, {})}, nab_standard()), 1.0);
}

TEST(Nab, NullAndPerfectScores) {
  const std::vector<NabFile> one{make_file("f.csv", 40, {{20, 29}}, {})};
  // Perfect: 1 window · tp.
  EXPECT_EQ(ssm::nab_perfect_score(one, nab_standard()), 1.0);
  EXPECT_EQ(ssm::nab_perfect_score(one, nab_low_fn()), 1.0);
  // Null (always 0.5): detecting nothing gives -fn; detecting every row gives
  // +1 for the window, -14 · 0.11 for rows 6..19 before it and
  // -0.11 · Σ_{d=1..10} tanh(2.5 d / 9) = -0.11 · 7.9918545 for rows 30..39
  // after it: 1 - 1.54 - 0.8791040 = -1.4191040. The null detector keeps the
  // better of the two: -1 under standard, -1.4191040 under reward_low_FN
  // (where detecting nothing costs -2).
  EXPECT_NEAR(ssm::nab_null_score(one, nab_standard()), -1.0, kTol);
  EXPECT_NEAR(ssm::nab_null_score(one, nab_low_fn()), -1.4191039881, 1e-9);
  // Normalised: left edge 100 (1 - -1) / (1 - -1) = 100; right edge
  // 100 (0.2482415 + 1) / 2 = 62.412077; nothing 0.
  EXPECT_NEAR(score_one({{20, 1.0}}).normalised, 100.0, 1e-9);
  EXPECT_NEAR(score_one({{29, 1.0}}).normalised, 62.41207749, 1e-7);
  EXPECT_NEAR(score_one({}).normalised, 0.0, 1e-9);
  // The null detector itself, optimised: exactly 0.
  NabFile half = one[0];
  half.scores.assign(40, 0.5);
  for (const auto& p : {nab_standard(), nab_low_fp(), nab_low_fn()})
    EXPECT_EQ(ssm::nab_optimise({half}, p).normalised, 0.0);
  // No windows anywhere: the normalised score is undefined.
  EXPECT_TRUE(std::isnan(ssm::nab_score({make_file("n.csv", 40, {}, {})}, nab_standard(), 0.5).normalised));
}

// Two files, 40 rows each (probation 6):
//   A: window rows 20..29, row 20 scores 0.9 (left edge, +1).
//   B: window rows 30..39, rows 6..20 score 0.3 (15 false positives before
//      any window, -fp each) and row 39 scores 0.3 (right edge: y = -1/10,
//      +0.2482415).
// Candidate thresholds and raw scores:
//   1.1 (none)  -2 fn
//   0.9         1 - fn
//   0.3         1 + 0.2482415 - 15 fp
//   0           also every other row: far worse (A alone adds -1.54 before
//               its window and -0.88 after it, B -2.64 before its own)
// standard (fp 0.11, fn 1):  -2, 0, -0.4017585       -> 0.9, raw 0
// low_FP   (fp 0.22, fn 1):  -2, 0, -2.0517585       -> 0.9, raw 0
// low_FN   (fp 0.11, fn 2):  -4, -1, -0.4017585      -> 0.3, raw -0.4017585
std::vector<NabFile> two_file_corpus() {
  std::map<size_t, double> b_hits{{39, 0.3}};
  for (size_t r = 6; r <= 20; ++r) b_hits[r] = 0.3;
  return {make_file("a.csv", 40, {{20, 29}}, {{20, 0.9}}), make_file("b.csv", 40, {{30, 39}}, b_hits)};
}

TEST(Nab, OptimiseFindsTheBestThresholdPerProfile) {
  const auto corpus = two_file_corpus();
  NabResult r = ssm::nab_optimise(corpus, nab_standard());
  EXPECT_EQ(r.threshold, 0.9);
  EXPECT_NEAR(r.raw, 0.0, kTol);
  EXPECT_EQ(r.tp, 1);
  EXPECT_EQ(r.fn, 1);
  EXPECT_EQ(r.fp, 0);
  r = ssm::nab_optimise(corpus, nab_low_fp());
  EXPECT_EQ(r.threshold, 0.9);
  EXPECT_NEAR(r.raw, 0.0, kTol);
  r = ssm::nab_optimise(corpus, nab_low_fn());
  EXPECT_EQ(r.threshold, 0.3);
  EXPECT_NEAR(r.raw, 1.2482415498 - 1.65, 1e-9);
  EXPECT_EQ(r.tp, 2);
  EXPECT_EQ(r.fp, 15);

  // The sweep lists every candidate, highest first, with the raw scores above.
  const auto sweep = ssm::nab_sweep(corpus, nab_standard());
  ASSERT_EQ(sweep.size(), 4u);
  EXPECT_EQ(sweep[0].threshold, ssm::kNabNoDetection);
  EXPECT_NEAR(sweep[0].raw, -2.0, kTol);
  EXPECT_EQ(sweep[1].threshold, 0.9);
  EXPECT_NEAR(sweep[1].raw, 0.0, kTol);
  EXPECT_EQ(sweep[2].threshold, 0.3);
  EXPECT_NEAR(sweep[2].raw, -0.4017584502, 1e-9);
  EXPECT_EQ(sweep[3].threshold, 0.0);
  EXPECT_LT(sweep[3].raw, -3.0);
}

TEST(Nab, OptimiseTiesGoToTheHigherThreshold) {
  // Rows 20 (0.9) and 25 (0.6) in the same window: thresholds 0.9 and 0.6
  // both give raw 1 (the earliest detection counts); NAB keeps 0.9.
  const NabResult r = ssm::nab_optimise({make_file("f.csv", 40, {{20, 29}}, {{20, 0.9}, {25, 0.6}})}, nab_standard());
  EXPECT_EQ(r.threshold, 0.9);
  EXPECT_NEAR(r.raw, 1.0, kTol);
}

// A random corpus with scores on a coarse grid (many ties) and random windows.
std::vector<NabFile> random_corpus(uint64_t seed, int files) {
  std::mt19937_64 rng(seed);
  std::vector<NabFile> out;
  for (int f = 0; f < files; ++f) {
    const size_t n = 30 + rng() % 300;
    std::vector<std::pair<size_t, size_t>> windows;
    size_t at = rng() % 20;
    while (true) {
      const size_t w = 1 + rng() % 25;
      if (at + w >= n) break;
      windows.emplace_back(at, at + w - 1);
      at += w + rng() % 60;
    }
    NabFile file = make_file("r" + std::to_string(f) + ".csv", n, windows, {});
    for (auto& s : file.scores) s = static_cast<double>(rng() % 21) / 20.0;
    out.push_back(std::move(file));
  }
  return out;
}

TEST(Nab, SweepEqualsDirectScoringAtEveryThreshold) {
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const auto corpus = random_corpus(seed, 6);
    for (const auto& profile : {nab_standard(), nab_low_fp(), nab_low_fn()}) {
      const auto sweep = ssm::nab_sweep(corpus, profile);
      double best = -1e300;
      for (const auto& s : sweep) {
        const NabResult d = ssm::nab_score(corpus, profile, s.threshold);
        ASSERT_NEAR(s.raw, d.raw, 1e-9) << "threshold " << s.threshold;
        ASSERT_NEAR(s.normalised, d.normalised, 1e-7);
        ASSERT_EQ(s.tp, d.tp);
        ASSERT_EQ(s.fp, d.fp);
        ASSERT_EQ(s.fn, d.fn);
        ASSERT_EQ(s.tn, d.tn);
        best = std::max(best, d.raw);
      }
      EXPECT_NEAR(ssm::nab_optimise(corpus, profile).raw, best, 1e-9);
      // Thresholds strictly decreasing.
      for (size_t i = 1; i < sweep.size(); ++i) ASSERT_LT(sweep[i].threshold, sweep[i - 1].threshold);
    }
  }
}

TEST(Nab, CrossValidationChoosesOnTheOtherFoldsOnly) {
  // Two categories of two files each. Candidate 0 detects every window at
  // score 0.9 with a false positive at 0.8 in category a; candidate 1 does the
  // same at 0.6 / 0.7 in category b: each fold's choice must come from the
  // other category, and the fold's raw score must be its files scored at that
  // choice, summed and normalised over the whole corpus.
  auto files = [](double a_hit, double a_fp, double b_hit, double b_fp) {
    return std::vector<NabFile>{make_file("a/1.csv", 40, {{20, 29}}, {{20, a_hit}, {35, a_fp}}),
                                make_file("a/2.csv", 40, {{20, 29}}, {{22, a_hit}}),
                                make_file("b/1.csv", 40, {{20, 29}}, {{21, b_hit}, {10, b_fp}}),
                                make_file("b/2.csv", 40, {{20, 29}}, {{25, b_hit}})};
  };
  const std::vector<std::vector<NabFile>> cands{files(0.9, 0.8, 0.9, 0.0), files(0.3, 0.0, 0.6, 0.7)};
  const std::vector<int> fold = ssm::nab_category_folds(cands[0]);
  EXPECT_EQ(fold, (std::vector<int>{0, 0, 1, 1}));
  const auto cv = ssm::nab_cross_validate(cands, fold, nab_standard());
  ASSERT_EQ(cv.folds.size(), 2u);
  double raw = 0;
  for (const auto& f : cv.folds) {
    std::vector<NabFile> train, test;
    for (size_t i = 0; i < 4; ++i) (fold[i] == f.fold ? test : train).push_back(cands[f.candidate][i]);
    // No candidate or threshold does better on the training files.
    for (const auto& c : cands) {
      std::vector<NabFile> other;
      for (size_t i = 0; i < 4; ++i)
        if (fold[i] != f.fold) other.push_back(c[i]);
      EXPECT_LE(ssm::nab_optimise(other, nab_standard()).raw, ssm::nab_score(train, nab_standard(), f.threshold).raw + kTol);
    }
    EXPECT_NEAR(f.test.raw, ssm::nab_score(test, nab_standard(), f.threshold).raw, kTol);
    raw += f.test.raw;
  }
  // Fold a (tested) is chosen on b: candidate 0 finds b's windows at 0.9
  // with no false positive, so threshold 0.9 scores a too, a's false
  // positive (0.8) staying below it.
  EXPECT_EQ(cv.folds[0].candidate, 0u);
  EXPECT_NEAR(cv.folds[0].threshold, 0.9, kTol);
  EXPECT_EQ(cv.folds[0].test.fp, 0);
  EXPECT_NEAR(cv.out_of_fold.raw, raw, kTol);
  const double null_score = ssm::nab_null_score(cands[0], nab_standard()),
               perfect = ssm::nab_perfect_score(cands[0], nab_standard());
  EXPECT_NEAR(cv.out_of_fold.normalised, 100 * (raw - null_score) / (perfect - null_score), 1e-9);
  EXPECT_EQ(ssm::nab_interleaved_folds(5, 2), (std::vector<int>{0, 1, 0, 1, 0}));
  EXPECT_NE(error_of([&] { ssm::nab_cross_validate(cands, std::vector<int>{0, 0, 0, 0}, nab_standard()); })
                .find("two folds"),
            std::string::npos);
}

TEST(Nab, InputErrorsNameTheFile) {
  NabFile f = make_file("bad.csv", 40, {{20, 29}}, {});
  f.scores.pop_back();
  EXPECT_NE(error_of([&] { ssm::nab_score({f}, nab_standard(), 0.5); }).find("bad.csv: 39 scores for 40 rows"),
            std::string::npos);
  f = make_file("bad.csv", 40, {{20, 29}}, {{7, 1.5}});
  EXPECT_NE(error_of([&] { ssm::nab_optimise({f}, nab_standard()); }).find("bad.csv: row 7"), std::string::npos);
  f.scores[7] = std::nan("");
  EXPECT_NE(error_of([&] { ssm::nab_optimise({f}, nab_standard()); }).find("not a number in [0, 1]"),
            std::string::npos);
  f = make_file("bad.csv", 40, {}, {});
  f.windows.emplace_back(kT0 + 30, kT0 + 50);  // between rows 0 and 1
  EXPECT_NE(error_of([&] { ssm::nab_score({f}, nab_standard(), 0.5); }).find("bad.csv: window 0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ssm::nab_score({}, {1, -0.1, 1}, 0.5); }).find("NAB profile"), std::string::npos);
}

// ---- the sample corpus (samples/nab) -----------------------------------------

const std::string kSamples = SSM_SOURCE_DIR "/samples/nab";

TEST(NabCorpus, SampleCorpus) {
  const auto corpus = ssm::nab_load_corpus(kSamples);
  ASSERT_EQ(corpus.size(), 2u);
  const auto& art = corpus[0];
  const auto& ex = corpus[1];
  ASSERT_EQ(art.name, "artificialWithAnomaly/art_daily_jumpsup_excerpt.csv");
  ASSERT_EQ(ex.name, "realAdExchange/exchange-2_cpc_excerpt.csv");
  // art: rows every 5 minutes from 00:00. Window 1 [01:00, 01:20] = rows 12..16;
  // window 2 [02:04:59.25, 02:15:00.5] -> [02:05:00, 02:15:00] = rows 25..27.
  using Rows = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(ssm::nab_window_rows(art.series.epochs(), art.windows, art.name), (Rows{{12, 16}, {25, 27}}));
  // exchange: hourly from 03:00:01; [11:00:01, 12:00:01] = rows 8..9, row 10
  // repeats 12:00:01 and lies outside.
  EXPECT_EQ(ssm::nab_window_rows(ex.series.epochs(), ex.windows, ex.name), (Rows{{8, 9}}));

  // An oracle firing on each window's first row: 3 windows · 1 = 3, normalised 100.
  std::vector<double> sa(40, 0.0), se(21, 0.0);
  sa[12] = sa[25] = se[8] = 1.0;
  std::vector<NabFile> files{ssm::nab_file(art, sa), ssm::nab_file(ex, se)};
  NabResult r = ssm::nab_optimise(files, nab_standard());
  EXPECT_NEAR(r.raw, 3.0, kTol);
  EXPECT_NEAR(r.normalised, 100.0, 1e-9);
  EXPECT_EQ(r.threshold, 1.0);
  // Add a detection on the repeated row 10 of the exchange file: one row past
  // a window of 2 rows, y = 1 / (2 - 1) = 1, -0.11 · tanh(2.5) = -0.1085276.
  files[1].scores[10] = 1.0;
  r = ssm::nab_score(files, nab_standard(), 1.0);
  EXPECT_NEAR(r.raw, 3.0 - 0.11 * 0.9866142982, 1e-9);
  EXPECT_EQ(r.fp, 1);
  EXPECT_NE(error_of([] { ssm::nab_load_corpus(kSamples + "/missing"); }).find("labels.json"), std::string::npos);
}

TEST(NabCorpus, ResultsFile) {
  const auto ts = ssm::parse_timeseries_csv("timestamp,value\n2014-04-01 00:00:00,1.5\n2014-04-01 00:05:00,2\n", "x");
  const std::vector<double> scores{0.0, 0.75};
  const std::vector<ssm::NabWindow> windows{{kT0 + 300, kT0 + 300}};
  std::ostringstream with_label, without;
  ssm::write_nab_results(with_label, ts, scores, &windows);
  EXPECT_EQ(with_label.str(),
            "timestamp,value,anomaly_score,label\n"
            "2014-04-01 00:00:00,1.5,0,0\n"
            "2014-04-01 00:05:00,2,0.75,1\n");
  ssm::write_nab_results(without, ts, scores);
  EXPECT_EQ(without.str(),
            "timestamp,value,anomaly_score\n"
            "2014-04-01 00:00:00,1.5,0\n"
            "2014-04-01 00:05:00,2,0.75\n");
  EXPECT_NE(error_of([&] { ssm::write_nab_results(without, ts, std::vector<double>{0.5}); }).find("1 scores for 2"),
            std::string::npos);

  // Written to a file and read back through the score column: the same numbers.
  const auto dir = std::filesystem::temp_directory_path() / ("ssm_nab_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "results.csv").string();
  const std::vector<double> odd{0.1, 1.0 / 3.0};
  ssm::write_nab_results_file(path, ts, odd, &windows);
  ssm::TimeSeriesCsvOptions opt;
  opt.value_column = "anomaly_score";
  EXPECT_EQ(ssm::read_timeseries_csv(path, opt).values(), odd);
  std::filesystem::remove_all(dir);
}

// ---- the nab-dev corpus, when it is there --------------------------------------

TEST(NabCorpus, NabDevNullIsZeroAndOracleIsHundred) {
  const std::string root = SSM_SOURCE_DIR "/../shared/data/nab-dev";
  if (!std::filesystem::exists(root + "/labels.json")) GTEST_SKIP() << "no corpus at " << root;
  const auto corpus = ssm::nab_load_corpus(root);
  size_t windows = 0, rows = 0, repeated = 0, backward = 0;
  for (const auto& f : corpus) {
    windows += f.windows.size();
    rows += f.series.rows.size();
    repeated += f.series.repeated;
    backward += f.series.backward;
  }
  EXPECT_EQ(corpus.size(), 29u);
  EXPECT_EQ(windows, 61u);
  std::printf("nab-dev: %zu files, %zu rows, %zu windows, %zu repeated and %zu backward timestamps\n",
              corpus.size(), rows, windows, repeated, backward);

  std::vector<NabFile> null_files, oracle_files, random_files;
  std::mt19937_64 rng(5);
  for (const auto& f : corpus) {
    null_files.push_back(ssm::nab_file(f, std::vector<double>(f.series.rows.size(), 0.5)));
    std::vector<double> oracle(f.series.rows.size(), 0.0);
    for (const auto& [first, last] : ssm::nab_window_rows(f.series.epochs(), f.windows, f.name)) oracle[first] = 1;
    oracle_files.push_back(ssm::nab_file(f, oracle));
    std::vector<double> noise(f.series.rows.size());
    for (auto& s : noise) s = static_cast<double>(rng() % 1000) / 999.0;
    random_files.push_back(ssm::nab_file(f, noise));
  }
  const char* names[] = {"standard", "reward_low_FP", "reward_low_FN"};
  const ssm::NabProfile profiles[] = {nab_standard(), nab_low_fp(), nab_low_fn()};
  for (int p = 0; p < 3; ++p) {
    const NabResult null_r = ssm::nab_optimise(null_files, profiles[p]);
    const NabResult oracle_r = ssm::nab_optimise(oracle_files, profiles[p]);
    const auto t0 = std::chrono::steady_clock::now();
    const NabResult rand_r = ssm::nab_optimise(random_files, profiles[p]);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-14s null %.3f (raw %.3f)  oracle %.3f (raw %.3f)  random %.2f at %.3f (%.0f ms, %zu rows)\n",
                names[p], null_r.normalised, null_r.raw, oracle_r.normalised, oracle_r.raw, rand_r.normalised,
                rand_r.threshold, ms, rows);
    EXPECT_EQ(null_r.normalised, 0.0) << names[p];
    EXPECT_NEAR(oracle_r.normalised, 100.0, 1e-9) << names[p];
    EXPECT_EQ(oracle_r.tp, 61);
    EXPECT_EQ(oracle_r.fp, 0);
  }
  // The sweep on real data agrees with direct scoring (1000 score levels; spot-check 25 of them).
  const auto sweep = ssm::nab_sweep(random_files, nab_standard());
  ASSERT_EQ(sweep.size(), 1001u);
  for (size_t i = 0; i < sweep.size(); i += 40) {
    const NabResult d = ssm::nab_score(random_files, nab_standard(), sweep[i].threshold);
    ASSERT_NEAR(sweep[i].raw, d.raw, 1e-6);
    ASSERT_EQ(sweep[i].fp, d.fp);
    ASSERT_EQ(sweep[i].tp, d.tp);
  }
}

}  // namespace
