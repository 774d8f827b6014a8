// The detection server's state file, <state_dir>/series.state: every series'
// name and Detector::save bytes, oldest first by its last value (streams/detect
// only). The file does not depend on the number of scoring partitions.
//
//   "SSMDSTS1"                      magic
//   u64 count
//   count x { u32 name bytes, name, u32 state bytes, state }
//   u64 FNV-1a of everything before
//
// little-endian. Written through atomic_write_file (temp file + fsync +
// rename), so a reader never sees a partial file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ssm::detect {

inline constexpr const char* kStateFile = "series.state";

// One scoring partition's part of a state file: its series oldest first,
// each with the sequence number of its last value (the order the values
// came in across partitions), so that the parts merge into one file with
// every series in that order whatever the number of partitions.
class StateFileSegment {
 public:
  void add(uint64_t seen, std::string_view name, std::span<const uint8_t> state);
  size_t count() const { return starts_.size(); }

 private:
  friend std::vector<uint8_t> merge_state_file(std::span<const StateFileSegment* const> parts);
  std::vector<uint8_t> records_;  // count x { u32 name bytes, name, u32 state bytes, state }
  std::vector<std::pair<uint64_t, size_t>> starts_;  // (seen, offset in records_), seen ascending
};

// A state file's bytes: the parts' series merged by their last value, oldest
// first (a series of a null part is none).
std::vector<uint8_t> merge_state_file(std::span<const StateFileSegment* const> parts);

struct StateFileEntry {
  std::string_view name;
  std::span<const uint8_t> state;
};

// The series of a state file's bytes, oldest first (views into `bytes`).
// Throws ssm::Error saying what is wrong ("not a state file", "checksum
// mismatch (damaged)", "truncated", "a bad series name", ...).
std::vector<StateFileEntry> parse_state_file(std::span<const uint8_t> bytes, size_t max_name);

// The whole content of a file of any kind (a FIFO too: it waits for a
// writer and reads to its end); throws ssm::Error naming the path, or
// "cancelled" once cancel_fd (when >= 0) becomes readable.
std::vector<uint8_t> read_whole_file(const std::filesystem::path& path, int cancel_fd = -1);

// Removes the temp files ("series.state.tmp.<pid>.<n>") that a snapshot
// left when its process was killed: those of a process that is not running.
// Returns each removed file with its size.
std::vector<std::pair<std::string, uintmax_t>> remove_stale_state_temps(const std::filesystem::path& dir);

}  // namespace ssm::detect
