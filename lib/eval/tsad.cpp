#include "ssm/tsad.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cctype>
#include <filesystem>
#include <string_view>

#include "ssm/common.hpp"
#include "ssm/timeseries_csv.hpp"  // read_text_file

namespace ssm {

namespace {

void check_series(std::span<const double> scores, std::span<const uint8_t> labels, const std::string& name) {
  require(scores.size() == labels.size(), name + ": " + std::to_string(scores.size()) + " scores for " +
                                              std::to_string(labels.size()) + " labels");
  for (size_t i = 0; i < labels.size(); ++i) {
    require(labels[i] <= 1, name + ": label of row " + std::to_string(i) + " is " + std::to_string(labels[i]) +
                                " (expected 0 or 1)");
    require(std::isfinite(scores[i]), name + ": score of row " + std::to_string(i) + " is not finite");
  }
}

// What a threshold at or below `score` detects: `tp` anomalous rows (a
// whole segment under point adjustment) or `fp` normal rows.
struct Item {
  double score;
  int64_t tp, fp;
};

void add_items(std::vector<Item>& items, int64_t& anomalous, const TsadSeries& s, bool point_adjust) {
  check_series(s.scores, s.labels, s.name);
  for (size_t i = 0; i < s.labels.size(); ++i)
    if (s.labels[i] == 0) items.push_back({s.scores[i], 0, 1});
  if (point_adjust) {
    for (const auto& [a, b] : tsad_segments(s.labels)) {
      const double top = *std::max_element(s.scores.begin() + a, s.scores.begin() + b + 1);
      items.push_back({top, static_cast<int64_t>(b - a + 1), 0});
    }
  } else {
    for (size_t i = 0; i < s.labels.size(); ++i)
      if (s.labels[i] == 1) items.push_back({s.scores[i], 1, 0});
  }
  for (uint8_t l : s.labels) anomalous += l;
}

}  // namespace

std::vector<std::pair<size_t, size_t>> tsad_segments(std::span<const uint8_t> labels) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == 0) continue;
    size_t j = i;
    while (j + 1 < labels.size() && labels[j + 1] != 0) ++j;
    out.emplace_back(i, j);
    i = j;
  }
  return out;
}

TsadCounts tsad_counts(std::span<const double> scores, std::span<const uint8_t> labels, double threshold,
                       bool point_adjust, const std::string& name) {
  check_series(scores, labels, name);
  TsadCounts c;
  c.threshold = threshold;
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] == 0 && scores[i] >= threshold) ++c.fp;
  for (const auto& [a, b] : tsad_segments(labels)) {
    int64_t hit = 0;
    for (size_t i = a; i <= b; ++i) hit += scores[i] >= threshold;
    const int64_t len = static_cast<int64_t>(b - a + 1);
    const int64_t tp = point_adjust ? (hit > 0 ? len : 0) : hit;
    c.tp += tp;
    c.fn += len - tp;
  }
  return c;
}

TsadCounts tsad_counts(const std::vector<TsadSeries>& series, double threshold, bool point_adjust) {
  TsadCounts sum;
  sum.threshold = threshold;
  for (const auto& s : series) {
    const TsadCounts c = tsad_counts(s.scores, s.labels, threshold, point_adjust, s.name);
    sum.tp += c.tp;
    sum.fp += c.fp;
    sum.fn += c.fn;
  }
  return sum;
}

TsadCounts tsad_best_f1(const std::vector<TsadSeries>& series, bool point_adjust) {
  std::vector<Item> items;
  int64_t anomalous = 0;
  for (const auto& s : series) add_items(items, anomalous, s, point_adjust);
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.score > b.score; });
  TsadCounts best;
  best.threshold = kTsadNoDetection;
  best.fn = anomalous;
  TsadCounts cur = best;
  for (size_t i = 0; i < items.size();) {
    const double t = items[i].score;
    for (; i < items.size() && items[i].score == t; ++i) {
      cur.tp += items[i].tp;
      cur.fp += items[i].fp;
    }
    cur.fn = anomalous - cur.tp;
    cur.threshold = t;
    if (cur.f1() > best.f1()) best = cur;
  }
  return best;
}

namespace {

// Rows of comma-separated numbers; every row has the first row's columns.
std::vector<float> read_matrix(const std::string& path, size_t& dims) {
  const std::string text = read_text_file(path);
  std::vector<float> out;
  size_t line = 0, pos = 0;
  dims = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view row(text.data() + pos, end - pos);
    pos = end + 1;
    ++line;
    if (!row.empty() && row.back() == '\r') row.remove_suffix(1);
    if (row.empty()) {
      require(text.find_first_not_of("\r\n", pos) == std::string::npos,
              path + ":" + std::to_string(line) + ": blank line before the end");
      break;
    }
    size_t cols = 0;
    for (size_t from = 0; from <= row.size();) {
      size_t comma = row.find(',', from);
      if (comma == std::string_view::npos) comma = row.size();
      float v = 0;
      const char* b = row.data() + from;
      const char* e = row.data() + comma;
      const auto [ptr, ec] = std::from_chars(b, e, v);
      require(ec == std::errc() && ptr == e && std::isfinite(v),
              path + ":" + std::to_string(line) + ": column " + std::to_string(cols + 1) + " is not a finite number ('" +
                  std::string(b, e) + "')");
      out.push_back(v);
      ++cols;
      from = comma + 1;
    }
    if (dims == 0) dims = cols;
    require(cols == dims, path + ":" + std::to_string(line) + ": " + std::to_string(cols) + " columns, expected " +
                              std::to_string(dims));
  }
  require(dims > 0, path + ": no rows");
  return out;
}

// "machine-1-10" -> ("machine-", 1, "-", 10): numbers compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      const std::string na = a.substr(i, ie - i), nb = b.substr(j, je - j);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ie, j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i, ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

}  // namespace

std::vector<std::string> smd_entities(const std::string& root) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(root) / "test";
  require(fs::is_directory(dir), root + ": no test/ folder (expected the SMD layout: train/, test/, test_label/)");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".txt") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end(), natural_less);
  require(!names.empty(), dir.string() + ": no .txt files");
  return names;
}

SmdEntity read_smd_entity(const std::string& root, const std::string& name) {
  namespace fs = std::filesystem;
  SmdEntity e;
  e.name = name;
  size_t train_dims = 0, test_dims = 0, label_dims = 0;
  const std::string train = (fs::path(root) / "train" / (name + ".txt")).string();
  const std::string test = (fs::path(root) / "test" / (name + ".txt")).string();
  const std::string label = (fs::path(root) / "test_label" / (name + ".txt")).string();
  e.train = read_matrix(train, train_dims);
  e.test = read_matrix(test, test_dims);
  require(train_dims == test_dims, test + ": " + std::to_string(test_dims) + " columns, but " + train + " has " +
                                       std::to_string(train_dims));
  e.dims = test_dims;
  const std::vector<float> l = read_matrix(label, label_dims);
  require(label_dims == 1, label + ": " + std::to_string(label_dims) + " columns, expected 1");
  require(l.size() == e.test_rows(), label + ": " + std::to_string(l.size()) + " labels for " +
                                         std::to_string(e.test_rows()) + " test rows");
  for (size_t i = 0; i < l.size(); ++i) {
    require(l[i] == 0 || l[i] == 1, label + ":" + std::to_string(i + 1) + ": expected 0 or 1");
    e.labels.push_back(static_cast<uint8_t>(l[i]));
  }
  return e;
}

}  // namespace ssm
