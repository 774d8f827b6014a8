#include "ssm/nab.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <ostream>
#include <sstream>

#include "ssm/safetensors.hpp"  // atomic_write_file

namespace ssm {

namespace {

// Every scored row of the corpus, in file order, with what a detection there
// is worth. Windows are numbered across the corpus; only windows with at
// least one scored row get a number.
struct Prepared {
  std::vector<double> score;    // (R) detector score
  std::vector<double> weight;   // (R) points a detection at this row earns
  std::vector<int32_t> window;  // (R) corpus window number, -1 outside every window
  int64_t windows_scored = 0;   // windows with a scored row
  int64_t windows_total = 0;    // every window, probation or not
  int64_t outside_rows = 0;     // scored rows outside every window
};

// Epochs in messages: as dates when they are dates, else as numbers.
std::string time_text(int64_t t) {
  try {
    return format_timestamp(t);
  } catch (const Error&) {
    return std::to_string(t);
  }
}

std::string window_text(const std::string& name, size_t k, const NabWindow& w) {
  return name + ": window " + std::to_string(k) + " [" + time_text(w.first) + ", " + time_text(w.second) + "]";
}

void check_profile(const NabProfile& p) {
  require(std::isfinite(p.tp) && std::isfinite(p.fp) && std::isfinite(p.fn) && p.tp > 0 && p.fp >= 0 && p.fn >= 0,
          "NAB profile: expected finite weights with tp > 0, fp >= 0, fn >= 0");
}

void prepare_file(const NabFile& f, const NabProfile& profile, Prepared* out) {
  const size_t n = f.times.size();
  require(f.scores.size() == n, f.name + ": " + std::to_string(f.scores.size()) + " scores for " +
                                    std::to_string(n) + " rows (expected one score per row)");
  for (size_t i = 0; i < n; ++i) {
    const double s = f.scores[i];
    if (!(s >= 0 && s <= 1))  // also catches NaN
      fail(f.name + ": row " + std::to_string(i) + " (" + time_text(f.times[i]) + "): score " + std::to_string(s) +
           " is not a number in [0, 1]");
  }
  const auto ranges = nab_window_rows(f.times, f.windows, f.name);
  const size_t probation = nab_probation_rows(n);
  const double max_tp = nab_sigmoid(-1.0);
  out->windows_total += static_cast<int64_t>(ranges.size());

  size_t k = 0;                  // next or current window
  bool have_prev = false;        // a window has ended before this row
  size_t prev_right = 0;         // its right row
  double prev_width = 0;         // its width in rows
  int32_t current_id = -1;       // corpus number of window k, once one of its rows is scored
  for (size_t i = 0; i < n; ++i) {
    const bool inside = k < ranges.size() && i >= ranges[k].first;
    double weight;
    if (inside) {
      const double width = static_cast<double>(ranges[k].second - ranges[k].first + 1);
      const double y = -static_cast<double>(ranges[k].second - i + 1) / width;
      weight = profile.tp * nab_sigmoid(y) / max_tp;
    } else if (!have_prev || prev_width <= 1) {
      weight = -profile.fp;
    } else {
      weight = profile.fp * nab_sigmoid(static_cast<double>(i - prev_right) / (prev_width - 1));
    }
    if (i >= probation) {
      out->score.push_back(f.scores[i]);
      out->weight.push_back(weight);
      if (inside) {
        if (current_id < 0) current_id = static_cast<int32_t>(out->windows_scored++);
        out->window.push_back(current_id);
      } else {
        out->window.push_back(-1);
        ++out->outside_rows;
      }
    }
    if (inside && i == ranges[k].second) {
      have_prev = true;
      prev_right = i;
      prev_width = static_cast<double>(ranges[k].second - ranges[k].first + 1);
      ++k;
      current_id = -1;
    }
  }
}

Prepared prepare(const std::vector<NabFile>& files, const NabProfile& profile) {
  check_profile(profile);
  Prepared p;
  size_t rows = 0;
  for (const auto& f : files) rows += f.times.size();
  require(rows < std::numeric_limits<uint32_t>::max(), "NAB corpus: more than 2^32 - 1 rows");  // sweep indices
  p.score.reserve(rows);
  p.weight.reserve(rows);
  p.window.reserve(rows);
  for (const auto& f : files) prepare_file(f, profile, &p);
  require(p.windows_scored < std::numeric_limits<int32_t>::max(), "NAB corpus: too many windows");
  return p;
}

double normalised(double raw, double null_score, double perfect) {
  if (!(perfect > null_score)) return std::numeric_limits<double>::quiet_NaN();
  return 100.0 * (raw - null_score) / (perfect - null_score);
}

// Score at one threshold by direct summation (the reference the sweep is tested against).
NabResult score_at(const Prepared& p, std::span<const double> scores, const NabProfile& profile, double threshold) {
  std::vector<double> best(static_cast<size_t>(p.windows_scored), -profile.fn);
  std::vector<char> found(best.size(), 0);
  NabResult r;
  r.threshold = threshold;
  double fp_sum = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!(scores[i] >= threshold)) continue;
    if (p.window[i] < 0) {
      fp_sum += p.weight[i];
      ++r.fp;
    } else {
      const auto w = static_cast<size_t>(p.window[i]);
      found[w] = 1;
      best[w] = std::max(best[w], p.weight[i]);
    }
  }
  r.raw = std::accumulate(best.begin(), best.end(), 0.0) + fp_sum;
  r.tp = std::count(found.begin(), found.end(), 1);
  r.fn = p.windows_scored - r.tp;
  r.tn = p.outside_rows - r.fp;
  return r;
}

// Every candidate threshold, highest first. Rows are sorted by score once;
// lowering the threshold to the next distinct score adds that group's rows:
// a false positive adds its weight, a window keeps its best weight so far.
std::vector<NabResult> sweep(const Prepared& p, std::span<const double> scores, const NabProfile& profile) {
  std::vector<uint32_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return scores[a] > scores[b]; });

  std::vector<double> best(static_cast<size_t>(p.windows_scored), -profile.fn);
  std::vector<char> found(best.size(), 0);
  double window_sum = -profile.fn * static_cast<double>(p.windows_scored), fp_sum = 0;
  NabResult r;
  r.threshold = kNabNoDetection;
  r.raw = window_sum;
  r.fn = p.windows_scored;
  r.tn = p.outside_rows;
  std::vector<NabResult> out{r};
  for (size_t g = 0; g < order.size();) {
    const double s = scores[order[g]];
    for (; g < order.size() && scores[order[g]] == s; ++g) {
      const uint32_t i = order[g];
      if (p.window[i] < 0) {
        fp_sum += p.weight[i];
        ++r.fp;
        --r.tn;
        continue;
      }
      const auto w = static_cast<size_t>(p.window[i]);
      if (!found[w]) {
        found[w] = 1;
        ++r.tp;
        --r.fn;
      }
      if (p.weight[i] > best[w]) {
        window_sum += p.weight[i] - best[w];
        best[w] = p.weight[i];
      }
    }
    r.threshold = s;
    r.raw = window_sum + fp_sum;
    out.push_back(r);
  }
  return out;
}

double null_score_of(const Prepared& p, const NabProfile& profile) {
  const std::vector<double> half(p.score.size(), 0.5);
  double best = -std::numeric_limits<double>::infinity();
  for (const auto& r : sweep(p, half, profile)) best = std::max(best, r.raw);
  return best;
}

double perfect_score_of(const Prepared& p, const NabProfile& profile) {
  return static_cast<double>(p.windows_total) * profile.tp;
}

std::string shortest(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

}  // namespace

NabProfile nab_standard() { return {1.0, 0.11, 1.0}; }
NabProfile nab_low_fp() { return {1.0, 0.22, 1.0}; }
NabProfile nab_low_fn() { return {1.0, 0.11, 2.0}; }

size_t nab_probation_rows(size_t n) {
  // Integer form of NAB's min(floor(0.15 n), 0.15 * 5000): equal for every n.
  return std::min<size_t>(n / 100 * 15 + n % 100 * 15 / 100, 750);
}

double nab_sigmoid(double y) {
  if (y > 3.0) return -1.0;
  return 2.0 / (1.0 + std::exp(5.0 * y)) - 1.0;
}

std::vector<std::pair<size_t, size_t>> nab_window_rows(std::span<const int64_t> times,
                                                       std::span<const NabWindow> windows,
                                                       const std::string& name) {
  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(windows.size());
  const size_t n = times.size();
  size_t cursor = 0;  // rows before it belong to earlier windows
  for (size_t k = 0; k < windows.size(); ++k) {
    const auto [start, end] = windows[k];
    if (start > end) fail(window_text(name, k, windows[k]) + ": start is after end");
    if (k > 0 && start < windows[k - 1].second)
      fail(window_text(name, k, windows[k]) + ": starts before the previous window ends");
    size_t left = cursor;
    while (left < n && times[left] < start) ++left;
    size_t j = left;
    while (j < n && times[j] < end) ++j;
    // One past the last row at or before end; an exact match is the right row itself.
    const size_t stop = (j < n && times[j] == end) ? j + 1 : j;
    if (left >= n || stop <= left) fail(window_text(name, k, windows[k]) + ": covers no row of the file");
    out.emplace_back(left, stop - 1);
    cursor = stop;
  }
  return out;
}

NabResult nab_score(const std::vector<NabFile>& files, const NabProfile& profile, double threshold) {
  require(!std::isnan(threshold), "nab_score: threshold is NaN");
  const Prepared p = prepare(files, profile);
  NabResult r = score_at(p, p.score, profile, threshold);
  r.normalised = normalised(r.raw, null_score_of(p, profile), perfect_score_of(p, profile));
  return r;
}

std::vector<NabResult> nab_sweep(const std::vector<NabFile>& files, const NabProfile& profile) {
  const Prepared p = prepare(files, profile);
  std::vector<NabResult> out = sweep(p, p.score, profile);
  const double null_score = null_score_of(p, profile), perfect = perfect_score_of(p, profile);
  for (auto& r : out) r.normalised = normalised(r.raw, null_score, perfect);
  return out;
}

NabResult nab_optimise(const std::vector<NabFile>& files, const NabProfile& profile) {
  const Prepared p = prepare(files, profile);
  const std::vector<NabResult> all = sweep(p, p.score, profile);
  // Highest threshold first, strict '>': ties keep the higher threshold, as NAB's stable sort does.
  size_t best = 0;
  for (size_t i = 1; i < all.size(); ++i)
    if (all[i].raw > all[best].raw) best = i;
  // Re-sum at the chosen threshold so that nab_score and nab_optimise agree to the last bit.
  NabResult r = score_at(p, p.score, profile, all[best].threshold);
  r.normalised = normalised(r.raw, null_score_of(p, profile), perfect_score_of(p, profile));
  return r;
}

double nab_null_score(const std::vector<NabFile>& files, const NabProfile& profile) {
  return null_score_of(prepare(files, profile), profile);
}

double nab_perfect_score(const std::vector<NabFile>& files, const NabProfile& profile) {
  check_profile(profile);
  size_t windows = 0;
  for (const auto& f : files) windows += f.windows.size();
  return static_cast<double>(windows) * profile.tp;
}

// ---- cross-validation -------------------------------------------------------

NabCrossValidation nab_cross_validate(const std::vector<std::vector<NabFile>>& candidates, std::span<const int> fold,
                                      const NabProfile& profile) {
  require(!candidates.empty(), "NAB cross-validation: no candidates");
  const size_t n = candidates[0].size();
  require(fold.size() == n, "NAB cross-validation: " + std::to_string(fold.size()) + " fold labels for " +
                                std::to_string(n) + " files");
  for (const auto& c : candidates) {
    require(c.size() == n, "NAB cross-validation: candidates list different numbers of files");
    for (size_t i = 0; i < n; ++i)
      require(c[i].name == candidates[0][i].name, "NAB cross-validation: candidates list different files (" +
                                                       c[i].name + " vs " + candidates[0][i].name + ")");
  }
  std::vector<int> ids(fold.begin(), fold.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  require(ids.size() >= 2, "NAB cross-validation: needs at least two folds");

  NabCrossValidation cv;
  const double perfect = nab_perfect_score(candidates[0], profile);
  const double null_score = nab_null_score(candidates[0], profile);
  for (int k : ids) {
    NabFoldChoice choice;
    choice.fold = k;
    double best_raw = -std::numeric_limits<double>::infinity();
    for (size_t c = 0; c < candidates.size(); ++c) {
      std::vector<NabFile> train;
      for (size_t i = 0; i < n; ++i)
        if (fold[i] != k) train.push_back(candidates[c][i]);
      const NabResult r = nab_optimise(train, profile);
      if (r.raw > best_raw) {
        best_raw = r.raw;
        choice.candidate = c;
        choice.threshold = r.threshold;
        choice.train_score = r.normalised;
      }
    }
    std::vector<NabFile> test;
    for (size_t i = 0; i < n; ++i)
      if (fold[i] == k) test.push_back(candidates[choice.candidate][i]);
    choice.files = test.size();
    choice.test = nab_score(test, profile, choice.threshold);
    NabResult& o = cv.out_of_fold;
    o.raw += choice.test.raw;
    o.tp += choice.test.tp;
    o.fp += choice.test.fp;
    o.fn += choice.test.fn;
    o.tn += choice.test.tn;
    cv.folds.push_back(choice);
  }
  cv.out_of_fold.threshold = std::numeric_limits<double>::quiet_NaN();  // one per fold
  cv.out_of_fold.normalised = normalised(cv.out_of_fold.raw, null_score, perfect);
  return cv;
}

std::vector<int> nab_category_folds(const std::vector<NabFile>& files) {
  std::vector<std::string> seen;
  std::vector<int> out;
  for (const auto& f : files) {
    const std::string cat = f.name.substr(0, f.name.find('/'));
    auto it = std::find(seen.begin(), seen.end(), cat);
    if (it == seen.end()) it = seen.insert(seen.end(), cat);
    out.push_back(static_cast<int>(it - seen.begin()));
  }
  return out;
}

std::vector<int> nab_interleaved_folds(size_t files, int k) {
  require(k >= 2, "NAB cross-validation: expected at least 2 folds, got " + std::to_string(k));
  std::vector<int> out(files);
  for (size_t i = 0; i < files; ++i) out[i] = static_cast<int>(i % static_cast<size_t>(k));
  return out;
}

// ---- corpus and results files ----------------------------------------------

std::vector<NabCorpusFile> nab_load_corpus(const std::string& root) {
  namespace fs = std::filesystem;
  const NabLabels labels = read_nab_labels((fs::path(root) / "labels.json").string());
  std::vector<NabCorpusFile> out;
  out.reserve(labels.size());
  for (const auto& [key, windows] : labels) {
    // Keys come from a file: keep them inside <root>/data.
    const fs::path rel(key);
    bool safe = !key.empty() && rel.is_relative();
    for (const auto& part : rel) safe = safe && part != "..";
    require(safe, root + "/labels.json: key '" + key + "' is not a relative path inside data/");
    NabCorpusFile f;
    f.name = key;
    f.series = read_timeseries_csv((fs::path(root) / "data" / rel).string());
    f.windows = windows;
    // Fail here, naming the file, rather than later inside the scorer.
    nab_window_rows(f.series.epochs(), f.windows, f.series.source);
    out.push_back(std::move(f));
  }
  return out;
}

NabFile nab_file(const NabCorpusFile& file, std::vector<double> scores) {
  require(scores.size() == file.series.rows.size(), file.name + ": " + std::to_string(scores.size()) +
                                                        " scores for " + std::to_string(file.series.rows.size()) +
                                                        " rows (expected one score per row)");
  return NabFile{file.name, file.series.epochs(), std::move(scores), file.windows};
}

void write_nab_results(std::ostream& out, const TimeSeries& series, std::span<const double> scores,
                       const std::vector<NabWindow>* windows) {
  const size_t n = series.rows.size();
  require(scores.size() == n, series.source + ": " + std::to_string(scores.size()) + " scores for " +
                                  std::to_string(n) + " rows (expected one score per row)");
  std::vector<char> label;
  if (windows) {
    label.assign(n, 0);
    for (const auto& [first, last] : nab_window_rows(series.epochs(), *windows, series.source))
      std::fill(label.begin() + static_cast<ptrdiff_t>(first), label.begin() + static_cast<ptrdiff_t>(last) + 1, 1);
  }
  out << (windows ? "timestamp,value,anomaly_score,label\n" : "timestamp,value,anomaly_score\n");
  for (size_t i = 0; i < n; ++i) {
    const auto& row = series.rows[i];
    if (!std::isfinite(scores[i])) fail(series.source + ": row " + std::to_string(i) + ": score is not finite");
    out << (row.timestamp.empty() ? format_timestamp(row.epoch) : row.timestamp) << ',' << shortest(row.value)
        << ',' << shortest(scores[i]);
    if (windows) out << ',' << (label[i] ? '1' : '0');
    out << '\n';
  }
}

void write_nab_results_file(const std::string& path, const TimeSeries& series, std::span<const double> scores,
                            const std::vector<NabWindow>* windows) {
  std::ostringstream ss;
  write_nab_results(ss, series, scores, windows);
  atomic_write_file(path, ss.str());
}

}  // namespace ssm
