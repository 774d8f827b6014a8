// Anomaly detection scaled out on NATS JetStream: `ssm detect --nats URL`
// (NatsDetector) and the Graphite front door that publishes into the stream
// (NatsPublisher, behind `ssm detect --listen ... --publish-nats URL`).
// Built when libnats was found at configure time (SSM_WITH_NATS).
//
// Streams and buckets (names from NatsConfig; created when absent, checked
// when present, a wrong shape is an error naming the field):
//
//   METRICS      the values. Subjects "metrics.<p>.<suffix>", p = the series'
//                partition, partition_of(name, partitions). A payload is
//                Graphite plaintext lines "path value epoch\n" whose paths
//                all belong to p (the front door sends one message per
//                partition per read, suffix "lines"), or one "value epoch"
//                whose series is the suffix ("metrics.3.web-1.cpu").
//                Limits retention; the duplicate window lets a publisher
//                retry with the same Nats-Msg-Id.
//   SSM_STATE    the checkpoints, a log per partition: "SSM_STATE.<p>.chunk"
//                messages hold series records (name, the stream position of
//                its last value, Detector::save bytes) and
//                "SSM_STATE.<p>.commit" (JSON) says which values of METRICS
//                they cover; "SSM_STATE.config" fixes the partition count
//                and the detector for every instance.
//   ssm_leases   a KV bucket whose max age is the lease TTL: "member.<id>" per
//                live instance, "lease.<p>" = the instance that owns p.
//   ANOMALY      the scores, one message per input message, on
//                "anomaly.score.<p>" (its values' Graphite score lines), and
//                each event on "anomaly.event.<series>" (a JSON line), with
//                message ids derived from the input's stream sequence so a
//                replay after a takeover is dropped as a duplicate.
//
// Each partition is consumed by exactly one instance at a time: the one
// holding its lease, through a durable pull consumer. Every value is scored
// exactly once: its state goes into a checkpoint only after its score is
// stored in ANOMALY, its message is acked only after that checkpoint is
// committed, and an instance taking a partition over loads the checkpoint
// and replays from the value after it (docs/DETECT.md, "Scaling out on NATS
// JetStream").
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>

#include "ssm/detector.hpp"
#include "ssm/streams/detect_server.hpp"

namespace ssm {

struct NatsConfig {
  std::string url;                         // nats://host:port
  size_t partitions = 16;                  // fixed for the cluster's life (SSM_STATE.config)
  std::string stream = "METRICS";          // the values
  std::string subject = "metrics";         // their subjects' first token
  std::string state_stream = "SSM_STATE";  // checkpoints; also their subjects' first token
  std::string bucket = "ssm_leases";       // KV bucket of the leases and members
  std::string out_stream = "ANOMALY";      // scores and events
  std::string out_subject = "anomaly";     // their subjects' first token
  std::string instance;                    // this instance's id; "" = <host>-<pid>
  double lease_seconds = 5;                // lease TTL: a dead instance's partitions move after about this
  double checkpoint_seconds = 5;           // between checkpoints of a partition with new values
  size_t max_inflight = 20000;             // messages delivered and not yet acked per partition
  size_t batch = 256;                      // messages fetched at a time (bytes: a share of 24 MiB per connection)
  double give_up_seconds = 30;             // the server unreachable this long: run() fails
  size_t max_series = 1000000;             // per instance; more are refused and counted
  double event_threshold = 0.5;
  std::string score_prefix = "anomaly.";  // of the score lines' paths, as `ssm detect --prefix`
  double stats_seconds = 60;              // between stats lines in the log; 0 = only at the stop

  void validate() const;  // throws ssm::Error naming the `ssm detect` flag
};

struct NatsStats {
  bool ready = false;      // connected, the streams checked, registered as a member
  uint64_t owned = 0;      // partitions owned now
  uint64_t takeovers = 0;  // partitions taken (a checkpoint loaded, the consumer placed)
  uint64_t releases = 0;   // partitions handed on after a final checkpoint
  uint64_t lost = 0;       // partitions dropped without a checkpoint (lease lost, errors)
  uint64_t messages = 0;   // input messages handled
  uint64_t points = 0;     // values scored
  uint64_t replayed = 0;   // values skipped at a replay: their state was in the checkpoint
  uint64_t repeats = 0, out_of_order = 0;
  uint64_t malformed = 0;        // lines or messages that are not values (all kinds)
  uint64_t wrong_partition = 0;  // of which: a series published to another partition's subject
  uint64_t nan_values = 0;
  uint64_t refused = 0;  // values of series refused at max_series
  uint64_t events = 0;
  uint64_t series = 0;       // held now
  uint64_t checkpoints = 0;  // committed
  uint64_t checkpoint_bytes = 0;
  uint64_t rewinds = 0;       // a failure sent a partition back to its last checkpoint
  uint64_t max_inflight = 0;  // the most messages one partition had unacked
  uint64_t max_fetched = 0;   // the most messages one fetch brought
};

class NatsDetector {
 public:
  // `events` (may be null) receives the event JSON lines, `log` (may be
  // null) one line per notable thing; both from several threads, a line at
  // a time. Throws ssm::Error for a bad config.
  NatsDetector(NatsConfig cfg, std::shared_ptr<const Detector> detector, std::ostream* events, std::ostream* log);
  ~NatsDetector();
  NatsDetector(const NatsDetector&) = delete;
  NatsDetector& operator=(const NatsDetector&) = delete;

  // Connects (retrying up to give_up_seconds), checks or creates the
  // streams and the bucket, and serves until stop() (or SIGTERM / SIGINT /
  // SIGHUP with handle_signals): partitions are taken, scored,
  // checkpointed and, at the stop, checkpointed a last time and handed on.
  // Returns false (the reason logged) when the server could not be reached
  // for give_up_seconds, a stream or bucket has the wrong shape, or the
  // cluster was made for another partition count or detector.
  bool run(bool handle_signals = false);
  void stop();              // thread-safe
  NatsStats stats() const;  // thread-safe
  const std::string& instance() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The Graphite front door's forwarder: each read's values go to METRICS as
// one message per partition ("metrics.<p>.lines", Graphite lines), with a
// message id, so that a publish retried after a lost acknowledgement is
// stored once. At most `max_pending` messages are unacknowledged; then
// point() waits, and so TCP pushes back on the senders. A failed publish
// is retried (the values keep their order within the retried ones); one
// still failing after give_up_seconds is counted as lost and logged.
class NatsPublisher final : public PointForwarder {
 public:
  // Connects (retrying up to cfg.give_up_seconds) and checks or creates
  // METRICS. Throws ssm::Error.
  NatsPublisher(const NatsConfig& cfg, std::ostream* log, size_t max_pending = 4096);
  ~NatsPublisher() override;

  void point(std::string_view path, double value, int64_t epoch) override;
  void flush() override;
  bool finish(double seconds) override;
  std::string summary() const override;

  uint64_t published() const;  // values acknowledged by the stream
  uint64_t lost() const;       // values given up on

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// At the end of a process, once every NatsDetector and NatsPublisher is
// gone: waits up to `seconds` for the NATS client library's threads to end
// and its memory to be released.
void nats_shutdown(double seconds);

// The partition of a series: FNV-1a of its name (the scoring threads of
// `ssm detect --threads` use the same), for publishers of their own.
size_t nats_partition_of(std::string_view series, size_t partitions);
// "<subject>.<p>.<series>" for a value of `series`, e.g. "metrics.3.web-1.cpu".
std::string nats_value_subject(std::string_view subject, std::string_view series, size_t partitions);

}  // namespace ssm
