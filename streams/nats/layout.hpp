// The cluster's layout on the NATS server: the names of its subjects, keys
// and consumers, the checkpoint records, the check (or creation) of each
// stream and bucket, and which member owns which partition (streams/nats
// only; the overview is in ssm/streams/nats.hpp).
#pragma once
#include <nats/nats.h>

#include <compare>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "client.hpp"
#include "ssm/streams/nats.hpp"

namespace ssm::nats {

// A value's place in METRICS: its message's stream sequence and its index
// among that message's values. A series' state records the Pos of its last
// value, so that a replay skips the values it already holds.
struct Pos {
  uint64_t seq = 0;
  uint32_t point = 0;
  auto operator<=>(const Pos&) const = default;
};

// The names of everything a NatsConfig uses.
struct Layout {
  explicit Layout(const NatsConfig& c) : cfg(c) {}
  const NatsConfig& cfg;

  std::string filter(size_t p) const { return cfg.subject + "." + std::to_string(p) + ".>"; }
  std::string chunk_subject(size_t p) const { return cfg.state_stream + "." + std::to_string(p) + ".chunk"; }
  std::string commit_subject(size_t p) const { return cfg.state_stream + "." + std::to_string(p) + ".commit"; }
  std::string config_subject() const { return cfg.state_stream + ".config"; }
  // The durable consumer of partition p (one per cluster, named by its state stream).
  std::string consumer(size_t p) const { return cfg.state_stream + "_p" + std::to_string(p); }
  std::string score_subject(size_t p) const { return cfg.out_subject + ".score." + std::to_string(p); }
  std::string event_subject(std::string_view series) const { return cfg.out_subject + ".event." + std::string(series); }
  static std::string lease_key(size_t p) { return "lease." + std::to_string(p); }
  static std::string member_key(std::string_view id) { return "member." + std::string(id); }
};

// "<root>.<p>.<suffix>" with p < partitions (digits, no leading zero):
// sets p and suffix (non-empty); false for any other subject.
bool parse_value_subject(std::string_view subject, std::string_view root, size_t partitions, size_t* p,
                         std::string_view* suffix);

// ------------------------------------------------------------ checkpoints

// A chunk message of a partition's checkpoint log: series records
//
//   "SSMNCK01"  u32 partition  u32 count
//   count x { u64 seq, u32 point, u32 name bytes, name, u32 state bytes, state }
//   u64 FNV-1a of everything before
//
// little-endian.
class ChunkWriter {
 public:
  explicit ChunkWriter(uint32_t partition);
  void add(Pos pos, std::string_view name, std::span<const uint8_t> state);
  size_t count() const { return count_; }
  size_t bytes() const { return out_.size(); }
  // The finished chunk; the writer starts a new one.
  std::vector<uint8_t> take();

 private:
  uint32_t partition_;
  uint32_t count_ = 0;
  std::vector<uint8_t> out_;
};

struct ChunkRecord {
  Pos pos;
  std::string_view name;
  std::span<const uint8_t> state;
};
// The records of a chunk (views into `bytes`). Throws ssm::Error saying what
// is wrong: not a chunk, another partition's, damaged, truncated.
std::vector<ChunkRecord> parse_chunk(std::span<const uint8_t> bytes, uint32_t partition);

// A partition's commit (JSON): every value of the partition up to METRICS
// sequence `seq` is in the records of its chunks from SSM_STATE sequence
// `base` on (a series' newest record is its state).
struct Commit {
  uint64_t seq = 0;   // in METRICS
  uint64_t base = 0;  // in SSM_STATE: where the partition's log starts
  std::string owner;
  uint64_t series = 0, chunks = 0, log_bytes = 0;  // at this commit: series held, chunks and bytes since base
};
std::string commit_json(const Commit& c);
Commit parse_commit(std::string_view text, const std::string& source);  // throws ssm::Error naming source

// ------------------------------------------------------------ streams and buckets

// Each checks the stream or bucket when it exists (an ssm::Error naming
// what is wrong and the flag that picks another) or creates it. A server
// that cannot answer yet throws NatsError.
void ensure_metrics_stream(jsCtx* js, const NatsConfig& cfg);
void ensure_state_stream(jsCtx* js, const NatsConfig& cfg);
void ensure_out_stream(jsCtx* js, const NatsConfig& cfg);
KvPtr ensure_lease_bucket(jsCtx* js, const NatsConfig& cfg);

// SSM_STATE.config: the partition count, the value stream and the detector
// every instance of the cluster must share. The first instance writes it;
// a later one that differs gets an ssm::Error saying what differs.
void ensure_cluster_config(jsCtx* js, const NatsConfig& cfg, const std::string& detector_id);

// Whether an error is the server not answering (yet): worth retrying.
bool transient(const NatsError& e);

// ------------------------------------------------------------ ownership

// Which member owns each partition: rendezvous hashing with a cap. Every
// (partition, member) pair has a weight, FNV-1a of "<member>/<p>"; taken
// heaviest first, each partition goes to the first member of its pairs that
// has room: floor(partitions / members) each, and one more for the first
// partitions % members to fill up. So the partitions spread evenly, and a
// member joining or leaving moves few of the others'.
// `members` sorted and unique; returns the member index of each partition.
std::vector<size_t> assign_partitions(std::span<const std::string> members, size_t partitions);

}  // namespace ssm::nats
