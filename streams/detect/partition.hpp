// A scoring partition of the detection server: the series whose names hash
// to it, scored on a thread of its own (streams/detect only).
//
// The serving thread parses, and hands each partition Batches through a
// single-producer / single-consumer ring; the partition hands them back,
// filled with score and event lines, through another. A partition owns a
// fixed set of Batches that go round, so neither ring can overflow and the
// serving thread waits (stops reading its inputs) when all of one
// partition's are in flight. Nothing else is shared: no locks on the scoring
// path; only the series count (for the global max_series) is an atomic.
//
// A series' values are scored in the order the serving thread parsed them
// (one partition, FIFO rings), so its scores equal a one-partition server's.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "series_table.hpp"
#include "ssm/forecast_batch.hpp"
#include "ssm/hash.hpp"
#include "ssm/streams/detect_server.hpp"
#include "ssm/streams/ring.hpp"
#include "state_file.hpp"

namespace ssm::detect {

// Which of n partitions the series `name` belongs to: FNV-1a's high 32 bits
// (its low bits mix poorly) scaled to [0, n). A sender can pile its series
// into one partition; that costs only the balance.
inline size_t partition_of(std::string_view name, size_t n) {
  return n == 1 ? 0 : static_cast<size_t>(((fnv1a(name) >> 32) * n) >> 32);
}

// A partition's totals since the start.
struct PartitionCounts {
  uint64_t points = 0, repeats = 0, out_of_order = 0, events = 0, evicted = 0, refused = 0;
};

// The state file read at start, shared by the partitions that load it.
struct StateRead {
  std::vector<uint8_t> bytes;
  std::vector<StateFileEntry> entries;  // views into bytes, oldest first
  std::string error;
};

// What goes to a partition and comes back.
struct Batch {
  enum class Kind : uint8_t {
    values,    // score `values`
    snapshot,  // save every series (a few hundred between value batches); back with `snapshot`
    restore,   // load this partition's entries of `restore` from restore_from on
    clear,     // drop every series (a state file that was not this detector's)
    stop,      // the last one: the partition's thread ends after it
  };
  struct Value {
    uint32_t path_at = 0, path_len = 0;  // in `paths`
    double value = 0;
    int64_t epoch = 0;
    uint64_t seq = 0;  // arrival order across all partitions
  };
  Kind kind = Kind::values;
  // In.
  std::string paths;
  std::vector<Value> values;  // in arrival order
  std::shared_ptr<const StateRead> restore;
  size_t restore_from = 0;
  // Out.
  std::string scores, events;  // lines, for every scores output / events output
  uint64_t score_lines = 0;
  std::vector<std::string> log;  // lines for the server's log
  PartitionCounts counts;        // the partition's totals once this batch is done
  std::unique_ptr<StateFileSegment> snapshot;  // snapshot: the series (null: given up at a stop)
  uint64_t restored = 0;                       // restore: series loaded
  std::string error;                           // restore: why the file is not used

  void add_value(std::string_view path, double value, int64_t epoch, uint64_t seq) {
    values.push_back({static_cast<uint32_t>(paths.size()), static_cast<uint32_t>(path.size()), value, epoch, seq});
    paths.append(path);
  }
  void reset(Kind k) {
    kind = k;
    paths.clear();
    values.clear();
    restore.reset();
    scores.clear();
    events.clear();
    score_lines = 0;
    log.clear();
    snapshot.reset();
    restored = 0;
    error.clear();
  }
};

class Partition {
 public:
  static constexpr size_t kBatches = 8;  // that go round between the serving thread and this one

  // `series_total` counts the series of all partitions (at most
  // cfg.max_series); `quit` set: the thread ends at its next step (a stop
  // before serving, or the destructor). Throws ssm::Error (a GPU that cannot
  // be used).
  Partition(size_t index, size_t partitions, const DetectServerConfig& cfg, const Detector& det, std::atomic<size_t>& series_total,
            const std::atomic<bool>& quit);
  ~Partition();
  Partition(const Partition&) = delete;
  Partition& operator=(const Partition&) = delete;

  // Starts the thread; `returned` is called on it after each batch it hands
  // back (the server posts a drain to its loop).
  void start(std::function<void()> returned);
  // Ends the thread (`quit` must be set) and joins it.
  void join();

  // Serving thread. A free batch, or null when all are in flight.
  Batch* free_batch();
  void submit(Batch* b);
  Batch* take();                 // the next batch back, or null
  void recycle(Batch* b) { free_.push_back(b); }
  void wait_returned(uint32_t since) const { returned_count_.wait(since, std::memory_order_acquire); }
  uint32_t returned_count() const { return returned_count_.load(std::memory_order_acquire); }
  void wake() {
    submitted_.fetch_add(1, std::memory_order_release);
    submitted_.notify_one();
  }

  // Serving thread, only while the partition's thread is not running
  // (before start() or after the stop batch came back): every series.
  StateFileSegment save_all();

 private:
  void loop();
  void handle(Batch* b);
  void give_back(Batch* b);
  void score(Batch& b);
  void process(Series& s, const Batch::Value& v, std::string_view path, Batch& out);
  Series* series_for(std::string_view path, Batch& out);
  Series* add_series(std::string name, SeriesState state, uint64_t seen);
  bool reserve_series();
  void drop_series(std::unique_ptr<Series> s);
  void restore(Batch& b);
  void clear();
  void snapshot_begin(Batch* b);
  void snapshot_step();
  void snapshot_drop();
  void fetch_from_gpu(std::span<Series* const> series);
  void say(Batch& out, std::string text) { out.log.push_back(std::move(text)); }

  const size_t index_, partitions_;  // this one's index, of how many
  const DetectServerConfig& cfg_;
  const Detector& det_;
  std::atomic<size_t>& series_total_;
  const std::atomic<bool>& quit_;
  SeriesTable table_;
  std::unique_ptr<ForecastBatch> gpu_;  // device "cuda": the series' model states and their queued steps
  PartitionCounts counts_;
  std::vector<uint64_t> hashes_;  // (values of a batch) their table hashes
  // A snapshot under way: the series still to save, oldest first, with their
  // last value's sequence number when it began (a null entry: evicted
  // before its turn).
  struct SnapshotRun {
    Batch* batch = nullptr;  // null: none under way
    std::vector<Series*> order;
    std::vector<uint64_t> seen;
    size_t at = 0;
    std::unique_ptr<StateFileSegment> out;
  } snap_;

  std::vector<std::unique_ptr<Batch>> owned_;  // (kBatches)
  std::vector<Batch*> free_;                   // serving thread's
  SpscRing<Batch*> to_partition_{kBatches}, to_server_{kBatches};
  std::atomic<uint32_t> submitted_{0};  // bumped after each submit: the thread's wake-up
  std::atomic<uint32_t> returned_count_{0};  // bumped after each batch handed back
  std::function<void()> returned_;
  std::thread thread_;
};

}  // namespace ssm::detect
