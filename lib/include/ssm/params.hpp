// Flat parameter storage (DESIGN.md §4): one contiguous block holds every
// parameter of a model, another every gradient, one more each optimizer
// moment. A ParamTable of names and shapes carves a block; a checkpoint is
// that table plus the bytes.
//
// Every tensor starts at an offset that is a multiple of kParamAlign elements
// (64 bytes for float), so vector loads and per-tensor kernels start aligned.
// The gaps between tensors are zero and stay zero: gradients there are zero,
// so neither clipping nor the optimizer moves them.
//
// Lookups by name are for model build time; hot loops keep the pointers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ssm/common.hpp"

namespace ssm {

inline constexpr size_t kParamAlign = 16;  // elements

struct ParamSpec {
  std::string name;            // e.g. "layers.0.mixer.in_proj.weight"
  std::vector<int64_t> shape;  // every dim >= 1; empty = scalar
  // Multiplies the optimizer's weight decay: 1 for matrices, 0 for norms,
  // biases, A_log, dt_bias and D.
  float weight_decay_mult = 1.0f;
  // false: a fixed tensor of the model's definition (a transform it is built
  // on, not learned): the optimizer leaves it as it is, and the model's
  // backward leaves its gradient at zero.
  bool trainable = true;
};

struct ParamEntry {
  ParamSpec spec;
  size_t offset = 0;  // elements from the start of the block, multiple of kParamAlign
  size_t numel = 0;   // product of spec.shape
};

class ParamTable {
 public:
  // Appends a tensor and returns its offset. Throws ssm::Error naming the
  // tensor when the name is empty or taken, a dim is < 1, or the multiplier
  // is negative or not finite.
  size_t add(ParamSpec spec);

  // Elements a block needs: the end of the last tensor rounded up to kParamAlign.
  size_t total() const { return total_; }
  // Elements that belong to tensors (total() minus the alignment gaps).
  size_t numel() const { return numel_; }
  size_t size() const { return entries_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  // Throw ssm::Error naming the tensor when it is not in the table.
  const ParamEntry& entry(const std::string& name) const;
  size_t offset(const std::string& name) const { return entry(name).offset; }
  size_t numel(const std::string& name) const { return entry(name).numel; }
  const std::vector<int64_t>& shape(const std::string& name) const { return entry(name).spec.shape; }
  // (total()) per element: its tensor's weight_decay_mult; -1 where the
  // optimizer must not move it (the alignment gaps and untrainable tensors).
  std::vector<float> update_multipliers() const;

  // In the order they were added (offsets increase).
  const std::vector<ParamEntry>& entries() const { return entries_; }

  // Same names, shapes, multipliers and order.
  bool operator==(const ParamTable& o) const;

 private:
  std::vector<ParamEntry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
  size_t total_ = 0;
  size_t numel_ = 0;
};

// A zero-initialised, 64-byte aligned block of table.total() elements.
// Copies are deep; the table is shared between copies.
template <typename Real>
class ParamBlock {
 public:
  ParamBlock() = default;
  explicit ParamBlock(const ParamTable& table);
  ParamBlock(const ParamBlock& o);
  ParamBlock& operator=(const ParamBlock& o);
  ParamBlock(ParamBlock&& o) noexcept
      : table_(std::move(o.table_)), data_(std::move(o.data_)), size_(std::exchange(o.size_, 0)) {}
  ParamBlock& operator=(ParamBlock&& o) noexcept {
    table_ = std::move(o.table_);
    data_ = std::move(o.data_);
    size_ = std::exchange(o.size_, 0);
    return *this;
  }

  Real* data() { return data_.get(); }
  const Real* data() const { return data_.get(); }
  size_t size() const { return size_; }  // == table().total()
  const ParamTable& table() const;

  // Start of the named tensor; throws ssm::Error when it is not in the table.
  Real* at(const std::string& name) { return data() + table().offset(name); }
  const Real* at(const std::string& name) const { return data() + table().offset(name); }

  void zero();

 private:
  struct Free {
    void operator()(Real* p) const;
  };
  std::shared_ptr<const ParamTable> table_;
  std::unique_ptr<Real[], Free> data_;  // (total)
  size_t size_ = 0;
};

}  // namespace ssm
