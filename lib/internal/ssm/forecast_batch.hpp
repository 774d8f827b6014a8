// The forecaster steps of many series, run together. A detector that scores
// with Detector::update_deferred owes each accepted value one forecaster
// step; ForecastBatch queues them and run() takes the whole queue at once:
//   "cuda": one launch of the batched model step for the queued series
//           (BatchedStreamCuda::step_subset_host); their model states live
//           in GPU slots, so SeriesState::model_state is stale there until
//           fetch() copies it back (as Detector::save needs);
//   "cpu":  one Forecaster::step each, on SeriesState::model_state.
// Both give what Detector::update gives value by value (the GPU's fp32 sums
// differ from the CPU's in their order only: predictions agree to ~1e-6).
//
// Scores do not wait for the queue: a value's score uses only the
// prediction made at the series' previous value, so update() returns it at
// once and the queue runs when a series comes back with its step still
// owed, when the queue is full, or when the caller says (run()).
//
// Threads: one object is used by one thread at a time.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ssm/detector.hpp"

namespace ssm {

class BatchedStreamCuda;

class ForecastBatch {
 public:
  // device: "cpu" or "cuda". capacity: the most series attached at once
  // (the GPU holds that many model states). Throws ssm::Error for an unknown
  // device, or "cuda" with no usable GPU or a build without CUDA.
  ForecastBatch(const Detector& detector, int capacity, const std::string& device);
  ~ForecastBatch();
  ForecastBatch(const ForecastBatch&) = delete;
  ForecastBatch& operator=(const ForecastBatch&) = delete;

  bool on_gpu() const { return gpu_ != nullptr; }
  int capacity() const { return capacity_; }
  int attached() const { return capacity_ - static_cast<int>(free_.size()); }
  size_t queued() const { return queue_.size(); }

  // A slot for the series, its model state copied there (on the GPU).
  // Throws ssm::Error when all `capacity` slots are taken.
  int attach(const SeriesState& s);
  // Frees the slot; a step still queued for it is run first. Throws
  // ssm::Error for a slot that is not attached (as update() does).
  void detach(int slot);

  // Scores a value of the series in `slot` (state s, which must stay where
  // it is until the queue runs) and queues its forecaster step.
  DetectorResult update(int slot, SeriesState& s, int64_t epoch, double value);
  // Runs every queued step: each series' prediction of its next value lands
  // in its SeriesState::prediction.
  void run();
  // Runs the queue, then copies the model states of the series in `slots`
  // into their SeriesState::model_state (a no-op on the CPU).
  void fetch(std::span<const int> slots, std::span<SeriesState* const> states);

 private:
  struct Owed {
    int slot;
    SeriesState* state;
  };
  void check_attached(int slot, const char* fn) const;

  const Detector& det_;
  int capacity_;
  std::unique_ptr<BatchedStreamCuda> gpu_;
  std::vector<int> free_;         // free slots, the next one last
  std::vector<uint8_t> owes_;     // (capacity) 1 while the slot's step is queued
  std::vector<uint8_t> attached_; // (capacity) 1 while a series holds the slot
  std::vector<Owed> queue_;       // at most capacity entries, distinct slots
  std::vector<int> slots_;        // (queue) scratch of run()
  std::vector<float> z_;          // (queue, in_channels) the inputs of the queued steps
  std::vector<float> pred_;       // (queue, out_channels) scratch of run()
};

}  // namespace ssm
