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
  require(a.device == "auto" || a.device == "cpu" || a.device == "cuda",
          "--device must be 'auto', 'cpu' or 'cuda', got '" + a.device + "'");
  a.server.device = a.device == "auto" ? (cuda_available() ? "cuda" : "cpu") : a.device;
  const DetectorConfig dc = a.config.empty() ? DetectorConfig{} : DetectorConfig::from_file(a.config);
  auto det = std::make_shared<const Detector>(Forecaster::load(a.model), dc);
  DetectServer server(a.server, det, a.events == "stdout" ? &std::cout : nullptr, &std::cerr);
  std::string where = "listening on " + parse_host_port(a.server.listen, "--listen").host + ":" +
                      std::to_string(server.port());
  if (server.scores_port()) where += ", scores on port " + std::to_string(server.scores_port());
  if (server.events_port()) where += ", events on port " + std::to_string(server.events_port());
  if (!a.server.downstream.empty()) where += ", scores to " + a.server.downstream;
  where += a.server.device == "cuda" ? ", forecaster on the GPU (" + cuda_device_description() + ")"
                                     : std::string(", forecaster on the CPU");
  std::cerr << "ssm detect: " << where << "; " << det->state_bytes() << " bytes of detector state per series"
            << std::endl;
  server.run(/*handle_signals=*/true);
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
  cmd->add_option("--max-pending", s.max_pending, "bytes one output may hold before inputs are paused");
  cmd->add_flag("--drop-slow", s.drop_slow, "disconnect a subscriber that falls max-pending behind instead");
  cmd->add_option("--state-dir", s.state_dir, "keep series state here (restored at start, written atomically)");
  cmd->add_option("--snapshot-every", s.snapshot_seconds, "seconds between state snapshots (0: at shutdown only)");
  cmd->add_option("--device", args->device,
                  "where the forecaster steps: auto (the GPU when one is usable), cpu, or cuda (all series' steps of a "
                  "read in one GPU launch)");
  cmd->add_option("--model", args->model, "forecaster (.safetensors); default: the built-in one");
  cmd->add_option("--config", args->config, "detector config JSON (see docs/DETECT.md)");
  cmd->add_option("--train-config", args->train_config,
                  "train a forecaster from this JSON config instead of serving, as ssm train --config does");
  cmd->callback([args] { run_detect(*args); });
}

}  // namespace ssm::cli
