// `ssm detect`: the streaming anomaly detection server (Graphite lines in,
// scores and events out); with --nats an instance of a cluster on NATS
// JetStream, with --publish-nats the Graphite front door of one; with
// --train-config it trains a forecaster instead, as `ssm train --config` does.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "commands.hpp"
#include "ssm/cuda.hpp"
#include "ssm/detector.hpp"
#include "ssm/streams/detect_server.hpp"
#if SSM_WITH_NATS
#include "ssm/streams/nats.hpp"
#endif

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
  // A cluster on NATS JetStream (docs/DETECT.md).
  std::string nats_url, publish_nats;
  size_t nats_partitions = 16;
  std::string nats_stream = "METRICS", nats_subject = "metrics", nats_state_stream = "SSM_STATE";
  std::string nats_bucket = "ssm_leases", nats_out_stream = "ANOMALY", nats_out_subject = "anomaly";
  std::string nats_instance;
  double nats_lease_ttl = 5, nats_checkpoint = 5, nats_give_up = 30;
  size_t nats_max_inflight = 20000, nats_batch = 256;
};

#if SSM_WITH_NATS
NatsConfig nats_config(const DetectArgs& a, const std::string& url) {
  NatsConfig n;
  n.url = url;
  n.partitions = a.nats_partitions;
  n.stream = a.nats_stream;
  n.subject = a.nats_subject;
  n.state_stream = a.nats_state_stream;
  n.bucket = a.nats_bucket;
  n.out_stream = a.nats_out_stream;
  n.out_subject = a.nats_out_subject;
  n.instance = a.nats_instance;
  n.lease_seconds = a.nats_lease_ttl;
  n.checkpoint_seconds = a.nats_checkpoint;
  n.give_up_seconds = a.nats_give_up;
  n.max_inflight = a.nats_max_inflight;
  n.batch = a.nats_batch;
  n.max_series = a.server.max_series;
  n.event_threshold = a.server.event_threshold;
  n.score_prefix = a.server.score_prefix;
  n.stats_seconds = a.server.stats_seconds;
  return n;
}

// --nats and/or --publish-nats: an instance of the cluster, the Graphite
// front door, or both in one process. Whether all went well.
bool serve_nats(DetectArgs& a, const std::shared_ptr<const Detector>& det) {
  require(a.server.state_dir.empty(), "--state-dir keeps a single process's state; with --nats the state is in "
                                      "the NATS state stream (--nats-state-stream)");
  std::unique_ptr<NatsDetector> instance;
  if (!a.nats_url.empty()) {
    require(a.device != "cuda", "--device cuda: a --nats instance steps its forecaster on the CPU");
    instance = std::make_unique<NatsDetector>(nats_config(a, a.nats_url), det,
                                              a.events == "stdout" ? &std::cout : nullptr, &std::cerr);
  }
  if (a.publish_nats.empty()) return instance->run(/*handle_signals=*/true);
  NatsPublisher publisher(nats_config(a, a.publish_nats), &std::cerr);
  a.server.device = "cpu";
  DetectServer server(a.server, det, nullptr, &std::cerr, &publisher);
  bool instance_ok = true;
  std::thread t;
  if (instance) t = std::thread([&] { instance_ok = instance->run(false); });
  const bool ok = server.run(/*handle_signals=*/true);
  if (instance) {
    instance->stop();
    t.join();
  }
  if (!ok) detect_log(std::cerr, "exit status 1: values the front door took were not all stored in the stream");
  return ok && instance_ok;
}

void run_nats(DetectArgs& a, const std::shared_ptr<const Detector>& det) {
  const bool ok = serve_nats(a, det);
  nats_shutdown(2);
  std::fflush(stdout);
  if (!ok) std::exit(1);
}
#endif

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
  if (!a.nats_url.empty() || !a.publish_nats.empty()) {
#if SSM_WITH_NATS
    return run_nats(a, det);
#else
    not_available("ssm detect --nats / --publish-nats",
                  "this ssm was built without NATS support: libnats (Debian: libnats-dev) was not found when it "
                  "was configured");
#endif
  }
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
  auto* nats = "NATS JetStream cluster (docs/DETECT.md)";
  cmd->add_option("--nats", args->nats_url, "serve as an instance of a cluster on NATS JetStream at this URL "
                                             "(nats://host:port) instead of over TCP")
      ->group(nats);
  cmd->add_option("--publish-nats", args->publish_nats,
                  "with --listen: the Graphite front door, publishing every value into the stream at this URL")
      ->group(nats);
  cmd->add_option("--nats-partitions", args->nats_partitions, "partitions of the series (fixed for a cluster's life)")
      ->group(nats);
  cmd->add_option("--nats-stream", args->nats_stream, "stream of the values")->group(nats);
  cmd->add_option("--nats-subject", args->nats_subject, "first token of the values' subjects (<subject>.<p>.<series>)")
      ->group(nats);
  cmd->add_option("--nats-state-stream", args->nats_state_stream, "stream of the checkpoints (names the cluster)")
      ->group(nats);
  cmd->add_option("--nats-bucket", args->nats_bucket, "KV bucket of the leases and members")->group(nats);
  cmd->add_option("--nats-out-stream", args->nats_out_stream,
                  "stream of the scores and events (\"\": plain subjects, no duplicate window)")
      ->group(nats);
  cmd->add_option("--nats-out-subject", args->nats_out_subject,
                  "first token of the output subjects (<s>.score.<p>, <s>.event.<series>)")
      ->group(nats);
  cmd->add_option("--nats-instance", args->nats_instance, "this instance's id (default <host>-<pid>)")->group(nats);
  cmd->add_option("--nats-lease-ttl", args->nats_lease_ttl,
                  "seconds a lease lives unrenewed: a dead instance's partitions move after about this")
      ->group(nats);
  cmd->add_option("--nats-checkpoint-every", args->nats_checkpoint, "seconds between a partition's checkpoints")
      ->group(nats);
  cmd->add_option("--nats-max-inflight", args->nats_max_inflight,
                  "messages a partition may have delivered and not acked (then the server holds back)")
      ->group(nats);
  cmd->add_option("--nats-batch", args->nats_batch, "messages fetched at a time")->group(nats);
  cmd->add_option("--nats-give-up", args->nats_give_up,
                  "seconds the NATS server may be unreachable before the process exits with status 1")
      ->group(nats);
  cmd->add_option("--model", args->model, "forecaster (.safetensors); default: the built-in one");
  cmd->add_option("--config", args->config, "detector config JSON (see docs/DETECT.md)");
  cmd->add_option("--train-config", args->train_config,
                  "train a forecaster from this JSON config instead of serving, as ssm train --config does");
  cmd->callback([args] { run_detect(*args); });
}

}  // namespace ssm::cli
