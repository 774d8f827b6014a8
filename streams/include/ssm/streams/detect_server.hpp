// The streaming anomaly detection server behind `ssm detect`.
//
//   inputs       TCP, Graphite plaintext ("path value epoch\n"), any number of
//                connections (up to max_connections); one series per path
//   scores       every value's score as a Graphite line,
//                "<score_prefix><path>.score <score> <epoch>\n", to every
//                subscriber of scores_listen and to a downstream host:port
//   events       values scoring >= event_threshold as JSON lines,
//                {"series":..,"time":..,"value":..,"prediction":..,
//                 "score":..,"likelihood":..,"kind":..}, to the events
//                stream (stdout for the CLI) and every subscriber of
//                events_listen
//
// One thread runs the serving (Boost.Asio): accepting, reading, parsing and
// writing. Scoring runs on `threads` threads, each owning a partition of the
// series (by a hash of the name, so a series always goes to the same one):
// the serving thread hands each partition batches of values and gets them
// back with their score and event lines (partition.hpp), no locks on the
// scoring path. A series' values are scored in the order they arrive, so its
// scores depend on its own values only and equal a one-thread server's; the
// lines of different partitions may interleave, those of one series never
// change order. Threads of their own read the state file at start and write
// snapshots.
//
// Bounded: a line is at most max_line bytes (longer ones are errors), each
// connection holds one read chunk and one partial line, at most max_series
// series are kept in all partitions together (then a new series evicts the
// least recently seen series of its own partition, with a log line, or is
// refused: `overflow`; a partition that holds none refuses), and each output
// holds at most
// max_pending bytes. What an output over max_pending does is its policy
// (SlowPolicy, one per kind of output: scores subscribers, events
// subscribers, the downstream):
//   block  the server stops reading its inputs until the output catches up,
//          so TCP pushes back on the senders (logged when it starts and ends);
//   drop   its new lines are dropped and counted (the inputs go on), and when
//          it stays over max_pending for slow_seconds without taking a byte,
//          it is disconnected (the downstream is redialled).
// A downstream that is not connected loses its lines (counted) and is
// redialled every second. Idle input connections are closed after
// idle_seconds; every socket has TCP keepalive.
//
// Malformed lines (see GraphiteParser) are counted per connection and per
// kind, logged (the first few of each connection) and summed up when the
// connection closes; they never reach a series. Every value that gets no
// score is counted: malformed lines, "nan" values, values refused at
// max_series; repeats and out-of-order values are scored and counted. The
// counts are in the shutdown summary, in a stats line every stats_seconds,
// and sent as Graphite metrics "<stats_prefix><name> <value> <epoch>" to the
// scores outputs.
//
// State: with state_dir, every series' detector state is written to
// <state_dir>/series.state (atomically: temp file + rename) every
// snapshot_seconds and at shutdown, and read back at start, so a restarted
// server scores on exactly as an uninterrupted one would, with any number of
// threads. A snapshot is taken by each partition a few hundred series
// between its batches of values (so scoring goes on meanwhile; a series
// changed during it is saved as it is when its turn comes); a thread of its
// own merges the parts (oldest first by the last value, whatever the
// partitions) and writes the file. The restore runs before the listeners
// listen: run() reads the file on a thread, the partitions load their
// series of it (a stop is honoured at any moment; then the file is left as
// it was), the newest max_series are kept, and only then are connections
// accepted.
// Temp files of a snapshot whose process was killed are removed at start.
// A file written by another detector (model or config) is ignored with a
// log line.
//
// Shutdown (stop(), or SIGTERM / SIGINT / SIGHUP with handle_signals):
// listeners close, bytes the inputs already sent are read and scored,
// partial lines are counted, the state is written, and outputs get up to
// drain_seconds to take what they are owed.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>

#include "ssm/detector.hpp"

namespace ssm {

struct HostPort {
  std::string host;
  uint16_t port = 0;  // 0: any free port (listeners)
};
// "127.0.0.1:2003", "localhost:2003", "[::1]:2003". Throws ssm::Error
// naming `what` and the text.
HostPort parse_host_port(const std::string& text, const std::string& what);

enum class SeriesOverflow { evict, refuse };
enum class SlowPolicy { block, drop };

// A log line: "<UTC time> ssm detect: <text>\n", e.g.
// "2026-12-03T19:20:01.123Z ssm detect: listening on 127.0.0.1:2003".
void detect_log(std::ostream& log, std::string_view text);

struct DetectServerConfig {
  std::string listen = "127.0.0.1:2003";  // Graphite lines in
  std::string scores_listen;              // score-line subscribers; "" = none
  std::string events_listen;              // event subscribers; "" = none
  std::string downstream;                 // host:port sent every score line; "" = none
  std::string score_prefix = "anomaly.";
  double event_threshold = 0.5;           // a score >= this is an event
  size_t max_series = 100000;
  SeriesOverflow overflow = SeriesOverflow::evict;
  size_t max_connections = 1024;          // inputs and subscribers together
  size_t max_line = 4096;                 // bytes of one input line
  size_t read_chunk = 65536;              // bytes read from a connection at a time
  size_t max_pending = size_t{4} << 20;   // bytes one output may hold
  SlowPolicy slow_scores = SlowPolicy::block;      // scores subscribers over max_pending
  SlowPolicy slow_events = SlowPolicy::block;      // events subscribers
  SlowPolicy slow_downstream = SlowPolicy::block;  // the downstream
  double slow_seconds = 5;                // drop: disconnected after this long over, taking nothing
  double idle_seconds = 600;              // an input sending nothing this long is closed; 0 = never
  double stats_seconds = 60;              // stats line and metrics; 0 = only at shutdown
  std::string stats_prefix = "ssm.detect.";  // of the server's own metrics
  std::string state_dir;                  // "" = no state kept
  double snapshot_seconds = 60;           // 0 = only at shutdown
  double drain_seconds = 5;               // at shutdown, for outputs to take their bytes
  int log_errors_per_connection = 5;      // malformed lines logged in full per connection
  // Where the forecaster steps: "cpu" (each value's step as it is scored) or
  // "cuda" (the model states of all series on the GPU, the steps of the
  // values of one read batched into one launch: ssm/forecast_batch.hpp).
  std::string device = "cpu";
  // Scoring threads (partitions of the series by a hash of the name); 0 =
  // one per core, at most 64. The GPU (device "cuda") is driven by one.
  int threads = 0;

  void validate() const;  // throws ssm::Error naming the `ssm detect` flag
  size_t partitions() const;  // `threads` resolved
};

struct DetectServerStats {
  bool listening = false;       // the restore is done and connections are taken
  uint64_t connections = 0;     // input connections accepted in all
  uint64_t open_connections = 0;
  uint64_t idle_closed = 0;     // input connections closed after idle_seconds
  uint64_t subscribers = 0;     // connected now (scores and events)
  uint64_t points = 0;          // values scored, repeats and late ones included
  uint64_t forwarded = 0;       // values handed to the PointForwarder
  uint64_t repeats = 0, out_of_order = 0;
  uint64_t errors = 0;          // malformed lines, all connections
  uint64_t nan_values = 0;      // "nan" values: not scored
  uint64_t events = 0;
  uint64_t series = 0;          // held now
  uint64_t evicted = 0, refused = 0;  // refused: values of series refused at max_series
  uint64_t restored = 0;        // series read back from state_dir at start
  uint64_t snapshots = 0;       // written
  uint64_t snapshot_failures = 0;
  bool snapshot_busy = false;   // a snapshot is being taken or written now
  uint64_t dropped_lines = 0;   // lines a disconnected downstream or a dropping output missed
  uint64_t slow_dropped = 0;    // outputs disconnected for staying over max_pending
  uint64_t pauses = 0;          // times ingest paused for a slow output
  uint64_t max_held = 0;        // the most bytes one output held
};

// Where a server that forwards its values instead of scoring them sends
// them (the Graphite front door of a cluster, ssm/streams/nats.hpp). Called
// on the serving thread: point() for each value in arrival order, flush()
// at the end of each read's values; either may block, and the inputs then
// wait (TCP pushes back on the senders). finish() at shutdown, after the
// last value: waits up to `seconds` until everything forwarded is safe;
// false when something was lost (the forwarder logs what).
class PointForwarder {
 public:
  virtual ~PointForwarder() = default;
  virtual void point(std::string_view path, double value, int64_t epoch) = 0;
  virtual void flush() = 0;
  virtual bool finish(double seconds) = 0;
  virtual std::string summary() const = 0;  // for the stats line and the shutdown summary
};

class DetectServer {
 public:
  // Binds every listener (an error names the endpoint; run() listens) and
  // removes stale snapshot temp files. `events` (may be null) receives the event lines, `log` (may be
  // null) one line per notable thing; both are written from run()'s thread.
  // With `forward`, the values go there instead of being scored (no
  // scores, events or state: state_dir must be empty); it must outlive the
  // server, and run() returns false when its finish() does.
  DetectServer(DetectServerConfig cfg, std::shared_ptr<const Detector> detector, std::ostream* events,
               std::ostream* log, PointForwarder* forward = nullptr);
  ~DetectServer();
  DetectServer(const DetectServer&) = delete;
  DetectServer& operator=(const DetectServer&) = delete;

  uint16_t port() const;         // the input listener's port
  uint16_t scores_port() const;  // 0 when not listening
  uint16_t events_port() const;

  // Restores the state, listens, serves until stop() (or SIGTERM / SIGINT /
  // SIGHUP when handle_signals, which also ignores SIGPIPE), then shuts down
  // as described above. Returns false when the final state snapshot failed.
  bool run(bool handle_signals = false);
  // Thread-safe; run() returns after the shutdown.
  void stop();

  DetectServerStats stats() const;  // thread-safe
  // Bytes one series costs: its detector state, name and table entry
  // (for a name of `name_bytes`).
  size_t series_bytes(size_t name_bytes) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
