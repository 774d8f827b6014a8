// One partition owned by this instance: its thread takes it over (the
// checkpoint loaded, the durable consumer placed after it), scores what
// the consumer delivers, publishes the scores and events, checkpoints and
// acks, and at a release writes a last checkpoint (streams/nats only).
//
// The order that makes every value scored exactly once:
//   1. a fetched message's values are scored (those a loaded series already
//      holds, Pos <= its own, are skipped) and its score message goes to
//      ANOMALY with the id "<stream>:<seq>";
//   2. a checkpoint writes the series changed up to the last message handled
//      (chunks, one between two fetches, each only once the score messages
//      of every value it holds are stored), then the commit of that
//      message's sequence, compare-and-set on the commit subject's last
//      sequence (so a commit never races another owner's), then acks that
//      message (AckAll);
//   3. a failure anywhere (the server gone, a delivery lost, a publish not
//      stored) sends the partition back to its last commit: its series are
//      dropped and loaded again and the consumer placed again, so values
//      are scored again from there, with the same results, and their score
//      messages are dropped by ANOMALY's duplicate window.
// Deliveries are checked to come in consumer-sequence order; a gap (a
// delivery lost with a connection) is such a failure.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "client.hpp"
#include "layout.hpp"
#include "ssm/streams/graphite.hpp"

namespace ssm::nats {

// A partition's commit made by another instance: it owns the partition now.
struct Lost : Error {
  using Error::Error;
};

// The instance's totals, summed over its partitions (NatsStats).
struct Counters {
  std::atomic<uint64_t> messages{0}, points{0}, replayed{0}, repeats{0}, out_of_order{0}, malformed{0},
      wrong_partition{0}, nan_values{0}, refused{0}, events{0}, checkpoints{0}, checkpoint_bytes{0}, rewinds{0},
      takeovers{0}, max_inflight{0}, max_fetched{0};
  std::atomic<size_t> series{0};  // held by all partitions (at most max_series)
  static void raise(std::atomic<uint64_t>& a, uint64_t v) {
    uint64_t cur = a.load(std::memory_order_relaxed);
    while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }
};

// What the partitions of one instance share; the functions are thread-safe.
struct Shared {
  Shared(const NatsConfig& c, const Detector& d, Connection& cn)
      : cfg(c), names(c), det(d), conn(cn), instance(c.instance) {}
  const NatsConfig& cfg;
  Layout names;
  const Detector& det;
  Connection& conn;
  std::string instance;
  std::function<void(const std::string&)> say;       // a log line
  std::function<void(std::string_view)> events_out;  // event lines (may be empty)
  std::function<void(const std::string&)> fatal;     // the instance cannot go on (a checkpoint it cannot read)
  Counters counts;
  // The partitions' fetches share one connection, whose bytes in flight
  // from the server must stay below the server's max_pending (64 MiB by
  // default), or it drops the connection as a slow consumer: each fetch may
  // bring its share of kFetchBudget.
  static constexpr int64_t kFetchBudget = int64_t{24} << 20;
  std::atomic<size_t> consumers{0};
  int64_t fetch_bytes() const {
    const auto n = static_cast<int64_t>(std::max<size_t>(1, consumers.load(std::memory_order_relaxed)));
    return std::clamp<int64_t>(kFetchBudget / n, int64_t{256} << 10, int64_t{4} << 20);
  }
};

class PartitionConsumer {
 public:
  PartitionConsumer(size_t partition, Shared& shared);
  ~PartitionConsumer();  // abort() and join
  PartitionConsumer(const PartitionConsumer&) = delete;
  PartitionConsumer& operator=(const PartitionConsumer&) = delete;

  void start();
  // A last checkpoint, then the thread ends (a graceful hand-on).
  void release() { release_.store(true, std::memory_order_release); }
  // The thread ends at its next step, writing nothing more (the lease is lost).
  void abort() { abort_.store(true, std::memory_order_release); }
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  bool released() const { return released_.load(std::memory_order_acquire); }
  size_t partition() const { return p_; }

 private:
  struct Rec {
    SeriesState state;
    Pos pos;  // of its last value
    bool dirty = false;
  };
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  void run();
  void take_over();
  void load_chunks(uint64_t from, uint64_t until);
  void place_consumer();
  void consume();
  void handle(natsMsg* m);
  void score(std::string_view path, double value, int64_t epoch);
  void publish_output(const std::string& subject, std::string_view data, const char* id);
  void begin_checkpoint();
  void checkpoint_step();
  void last_checkpoint();
  void wait_stored(const JetStream& js, const char* what);
  void commit(const Commit& c);
  void rewind();
  bool stopping() const { return abort_.load(std::memory_order_acquire); }
  void drop_series();
  void add_counts();
  static void on_publish_error(jsCtx* js, jsPubAckErr* pae, void* closure);

  const size_t p_;
  Shared& sh_;
  const std::string filter_, chunk_subject_, commit_subject_, score_subject_, consumer_;
  std::atomic<bool> release_{false}, abort_{false}, finished_{false}, released_{false};
  std::thread thread_;

  // Series of the partition, and those changed since the last checkpoint.
  std::unordered_map<std::string, Rec, NameHash, std::equal_to<>> table_;
  std::vector<std::pair<std::string_view, Rec*>> dirty_;
  // A checkpoint under way: the series it writes, a chunk between fetches.
  struct CheckpointRun {
    bool active = false, full = false;
    std::vector<std::pair<std::string_view, Rec*>> set;
    size_t at = 0;          // of set: written so far
    uint64_t seq = 0;       // the last message handled when it began: what the commit covers
    std::string reply;      // that message's ack subject
    uint64_t inflight = 0;  // messages handled by then and not acked
    uint64_t bytes = 0, chunks = 0;
  } ck_;
  size_t state_bytes_ = 0;  // of one saved series (for the size of the log)

  // The consumer and where it stands.
  JetStream js_, chunk_js_;  // scores and events (async) and commits; chunks (async)
  SubPtr sub_;
  bool loaded_ = false;
  Commit commit_;            // the last one committed (or claimed at the takeover)
  uint64_t commit_seq_ = 0;  // its sequence in SSM_STATE
  uint64_t last_seq_ = 0;    // METRICS sequence of the last message handled
  uint64_t last_consumer_seq_ = 0;
  std::string last_reply_;  // its ack subject
  uint64_t inflight_ = 0;   // messages handled since the last ack
  bool idle_ = false;       // the last fetch found nothing: wait for one message
  int64_t last_checkpoint_ns_ = 0;

  uint64_t reconnects_ = 0;  // the connection's count when the partition was taken

  // The message being handled, and the counts of its values.
  struct Local {
    uint64_t points = 0, replayed = 0, repeats = 0, out_of_order = 0, events = 0, wrong_partition = 0;
  } local_;
  GraphiteParser parser_;
  std::string scratch_, scores_, event_;
  Pos at_;
  uint64_t points_seen_ = 0, errors_seen_ = 0, nans_seen_ = 0;  // the parser's counts before this message
  int logged_malformed_ = 0;

  // Publishes that failed (set on the client's thread).
  std::mutex failed_mu_;
  std::string failed_;
  std::atomic<bool> publish_failed_{false};
};

}  // namespace ssm::nats
