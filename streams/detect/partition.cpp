// A scoring partition: its thread's loop, scoring with eviction or refusal at
// the global max_series, its part of a snapshot (a few hundred series
// between value batches) and of the restore.
#include "partition.hpp"

#include <algorithm>

#include "output_lines.hpp"

namespace ssm::detect {

namespace {

constexpr size_t kSnapshotChunk = 256;  // series saved between two value batches
constexpr size_t kRestoreChunk = 1024;  // entries looked at between two checks of `quit`

// The first 10 of a kind of notable value, then every 10000th.
bool worth_logging(uint64_t n) { return n <= 10 || n % 10000 == 0; }

}  // namespace

Partition::Partition(size_t index, size_t partitions, const DetectServerConfig& cfg, const Detector& det,
                     std::atomic<size_t>& series_total, const std::atomic<bool>& quit)
    : index_(index), partitions_(partitions), cfg_(cfg), det_(det), series_total_(series_total), quit_(quit) {
  if (cfg.device == "cuda") gpu_ = std::make_unique<ForecastBatch>(det, static_cast<int>(cfg.max_series), "cuda");
  for (size_t i = 0; i < kBatches; ++i) {
    owned_.push_back(std::make_unique<Batch>());
    free_.push_back(owned_.back().get());
  }
}

Partition::~Partition() { join(); }

void Partition::start(std::function<void()> returned) {
  returned_ = std::move(returned);
  thread_ = std::thread([this] { loop(); });
}

void Partition::join() {
  if (!thread_.joinable()) return;
  wake();
  thread_.join();
}

Batch* Partition::free_batch() {
  if (free_.empty()) return nullptr;
  Batch* b = free_.back();
  free_.pop_back();
  return b;
}

void Partition::submit(Batch* b) {
  to_partition_.push(&b, 1);  // never full: at most kBatches exist
  wake();
}

Batch* Partition::take() {
  Batch* b = nullptr;
  return to_server_.pop(&b, 1) ? b : nullptr;
}

void Partition::give_back(Batch* b) {
  b->counts = counts_;
  to_server_.push(&b, 1);  // never full: at most kBatches exist
  returned_count_.fetch_add(1, std::memory_order_release);
  returned_count_.notify_one();
  returned_();
}

void Partition::loop() {
  for (;;) {
    const uint32_t wake_seen = submitted_.load(std::memory_order_acquire);
    if (quit_.load(std::memory_order_acquire)) return;
    Batch* b = nullptr;
    const bool got = to_partition_.pop(&b, 1) == 1;
    if (got) {
      const bool last = b->kind == Batch::Kind::stop;
      handle(b);
      if (last) return;
    }
    // Values first, then one step of a snapshot under way: both go on.
    if (snap_.batch) {
      snapshot_step();
      continue;
    }
    if (!got) submitted_.wait(wake_seen, std::memory_order_acquire);
  }
}

void Partition::handle(Batch* b) {
  switch (b->kind) {
    case Batch::Kind::values:
      score(*b);
      break;
    case Batch::Kind::snapshot:
      return snapshot_begin(b);  // handed back when done
    case Batch::Kind::restore:
      restore(*b);
      break;
    case Batch::Kind::clear:
      clear();
      break;
    case Batch::Kind::stop:
      snapshot_drop();
      break;
  }
  give_back(b);
}

// ------------------------------------------------------------ scoring

// Values are scored one behind the lookup: the series of the newest is
// looked up and its state prefetched while the one before is scored, so
// that the cache misses of a state overlap work instead of stalling it; the
// table slots of values further ahead, and then their series, are fetched
// earlier still.
void Partition::score(Batch& b) {
  constexpr size_t kSlotAhead = 16, kSeriesAhead = 8;
  const size_t n = b.values.size();
  auto path_of = [&b](const Batch::Value& v) { return std::string_view(b.paths.data() + v.path_at, v.path_len); };
  hashes_.resize(n);
  for (size_t i = 0; i < n; ++i) hashes_[i] = SeriesTable::hash_of(path_of(b.values[i]));
  Series* pending = nullptr;
  const Batch::Value* pending_v = nullptr;
  for (size_t i = 0; i < n; ++i) {
    if (i + kSlotAhead < n) table_.prefetch_slot(hashes_[i + kSlotAhead]);
    if (i + kSeriesAhead < n) table_.prefetch_series(hashes_[i + kSeriesAhead]);
    const Batch::Value& v = b.values[i];
    const std::string_view path = path_of(v);
    Series* s = table_.find(path, hashes_[i]);
    if (!s) {
      if (pending) process(*pending, *pending_v, pending->name, b);  // a new series may evict the pending one
      pending = nullptr;
      s = series_for(path, b);
      if (!s) continue;
    }
    s->seen = v.seq;
    det_.prefetch(s->state, v.epoch);
    if (pending) process(*pending, *pending_v, pending->name, b);
    pending = s;
    pending_v = &v;
  }
  if (pending) process(*pending, *pending_v, pending->name, b);
  // The batch's values are scored; their forecaster steps run now, in one launch.
  if (gpu_) gpu_->run();
}

bool Partition::reserve_series() {
  size_t n = series_total_.load(std::memory_order_relaxed);
  while (n < cfg_.max_series)
    if (series_total_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
  return false;
}

void Partition::drop_series(std::unique_ptr<Series> s) {
  if (s->snapshot_at != SIZE_MAX) snap_.order[s->snapshot_at] = nullptr;
  if (gpu_) gpu_->detach(s->slot);
}

Series* Partition::series_for(std::string_view path, Batch& out) {
  if (!reserve_series()) {
    // At max_series: this partition's least recently seen series makes room
    // (the series count stays), or the new one is refused.
    if (cfg_.overflow == SeriesOverflow::refuse || table_.size() == 0) {
      if (worth_logging(++counts_.refused))
        say(out, "refused new series '" + std::string(path) + "': --max-series (" + std::to_string(cfg_.max_series) +
                     ") reached (" + std::to_string(counts_.refused) + " refused values so far in this partition)");
      return nullptr;
    }
    auto old = table_.pop_oldest();
    if (worth_logging(++counts_.evicted))
      say(out, "evicted series '" + old->name + "' (least recently seen; --max-series " +
                   std::to_string(cfg_.max_series) + ", " + std::to_string(counts_.evicted) +
                   " evicted so far in this partition)");
    drop_series(std::move(old));
  }
  return add_series(std::string(path), det_.new_series(), 0);
}

Series* Partition::add_series(std::string name, SeriesState state, uint64_t seen) {
  Series* s = table_.add(std::move(name), std::move(state));
  s->seen = seen;
  if (gpu_) s->slot = gpu_->attach(s->state);
  return s;
}

void Partition::process(Series& series, const Batch::Value& v, std::string_view path, Batch& out) {
  const DetectorResult r = gpu_ ? gpu_->update(series.slot, series.state, v.epoch, v.value)
                                : det_.update(series.state, v.epoch, v.value);
  ++counts_.points;
  if (r.kind == PointKind::repeat && worth_logging(++counts_.repeats))
    say(out, "series '" + series.name + "': epoch " + std::to_string(v.epoch) +
                 " again: scored as a repeat, the state keeps the first value of an epoch (" +
                 std::to_string(counts_.repeats) + " repeats so far in this partition)");
  if (r.kind == PointKind::out_of_order && worth_logging(++counts_.out_of_order))
    say(out, "series '" + series.name + "': epoch " + std::to_string(v.epoch) +
                 " is before the last one: scored, the state unchanged (" + std::to_string(counts_.out_of_order) +
                 " out-of-order values so far in this partition)");
  append_score_line(out.scores, cfg_.score_prefix, path, r.score, v.epoch);
  ++out.score_lines;
  if (r.kind != PointKind::repeat && r.score >= cfg_.event_threshold) {
    ++counts_.events;
    append_event_line(out.events, path, v.epoch, v.value, r);
  }
}

// ------------------------------------------------------------ state

void Partition::restore(Batch& b) {
  const auto& entries = b.restore->entries;
  try {
    for (size_t at = b.restore_from; at < entries.size(); ++at) {
      if ((at - b.restore_from) % kRestoreChunk == 0 && quit_.load(std::memory_order_acquire)) return;
      const StateFileEntry& e = entries[at];
      if (partition_of(e.name, partitions_) != index_) continue;
      SeriesState state = det_.load(e.state);
      if (table_.find(e.name) || !reserve_series()) continue;  // (the server keeps at most max_series entries)
      add_series(std::string(e.name), std::move(state), at + 1);
      ++b.restored;
    }
  } catch (const Error& e) {
    // Nothing of a file that is not this detector's is kept.
    clear();
    b.error = e.what();
    b.restored = 0;
  }
}

void Partition::clear() {
  size_t n = 0;
  while (auto s = table_.pop_oldest()) {
    drop_series(std::move(s));
    ++n;
  }
  series_total_.fetch_sub(n, std::memory_order_relaxed);
}

void Partition::fetch_from_gpu(std::span<Series* const> series) {
  if (!gpu_) return;
  std::vector<int> slots;
  std::vector<SeriesState*> states;
  for (Series* s : series)
    if (s) {
      slots.push_back(s->slot);
      states.push_back(&s->state);
    }
  gpu_->fetch(slots, states);
}

void Partition::snapshot_begin(Batch* b) {
  snap_.batch = b;
  snap_.order.clear();
  snap_.seen.clear();
  snap_.order.reserve(table_.size());
  snap_.seen.reserve(table_.size());
  table_.for_each_oldest_first([&](Series& s) {
    s.snapshot_at = snap_.order.size();
    snap_.order.push_back(&s);
    snap_.seen.push_back(s.seen);
  });
  snap_.at = 0;
  snap_.out = std::make_unique<StateFileSegment>();
}

void Partition::snapshot_step() {
  const size_t end = std::min(snap_.order.size(), snap_.at + kSnapshotChunk);
  fetch_from_gpu(std::span<Series* const>(snap_.order.data() + snap_.at, end - snap_.at));
  for (; snap_.at < end; ++snap_.at)
    if (Series* s = snap_.order[snap_.at]) {
      snap_.out->add(snap_.seen[snap_.at], s->name, det_.save(s->state));
      s->snapshot_at = SIZE_MAX;
    }
  if (snap_.at < snap_.order.size()) return;
  Batch* b = snap_.batch;
  b->snapshot = std::move(snap_.out);
  snap_ = SnapshotRun{};
  give_back(b);
}

// At a stop: a snapshot under way is given up (the final one follows).
void Partition::snapshot_drop() {
  if (!snap_.batch) return;
  for (Series* s : snap_.order)
    if (s) s->snapshot_at = SIZE_MAX;
  Batch* b = snap_.batch;
  snap_ = SnapshotRun{};
  give_back(b);
}

StateFileSegment Partition::save_all() {
  std::vector<Series*> all;
  table_.for_each_oldest_first([&](Series& s) { all.push_back(&s); });
  fetch_from_gpu(all);
  StateFileSegment out;
  for (const Series* s : all) out.add(s->seen, s->name, det_.save(s->state));
  return out;
}

}  // namespace ssm::detect
