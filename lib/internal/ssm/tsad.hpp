// Point-wise scores of time-series anomaly detection as the multivariate
// benchmarks (SMD: Su et al., KDD 2019, and the papers after it) report
// them. A detector gives every test row a score; a threshold turns scores
// into detections (score >= threshold); labels mark anomalous rows (1) in
// contiguous segments.
//
//   * unadjusted: tp = anomalous rows detected, fp = normal rows detected,
//     fn = anomalous rows not detected;
//   * point-adjusted ("PA", Xu et al., WWW 2018, as OmniAnomaly's code
//     does it): a segment with at least one detected row counts every one of
//     its rows as detected; normal rows count as above.
//
// F1 = 2 tp / (2 tp + fp + fn) (0 when tp = 0). "Best F1" is the highest F1
// over every threshold (every distinct score, and one above all), as the
// papers report it: the threshold is chosen on the test labels, which
// flatters every detector alike. Ties keep the higher threshold.
//
// Affiliation precision / recall (Huet, Navarro & Rossi, KDD 2022) are
// defined from the distances between detected and anomalous rows; they are
// not computed here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace ssm {

struct TsadCounts {
  double threshold = 0;
  int64_t tp = 0, fp = 0, fn = 0;
  double precision() const { return tp + fp > 0 ? double(tp) / double(tp + fp) : 0.0; }
  double recall() const { return tp + fn > 0 ? double(tp) / double(tp + fn) : 0.0; }
  double f1() const { return tp > 0 ? 2.0 * double(tp) / double(2 * tp + fp + fn) : 0.0; }
};

// Above every score: the threshold at which nothing is detected.
inline constexpr double kTsadNoDetection = 1.1;

// Counts at one threshold. labels and scores have one entry per row;
// labels are 0 or 1 (throws ssm::Error naming `name` otherwise, or when the
// lengths differ).
TsadCounts tsad_counts(std::span<const double> scores, std::span<const uint8_t> labels, double threshold,
                       bool point_adjust, const std::string& name = "series");

// Several series scored with one threshold: the counts are summed.
struct TsadSeries {
  std::string name;
  std::vector<double> scores;   // (n)
  std::vector<uint8_t> labels;  // (n)
};
TsadCounts tsad_counts(const std::vector<TsadSeries>& series, double threshold, bool point_adjust);

// The best F1 over every threshold, for one series or several with one
// threshold. O(n log n): one sort, then one sweep.
TsadCounts tsad_best_f1(const std::vector<TsadSeries>& series, bool point_adjust);

// The anomalous segments [first, last] (inclusive rows) of a label column.
std::vector<std::pair<size_t, size_t>> tsad_segments(std::span<const uint8_t> labels);

// ---- the SMD layout ----------------------------------------------------------
//
// One entity (a machine) in three files named alike, as the dataset ships:
//   <root>/train/<name>.txt        rows of `dims` comma-separated numbers
//   <root>/test/<name>.txt         the same number of columns
//   <root>/test_label/<name>.txt   one 0 or 1 per test row
// Errors name the file and line.
struct SmdEntity {
  std::string name;             // e.g. "machine-1-2"
  size_t dims = 0;              // columns
  std::vector<float> train;     // (train_rows, dims)
  std::vector<float> test;      // (test_rows, dims)
  std::vector<uint8_t> labels;  // (test_rows)
  size_t train_rows() const { return dims ? train.size() / dims : 0; }
  size_t test_rows() const { return dims ? test.size() / dims : 0; }
};
// The entities of <root>/test/*.txt, sorted by name (machine-1-10 after
// machine-1-9: numbers compare as numbers).
std::vector<std::string> smd_entities(const std::string& root);
SmdEntity read_smd_entity(const std::string& root, const std::string& name);

}  // namespace ssm
