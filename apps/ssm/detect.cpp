// `ssm detect`: the streaming anomaly detection server (Graphite lines in,
// scores and events out); with --train-config it trains a forecaster instead,
// as `ssm train --config` does.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "commands.hpp"
#include "ssm/cuda.hpp"
#include "ssm/detector.hpp"
#include "ssm/streams/detect_server.hpp"

namespace ssm::cli {

namespace {

struct DetectArgs {
  std::string train_config;
  std::string model, config;
  std::string events = "stdout";
  std::string overflow = "evict";
  std::string slow_scores = "block", slow_events = "block", slow_downstream = "block";
  bool drop_slow = false;
  std::string device = "auto";  // auto: the GPU when one is usable, else the CPU
  DetectServerConfig server;
};

void run_detect(DetectArgs& a) {
  if (!a.train_config.empty()) {  // the same run as `ssm train --config`
    const int rc = train_from_config(a.train_config);
    std::fflush(stdout);
    if (rc != 0) std::exit(rc);
    return;
  }
  require(a.events == "stdout" || a.events == "none", "--events must be 'stdout' or 'none', got '" + a.events + "'");
  require(a.overflow == "evict" || a.overflow == "refuse",
          "--overflow must be 'evict' or 'refuse', got '" + a.overflow + "'");
  a.server.overflow = a.overflow == "evict" ? SeriesOverflow::evict : SeriesOverflow::refuse;
  auto policy = [&](const std::string& v, const char* flag) {
    require(v == "block" || v == "drop", std::string(flag) + " must be 'block' or 'drop', got '" + v + "'");
    return a.drop_slow || v == "drop" ? SlowPolicy::drop : SlowPolicy::block;
  };
  a.server.slow_scores = policy(a.slow_scores, "--slow-scores");
  a.server.slow_events = policy(a.slow_events, "--slow-events");
  a.server.slow_downstream = policy(a.slow_downstream, "--slow-downstream");
  require(a.device == "auto" || a.device == "cpu" || a.device == "cuda",
          "--device must be 'auto', 'cpu' or 'cuda', got '" + a.device + "'");
  a.server.device = a.device == "auto" ? (cuda_available() ? "cuda" : "cpu") : a.device;
  const DetectorConfig dc = a.config.empty() ? DetectorConfig{} : DetectorConfig::from_file(a.config);
  auto det = std::make_shared<const Detector>(Forecaster::load(a.model), dc);
  DetectServer server(a.server, det, a.events == "stdout" ? &std::cout : nullptr, &std::cerr);
  detect_log(std::cerr, std::string("forecaster on ") +
                            (a.server.device == "cuda" ? "the GPU (" + cuda_device_description() + ")"
                             : a.device == "auto"      ? "the CPU (--device auto: " + cuda_device_description() + ")"
                                                       : "the CPU") +
                            "; " + std::to_string(det->state_bytes()) + " bytes of detector state per series");
  // The server logs "listening on ..." once the restore is done.
  if (!server.run(/*handle_signals=*/true)) {
    detect_log(std::cerr, "exit status 1: the final state snapshot failed");
    std::fflush(stdout);
    std::exit(1);
  }
}

}  // namespace

void add_detect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("detect", "Streaming anomaly detection server (Graphite over TCP)");
  auto args = std::make_shared<DetectArgs>();
  DetectServerConfig& s = args->server;
  cmd->add_option("--listen", s.listen, "host:port for Graphite lines in (port 0: any free port)");
  cmd->add_option("--scores", s.scores_listen, "host:port where subscribers receive every score line");
  cmd->add_option("--events-listen", s.events_listen, "host:port where subscribers receive anomaly events (JSON)");
  cmd->add_option("--events", args->events, "anomaly events also to: stdout or none");
  cmd->add_option("--downstream", s.downstream, "host:port sent every score line (redialled when down)");
  cmd->add_option("--event-threshold", s.event_threshold, "a score >= this is an anomaly event");
  cmd->add_option("--prefix", s.score_prefix, "prefix of the score lines' paths");
  cmd->add_option("--max-series", s.max_series, "series kept at most");
  cmd->add_option("--overflow", args->overflow, "at max-series: evict (least recently seen) or refuse");
  cmd->add_option("--max-connections", s.max_connections, "inputs and subscribers together");
  cmd->add_option("--max-line", s.max_line, "bytes of one input line");
  cmd->add_option("--max-pending", s.max_pending, "bytes one output may hold (then its --slow-* policy applies)");
  cmd->add_option("--slow-scores", args->slow_scores,
                  "a scores subscriber max-pending behind: block (pause the inputs) or drop (its lines; disconnected "
                  "after --slow-seconds taking nothing)");
  cmd->add_option("--slow-events", args->slow_events, "the same for events subscribers: block or drop");
  cmd->add_option("--slow-downstream", args->slow_downstream, "the same for the downstream: block or drop");
  cmd->add_flag("--drop-slow", args->drop_slow, "all three --slow-* policies drop");
  cmd->add_option("--slow-seconds", s.slow_seconds, "drop: an output taking nothing this long is disconnected");
  cmd->add_option("--idle-timeout", s.idle_seconds, "seconds an input may send nothing before it is closed (0: never)");
  cmd->add_option("--stats-every", s.stats_seconds,
                  "seconds between stats lines in the log and ssm.detect.* metrics to the scores outputs (0: never)");
  cmd->add_option("--stats-prefix", s.stats_prefix, "path prefix of the server's own metrics");
  cmd->add_option("--state-dir", s.state_dir, "keep series state here (restored at start, written atomically)");
  cmd->add_option("--snapshot-every", s.snapshot_seconds, "seconds between state snapshots (0: at shutdown only)");
  cmd->add_option("--device", args->device,
                  "where the forecaster steps: auto (the GPU when one is usable), cpu, or cuda (all series' steps of a "
                  "read in one GPU launch)");
  cmd->add_option("--threads", s.threads,
                  "scoring threads, each owning the series whose names hash to it (0: one per core)");
  cmd->add_option("--model", args->model, "forecaster (.safetensors); default: the built-in one");
  cmd->add_option("--config", args->config, "detector config JSON (see docs/DETECT.md)");
  cmd->add_option("--train-config", args->train_config,
                  "train a forecaster from this JSON config instead of serving, as ssm train --config does");
  cmd->callback([args] { run_detect(*args); });
}

}  // namespace ssm::cli
