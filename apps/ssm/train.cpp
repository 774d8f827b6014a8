// `ssm train --config CFG.json`: trains a denoiser on folders of sound files
// (ssm/train_config.hpp, ssm/dataset.hpp), or the anomaly detector's
// forecaster when the config's data section is {"kind": "series", ...}
// (ssm::SeriesTrainConfig, docs/DETECT.md). The output folder gets
//   config.json        the config as run (after command-line overrides)
//   checkpoints/       step-NNNNNNNN.safetensors + .optim, the newest kept
//   metrics.jsonl      one JSON object per line: every step, every validation
//   metrics.png        loss and validation metrics (when gnuplot is installed)
//   best.safetensors   the weights with the best validation SI-SDR so far
//   model.safetensors  the final weights
// A forecaster's run has no validation (no best.safetensors); its final
// weights go to output.model when the config sets it and --out is not given.
// Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and
// exits; `--resume` continues from the newest checkpoint exactly as if the
// run had not stopped.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "commands.hpp"
#include "ssm/atomic_file.hpp"
#include "ssm/cuda.hpp"
#include "ssm/dataset.hpp"
#include "ssm/detector.hpp"
#include "ssm/train_config.hpp"
#include "ssm/trainer.hpp"

namespace ssm::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using record = nlohmann::ordered_json;  // log records keep "kind" and "step" first
using Clock = std::chrono::steady_clock;

struct Options {
  std::string config;
  std::string out;       // "" = output.dir
  int64_t steps = 0;     // 0 = training.steps
  int64_t stop_at = 0;   // 0 = run to the end
  int threads = -1;      // -1 = training.threads
  std::string device;    // empty = training.device
  int gpus = 0;          // 0 = training.gpus
  std::string init;      // empty = training.init
  bool resume = false;
};

volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_stop_signal(int sig) { g_signal = sig; }

// Ctrl-C and SIGTERM set a flag the loop checks after each step. Ctrl-C's
// handler resets itself, so a second Ctrl-C stops the program at once;
// SIGTERM's stays, because supervisors send it more than once for one stop
// (timeout(1) signals the child and then its whole process group, and a
// second default-action SIGTERM would kill the run before it saves).
class StopSignals {
 public:
  StopSignals() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int_);
    sa.sa_flags = 0;
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    // After a stop the process is on its way out: a repeat of the signal that
    // lands after the save must not turn a clean exit into death by signal.
    if (stopped()) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  bool stopped() const { return g_signal != 0; }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

void warn(const std::string& what) { std::fprintf(stderr, "warning: %s\n", what.c_str()); }

std::string duration(double s) {
  char buf[32];
  const long t = std::lround(std::max(0.0, s));
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

double minutes(const std::vector<Clip>& clips, int rate) {
  double n = 0;
  for (const auto& c : clips) n += c.samples.size();
  return n / rate / 60;
}

// checkpoints/step-NNNNNNNN.safetensors with its .optim beside it.
class Checkpoints {
 public:
  explicit Checkpoints(const fs::path& out) : dir_(out / "checkpoints") {}

  fs::path path(int64_t step) const {
    char name[64];
    std::snprintf(name, sizeof name, "step-%08lld.safetensors", static_cast<long long>(step));
    return dir_ / name;
  }

  // Steps of the complete checkpoints (both files present), ascending.
  std::vector<int64_t> steps() const {
    std::vector<int64_t> out;
    std::error_code ec;
    if (!fs::is_directory(dir_, ec)) return out;
    static const std::regex name(R"(step-(\d+)\.safetensors)");
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      std::smatch m;
      const std::string f = e.path().filename().string();
      if (std::regex_match(f, m, name) && fs::exists(e.path().string() + ".optim", ec))
        out.push_back(std::stoll(m[1]));
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Saves the trainer's state and keeps the newest `keep` (0 = all).
  void save(const Trainer& trainer, int keep) {
    fs::create_directories(dir_);
    trainer.save_checkpoint(path(trainer.steps_done()).string());
    prune(keep);
  }

 private:
  void prune(int keep) {
    auto all = steps();
    if (keep <= 0 || all.size() <= static_cast<size_t>(keep)) return;
    for (size_t i = 0; i + keep < all.size(); ++i) {
      std::error_code ec;
      fs::remove(path(all[i]).string() + ".optim", ec);
      fs::remove(path(all[i]), ec);
    }
  }

  fs::path dir_;
};

// metrics.jsonl plus the history the plot and the best model are made from.
class MetricsLog {
 public:
  explicit MetricsLog(const fs::path& out) : path_(out / "metrics.jsonl") {}

  // Keeps the records up to `step` (those after it are about to be made
  // again by the resumed run) and opens the file for appending.
  void open(int64_t step) {
    std::string kept;
    std::ifstream in(path_);
    size_t dropped = 0, bad = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      record j = record::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
        ++bad;  // e.g. a line cut short by a crash
        continue;
      }
      if (j["step"].get<int64_t>() > step) {
        ++dropped;
        continue;
      }
      remember(j);
      kept += line + "\n";
    }
    in.close();
    if (bad) warn(path_.string() + ": " + std::to_string(bad) + " unreadable line(s) left out");
    if (dropped)
      std::printf("metrics: %zu record(s) after step %lld dropped from %s (they are made again)\n", dropped,
                  static_cast<long long>(step), path_.string().c_str());
    if (bad || dropped || kept.empty()) atomic_write_file(path_, kept);
    file_.open(path_, std::ios::app);
    if (!file_) fail("cannot write '" + path_.string() + "'");
  }

  void add(const record& j) {
    remember(j);
    file_ << j.dump() << '\n';
    file_.flush();  // `tail -f` sees every step; a crash loses nothing logged
  }

  struct TrainPoint {
    int64_t step;
    double loss;
  };
  const std::vector<TrainPoint>& train() const { return train_; }
  const std::vector<record>& validation() const { return validation_; }
  double best_si_sdr() const { return best_; }

 private:
  void remember(const record& j) {
    const std::string kind = j.value("kind", "");
    if (kind == "train" && j.contains("loss") && j["loss"].is_number()) {
      train_.push_back({j["step"].get<int64_t>(), j["loss"].get<double>()});
    } else if (kind == "validation") {
      validation_.push_back(j);
      if (j.contains("si_sdr_denoised") && j["si_sdr_denoised"].is_number())
        best_ = std::max(best_, j["si_sdr_denoised"].get<double>());
    }
  }

  fs::path path_;
  std::ofstream file_;
  std::vector<TrainPoint> train_;
  std::vector<record> validation_;
  double best_ = -INFINITY;
};

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::stringstream ss(path);
  for (std::string dir; std::getline(ss, dir, ':');) {
    std::error_code ec;
    const fs::path p = fs::path(dir.empty() ? "." : dir) / program;
    if (fs::is_regular_file(p, ec) && access(p.c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// metrics.png through gnuplot; without it (or when it fails) says so once
// and never tries again.
class Plotter {
 public:
  Plotter(const fs::path& out, bool enabled) : out_(out), enabled_(enabled) {}

  void plot(const MetricsLog& log) {
    if (!enabled_ || log.train().empty()) return;
    if (!on_path("gnuplot")) {
      std::printf("note: gnuplot is not installed; no metrics.png (the metrics are in metrics.jsonl)\n");
      enabled_ = false;
      return;
    }
    const fs::path dir = out_ / "plot";
    fs::create_directories(dir);
    std::ostringstream train, val;
    train.precision(9);
    val.precision(9);
    train << "# step\tloss\tmean of the last 50\n";
    double sum = 0;
    bool positive = true;
    const auto& t = log.train();
    for (size_t i = 0; i < t.size(); ++i) {
      sum += t[i].loss - (i >= 50 ? t[i - 50].loss : 0.0);
      positive = positive && t[i].loss > 0;
      train << t[i].step << '\t' << t[i].loss << '\t' << sum / std::min<size_t>(i + 1, 50) << '\n';
    }
    bool with_stoi = false;
    val << "# step\tsi_sdr_noisy\tsi_sdr_denoised\tsi_sdr_improvement\tstoi_noisy\tstoi_denoised\n";
    auto num = [](const record& j, const char* k) {
      return j.contains(k) && j[k].is_number() ? std::to_string(j[k].get<double>()) : std::string("NaN");
    };
    for (const auto& v : log.validation()) {
      with_stoi = with_stoi || (v.contains("stoi_denoised") && v["stoi_denoised"].is_number());
      val << v["step"].get<int64_t>() << '\t' << num(v, "si_sdr_noisy") << '\t'
          << num(v, "si_sdr_denoised") << '\t' << num(v, "si_sdr_improvement") << '\t' << num(v, "stoi_noisy")
          << '\t' << num(v, "stoi_denoised") << '\n';
    }
    atomic_write_file(dir / "train.tsv", train.str());
    atomic_write_file(dir / "validation.tsv", val.str());
    const bool with_val = !log.validation().empty();
    const int panels = 1 + (with_val ? 1 : 0) + (with_stoi ? 1 : 0);
    std::ostringstream gp;
    gp << "# Made by ssm train; run `gnuplot metrics.gp` in this folder to redraw.\n"
       << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 1000," << 320 * panels
       << " } else { set terminal png size 1000," << 320 * panels << " }\n"
       << "set output '../metrics.png'\n"
       << "set multiplot layout " << panels << ",1\n"
       << "set grid\nset key outside right\nset xlabel 'step'\n"
       << "set lmargin 12\nset rmargin 26\n"  // panels aligned whatever their tick labels
       << "set xrange [0:" << t.back().step << "]\n"
       << "set ylabel 'loss'\n"
       << (positive ? "set logscale y\n" : "")
       << "plot 'train.tsv' using 1:2 with lines lc rgb '#b0c4ff' title 'train', "
          "'' using 1:3 with lines lw 2 lc rgb '#1f3fbf' title 'train (mean of 50)'\n"
       << "unset logscale y\n";
    if (with_val)
      gp << "set ylabel 'SI-SDR (dB)'\n"
            "plot 'validation.tsv' using 1:2 with linespoints title 'noisy', "
            "'' using 1:3 with linespoints title 'denoised', '' using 1:4 with linespoints title 'improvement'\n";
    if (with_stoi)
      gp << "set ylabel 'STOI'\n"
            "plot 'validation.tsv' using 1:5 with linespoints title 'noisy', "
            "'' using 1:6 with linespoints title 'denoised'\n";
    gp << "unset multiplot\n";
    atomic_write_file(dir / "metrics.gp", gp.str());
    const std::string cmd = "cd " + shell_quote(dir.string()) + " && gnuplot metrics.gp > gnuplot.log 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      warn("gnuplot failed (see " + (dir / "gnuplot.log").string() + "); no more plots in this run");
      enabled_ = false;
    }
  }

 private:
  fs::path out_;
  bool enabled_;
};

record validation_record(int64_t step, const ValidationMetrics& m) {
  record j{{"kind", "validation"},
         {"step", step},
         {"items", m.items},
         {"si_sdr_noisy", m.si_sdr_noisy},
         {"si_sdr_denoised", m.si_sdr_denoised},
         {"si_sdr_improvement", m.si_sdr_improvement}};
  if (m.stoi_items > 0) {
    j["stoi_items"] = m.stoi_items;
    j["stoi_noisy"] = m.stoi_noisy;
    j["stoi_denoised"] = m.stoi_denoised;
  }
  return j;
}

// What may differ between a run and its resumption without changing the result.
json result_relevant(json j) {
  j.erase("output");
  j["training"].erase("threads");
  j["training"].erase("device");  // checkpoints move between CPU and GPU
  j["data"].erase("loader_threads");
  j["data"].erase("queue");
  return j;
}

// Refuses a folder that holds a run unless resuming, warns when resuming
// with a config that changes the result, and writes config.json.
void open_output(const fs::path& out, const Checkpoints& checkpoints, bool resume, const json& config,
                 const std::string& config_text) {
  fs::create_directories(out);
  if (!resume && !checkpoints.steps().empty())
    fail("output folder '" + out.string() + "' already holds checkpoints of a run: pass --resume to continue it, "
         "or choose another --out");
  if (resume) {
    std::ifstream prev(out / "config.json");
    json before = json::parse(prev, nullptr, /*allow_exceptions=*/false);
    if (prev && !before.is_discarded() && before.is_object() && before.contains("training") &&
        result_relevant(before) != result_relevant(config))
      warn("the config differs from the run's " + (out / "config.json").string() +
           "; the continuation will not match an uninterrupted run");
  }
  atomic_write_file(out / "config.json", config_text + "\n");
}

// training.init: the run starts from these weights (a checkpoint, when
// resuming, replaces them as it replaces the seeded initialisation).
void start_from_weights(Model& model, const std::string& path) {
  if (path.empty()) return;
  const Model from = Model::load(path);
  require(from.config().to_json_text() == model.config().to_json_text(),
          "training.init '" + path + "': its model config differs from the one being trained");
  std::copy(from.params().data(), from.params().data() + from.params().size(), model.params().data());
  std::printf("starting from the weights in %s\n", path.c_str());
}

// With --resume, loads the newest checkpoint (if any) into `trainer`.
void resume_from_newest(Trainer& trainer, const Checkpoints& checkpoints, const fs::path& out, bool resume) {
  if (!resume) return;
  const auto done = checkpoints.steps();
  if (done.empty()) {
    std::printf("no checkpoint in %s: starting from step 0\n", (out / "checkpoints").string().c_str());
    return;
  }
  const fs::path ckpt = checkpoints.path(done.back());
  trainer.load_checkpoint(ckpt.string());
  std::printf("resumed from %s (step %lld)\n", ckpt.string().c_str(), static_cast<long long>(done.back()));
}

// True when the run already took its last step (the final model is written
// if it is missing).
bool already_finished(const Trainer& trainer, int64_t total, const Model& model, const fs::path& model_path,
                      const std::map<std::string, std::string>& metadata) {
  if (trainer.steps_done() < total) return false;
  std::printf("training already finished (step %lld of %lld)\n", static_cast<long long>(trainer.steps_done()),
              static_cast<long long>(total));
  if (!fs::exists(model_path)) model.save(model_path.string(), metadata);
  return true;
}

// After the loop stopped before the last step (Ctrl-C, SIGTERM or
// --stop-at): keeps the state to resume from and says how; the exit code.
int stopped_early(const Options& o, const fs::path& out, Checkpoints& checkpoints, const Trainer& trainer, int keep,
                  bool saved, Plotter& plotter, const MetricsLog& log, bool by_signal) {
  const int64_t reached = trainer.steps_done();
  if (!saved) checkpoints.save(trainer, keep);
  plotter.plot(log);
  const std::string with_out = o.out.empty() ? "" : " --out " + o.out;
  std::printf("%s at step %lld; checkpoint %s\nresume with: ssm train --config %s%s --resume\n",
              by_signal ? "interrupted" : "stopped (--stop-at)", static_cast<long long>(reached),
              checkpoints.path(reached).string().c_str(), o.config.c_str(), with_out.c_str());
  return by_signal ? 130 : 0;
}

// Says which steps this run takes; returns the last one (--stop-at or the end).
int64_t announce_steps(const Options& o, const Trainer& trainer, const char* unit) {
  const TrainerConfig& t = trainer.config();
  const int64_t total = t.steps, first = trainer.steps_done();
  const int64_t stop_at = o.stop_at > 0 ? std::min(o.stop_at, total) : total;
  const std::string gpus = t.gpus > 1 ? ", " + std::to_string(t.batch) + " on each of " + std::to_string(t.gpus) + " GPUs" : "";
  std::printf("training steps %lld..%lld of %lld (batch %d x %d %s%s)%s\n", static_cast<long long>(first + 1),
              static_cast<long long>(stop_at), static_cast<long long>(total), t.global_batch(), t.segment, unit,
              gpus.c_str(), stop_at < total ? ", then stopping (--stop-at)" : "");
  std::fflush(stdout);
  return stop_at;
}

// One training step, recorded in metrics.jsonl; `seconds` gets its time.
StepStats logged_step(Trainer& trainer, BatchSource& source, MetricsLog& log, double& seconds) {
  const auto t0 = Clock::now();
  const StepStats st = trainer.step(source);
  seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  log.add({{"kind", "train"}, {"step", st.step}, {"loss", st.loss}, {"lr", st.lr}, {"grad_norm", st.grad_norm},
           {"seconds", seconds}});
  return st;
}

TrainConfig load_config(const Options& o) {
  TrainConfig cfg = TrainConfig::from_file(o.config);
  if (o.steps > 0) {
    cfg.training.steps = o.steps;
    if (cfg.training.warmup > o.steps) {
      std::printf("note: training.warmup lowered from %lld to %lld (--steps)\n",
                  static_cast<long long>(cfg.training.warmup), static_cast<long long>(o.steps));
      cfg.training.warmup = o.steps;
    }
  }
  if (o.threads >= 0) cfg.training.threads = o.threads;
  if (!o.device.empty()) cfg.training.device = o.device;
  if (o.gpus > 0) cfg.training.gpus = o.gpus;
  if (!o.init.empty()) cfg.training.init = o.init;
  if (!o.out.empty()) cfg.output.dir = o.out;
  try {
    cfg.validate();
  } catch (const Error& e) {
    fail(o.config + " (with the command-line overrides): " + e.what());
  }
  if (cfg.output.dir.empty()) fail(o.config + ": 'output.dir' is not set (set it, or pass --out DIR)");
  cfg.check_folders();
  return cfg;
}

int run_sound(const Options& o) {
  const auto t_start = Clock::now();
  TrainConfig cfg = load_config(o);
  // Before any file is read or written: a GPU run without a GPU is a setup error.
  if (cfg.training.device == "cuda" && !cuda_available())
    fail(o.config + ": training.device is \"cuda\" but " + cuda_device_description() +
         " (to train on the CPU: --device cpu, or training.device \"cpu\")");
  const fs::path out = cfg.output.dir;
  Checkpoints checkpoints(out);
  open_output(out, checkpoints, o.resume, cfg.to_json(), cfg.to_json_text());

  StopSignals signals;
  const int rate = cfg.model.sample_rate;
  std::printf("loading sound files (at %d Hz) ...\n", rate);
  std::fflush(stdout);
  AudioData data = load_audio_data(cfg, cfg.training.threads, warn);
  std::printf("training data: %zu speech clips (%.1f min), %zu noise clips (%.1f min), %zu pairs; %zu file(s) skipped\n",
              data.train.speech.size(), minutes(data.train.speech, rate), data.train.noise.size(),
              minutes(data.train.noise, rate), data.train.pairs.size(), data.train.skipped + data.validation.skipped);
  const auto val_items = make_validation_set(data.validation, cfg);
  std::printf("held out:      %zu speech clips (%.1f min), %zu pairs; %zu validation items of up to %.1f s\n",
              data.validation.speech.size(), minutes(data.validation.speech, rate), data.validation.pairs.size(),
              val_items.size(), cfg.validation.seconds);
  if (val_items.empty()) std::printf("note: nothing held out for validation; no validation metrics\n");
  if (signals.stopped()) {
    std::printf("interrupted before training started\n");
    return 130;
  }

  Model model(cfg.model);
  model.init(cfg.training.seed);
  start_from_weights(model, cfg.training.init);
  Trainer trainer(model, cfg.training);
  MetricsLog log(out);
  resume_from_newest(trainer, checkpoints, out, o.resume);
  log.open(trainer.steps_done());
  const auto& mc = cfg.model;
  std::printf("model: %s, layers %d, d_model %d, d_state %d, %zu parameters, lookahead %d samples\n",
              block_kind_name(mc.block), mc.n_layers, mc.d_model, mc.d_state, model.num_params(), mc.lookahead);

  const auto& t = cfg.training;
  const int64_t total = t.steps;
  if (already_finished(trainer, total, model, out / "model.safetensors",
                       {{"ssm.step", std::to_string(trainer.steps_done())}}))
    return 0;

  auto examples = std::make_shared<const ExampleSource>(std::move(data.train.speech), std::move(data.train.noise),
                                                        std::move(data.train.pairs), cfg.data.mixer,
                                                        cfg.data.pair_fraction, rate);
  AudioBatchSource source(examples, cfg.data.loader_threads, cfg.data.queue);
  Plotter plotter(out, cfg.output.plot);
  record last_validation;
  auto validate = [&] {
    if (val_items.empty()) return;
    const auto t0 = Clock::now();
    const ValidationMetrics m = validate_denoiser(model, val_items, cfg.validation.stoi);
    const int64_t step = trainer.steps_done();
    const bool best = m.si_sdr_denoised > log.best_si_sdr();
    last_validation = validation_record(step, m);
    log.add(last_validation);
    std::printf("validation @ %lld: SI-SDR %.2f -> %.2f dB (%+.2f dB)", static_cast<long long>(step),
                m.si_sdr_noisy, m.si_sdr_denoised, m.si_sdr_improvement);
    if (m.stoi_items > 0) std::printf("  STOI %.3f -> %.3f", m.stoi_noisy, m.stoi_denoised);
    std::printf("  (%zu items, %.1f s)%s\n", m.items, std::chrono::duration<double>(Clock::now() - t0).count(),
                best ? "  best so far" : "");
    if (best)
      model.save((out / "best.safetensors").string(),
                 {{"ssm.step", std::to_string(step)}, {"ssm.validation", last_validation.dump()}});
  };
  auto checkpoint = [&] { checkpoints.save(trainer, cfg.output.keep_checkpoints); };

  const int64_t first = trainer.steps_done();
  const int64_t stop_at = announce_steps(o, trainer, "samples");
  double train_seconds = 0, window_seconds = 0, wait_before = 0;
  int64_t window_steps = 0;
  bool saved = false;
  while (trainer.steps_done() < stop_at && !signals.stopped()) {
    double dt = 0;
    const StepStats st = logged_step(trainer, source, log, dt);
    train_seconds += dt, window_seconds += dt, ++window_steps;
    saved = false;
    if (st.step % cfg.output.log_every == 0 || st.step == stop_at) {
      const double rate_sps = static_cast<double>(t.global_batch()) * t.segment * window_steps / window_seconds;
      const double eta = train_seconds / (st.step - first) * (total - st.step);
      const double wait = source.wait_seconds() - wait_before;
      std::printf("step %lld/%lld  loss %.4g  lr %.2e  grad %.3g  %.0f samples/s (%.2fx real time)  ETA %s",
                  static_cast<long long>(st.step), static_cast<long long>(total), st.loss, st.lr, st.grad_norm,
                  rate_sps, rate_sps / rate, duration(eta).c_str());
      if (wait > 0.01 * window_seconds) std::printf("  waiting for data %.0f%%", 100 * wait / window_seconds);
      std::printf("\n");
      std::fflush(stdout);
      window_seconds = 0, window_steps = 0, wait_before = source.wait_seconds();
    }
    const int64_t every = cfg.validation.every;
    if (every > 0 && st.step % every == 0 && st.step < total) {
      validate();
      plotter.plot(log);
    }
    const int64_t ce = cfg.output.checkpoint_every;
    if (ce > 0 && st.step % ce == 0 && st.step < total) {
      checkpoint();
      saved = true;
      plotter.plot(log);
    }
    std::fflush(stdout);
  }

  const int64_t reached = trainer.steps_done();
  if (reached < total)
    return stopped_early(o, out, checkpoints, trainer, cfg.output.keep_checkpoints, saved, plotter, log,
                         signals.stopped());
  validate();
  checkpoint();
  std::map<std::string, std::string> meta{{"ssm.step", std::to_string(reached)}};
  if (!last_validation.is_null()) meta["ssm.validation"] = last_validation.dump();
  model.save((out / "model.safetensors").string(), meta);
  plotter.plot(log);
  std::printf("done: %lld steps in %s; model %s\n", static_cast<long long>(reached),
              duration(std::chrono::duration<double>(Clock::now() - t_start).count()).c_str(),
              (out / "model.safetensors").string().c_str());
  return 0;
}

// ---------------------------------------------------------------- forecaster

// The config as JSON when it is a forecaster's (data.kind "series"); null
// otherwise, also when it is no valid JSON or nests deeper than a config
// does: the sound-file config reader then says what is wrong with it.
json series_config(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return nullptr;
  std::stringstream ss;
  ss << f.rdbuf();
  constexpr int kMaxDepth = 64;  // as TrainConfig's reader: error messages dump() values recursively
  bool deep = false;
  json j = json::parse(
      ss.str(),
      [&](int depth, json::parse_event_t event, json&) {
        if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
            depth > kMaxDepth)
          deep = true;
        return !deep;
      },
      /*allow_exceptions=*/false);
  if (deep || j.is_discarded() || !is_series_train_config(j)) return nullptr;
  return j;
}

// The forecaster's config with the command-line overrides, which are
// written into `j` too: config.json and the model's metadata record the run
// as it was made. --out sends the final model to OUT/model.safetensors.
SeriesTrainConfig load_series_config(const Options& o, json& j) {
  SeriesTrainConfig cfg = SeriesTrainConfig::from_json(j, o.config);
  const bool changed = o.steps > 0 || o.threads >= 0 || !o.out.empty();
  if (o.steps > 0) {
    if (cfg.training.warmup > o.steps) {
      std::printf("note: training.warmup lowered from %lld to %lld (--steps)\n",
                  static_cast<long long>(cfg.training.warmup), static_cast<long long>(o.steps));
      j["training"]["warmup"] = o.steps;
    }
    j["training"]["steps"] = o.steps;
  }
  if (o.threads >= 0) j["training"]["threads"] = o.threads;
  if (!o.out.empty()) {
    j["output"]["dir"] = o.out;
    j["output"].erase("model");
  }
  if (changed) cfg = SeriesTrainConfig::from_json(j, o.config + " (with the command-line overrides)");
  if (cfg.output.dir.empty()) fail(o.config + ": 'output.dir' is not set (set it, or pass --out DIR)");
  return cfg;
}

int run_series(const Options& o, json j) {
  const auto t_start = Clock::now();
  const SeriesTrainConfig cfg = load_series_config(o, j);
  const fs::path out = cfg.output.dir;
  const fs::path model_path = cfg.output.model.empty() ? out / "model.safetensors" : fs::path(cfg.output.model);
  Model model(cfg.model);
  const Forecaster fits(model);  // the detector's limits on the model's shape, before any training
  const auto& d = cfg.data;
  auto source = make_series_source(d);  // reads the CSV files: errors before anything is written
  Checkpoints checkpoints(out);
  open_output(out, checkpoints, o.resume, j, j.dump(2));

  StopSignals signals;
  model.init(cfg.training.seed);
  start_from_weights(model, o.init.empty() ? cfg.training.init : o.init);
  std::string folders;
  for (const auto& f : d.folders) folders += (folders.empty() ? "" : ", ") + f;
  if (d.synthetic_fraction >= 1 || folders.empty())
    std::printf("training data: synthetic series only\n");
  else
    std::printf("training data: %.0f%% synthetic series, %.0f%% windows of the CSV files in %s\n",
                100 * d.synthetic_fraction, 100 * (1 - d.synthetic_fraction), folders.c_str());
  std::fflush(stdout);
  Trainer trainer(model, cfg.training);
  MetricsLog log(out);
  resume_from_newest(trainer, checkpoints, out, o.resume);
  log.open(trainer.steps_done());
  const auto& mc = cfg.model;
  std::printf("model: %s, layers %d, d_model %d, d_state %d, %zu parameters; %s\n", block_kind_name(mc.block),
              mc.n_layers, mc.d_model, mc.d_state, model.num_params(),
              d.anomaly_target ? "detector of injected anomalies" : "forecaster of the next value");

  const auto& t = cfg.training;
  const auto& oc = cfg.output;
  const int64_t total = t.steps;
  if (already_finished(trainer, total, model, model_path, cfg.model_metadata())) return 0;

  Plotter plotter(out, oc.plot);
  const int64_t first = trainer.steps_done();
  const int64_t stop_at = announce_steps(o, trainer, "values");
  double train_seconds = 0, window_seconds = 0, window_loss = 0;
  int64_t window_steps = 0;
  bool saved = false;
  while (trainer.steps_done() < stop_at && !signals.stopped()) {
    double dt = 0;
    const StepStats st = logged_step(trainer, *source, log, dt);
    train_seconds += dt, window_seconds += dt, window_loss += st.loss, ++window_steps;
    saved = false;
    if (st.step % oc.log_every == 0 || st.step == stop_at) {
      // One window's loss varies much with its series: the line shows the mean since the last line.
      const double rate_vps = static_cast<double>(t.batch) * t.segment * window_steps / window_seconds;
      const double eta = train_seconds / (st.step - first) * (total - st.step);
      std::printf("step %lld/%lld  loss %.4g (mean of %lld)  lr %.2e  grad %.3g  %.0f values/s  ETA %s\n",
                  static_cast<long long>(st.step), static_cast<long long>(total), window_loss / window_steps,
                  static_cast<long long>(window_steps), st.lr, st.grad_norm, rate_vps, duration(eta).c_str());
      std::fflush(stdout);
      window_seconds = 0, window_loss = 0, window_steps = 0;
    }
    if (oc.checkpoint_every > 0 && st.step % oc.checkpoint_every == 0 && st.step < total) {
      checkpoints.save(trainer, oc.keep_checkpoints);
      saved = true;
      plotter.plot(log);
    }
  }

  const int64_t reached = trainer.steps_done();
  if (reached < total)
    return stopped_early(o, out, checkpoints, trainer, oc.keep_checkpoints, saved, plotter, log, signals.stopped());
  checkpoints.save(trainer, oc.keep_checkpoints);
  model.save(model_path.string(), cfg.model_metadata());
  plotter.plot(log);
  // Loss means over the first and the last log_every steps of the whole run.
  const auto& losses = log.train();
  auto mean = [&](size_t from, size_t to) {
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += losses[i].loss;
    return sum / std::max<size_t>(1, to - from);
  };
  const size_t n = losses.size(), w = std::min<size_t>(n, oc.log_every);
  std::printf("done: %lld steps in %s; loss %.4g -> %.4g (means of the first and last %zu steps); model %s\n",
              static_cast<long long>(reached),
              duration(std::chrono::duration<double>(Clock::now() - t_start).count()).c_str(), mean(0, w),
              mean(n - w, n), w, model_path.string().c_str());
  return 0;
}

int run(const Options& o) {
  if (json j = series_config(o.config); !j.is_null()) return run_series(o, std::move(j));
  return run_sound(o);
}

}  // namespace

int train_from_config(const std::string& config) {
  Options o;
  o.config = config;
  return run(o);
}

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train",
                                 "Train a denoiser on folders of sound files (docs/TRAINING.md), or the anomaly "
                                 "detector's forecaster on series (data.kind \"series\", docs/DETECT.md)");
  static Options o;
  cmd->add_option("--config", o.config, "training config JSON")->required();
  cmd->add_option("--out", o.out, "output folder (overrides output.dir; a forecaster's model then goes there too)");
  cmd->add_option("--steps", o.steps, "total steps (overrides training.steps)")->check(CLI::PositiveNumber);
  cmd->add_option("--threads", o.threads, "compute threads (overrides training.threads; 0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", o.device, "cpu or cuda (overrides training.device)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--gpus", o.gpus,
                  "GPUs sharing each step, data-parallel over NCCL (overrides training.gpus; the global batch is "
                  "gpus x training.batch)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--init", o.init, "start from these weights (.safetensors; overrides training.init)");
  cmd->add_flag("--resume", o.resume, "continue from the newest checkpoint in the output folder");
  cmd->add_option("--stop-at", o.stop_at, "stop after this step with a checkpoint, as if interrupted")
      ->check(CLI::PositiveNumber);
  cmd->callback([] {
    const int rc = run(o);
    std::fflush(stdout);
    if (rc != 0) std::exit(rc);  // every object of the run is gone by now
  });
}

}  // namespace ssm::cli
