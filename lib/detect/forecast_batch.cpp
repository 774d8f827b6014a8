// ForecastBatch (ssm/forecast_batch.hpp): the queue of owed forecaster steps
// and the slots that hold the series' model states on the GPU.
#include "ssm/forecast_batch.hpp"

#include <algorithm>

#include "ssm/common.hpp"
#include "ssm/cuda_stream.hpp"

namespace ssm {

ForecastBatch::ForecastBatch(const Detector& detector, int capacity, const std::string& device)
    : det_(detector), capacity_(capacity) {
  require(capacity >= 1, "forecast batch: capacity must be >= 1, got " + std::to_string(capacity));
  require(device == "cpu" || device == "cuda",
          "forecast batch: device must be \"cpu\" or \"cuda\", got \"" + device + "\"");
  if (device == "cuda") gpu_ = std::make_unique<BatchedStreamCuda>(detector.forecaster().model(), capacity);
  free_.resize(static_cast<size_t>(capacity));
  for (int i = 0; i < capacity; ++i) free_[static_cast<size_t>(i)] = capacity - 1 - i;  // slot 0 first
  owes_.assign(static_cast<size_t>(capacity), 0);
  attached_.assign(static_cast<size_t>(capacity), 0);
  queue_.reserve(static_cast<size_t>(capacity));
  z_.reserve(static_cast<size_t>(capacity) * static_cast<size_t>(detector.forecaster().config().in_channels));
}

ForecastBatch::~ForecastBatch() = default;

int ForecastBatch::attach(const SeriesState& s) {
  require(!free_.empty(), "forecast batch: all " + std::to_string(capacity_) + " slots are taken");
  require(s.model_state.size() == det_.forecaster().state_size(),
          "forecast batch: series state belongs to another forecaster");
  const int slot = free_.back();
  if (gpu_) gpu_->set_state(slot, s.model_state.data());
  free_.pop_back();
  attached_[static_cast<size_t>(slot)] = 1;
  return slot;
}

void ForecastBatch::check_attached(int slot, const char* fn) const {
  require(slot >= 0 && slot < capacity_ && attached_[static_cast<size_t>(slot)],
          std::string("forecast batch: ") + fn + ": slot " + std::to_string(slot) + " is not attached");
}

void ForecastBatch::detach(int slot) {
  check_attached(slot, "detach");
  if (owes_[static_cast<size_t>(slot)]) run();
  attached_[static_cast<size_t>(slot)] = 0;
  free_.push_back(slot);
}

DetectorResult ForecastBatch::update(int slot, SeriesState& s, int64_t epoch, double value) {
  check_attached(slot, "update");
  // The score needs the prediction from this series' previous step.
  if (owes_[static_cast<size_t>(slot)]) run();
  DetectorResult r;
  const size_t ni = static_cast<size_t>(det_.forecaster().config().in_channels);
  const size_t at = z_.size();
  z_.resize(at + ni);
  if (det_.update_deferred(s, epoch, value, r, z_.data() + at)) {
    queue_.push_back({slot, &s});
    owes_[static_cast<size_t>(slot)] = 1;
  } else {
    z_.resize(at);
  }
  if (queue_.size() >= static_cast<size_t>(capacity_)) run();
  return r;
}

void ForecastBatch::run() {
  if (queue_.empty()) return;
  const Forecaster& f = det_.forecaster();
  const size_t n = queue_.size(), ni = static_cast<size_t>(f.config().in_channels),
               no = static_cast<size_t>(f.config().out_channels);
  pred_.resize(n * no);
  if (gpu_) {
    slots_.resize(n);
    for (size_t i = 0; i < n; ++i) slots_[i] = queue_[i].slot;
    gpu_->step_subset_host(slots_.data(), z_.data(), pred_.data(), static_cast<int>(n));
  } else {
    for (size_t i = 0; i < n; ++i) f.step(queue_[i].state->model_state.data(), z_.data() + i * ni, pred_.data() + i * no);
  }
  for (size_t i = 0; i < n; ++i) det_.set_forecast(*queue_[i].state, pred_.data() + i * no);
  for (const Owed& o : queue_) owes_[static_cast<size_t>(o.slot)] = 0;
  queue_.clear();
  z_.clear();
}

void ForecastBatch::fetch(std::span<const int> slots, std::span<SeriesState* const> states) {
  require(slots.size() == states.size(), "forecast batch: fetch needs one state per slot");
  run();
  if (!gpu_ || slots.empty()) return;
  const size_t per = det_.forecaster().state_size();
  std::vector<float> all(slots.size() * per);  // (slots, state_size)
  gpu_->get_states(slots.data(), static_cast<int>(slots.size()), all.data());
  for (size_t i = 0; i < slots.size(); ++i)
    std::copy_n(all.data() + i * per, per, states[i]->model_state.data());
}

}  // namespace ssm
