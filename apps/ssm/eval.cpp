// `ssm eval nab`: the streaming detector run online, row by row, over a
// NAB-format corpus; NAB results files out and the NAB score of the three
// profiles with the threshold optimised, as NAB reports it.
// `ssm eval smd`: the same detector over a multivariate benchmark in the SMD
// layout (train/, test/, test_label/), scored by best F1 with and without
// point adjustment, as the SMD papers report it.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.hpp"
#include "ssm/detector.hpp"
#include "ssm/forecast_batch.hpp"
#include "ssm/nab.hpp"
#include "ssm/safetensors.hpp"
#include "ssm/timeseries_csv.hpp"
#include "ssm/tsad.hpp"
#include <random>

namespace ssm::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct EvalNabArgs {
  std::string data, labels, out, model, config, scorer;
  std::vector<std::string> set, tune;
  std::string folds = "category";
  int threads = 0;
  bool per_file = false;
  std::string device = "cpu";
};

// "a.b=value": the value is JSON (a number, true, a string in quotes).
void apply_setting(json& j, const std::string& setting) {
  const size_t eq = setting.find('=');
  require(eq != std::string::npos && eq > 0, "--set '" + setting + "': expected key=value");
  json* node = &j;
  std::string key = setting.substr(0, eq);
  for (size_t dot; (dot = key.find('.')) != std::string::npos; key = key.substr(dot + 1)) {
    node = &(*node)[key.substr(0, dot)];
    require(node->is_object(), "--set '" + setting + "': '" + key.substr(0, dot) + "' is not a section");
  }
  try {
    (*node)[key] = json::parse(setting.substr(eq + 1));
  } catch (const json::exception&) {
    fail("--set '" + setting + "': the value is not a JSON number, boolean or quoted string");
  }
}

DetectorConfig detector_config(const std::string& file, const std::vector<std::string>& set) {
  DetectorConfig c = file.empty() ? DetectorConfig{} : DetectorConfig::from_file(file);
  if (set.empty()) return c;
  json j = c.to_json();
  for (const auto& s : set) apply_setting(j, s);
  return DetectorConfig::from_json(j, "--set");
}

// The results file of a labels key, as NAB lays them out for a detector
// called ssm: <out>/ssm/<category>/ssm_<file>.csv.
fs::path results_path(const std::string& out, const std::string& key) {
  const fs::path rel(key);
  return fs::path(out) / "ssm" / rel.parent_path() / ("ssm_" + rel.filename().string());
}

// f(i) for every i < n, on `threads` threads (0 = one per core), each
// taking the next i.
template <class F>
void parallel_for(size_t n, int threads, F f) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < n;) f(i);
  };
  const int k = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int t = 1; t < k; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

// Every file's scores (one per row) from one detector, each file online.
// Files are independent: several threads, each scoring whole files; or, on
// the GPU, all files in step (row r of every file, then row r + 1), the
// forecaster steps of a row in one launch.
std::vector<std::vector<double>> score_corpus(const Detector& det, const std::vector<NabCorpusFile>& corpus,
                                              const std::string& device, int threads) {
  std::vector<std::vector<double>> scores(corpus.size());
  if (device == "cuda") {
    ForecastBatch batch(det, static_cast<int>(corpus.size()), "cuda");
    std::vector<SeriesState> states(corpus.size(), det.new_series());
    std::vector<int> slots(corpus.size());
    size_t longest = 0;
    for (size_t i = 0; i < corpus.size(); ++i) {
      slots[i] = batch.attach(states[i]);
      scores[i].resize(corpus[i].series.rows.size());
      longest = std::max(longest, scores[i].size());
    }
    for (size_t r = 0; r < longest; ++r) {
      for (size_t i = 0; i < corpus.size(); ++i) {
        const auto& rows = corpus[i].series.rows;
        if (r < rows.size()) scores[i][r] = batch.update(slots[i], states[i], rows[r].epoch, rows[r].value).score;
      }
      batch.run();
    }
    return scores;
  }
  require(device == "cpu", "--device must be 'cpu' or 'cuda', got '" + device + "'");
  parallel_for(corpus.size(), threads, [&](size_t i) {
    SeriesState st = det.new_series();
    const auto& rows = corpus[i].series.rows;
    scores[i].resize(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) scores[i][r] = det.update(st, rows[r].epoch, rows[r].value).score;
  });
  return scores;
}

// The detector configs to choose from inside the folds: the product of
// every --tune key's values over the base config; the base config itself
// (the first candidate) when nothing is tuned.
std::vector<DetectorConfig> tuning_candidates(const DetectorConfig& base, const std::vector<std::string>& tune) {
  std::vector<json> configs{base.to_json()};
  for (const auto& t : tune) {
    const size_t eq = t.find('=');
    require(eq != std::string::npos && eq > 0, "--tune '" + t + "': expected key=v1,v2,...");
    std::vector<json> next;
    std::string values = t.substr(eq + 1);
    for (const json& c : configs) {
      size_t from = 0;
      while (from <= values.size()) {
        const size_t comma = std::min(values.find(',', from), values.size());
        json j = c;
        apply_setting(j, t.substr(0, eq) + "=" + values.substr(from, comma - from));
        next.push_back(std::move(j));
        from = comma + 1;
      }
    }
    configs = std::move(next);
    require(configs.size() <= 4096, "--tune: more than 4096 combinations");
  }
  std::vector<DetectorConfig> out;
  for (const json& j : configs) out.push_back(DetectorConfig::from_json(j, "--tune"));
  return out;
}

std::vector<int> folds_of(const std::string& spec, const std::vector<NabFile>& files) {
  if (spec == "category") return nab_category_folds(files);
  int k = 0;
  const auto [end, ec] = std::from_chars(spec.data(), spec.data() + spec.size(), k);
  require(ec == std::errc() && end == spec.data() + spec.size() && k >= 2 && static_cast<size_t>(k) <= files.size(),
          "--folds must be 'category' or a number of folds in 2 .. " + std::to_string(files.size()) + ", got '" +
              spec + "'");
  return nab_interleaved_folds(files.size(), k);
}

void run_eval_nab(const EvalNabArgs& a) {
  const NabLabels labels = read_nab_labels(a.labels);
  std::vector<NabCorpusFile> corpus;
  for (const auto& [key, windows] : labels) {
    const fs::path rel(key);
    bool safe = !key.empty() && rel.is_relative();
    for (const auto& part : rel) safe = safe && part != "..";
    require(safe, a.labels + ": key '" + key + "' is not a relative path inside the data folder");
    NabCorpusFile f;
    f.name = key;
    f.series = read_timeseries_csv((fs::path(a.data) / rel).string());
    f.windows = windows;
    nab_window_rows(f.series.epochs(), f.windows, f.series.source);
    corpus.push_back(std::move(f));
  }
  require(!corpus.empty(), a.labels + ": no files");
  const auto forecaster = Forecaster::load(a.model);
  const std::shared_ptr<const Forecaster> scorer = a.scorer.empty() ? nullptr : Forecaster::load(a.scorer);
  const std::vector<DetectorConfig> configs = tuning_candidates(detector_config(a.config, a.set), a.tune);

  // candidates[c][i]: file i scored by config c.
  std::vector<std::vector<NabFile>> candidates;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t c = 0; c < configs.size(); ++c) {
    const Detector det(forecaster, configs[c], scorer);
    std::vector<std::vector<double>> scores = score_corpus(det, corpus, a.device, a.threads);
    if (c == 0 && !a.out.empty())
      for (size_t i = 0; i < corpus.size(); ++i) {
        const fs::path p = results_path(a.out, corpus[i].name);
        fs::create_directories(p.parent_path());
        write_nab_results_file(p.string(), corpus[i].series, scores[i]);
      }
    std::vector<NabFile> files;
    for (size_t i = 0; i < corpus.size(); ++i) files.push_back(nab_file(corpus[i], std::move(scores[i])));
    candidates.push_back(std::move(files));
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<NabFile>& files = candidates[0];
  size_t rows = 0, windows = 0;
  for (const auto& f : corpus) rows += f.series.rows.size(), windows += f.windows.size();
  const std::vector<int> fold = folds_of(a.folds, files);
  const int n_folds = *std::max_element(fold.begin(), fold.end()) + 1;

  std::printf("ssm eval nab: %zu files, %zu rows, %zu windows; %zu detector config%s, %.2f s (%.2f us per row)\n",
              files.size(), rows, windows, configs.size(), configs.size() == 1 ? "" : "s", sec,
              sec / (rows * configs.size()) * 1e6);
  std::printf("out-of-fold (headline; %d folds by %s, %s chosen on the other folds' files):\n", n_folds,
              a.folds == "category" ? "category" : "position",
              configs.size() == 1 ? "the threshold" : "the config and the threshold");
  const std::pair<const char*, NabProfile> profiles[] = {
      {"standard", nab_standard()}, {"reward_low_FP_rate", nab_low_fp()}, {"reward_low_FN_rate", nab_low_fn()}};
  json summary = {{"files", files.size()}, {"rows", rows}, {"windows", windows}, {"folds", a.folds},
                  {"detector", configs[0].to_json()}, {"candidates", configs.size()}};
  std::vector<NabCrossValidation> cvs;
  for (const auto& [name, prof] : profiles) {
    const NabCrossValidation cv = nab_cross_validate(candidates, fold, prof);
    const NabResult& r = cv.out_of_fold;
    std::printf("  %-20s score %6.2f  raw %8.3f  tp %lld fp %lld fn %lld\n", name, r.normalised, r.raw,
                static_cast<long long>(r.tp), static_cast<long long>(r.fp), static_cast<long long>(r.fn));
    json jf = json::array();
    for (const auto& f : cv.folds)
      jf.push_back({{"fold", f.fold}, {"files", f.files}, {"candidate", f.candidate}, {"threshold", f.threshold},
                    {"train_score", f.train_score}, {"raw", f.test.raw}, {"tp", f.test.tp}, {"fp", f.test.fp},
                    {"fn", f.test.fn}});
    summary["out_of_fold"][name] = {{"score", r.normalised}, {"raw", r.raw}, {"tp", r.tp},
                                    {"fp", r.fp},            {"fn", r.fn},   {"folds", jf}};
    cvs.push_back(cv);
  }
  std::printf("  folds (standard): threshold, config, score of the other folds, raw of the fold\n");
  for (const auto& f : cvs[0].folds) {
    std::string cat;
    for (size_t i = 0; i < files.size(); ++i)
      if (fold[i] == f.fold) cat = files[i].name.substr(0, files[i].name.find('/'));
    std::printf("    fold %d (%zu files%s%s): threshold %.4f  config %zu  train %6.2f  raw %7.3f  tp %lld fp %lld fn %lld\n",
                f.fold, f.files, a.folds == "category" ? ", " : "", a.folds == "category" ? cat.c_str() : "",
                f.threshold, f.candidate, f.train_score, f.test.raw, static_cast<long long>(f.test.tp),
                static_cast<long long>(f.test.fp), static_cast<long long>(f.test.fn));
  }
  if (configs.size() > 1) {
    std::vector<size_t> chosen;
    for (const auto& f : cvs[0].folds) chosen.push_back(f.candidate);
    std::sort(chosen.begin(), chosen.end());
    chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
    for (size_t c : chosen) std::printf("    config %zu: %s\n", c, configs[c].to_json().dump().c_str());
  }
  std::printf("in-sample (secondary: the base config, one threshold optimised on all files, as NAB reports):\n");
  for (const auto& [name, prof] : profiles) {
    const NabResult r = nab_optimise(files, prof);
    std::printf("  %-20s score %6.2f  threshold %.6f  raw %8.3f  tp %lld fp %lld fn %lld\n", name, r.normalised,
                r.threshold, r.raw, static_cast<long long>(r.tp), static_cast<long long>(r.fp),
                static_cast<long long>(r.fn));
    summary["profiles"][name] = {{"score", r.normalised}, {"threshold", r.threshold}, {"raw", r.raw},
                                 {"tp", r.tp},           {"fp", r.fp},               {"fn", r.fn}};
    if (a.per_file && std::string(name) == "standard") {
      for (const auto& f : files) {
        const NabResult fr = nab_score({f}, prof, r.threshold);
        std::printf("    %-55s windows %zu  tp %lld fp %lld fn %lld  raw %7.3f\n", f.name.c_str(), f.windows.size(),
                    static_cast<long long>(fr.tp), static_cast<long long>(fr.fp), static_cast<long long>(fr.fn),
                    fr.raw);
      }
    }
  }
  if (!a.out.empty()) {
    atomic_write_file(fs::path(a.out) / "scores.json", summary.dump(2) + "\n");
    std::printf("results in %s (%s/ssm/<category>/ssm_<file>.csv of the base config, scores.json)\n", a.out.c_str(),
                a.out.c_str());
  }
}

struct EvalSmdArgs {
  std::string data, model, config, out;
  std::vector<std::string> set, group_set, entities;
  std::string mode = "univariate";
  int threads = 0;
  bool per_entity = false;
  uint32_t seed = 1;
};

// One minute between rows (SMD's sampling), from a Monday 00:00 UTC, so that
// the daily and weekly profiles see the rows' rhythm.
constexpr int64_t kSmdT0 = 1546214400;  // 2018-12-31 00:00:00 UTC, a Monday
constexpr int64_t kSmdStep = 60;

// The test rows' scores of one entity: every column a series of its own,
// train rows first (they warm the detector up; their scores are dropped),
// then the test rows; a row's score is the highest of its columns'.
std::vector<double> smd_scores_univariate(const Detector& det, const SmdEntity& e) {
  std::vector<double> out(e.test_rows(), 0.0);
  const size_t n_train = e.train_rows();
  for (size_t d = 0; d < e.dims; ++d) {
    SeriesState st = det.new_series();
    for (size_t r = 0; r < n_train; ++r)
      det.update(st, kSmdT0 + kSmdStep * static_cast<int64_t>(r), e.train[r * e.dims + d]);
    for (size_t r = 0; r < out.size(); ++r) {
      const double s =
          det.update(st, kSmdT0 + kSmdStep * static_cast<int64_t>(n_train + r), e.test[r * e.dims + d]).score;
      out[r] = std::max(out[r], s);
    }
  }
  return out;
}

// The same entity scored as one group: a row's score is the group's.
std::vector<double> smd_scores_joint(const GroupDetector& det, const SmdEntity& e) {
  std::vector<double> out(e.test_rows(), 0.0);
  const size_t n_train = e.train_rows();
  GroupState g = det.new_group(static_cast<int>(e.dims));
  std::vector<double> row(e.dims);
  auto step = [&](const std::vector<float>& m, size_t r, size_t at) {
    for (size_t d = 0; d < e.dims; ++d) row[d] = m[r * e.dims + d];
    return det.update(g, kSmdT0 + kSmdStep * static_cast<int64_t>(at), row).score;
  };
  for (size_t r = 0; r < n_train; ++r) step(e.train, r, r);
  for (size_t r = 0; r < out.size(); ++r) out[r] = step(e.test, r, n_train + r);
  return out;
}

void print_counts(const char* what, const TsadCounts& c) {
  std::printf("  %-44s F1 %.4f  P %.4f  R %.4f  (tp %lld fp %lld fn %lld, threshold %.4f)\n", what, c.f1(),
              c.precision(), c.recall(), static_cast<long long>(c.tp), static_cast<long long>(c.fp),
              static_cast<long long>(c.fn), c.threshold);
}

// Best F1 of each entity on its own (its own threshold), averaged; and of
// all entities with one threshold.
struct SmdSummary {
  double mean_f1 = 0, mean_p = 0, mean_r = 0;
  TsadCounts pooled;
  std::vector<TsadCounts> each;
};

SmdSummary smd_summary(const std::vector<TsadSeries>& series, bool pa) {
  SmdSummary s;
  for (const auto& x : series) {
    const TsadCounts c = tsad_best_f1({x}, pa);
    s.each.push_back(c);
    s.mean_f1 += c.f1() / series.size();
    s.mean_p += c.precision() / series.size();
    s.mean_r += c.recall() / series.size();
  }
  s.pooled = tsad_best_f1(series, pa);
  return s;
}

json summary_json(const SmdSummary& s) {
  auto counts = [](const TsadCounts& c) {
    return json{{"f1", c.f1()}, {"precision", c.precision()}, {"recall", c.recall()}, {"tp", c.tp},
                {"fp", c.fp},   {"fn", c.fn},                 {"threshold", c.threshold}};
  };
  json each = json::array();
  for (const auto& c : s.each) each.push_back(counts(c));
  return {{"mean_f1", s.mean_f1}, {"mean_precision", s.mean_p}, {"mean_recall", s.mean_r},
          {"pooled", counts(s.pooled)}, {"entities", each}};
}

void run_eval_smd(const EvalSmdArgs& a) {
  require(a.mode == "univariate" || a.mode == "joint", "--mode must be 'univariate' or 'joint', got '" + a.mode + "'");
  std::vector<std::string> names = a.entities.empty() ? smd_entities(a.data) : a.entities;
  const auto forecaster = Forecaster::load(a.model);
  json gj = GroupConfig{}.to_json();
  for (const auto& g : a.group_set) apply_setting(gj, g);
  const GroupDetector group(forecaster, detector_config(a.config, a.set), GroupConfig::from_json(gj, "--group-set"));
  const Detector& det = group.detector();
  std::vector<TsadSeries> series(names.size()), random(names.size());
  std::vector<size_t> dims(names.size());
  const auto t0 = std::chrono::steady_clock::now();
  parallel_for(names.size(), a.threads, [&](size_t i) {
    const SmdEntity e = read_smd_entity(a.data, names[i]);
    dims[i] = e.dims;
    series[i] = {e.name, a.mode == "joint" ? smd_scores_joint(group, e) : smd_scores_univariate(det, e), e.labels};
    // The reference Kim et al. (AAAI 2022) point out: scores drawn at
    // random, which point adjustment rewards.
    std::mt19937 rng(a.seed + static_cast<uint32_t>(i));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    random[i] = {e.name, std::vector<double>(e.labels.size()), e.labels};
    for (double& v : random[i].scores) v = u(rng);
  });
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t rows = 0, anomalous = 0, segments = 0, values = 0;
  for (size_t i = 0; i < series.size(); ++i) {
    rows += series[i].labels.size();
    for (uint8_t l : series[i].labels) anomalous += l;
    segments += tsad_segments(series[i].labels).size();
    values += dims[i];
  }
  std::printf("ssm eval smd: %zu entities, %zu series, %zu test rows (%zu anomalous in %zu segments); mode %s; %.2f s\n",
              names.size(), values, rows, anomalous, segments, a.mode.c_str(), sec);
  json out = {{"entities", names}, {"mode", a.mode}, {"detector", det.config().to_json()}};
  if (a.mode == "joint") out["group"] = group.config().to_json();
  for (bool pa : {true, false}) {
    const SmdSummary s = smd_summary(series, pa), r = smd_summary(random, pa);
    std::printf("%s best F1 (threshold chosen on the test labels, as published):\n",
                pa ? "point-adjusted" : "unadjusted (point-wise)");
    std::printf("  %-44s F1 %.4f  P %.4f  R %.4f\n", "mean over entities (each its own threshold)", s.mean_f1,
                s.mean_p, s.mean_r);
    print_counts("all entities, one threshold", s.pooled);
    std::printf("  %-44s F1 %.4f  (all entities, one threshold: %.4f)\n", "reference: random scores, mean", r.mean_f1,
                r.pooled.f1());
    if (a.per_entity)
      for (size_t i = 0; i < names.size(); ++i) print_counts(names[i].c_str(), s.each[i]);
    out[pa ? "point_adjusted" : "unadjusted"] = summary_json(s);
    out[pa ? "random_point_adjusted" : "random_unadjusted"] = summary_json(r);
  }
  if (!a.out.empty()) {
    fs::create_directories(a.out);
    atomic_write_file(fs::path(a.out) / "smd_scores.json", out.dump(2) + "\n");
    std::printf("results in %s/smd_scores.json\n", a.out.c_str());
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Evaluate a detector or model on a benchmark");
  cmd->require_subcommand(1);
  auto args = std::make_shared<EvalNabArgs>();
  auto* nab = cmd->add_subcommand("nab", "Run the anomaly detector over a NAB corpus and score it as NAB does");
  nab->add_option("--data", args->data, "folder holding <category>/<file>.csv")->required();
  nab->add_option("--labels", args->labels, "NAB labels JSON (combined windows)")->required();
  nab->add_option("--out", args->out, "folder for the NAB results files and scores.json (none: no files)");
  nab->add_option("--model", args->model, "forecaster model (.safetensors); default: the built-in one");
  nab->add_option("--scorer", args->scorer,
                  "learned detector (.safetensors, trained with data.target \"anomaly\"), scored by the "
                  "'learned' channel; default: none");
  nab->add_option("--config", args->config, "detector config JSON (see docs/DETECT.md)");
  nab->add_option("--set", args->set, "override one detector setting, key=value (repeatable)");
  nab->add_option("--folds", args->folds,
                  "file-disjoint folds for the headline out-of-fold score: 'category' (leave one category out) "
                  "or a number k (file i in fold i % k)");
  nab->add_option("--tune", args->tune,
                  "key=v1,v2,...: choose this setting inside each fold's training files (repeatable; the product)");
  nab->add_option("--threads", args->threads, "files scored in parallel (0 = one per core)");
  nab->add_option("--device", args->device, "where the forecaster steps: cpu, or cuda (all files in step, one launch per row)");
  nab->add_flag("--per-file", args->per_file, "print each file's counts at the standard threshold");
  nab->callback([args] { run_eval_nab(*args); });

  auto smd_args = std::make_shared<EvalSmdArgs>();
  auto* smd = cmd->add_subcommand(
      "smd", "Run the anomaly detector over a benchmark in the SMD layout and score it by best F1, point-adjusted and not");
  smd->add_option("--data", smd_args->data, "folder holding train/, test/ and test_label/<entity>.txt")->required();
  smd->add_option("--entity", smd_args->entities, "score only this entity (repeatable; default: every test/*.txt)");
  smd->add_option("--mode", smd_args->mode,
                  "univariate: every column on its own, a row scores its highest column; joint: the columns as one "
                  "group (GroupDetector)");
  smd->add_option("--group-set", smd_args->group_set, "override one group setting with --mode joint, key=value (repeatable)");
  smd->add_option("--out", smd_args->out, "folder for smd_scores.json");
  smd->add_option("--model", smd_args->model, "forecaster model (.safetensors); default: the built-in one");
  smd->add_option("--config", smd_args->config, "detector config JSON (see docs/DETECT.md)");
  smd->add_option("--set", smd_args->set, "override one detector setting, key=value (repeatable)");
  smd->add_option("--threads", smd_args->threads, "entities scored in parallel (0 = one per core)");
  smd->add_option("--seed", smd_args->seed, "seed of the random-score reference");
  smd->add_flag("--per-entity", smd_args->per_entity, "print each entity's best F1");
  smd->callback([smd_args] { run_eval_smd(*smd_args); });
}

}  // namespace ssm::cli
