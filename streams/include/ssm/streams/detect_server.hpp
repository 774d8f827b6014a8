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
// One thread runs everything (Boost.Asio): no locks on the scoring path, and
// the order of a connection's values is the order they are scored in.
//
// Bounded: a line is at most max_line bytes (longer ones are errors), each
// connection holds one read chunk and one partial line, at most max_series
// series are kept (the least recently seen is evicted with a log line, or
// new ones are refused: `overflow`), and each output holds at most
// max_pending bytes: when a subscriber (or the downstream) falls behind, the
// server stops reading its inputs until it catches up, so TCP pushes back on
// the senders instead of a queue growing (or, with drop_slow, that
// subscriber is disconnected). A downstream that is not connected loses its
// lines (counted) and is redialled every second.
//
// Malformed lines (see GraphiteParser: bad numbers, NaN/inf, missing or
// extra fields, bad or huge epochs, binary bytes, over-long lines, a partial
// line at disconnect) are counted per connection and per kind, logged (the
// first few of each connection) and summed up when the connection closes;
// they never reach a series.
//
// State: with state_dir, every series' detector state is written to
// <state_dir>/series.state (atomically: temp file + rename) every
// snapshot_seconds and at shutdown, and read back at start, so a restarted
// server scores on exactly as an uninterrupted one would. A file written by
// another detector (model or config) is ignored with a log line.
//
// Shutdown (stop(), or SIGTERM / SIGINT with handle_signals): listeners
// close, bytes the inputs already sent are read and scored, partial lines
// are counted, the state is written, and outputs get up to
// drain_seconds to take what they are owed.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>

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
  size_t max_pending = size_t{4} << 20;   // bytes one output may hold before ingest pauses
  bool drop_slow = false;                 // disconnect a subscriber over max_pending instead
  std::string state_dir;                  // "" = no state kept
  double snapshot_seconds = 60;           // 0 = only at shutdown
  double drain_seconds = 5;               // at shutdown, for outputs to take their bytes
  int log_errors_per_connection = 5;      // malformed lines logged in full per connection
  // Where the forecaster steps: "cpu" (each value's step as it is scored) or
  // "cuda" (the model states of all series on the GPU, the steps of the
  // values of one read batched into one launch: ssm/forecast_batch.hpp).
  std::string device = "cpu";

  void validate() const;  // throws ssm::Error naming the field
};

struct DetectServerStats {
  uint64_t connections = 0;     // input connections accepted in all
  uint64_t open_connections = 0;
  uint64_t subscribers = 0;     // connected now (scores and events)
  uint64_t points = 0;          // values scored, repeats and late ones included
  uint64_t repeats = 0, out_of_order = 0;
  uint64_t errors = 0;          // malformed lines, all connections
  uint64_t events = 0;
  uint64_t series = 0;          // held now
  uint64_t evicted = 0, refused = 0;
  uint64_t restored = 0;        // series read back from state_dir at start
  uint64_t snapshots = 0;
  uint64_t dropped_lines = 0;   // score lines a disconnected downstream missed
  uint64_t pauses = 0;          // times ingest paused for a slow output
};

class DetectServer {
 public:
  // Binds every listener (an error names the endpoint) and restores the
  // state. `events` (may be null) receives the event lines, `log` (may be
  // null) one line per notable thing; both are written from run()'s thread.
  DetectServer(DetectServerConfig cfg, std::shared_ptr<const Detector> detector, std::ostream* events,
               std::ostream* log);
  ~DetectServer();
  DetectServer(const DetectServer&) = delete;
  DetectServer& operator=(const DetectServer&) = delete;

  uint16_t port() const;         // the input listener's port
  uint16_t scores_port() const;  // 0 when not listening
  uint16_t events_port() const;

  // Serves until stop() (or SIGTERM / SIGINT when handle_signals), then
  // shuts down as described above and returns.
  void run(bool handle_signals = false);
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
