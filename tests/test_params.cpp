// The parameter table: offsets, shapes, alignment, lookups, errors; blocks:
// alignment, zero fill, deep copies.
#include <gtest/gtest.h>

#include <cstdint>

#include "ssm/params.hpp"

namespace {

using ssm::ParamBlock;
using ssm::ParamSpec;
using ssm::ParamTable;

ParamTable small_table() {
  ParamTable t;
  t.add({"in_proj.weight", {20, 8}, 1.0f});  // 160 elements
  t.add({"A_log", {3}, 0.0f});               // 3
  t.add({"conv1d.weight", {5, 1, 4}, 1.0f}); // 20
  t.add({"scale", {}, 0.0f});                // scalar
  return t;
}

TEST(ParamTable, OffsetsShapesAndAlignment) {
  const ParamTable t = small_table();
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t.offset("in_proj.weight"), 0u);
  EXPECT_EQ(t.offset("A_log"), 160u);
  EXPECT_EQ(t.offset("conv1d.weight"), 176u);  // 163 rounded up to 16
  EXPECT_EQ(t.offset("scale"), 208u);          // 196 rounded up
  EXPECT_EQ(t.total(), 224u);                  // 209 rounded up
  EXPECT_EQ(t.numel(), 160u + 3u + 20u + 1u);
  EXPECT_EQ(t.numel("conv1d.weight"), 20u);
  EXPECT_EQ(t.numel("scale"), 1u);
  EXPECT_EQ(t.shape("conv1d.weight"), (std::vector<int64_t>{5, 1, 4}));
  EXPECT_EQ(t.entry("A_log").spec.weight_decay_mult, 0.0f);
  size_t prev_end = 0;
  for (const auto& e : t.entries()) {
    EXPECT_EQ(e.offset % ssm::kParamAlign, 0u) << e.spec.name;
    EXPECT_GE(e.offset, prev_end) << e.spec.name;  // no overlap, in order
    prev_end = e.offset + e.numel;
  }
  EXPECT_LE(prev_end, t.total());
  EXPECT_EQ(t.total() % ssm::kParamAlign, 0u);
}

TEST(ParamTable, AddReturnsOffset) {
  ParamTable t;
  EXPECT_EQ(t.add({"a", {17}}), 0u);
  EXPECT_EQ(t.add({"b", {16}}), 32u);
  EXPECT_EQ(t.add({"c", {1}}), 48u);
  EXPECT_EQ(t.total(), 64u);
}

TEST(ParamTable, ErrorsNameTheTensor) {
  ParamTable t = small_table();
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const ssm::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { t.add({"A_log", {3}}); }).find("'A_log' is already"), std::string::npos);
  EXPECT_NE(message([&] { t.add({"w", {4, 0}}); }).find("'w': dim 1 is 0"), std::string::npos);
  EXPECT_NE(message([&] { t.add({"", {4}}); }).find("empty"), std::string::npos);
  EXPECT_NE(message([&] { t.add({"n", {4}, -1.0f}); }).find("'n': weight_decay_mult"), std::string::npos);
  EXPECT_NE(message([&] { t.offset("nope"); }).find("'nope'"), std::string::npos);
  EXPECT_EQ(t.size(), 4u);  // failed adds change nothing
  EXPECT_EQ(t.total(), 224u);
}

TEST(ParamTable, Equality) {
  ParamTable a = small_table(), b = small_table();
  EXPECT_TRUE(a == b);
  b.add({"extra", {2}});
  EXPECT_FALSE(a == b);
  ParamTable c;
  c.add({"in_proj.weight", {20, 8}, 0.5f});
  ParamTable d;
  d.add({"in_proj.weight", {20, 8}, 1.0f});
  EXPECT_FALSE(c == d);
}

template <typename Real>
void check_block() {
  const ParamTable t = small_table();
  ParamBlock<Real> p(t);
  ASSERT_EQ(p.size(), t.total());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p.data()) % 64, 0u);
  for (size_t i = 0; i < p.size(); ++i) ASSERT_EQ(p.data()[i], Real(0));
  for (const auto& e : t.entries())
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.at(e.spec.name)) % (ssm::kParamAlign * sizeof(float)), 0u);
  EXPECT_EQ(p.at("A_log"), p.data() + 160);
  for (size_t i = 0; i < p.size(); ++i) p.data()[i] = Real(i);
  ParamBlock<Real> q = p;  // deep copy
  EXPECT_NE(q.data(), p.data());
  p.data()[5] = -1;
  EXPECT_EQ(q.data()[5], Real(5));
  EXPECT_EQ(q.at("scale")[0], Real(208));
  EXPECT_TRUE(q.table() == t);
  ParamBlock<Real> r = std::move(q);
  EXPECT_EQ(r.data()[7], Real(7));
  EXPECT_EQ(q.size(), 0u);
  r.zero();
  for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(r.data()[i], Real(0));
  EXPECT_THROW(r.at("missing"), ssm::Error);
  ParamBlock<Real> empty;
  EXPECT_THROW(empty.table(), ssm::Error);
}

TEST(ParamBlock, FloatAlignedZeroedDeepCopied) { check_block<float>(); }
TEST(ParamBlock, DoubleAlignedZeroedDeepCopied) { check_block<double>(); }

}  // namespace
