// Numenta Anomaly Benchmark (NAB v1.1) scoring, compatible with NAB's
// sweeper: a detector gives every row of every file a score in [0, 1]; one
// threshold for the whole corpus turns scores into detections (score >=
// threshold) and the windows of labels.json turn detections into points.
//
// Per file of n rows:
//   * the first min(floor(0.15 n), 750) rows are probation: never scored;
//     a window that lies wholly inside it is neither found nor missed;
//   * a window [start, end] covers the rows whose timestamps lie in it — the
//     rows NAB's label column marks 1 (t1 <= t <= t2). Its left row is the
//     first row at or after start, its right row the first row equal to end,
//     or, when no row has exactly that time, the last row before end. On NAB's
//     data every limit is a row's timestamp and this is its sweeper's rule.
//     Rows are taken in file order (repeated / backward times are kept); a
//     window that covers no row is an error;
//   * a detection at row i inside a window of w rows with right row r has
//     y = -(r - i + 1) / w and is worth tp * σ(y) / σ(-1), where
//     σ(y) = 2 / (1 + exp(5 y)) - 1; only the best (earliest) one counts,
//     and a window without a detection is worth -fn;
//   * a detection outside every window is worth fp * σ(y) with
//     y = (i - r_prev) / (w_prev - 1) past the previous window (σ = -1 when
//     y > 3, and when that window is one row wide), or -fp before any window.
// Raw score S = sum over windows and false positives of every file.
// Normalised = 100 (S - S_null) / (S_perfect - S_null): S_null is the best raw
// score of the null detector (always 0.5), S_perfect = windows * tp (all
// windows, as NAB counts them). NaN when S_perfect <= S_null (no windows).
//
// Deviation from NAB's code, on purpose: it uses σ = -1 for y >= 3 where its
// documentation (and this scorer) say y > 3; at y == 3 the two differ by
// 6e-7 * fp. Where NAB would divide by zero (a one-row window before a
// false positive) this scorer uses σ = -1.
#pragma once
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ssm/common.hpp"
#include "ssm/timeseries_csv.hpp"

namespace ssm {

struct NabFile {
  std::string name;                // e.g. "realKnownCause/nyc_taxi.csv"; errors name it
  std::vector<int64_t> times;      // (n) epoch seconds, file order
  std::vector<double> scores;      // (n) anomaly scores in [0, 1]
  std::vector<NabWindow> windows;  // [start, end] epoch seconds, sorted, not overlapping
};

// Weights of a true positive, a false positive and a false negative.
struct NabProfile {
  double tp = 1, fp = 0.11, fn = 1;
};
NabProfile nab_standard();  // tp 1, fp 0.11, fn 1
NabProfile nab_low_fp();    // reward_low_FP_rate: tp 1, fp 0.22, fn 1
NabProfile nab_low_fn();    // reward_low_FN_rate: tp 1, fp 0.11, fn 2

// Counts at one threshold, over scored rows (after probation):
// tp = windows with a detection, fn = scored windows without one,
// fp = detections outside every window, tn = rows outside windows not detected.
struct NabResult {
  double threshold = 0;   // detections are scores >= threshold; kNabNoDetection = none
  double raw = 0;         // S
  double normalised = 0;  // 100 (S - S_null) / (S_perfect - S_null)
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
};

// Above every valid score: the threshold at which nothing is detected.
inline constexpr double kNabNoDetection = 1.1;

NabResult nab_score(const std::vector<NabFile>& files, const NabProfile& profile, double threshold);
// The best threshold over every distinct score of the corpus (and
// kNabNoDetection); ties go to the higher threshold, as in NAB.
// O(R log R) for R scored rows: one sort, then one incremental sweep.
NabResult nab_optimise(const std::vector<NabFile>& files, const NabProfile& profile);
// The result at every candidate threshold, highest first: kNabNoDetection,
// then every distinct score.
std::vector<NabResult> nab_sweep(const std::vector<NabFile>& files, const NabProfile& profile);

double nab_null_score(const std::vector<NabFile>& files, const NabProfile& profile);     // S_null
double nab_perfect_score(const std::vector<NabFile>& files, const NabProfile& profile);  // S_perfect

// The pieces, exposed for tests and for writing label columns.
size_t nab_probation_rows(size_t n);  // min(floor(0.15 n), 750)
double nab_sigmoid(double y);         // σ(y), -1 for y > 3
// Row ranges [first, last] (inclusive) of each window, by the rule above.
// Throws ssm::Error naming `name` and the window for a window that covers no
// row or windows out of order.
std::vector<std::pair<size_t, size_t>> nab_window_rows(std::span<const int64_t> times,
                                                       std::span<const NabWindow> windows,
                                                       const std::string& name);

// ---- cross-validation -------------------------------------------------------
//
// File-disjoint folds: fold[i] is the fold of file i. Each candidate is one
// detector configuration's scores over all files (candidates[c][i] is file i
// as candidate c scored it; every candidate lists the same files). For each
// fold the pair (candidate, threshold) with the best raw score on the other
// folds' files is chosen -- the fold's own files never take part -- and it
// scores the fold's files. The out-of-fold raw score is the sum over folds,
// normalised against S_null and S_perfect of the whole corpus, so it reads as
// a NAB score of the corpus with nothing tuned on the file being scored.
// Ties keep the earlier candidate and the higher threshold.
struct NabFoldChoice {
  int fold = 0;
  size_t files = 0;          // files in the fold
  size_t candidate = 0;      // chosen on the other folds
  double threshold = 0;      // chosen on the other folds
  double train_score = 0;    // normalised score of the other folds at that choice
  NabResult test;            // the fold's files at that choice (normalised over the fold alone)
};
struct NabCrossValidation {
  NabResult out_of_fold;     // summed over folds, normalised over the corpus
  std::vector<NabFoldChoice> folds;
};
NabCrossValidation nab_cross_validate(const std::vector<std::vector<NabFile>>& candidates, std::span<const int> fold,
                                      const NabProfile& profile);
// Folds by category, the first part of a file's name ("realTweets/x.csv"):
// leave one category out. Categories are numbered in order of appearance.
std::vector<int> nab_category_folds(const std::vector<NabFile>& files);
// k folds by position: file i goes to fold i % k.
std::vector<int> nab_interleaved_folds(size_t files, int k);

// ---- corpus and results files ----------------------------------------------

// A NAB corpus directory: <root>/labels.json and <root>/data/<key> for every
// key of the labels (files without an entry are not part of the corpus).
struct NabCorpusFile {
  std::string name;  // the labels key
  TimeSeries series;
  std::vector<NabWindow> windows;
};
std::vector<NabCorpusFile> nab_load_corpus(const std::string& root);
// The scorer's view of one corpus file with a detector's scores (one per row).
NabFile nab_file(const NabCorpusFile& file, std::vector<double> scores);

// NAB results CSV: "timestamp,value,anomaly_score[,label]", one line per row
// of `series`, timestamps as read. The label column (1 inside a window, else
// 0) is written when `windows` is given. Scores must be finite, one per row.
void write_nab_results(std::ostream& out, const TimeSeries& series, std::span<const double> scores,
                       const std::vector<NabWindow>* windows = nullptr);
// The same into a file, replaced atomically.
void write_nab_results_file(const std::string& path, const TimeSeries& series, std::span<const double> scores,
                            const std::vector<NabWindow>* windows = nullptr);

}  // namespace ssm
