#include "ssm/params.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace ssm {

namespace {

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

}  // namespace

size_t ParamTable::add(ParamSpec spec) {
  require(!spec.name.empty(), "ParamTable::add: tensor name must not be empty");
  require(!contains(spec.name), "ParamTable::add: tensor '" + spec.name + "' is already in the table");
  require(std::isfinite(spec.weight_decay_mult) && spec.weight_decay_mult >= 0,
          "ParamTable::add: tensor '" + spec.name + "': weight_decay_mult must be finite and >= 0");
  size_t n = 1;
  for (size_t i = 0; i < spec.shape.size(); ++i) {
    const int64_t dim = spec.shape[i];
    require(dim >= 1, "ParamTable::add: tensor '" + spec.name + "': dim " + std::to_string(i) + " is " +
                          std::to_string(dim) + ", expected >= 1");
    require(static_cast<uint64_t>(dim) <= std::numeric_limits<size_t>::max() / n,
            "ParamTable::add: tensor '" + spec.name + "': element count overflows");
    n *= static_cast<size_t>(dim);
  }
  ParamEntry e;
  e.offset = total_;
  e.numel = n;
  e.spec = std::move(spec);
  total_ = round_up(e.offset + n, kParamAlign);
  numel_ += n;
  index_.emplace(e.spec.name, entries_.size());
  entries_.push_back(std::move(e));
  return entries_.back().offset;
}

const ParamEntry& ParamTable::entry(const std::string& name) const {
  auto it = index_.find(name);
  require(it != index_.end(), "ParamTable: no tensor named '" + name + "'");
  return entries_[it->second];
}

std::vector<float> ParamTable::update_multipliers() const {
  std::vector<float> mult(total_, -1.0f);
  for (const ParamEntry& e : entries_)
    if (e.spec.trainable) std::fill(mult.begin() + e.offset, mult.begin() + e.offset + e.numel, e.spec.weight_decay_mult);
  return mult;
}

bool ParamTable::operator==(const ParamTable& o) const {
  if (entries_.size() != o.entries_.size()) return false;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const ParamSpec &a = entries_[i].spec, &b = o.entries_[i].spec;
    if (a.name != b.name || a.shape != b.shape || a.weight_decay_mult != b.weight_decay_mult ||
        a.trainable != b.trainable)
      return false;
  }
  return true;
}

template <typename Real>
void ParamBlock<Real>::Free::operator()(Real* p) const {
  std::free(p);
}

template <typename Real>
ParamBlock<Real>::ParamBlock(const ParamTable& table)
    : table_(std::make_shared<const ParamTable>(table)), size_(table.total()) {
  // aligned_alloc wants a size that is a multiple of the alignment; a
  // zero-size table still gets one line so data() is never null.
  const size_t bytes = round_up(std::max<size_t>(size_, 1) * sizeof(Real), 64);
  Real* p = static_cast<Real*>(std::aligned_alloc(64, bytes));
  require(p != nullptr, "ParamBlock: cannot allocate " + std::to_string(bytes) + " bytes");
  data_.reset(p);
  zero();
}

template <typename Real>
ParamBlock<Real>::ParamBlock(const ParamBlock& o) : table_(o.table_), size_(o.size_) {
  if (!o.data_) return;
  const size_t bytes = round_up(std::max<size_t>(size_, 1) * sizeof(Real), 64);
  Real* p = static_cast<Real*>(std::aligned_alloc(64, bytes));
  require(p != nullptr, "ParamBlock: cannot allocate " + std::to_string(bytes) + " bytes");
  data_.reset(p);
  std::memcpy(p, o.data_.get(), size_ * sizeof(Real));
}

template <typename Real>
ParamBlock<Real>& ParamBlock<Real>::operator=(const ParamBlock& o) {
  if (this != &o) *this = ParamBlock(o);
  return *this;
}

template <typename Real>
const ParamTable& ParamBlock<Real>::table() const {
  require(table_ != nullptr, "ParamBlock: block has no table (default-constructed or moved from)");
  return *table_;
}

template <typename Real>
void ParamBlock<Real>::zero() {
  if (data_) std::memset(data_.get(), 0, size_ * sizeof(Real));
}

template class ParamBlock<float>;
template class ParamBlock<double>;

}  // namespace ssm
