// The detection server's series table: series by name with a recency list
// for LRU eviction (streams/detect only).
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ssm/detector.hpp"

namespace ssm::detect {

// One series: its name, detector state and place in the recency list.
struct Series {
  std::string name;
  uint64_t hash = 0;  // of the name
  Series* newer = nullptr;
  Series* older = nullptr;
  SeriesState state;
  int slot = -1;  // its model state's slot in the ForecastBatch (GPU), -1 without one
  size_t snapshot_at = SIZE_MAX;  // its place in a snapshot under way that has not reached it yet
  uint64_t seen = 0;  // the sequence number of its last value (across partitions)
};

// Series by name (open addressing over (hash, pointer) slots, so a lookup
// touches one slot and the series itself), with a recency list (newest
// first) for LRU eviction. Owns the series.
class SeriesTable {
 public:
  SeriesTable() = default;
  SeriesTable(const SeriesTable&) = delete;
  SeriesTable& operator=(const SeriesTable&) = delete;
  ~SeriesTable() {
    for (Series* s = oldest_; s;) {
      Series* next = s->newer;
      delete s;
      s = next;
    }
  }

  size_t size() const { return live_; }
  size_t slot_bytes() const { return slots_.size() * sizeof(Slot); }

  static uint64_t hash_of(std::string_view name) { return std::hash<std::string_view>{}(name); }

  Series* find(std::string_view name) { return find(name, hash_of(name)); }
  // h: hash_of(name).
  Series* find(std::string_view name, uint64_t h) {
    if (slots_.empty()) return nullptr;
    for (size_t i = h & mask(); slots_[i].s; i = (i + 1) & mask()) {
      Series* s = slots_[i].s;
      if (s != tomb() && slots_[i].hash == h && s->name == name) {
        unlink(s);
        push_newest(s);
        return s;
      }
    }
    return nullptr;
  }
  // A lookup of hash h soon: its first slot towards the cache, and then (a
  // second call, later) the series that slot holds when the hash matches,
  // so that the lookup itself does not wait on memory.
  void prefetch_slot(uint64_t h) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[h & mask()]);
  }
  void prefetch_series(uint64_t h) const {
    if (slots_.empty()) return;
    const Slot& slot = slots_[h & mask()];
    if (slot.hash == h && slot.s != tomb()) __builtin_prefetch(slot.s);
  }
  // `name` must not be in the table.
  Series* add(std::string name, SeriesState state) {
    if ((used_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, std::bit_ceil((live_ + 1) * 4)));
    auto* s = new Series;
    s->name = std::move(name);
    s->hash = hash_of(s->name);
    s->state = std::move(state);
    size_t i = s->hash & mask();
    while (slots_[i].s && slots_[i].s != tomb()) i = (i + 1) & mask();
    if (!slots_[i].s) ++used_;
    slots_[i] = {s->hash, s};
    ++live_;
    push_newest(s);
    return s;
  }
  std::unique_ptr<Series> pop_oldest() {
    Series* s = oldest_;
    if (!s) return nullptr;
    unlink(s);
    size_t i = s->hash & mask();
    while (slots_[i].s != s) i = (i + 1) & mask();
    slots_[i].s = tomb();  // keeps later probes going past this slot
    --live_;
    return std::unique_ptr<Series>(s);
  }
  template <typename F>
  void for_each_oldest_first(F&& f) const {
    for (const Series* s = oldest_; s; s = s->newer) f(*s);
  }
  template <typename F>
  void for_each_oldest_first(F&& f) {
    for (Series* s = oldest_; s; s = s->newer) f(*s);
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    Series* s = nullptr;  // null: never used; tomb(): emptied by an eviction
  };
  static Series* tomb() { return reinterpret_cast<Series*>(alignof(Series)); }
  size_t mask() const { return slots_.size() - 1; }
  void rehash(size_t n) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(n, Slot{});
    used_ = 0;
    for (const Slot& o : old)
      if (o.s && o.s != tomb()) {
        size_t i = o.hash & mask();
        while (slots_[i].s) i = (i + 1) & mask();
        slots_[i] = o;
        ++used_;
      }
  }
  void unlink(Series* s) {
    (s->newer ? s->newer->older : newest_) = s->older;
    (s->older ? s->older->newer : oldest_) = s->newer;
    s->newer = s->older = nullptr;
  }
  void push_newest(Series* s) {
    s->older = newest_;
    s->newer = nullptr;
    if (newest_) newest_->newer = s;
    newest_ = s;
    if (!oldest_) oldest_ = s;
  }
  std::vector<Slot> slots_;  // a power of two, at most half used (live + tombstones)
  size_t live_ = 0, used_ = 0;
  Series* newest_ = nullptr;
  Series* oldest_ = nullptr;
};

}  // namespace ssm::detect
