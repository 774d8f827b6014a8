// `ssm eval nab`: the streaming detector run online, row by row, over a
// NAB-format corpus; NAB results files out and the NAB score of the three
// profiles with the threshold optimised, as NAB reports it.
#include <algorithm>
#include <atomic>
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

namespace ssm::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct EvalNabArgs {
  std::string data, labels, out, model, config;
  std::vector<std::string> set;
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
  const Detector det(Forecaster::load(a.model), detector_config(a.config, a.set));

  // Files are independent: score them on several threads, each online; or,
  // on the GPU, all files in step (row r of every file, then row r + 1), the
  // forecaster steps of a row in one launch.
  std::vector<std::vector<double>> scores(corpus.size());
  const auto t0 = std::chrono::steady_clock::now();
  if (a.device == "cuda") {
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
  } else {
    require(a.device == "cpu", "--device must be 'cpu' or 'cuda', got '" + a.device + "'");
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next++) < corpus.size();) {
        SeriesState st = det.new_series();
        const auto& rows = corpus[i].series.rows;
        scores[i].resize(rows.size());
        for (size_t r = 0; r < rows.size(); ++r) scores[i][r] = det.update(st, rows[r].epoch, rows[r].value).score;
      }
    };
    const int threads = a.threads > 0 ? a.threads : std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t rows = 0;
  for (const auto& f : corpus) rows += f.series.rows.size();

  std::vector<NabFile> files;
  for (size_t i = 0; i < corpus.size(); ++i) {
    if (!a.out.empty()) {
      const fs::path p = results_path(a.out, corpus[i].name);
      fs::create_directories(p.parent_path());
      write_nab_results_file(p.string(), corpus[i].series, scores[i]);
    }
    files.push_back(nab_file(corpus[i], scores[i]));
  }
  size_t windows = 0;
  for (const auto& f : files) windows += f.windows.size();
  std::printf("ssm eval nab: %zu files, %zu rows, %zu windows; detector %.2f s (%.2f us per row)\n", files.size(),
              rows, windows, sec, sec / rows * 1e6);
  const std::pair<const char*, NabProfile> profiles[] = {
      {"standard", nab_standard()}, {"reward_low_FP_rate", nab_low_fp()}, {"reward_low_FN_rate", nab_low_fn()}};
  json summary = {{"files", files.size()}, {"rows", rows}, {"windows", windows}, {"detector", det.config().to_json()}};
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
    std::printf("results in %s (%s/ssm/<category>/ssm_<file>.csv, scores.json)\n", a.out.c_str(), a.out.c_str());
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
  nab->add_option("--config", args->config, "detector config JSON (see docs/DETECT.md)");
  nab->add_option("--set", args->set, "override one detector setting, key=value (repeatable)");
  nab->add_option("--threads", args->threads, "files scored in parallel (0 = one per core)");
  nab->add_option("--device", args->device, "where the forecaster steps: cpu, or cuda (all files in step, one launch per row)");
  nab->add_flag("--per-file", args->per_file, "print each file's counts at the standard threshold");
  nab->callback([args] { run_eval_nab(*args); });
}

}  // namespace ssm::cli
