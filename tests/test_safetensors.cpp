// safetensors reader / writer: bit-exact round trips, hand-made files of each
// float dtype checked against known values, one test per validation rule,
// a random mutation loop that must only ever produce ssm::Error, and atomic
// file replacement.
#include "ssm/safetensors.hpp"

#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "testing.hpp"

namespace fs = std::filesystem;
using ssm::SafeTensors;
using ssm::SafeTensorsWriter;

namespace {

// A file assembled by hand: 8-byte little-endian length, header text, data.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(header.begin(), header.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + static_cast<long>(header.size()));
  return out;
}

template <typename T>
std::vector<uint8_t> le_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  for (size_t i = 0; i < v.size(); ++i) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v[i], sizeof(T));
    for (size_t b = 0; b < sizeof(T); ++b) out[i * sizeof(T) + b] = static_cast<uint8_t>(bits >> (8 * b));
  }
  return out;
}

// Runs f and expects ssm::Error whose message contains every one of `parts`.
template <typename F>
void expect_ssm_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << parts.front() << "'";
  } catch (const ssm::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  }
}

// Parses and expects an error naming the file and containing `parts`.
void expect_error(const std::vector<uint8_t>& bytes, std::vector<std::string> parts) {
  parts.push_back("case.safetensors");
  expect_ssm_error([&] { SafeTensors::parse(bytes, "case.safetensors"); }, parts);
}

void expect_header_error(const std::string& header, size_t data_bytes, const std::vector<std::string>& parts) {
  SCOPED_TRACE(header);
  expect_error(make_file(header, std::vector<uint8_t>(data_bytes, 0)), parts);
}

uint32_t float_bits(float f) { return std::bit_cast<uint32_t>(f); }

fs::path fresh_dir(const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("ssm_test_safetensors_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(SafeTensors, RoundTripIsBitExactAndAligned) {
  auto a = ssm::testing::random_vector<float>(2 * 3 * 5, 1);
  a[0] = -0.0f;
  a[1] = std::numeric_limits<float>::denorm_min();
  a[2] = std::numeric_limits<float>::infinity();
  a[3] = std::bit_cast<float>(0x7FC12345u);  // NaN with a payload survives as bits
  const auto odd = ssm::testing::random_vector<float>(3, 2);       // 12 bytes: not a multiple of 8
  const auto dbl = ssm::testing::random_vector<double>(7, 3);
  const float scalar = 42.5f;

  SafeTensorsWriter w;
  w.add("layers.0.mixer.in_proj.weight", a.data(), {2, 3, 5});
  w.add("layers.0.mixer.D", odd.data(), {3});
  w.add("layers.0.mixer.A_log", dbl.data(), {7});
  w.add("step", &scalar, {});
  w.add("empty", static_cast<const float*>(nullptr), {0, 4});
  w.set_metadata("d_model", "64");
  w.set_metadata("note", "hello \"world\"\n\xC3\xA9");
  const std::vector<uint8_t> bytes = w.to_bytes();

  // The layout, checked with an independent JSON parse of the header.
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ((8 + n) % 8, 0u) << "data section must start 8-aligned";
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
  EXPECT_EQ(header["__metadata__"]["d_model"], "64");
  EXPECT_EQ(header["layers.0.mixer.A_log"]["dtype"], "F64");
  EXPECT_EQ(header["layers.0.mixer.A_log"]["data_offsets"][0], 0) << "the 8-byte tensor comes first";
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    const size_t begin = e["data_offsets"][0], elem = e["dtype"] == "F64" ? 8 : 4;
    EXPECT_EQ(begin % elem, 0u) << name;
  }

  const SafeTensors st = SafeTensors::parse(bytes, "mem");
  EXPECT_EQ(st.names(), (std::vector<std::string>{"empty", "layers.0.mixer.A_log", "layers.0.mixer.D",
                                                  "layers.0.mixer.in_proj.weight", "step"}));
  EXPECT_EQ(st.metadata(), (std::map<std::string, std::string>{{"d_model", "64"}, {"note", "hello \"world\"\n\xC3\xA9"}}));
  EXPECT_TRUE(st.contains("step"));
  EXPECT_FALSE(st.contains("layers.1.mixer.D"));

  const auto& ia = st.info("layers.0.mixer.in_proj.weight");
  EXPECT_EQ(ia.dtype, "F32");
  EXPECT_EQ(ia.shape, (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(ia.numel(), a.size());
  const auto ra = st.to_float("layers.0.mixer.in_proj.weight");
  ASSERT_EQ(ra.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(float_bits(ra[i]), float_bits(a[i])) << i;
  EXPECT_EQ(st.to_float("layers.0.mixer.D"), odd);
  EXPECT_EQ(st.info("step").shape.size(), 0u);
  EXPECT_EQ(st.to_float("step"), std::vector<float>{42.5f});
  EXPECT_EQ(st.info("empty").shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(st.to_float("empty").empty());

  // F64 keeps every bit raw; to_float rounds each value to float.
  const auto rd = st.raw("layers.0.mixer.A_log");
  ASSERT_EQ(rd.size(), dbl.size() * 8);
  EXPECT_EQ(std::memcmp(rd.data(), dbl.data(), rd.size()), 0);
  const auto fd = st.to_float("layers.0.mixer.A_log");
  for (size_t i = 0; i < dbl.size(); ++i) EXPECT_EQ(fd[i], static_cast<float>(dbl[i]));

  // read_float into a caller buffer with the right shape.
  std::vector<float> buf(a.size());  // (2, 3, 5)
  const int64_t shape[] = {2, 3, 5};
  st.read_float("layers.0.mixer.in_proj.weight", buf.data(), shape);
  EXPECT_EQ(std::memcmp(buf.data(), a.data(), a.size() * 4), 0);

  // Same through the file system.
  const fs::path dir = fresh_dir("roundtrip");
  w.write_file(dir / "w.safetensors");
  EXPECT_EQ(read_bytes(dir / "w.safetensors"), bytes);
  const SafeTensors sf = SafeTensors::read_file(dir / "w.safetensors");
  EXPECT_EQ(sf.names(), st.names());
  EXPECT_EQ(sf.to_float("layers.0.mixer.D"), odd);
  fs::remove_all(dir);
}

TEST(SafeTensors, ReadsHandMadeF16) {
  // Bit patterns and the values IEEE half precision gives them.
  const std::vector<uint16_t> bits = {0x3C00, 0xC000, 0x3555, 0x0001, 0x83FF, 0x0400,
                                      0x7BFF, 0x7C00, 0xFC00, 0x8000, 0x7E00};
  const std::vector<float> want = {1.0f,  -2.0f,    0.333251953125f, 5.9604644775390625e-08f, -6.0975551605224609e-05f,
                                   6.103515625e-05f, 65504.0f, INFINITY, -INFINITY, -0.0f, NAN};
  const std::string header = R"({"h":{"dtype":"F16","shape":[11],"data_offsets":[0,22]}})";
  const SafeTensors st = SafeTensors::parse(make_file(header, le_bytes(bits)), "f16");
  const auto got = st.to_float("h");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i + 1 < want.size(); ++i) EXPECT_EQ(float_bits(got[i]), float_bits(want[i])) << i;
  EXPECT_TRUE(std::isnan(got.back()));
  const auto raw = st.raw("h");
  ASSERT_EQ(raw.size(), 22u);
  EXPECT_EQ(raw[0], 0x00);
  EXPECT_EQ(raw[1], 0x3C);
}

TEST(SafeTensors, ReadsHandMadeBF16) {
  const std::vector<uint16_t> bits = {0x3F80, 0xBFC0, 0x4049, 0x0001, 0x7F80, 0xFF80, 0x8000, 0xC2F7};
  const std::vector<float> want = {1.0f, -1.5f, 3.140625f, 0x1p-133f, INFINITY, -INFINITY, -0.0f, -123.5f};
  const std::string header = R"({"b":{"dtype":"BF16","shape":[2,4],"data_offsets":[0,16]}})";
  const SafeTensors st = SafeTensors::parse(make_file(header, le_bytes(bits)), "bf16");
  EXPECT_EQ(st.info("b").shape, (std::vector<int64_t>{2, 4}));
  const auto got = st.to_float("b");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(float_bits(got[i]), float_bits(want[i])) << i;
}

TEST(SafeTensors, ReadsHandMadeF64AndOtherDtypes) {
  const std::vector<double> d = {-1.25, 1e-300, 3.0e38, -1e300, 0.1};
  const std::vector<int64_t> steps = {7, -3};
  std::vector<uint8_t> data = le_bytes(d);
  const auto si = le_bytes(steps);
  data.insert(data.end(), si.begin(), si.end());
  // Offsets out of name order, and padding spaces at the end of the header.
  const std::string header =
      R"({"x":{"dtype":"F64","shape":[5],"data_offsets":[0,40]},"a":{"dtype":"I64","shape":[2],"data_offsets":[40,56]}}   )";
  const SafeTensors st = SafeTensors::parse(make_file(header, data), "f64");
  const auto got = st.to_float("x");
  EXPECT_EQ(got, (std::vector<float>{-1.25f, 0.0f, 3.0e38f, -INFINITY, 0.1f}));
  EXPECT_EQ(st.info("a").dtype, "I64");
  const auto raw = st.raw("a");
  ASSERT_EQ(raw.size(), 16u);
  int64_t back[2];
  std::memcpy(back, raw.data(), 16);
  EXPECT_EQ(back[0], 7);
  EXPECT_EQ(back[1], -3);
  expect_ssm_error([&] { st.to_float("a"); }, {"'a'", "I64"});
}

TEST(SafeTensors, ReadsTheFuzzSeedCorpus) {
  // Files written by tests/fuzz/make_corpus.py (Python's struct and json), so
  // an independent writer of the format.
  const fs::path dir = fs::path(SSM_SOURCE_DIR) / "tests" / "fuzz" / "corpus" / "safetensors";
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    SCOPED_TRACE(e.path().string());
    EXPECT_NO_THROW(SafeTensors::read_file(e.path()));
    ++files;
  }
  EXPECT_GE(files, 5u);
  const SafeTensors st = SafeTensors::read_file(dir / "mixed.safetensors");
  EXPECT_EQ(st.metadata().at("model"), "mamba2");
  EXPECT_EQ(st.to_float("layers.0.mixer.dt_bias"), (std::vector<float>{-1.5f, INFINITY}));
  EXPECT_EQ(st.to_float("layers.0.norm.weight"), (std::vector<float>{1.0f, 0x1p-24f}));
  EXPECT_EQ(st.to_float("layers.0.mixer.A_log"), (std::vector<float>{-0.5f, 0.0f}));
  EXPECT_EQ(st.info("mask").dtype, "BOOL");
}

TEST(SafeTensors, AccessorErrorsNameTensorAndShapes) {
  const std::vector<float> v(6, 1.0f);
  SafeTensorsWriter w;
  w.add("layers.0.norm.weight", v.data(), {2, 3});
  const SafeTensors st = SafeTensors::parse(w.to_bytes(), "model.safetensors");
  std::vector<float> dst(6);  // (3, 2)
  const int64_t wrong[] = {3, 2};
  expect_ssm_error([&] { st.read_float("layers.0.norm.weight", dst.data(), wrong); },
                   {"model.safetensors", "layers.0.norm.weight", "[2, 3]", "[3, 2]"});
  expect_ssm_error([&] { st.info("layers.1.norm.weight"); }, {"model.safetensors", "layers.1.norm.weight"});
  EXPECT_THROW(st.to_float("nope"), ssm::Error);
  EXPECT_THROW(st.raw("nope"), ssm::Error);
}

TEST(SafeTensors, RejectsBadFraming) {
  expect_error({}, {"0 bytes", "shorter than the 8-byte"});
  expect_error({1, 0, 0, 0}, {"4 bytes"});
  // Header length larger than the file.
  auto f = make_file("{}", {});
  f[0] = 200;
  expect_error(f, {"header length 200", "runs past the end", "10 bytes"});
  // Absurd header length (also checked before comparing with the file size).
  f = make_file("{}", {});
  f[5] = 1;  // 2^40 + 2
  expect_error(f, {"exceeds the limit"});
  std::fill(f.begin(), f.begin() + 8, 0xFF);
  expect_error(f, {"18446744073709551615", "exceeds the limit"});
  expect_error(make_file("", {}), {"header length 0", "too short"});
  expect_error(make_file("{", {}), {"too short"});
  expect_error(make_file("{\"a\"", {}), {"not valid JSON"});
  expect_error(make_file("[1, 2]", {}), {"not a JSON object", "array"});
  expect_error(make_file("\"str\"", {}), {"not a JSON object"});
  expect_error(make_file("{} {}", {}), {"not valid JSON"});
  expect_error(make_file("{\"\xFF\": 1}", {}), {"not valid JSON"});  // invalid UTF-8
  // A valid empty file, and the same with stray data.
  EXPECT_TRUE(SafeTensors::parse(make_file("{}", {}), "empty").names().empty());
  EXPECT_TRUE(SafeTensors::parse(make_file("{\"__metadata__\":{}}      ", {}), "empty").metadata().empty());
  expect_header_error("{}", 4, {"4 trailing bytes"});
}

TEST(SafeTensors, RejectsBadTensorEntries) {
  const std::string ok_tail = R"("shape":[2],"data_offsets":[0,8]}})";
  expect_header_error(R"({"w":5})", 0, {"'w'", "must be an object", "number"});
  expect_header_error(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8, {"'w'", "missing field 'dtype'"});
  expect_header_error(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8, {"'w'", "missing field 'shape'"});
  expect_header_error(R"({"w":{"dtype":"F32","shape":[2]}})", 8, {"'w'", "missing field 'data_offsets'"});
  expect_header_error(R"({"w":{"dtype":32,)" + ok_tail, 8, {"'w'", "'dtype' must be a string"});
  expect_header_error(R"({"w":{"dtype":"F33",)" + ok_tail, 8, {"'w'", "unknown dtype 'F33'"});
  expect_header_error(R"({"w":{"dtype":"f32",)" + ok_tail, 8, {"'w'", "unknown dtype"});
  // Shapes.
  const std::string f32 = R"({"w":{"dtype":"F32",)";
  expect_header_error(f32 + R"("shape":2,"data_offsets":[0,8]}})", 8, {"'w'", "'shape' must be an array"});
  expect_header_error(f32 + R"("shape":[-2],"data_offsets":[0,8]}})", 8, {"'w'", "shape[0]", "negative"});
  expect_header_error(f32 + R"("shape":[2.0],"data_offsets":[0,8]}})", 8, {"'w'", "shape[0]", "integer"});
  expect_header_error(f32 + R"("shape":["2"],"data_offsets":[0,8]}})", 8, {"'w'", "shape[0]", "string"});
  expect_header_error(f32 + R"("shape":[1,1e30],"data_offsets":[0,8]}})", 8, {"'w'", "shape[1]", "integer"});
  expect_header_error(f32 + R"("shape":[99999999999999999999],"data_offsets":[0,8]}})", 8, {"'w'", "shape[0]"});
  expect_header_error(f32 + R"("shape":[18446744073709551615],"data_offsets":[0,8]}})", 8,
                      {"'w'", "shape[0]", "too large"});
  expect_header_error(f32 + R"("shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8, {"'w'", "overflows"});
  // Overflow of the byte count even though the element count fits.
  expect_header_error(f32 + R"("shape":[4611686018427387904],"data_offsets":[0,8]}})", 8, {"'w'", "overflows"});
  expect_header_error(f32 + R"("shape":[[2]],"data_offsets":[0,8]}})", 8, {"'w'", "shape[0]", "array"});
  // Offsets.
  const std::string shape2 = f32 + R"("shape":[2],)";
  expect_header_error(shape2 + R"("data_offsets":8}})", 8, {"'w'", "two integers"});
  expect_header_error(shape2 + R"("data_offsets":[0,8,8]}})", 8, {"'w'", "two integers"});
  expect_header_error(shape2 + R"("data_offsets":[0]}})", 8, {"'w'", "two integers"});
  expect_header_error(shape2 + R"("data_offsets":["0",8]}})", 8, {"'w'", "data_offsets[0]"});
  expect_header_error(shape2 + R"("data_offsets":[0,-8]}})", 8, {"'w'", "data_offsets[1]", "negative"});
  expect_header_error(shape2 + R"("data_offsets":[0,8.5]}})", 8, {"'w'", "data_offsets[1]"});
  expect_header_error(shape2 + R"("data_offsets":[8,0]}})", 8, {"'w'", "begin > end"});
  expect_header_error(shape2 + R"("data_offsets":[0,8]}})", 4, {"'w'", "beyond the data section of 4 bytes"});
  expect_header_error(shape2 + R"("data_offsets":[0,18446744073709551615]}})", 8, {"'w'", "beyond"});
  expect_header_error(shape2 + R"("data_offsets":[0,12]}})", 12, {"'w'", "hold 12 bytes", "needs 8"});
  expect_header_error(R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", 8, {"'w'", "F64", "needs 16"});
}

TEST(SafeTensors, RejectsBadLayoutAndDuplicates) {
  const auto entry = [](const std::string& name, int b, int e) {
    return "\"" + name + R"(":{"dtype":"F32","shape":[)" + std::to_string((e - b) / 4) + R"(],"data_offsets":[)" +
           std::to_string(b) + "," + std::to_string(e) + "]}";
  };
  expect_header_error("{" + entry("a", 0, 8) + "," + entry("b", 4, 12) + "}", 12, {"'a'", "'b'", "overlap"});
  expect_header_error("{" + entry("a", 0, 8) + "," + entry("b", 0, 8) + "}", 8, {"'a'", "'b'", "overlap"});
  expect_header_error("{" + entry("a", 0, 8) + "," + entry("z", 4, 4) + "}", 8, {"'z'", "overlap"});
  expect_header_error("{" + entry("a", 0, 4) + "," + entry("b", 8, 12) + "}", 12, {"gap of 4", "'b'"});
  expect_header_error("{" + entry("b", 4, 8) + "}", 8, {"gap of 4", "'b'"});
  expect_header_error("{" + entry("a", 0, 4) + "}", 8, {"4 trailing bytes", "'a'"});
  // Zero-size tensors may share an offset with anything that starts there.
  const SafeTensors st =
      SafeTensors::parse(make_file("{" + entry("a", 0, 4) + "," + entry("e", 4, 4) + "," + entry("f", 4, 4) + "," +
                                       entry("b", 4, 8) + "}",
                                   std::vector<uint8_t>(8, 0)),
                         "zero");
  EXPECT_EQ(st.names().size(), 4u);

  // nlohmann::json keeps only the last of duplicate keys; the reader must not.
  expect_header_error("{" + entry("w", 0, 4) + "," + entry("w", 4, 8) + "}", 8, {"duplicate key 'w'"});
  expect_header_error(R"({"w":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})", 4,
                      {"duplicate key 'dtype'"});
  expect_header_error(R"({"__metadata__":{"k":"1","k":"2"}})", 0, {"duplicate key 'k'"});
  // Metadata.
  expect_header_error(R"({"__metadata__":[1]})", 0, {"__metadata__", "object"});
  expect_header_error(R"({"__metadata__":{"k":1}})", 0, {"__metadata__", "'k'", "must be a string"});
  expect_header_error(R"({"__metadata__":{"k":{"x":"y"}}})", 0, {"__metadata__", "'k'"});
  // Deep nesting is refused before it is built.
  expect_header_error("{\"__metadata__\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0,
                      {"nests"});
  // Unknown fields in an entry are ignored, as by the reference reader.
  EXPECT_NO_THROW(SafeTensors::parse(
      make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":[1,{"x":2}]}})", {0, 0, 128, 63}),
      "extra"));
}

TEST(SafeTensors, RandomMutationsOnlyEverThrowSsmError) {
  // A valid file with every float dtype, a scalar, an empty tensor and metadata.
  SafeTensorsWriter w;
  const auto a = ssm::testing::random_vector<float>(12, 5);
  const auto d = ssm::testing::random_vector<double>(3, 6);
  const std::vector<uint8_t> half = {0x00, 0x3C, 0x01, 0x00, 0x00, 0x7C, 0x80, 0xBF};
  w.add("layers.0.mixer.in_proj.weight", a.data(), {3, 4});
  w.add("layers.0.mixer.A_log", d.data(), {3});
  w.add_raw("h", "F16", {4}, half);
  w.add_raw("b", "BF16", {2, 2}, half);
  w.add_raw("i", "I32", {2}, half);
  w.add("s", a.data(), {});
  w.add("e", a.data(), {2, 0});
  w.set_metadata("format", "pt");
  const std::vector<uint8_t> valid = w.to_bytes();
  uint64_t header_len = 0;
  std::memcpy(&header_len, valid.data(), 8);
  ASSERT_NO_THROW(SafeTensors::parse(valid, "valid"));

  std::mt19937_64 rng(12345);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::string interesting = "\"{}[],:-0123456789 e.\\";
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::vector<uint8_t> m = valid;
    const int edits = 1 + static_cast<int>(pick(3));
    for (int k = 0; k < edits; ++k) {
      switch (pick(7)) {
        case 0:  // flip a bit anywhere
          m[pick(m.size())] ^= static_cast<uint8_t>(1u << pick(8));
          break;
        case 1:  // truncate
          m.resize(pick(m.size() + 1));
          break;
        case 2:  // a JSON-significant character inside the header
          if (m.size() > 8 && header_len > 0) m[8 + pick(std::min<size_t>(header_len, m.size() - 8))] = interesting[pick(interesting.size())];
          break;
        case 3:  // a header length off by a little, or random
          if (m.size() >= 8) {
            uint64_t n = header_len;
            n = pick(2) ? n + pick(17) - 8 : rng() >> pick(64);
            std::memcpy(m.data(), &n, 8);
          }
          break;
        case 4:  // insert a byte
          m.insert(m.begin() + static_cast<long>(pick(m.size() + 1)), static_cast<uint8_t>(rng()));
          break;
        case 5:  // delete a byte
          if (!m.empty()) m.erase(m.begin() + static_cast<long>(pick(m.size())));
          break;
        case 6:  // change a digit in the header to another one
          for (int tries = 0; tries < 50 && m.size() > 8; ++tries) {
            const size_t at = 8 + pick(std::min<size_t>(header_len, m.size() - 8));
            if (m[at] >= '0' && m[at] <= '9') {
              m[at] = static_cast<uint8_t>('0' + pick(10));
              break;
            }
          }
          break;
      }
    }
    try {
      const SafeTensors st = SafeTensors::parse(m, "mutant");
      ++accepted;
      for (const auto& name : st.names()) {
        const auto& ti = st.info(name);
        EXPECT_EQ(st.raw(name).size(), ti.numel() * ssm::safetensors_dtype_size(ti.dtype));
        if (ti.dtype == "F32" || ti.dtype == "F64" || ti.dtype == "F16" || ti.dtype == "BF16") {
          EXPECT_EQ(st.to_float(name).size(), ti.numel());
        }
      }
    } catch (const ssm::Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iter << ": non-ssm exception: " << e.what();
    }
  }
  std::printf("mutations: %d accepted, %d rejected\n", accepted, rejected);
  // Both outcomes must occur, or the loop tested nothing.
  EXPECT_GT(accepted, 20);
  EXPECT_GT(rejected, 1000);
}

TEST(SafeTensors, WriterRejectsBadInput) {
  const std::vector<float> v(4, 0.0f);
  SafeTensorsWriter w;
  w.add("w", v.data(), {4});
  EXPECT_THROW(w.add("w", v.data(), {4}), ssm::Error);
  EXPECT_THROW(w.add("__metadata__", v.data(), {4}), ssm::Error);
  EXPECT_THROW(w.add("neg", v.data(), {-1, 4}), ssm::Error);
  EXPECT_THROW(w.add("big", v.data(), {1LL << 62, 1LL << 62}), ssm::Error);
  EXPECT_THROW(w.add("bad\xFF", v.data(), {4}), ssm::Error);
  const std::vector<uint8_t> three(3);
  EXPECT_THROW(w.add_raw("r", "F16", {2}, three), ssm::Error);
  EXPECT_THROW(w.add_raw("r", "F17", {3}, three), ssm::Error);
  EXPECT_THROW(w.set_metadata("k", "\xC3"), ssm::Error);
  // The failed calls left the writer as it was.
  const SafeTensors st = SafeTensors::parse(w.to_bytes(), "w");
  EXPECT_EQ(st.names(), std::vector<std::string>{"w"});
}

TEST(SafeTensors, ReadFileErrorsNameThePath) {
  const fs::path dir = fresh_dir("readfile");
  const fs::path missing = dir / "missing.safetensors";
  expect_ssm_error([&] { SafeTensors::read_file(missing); }, {missing.string(), "cannot open"});
  expect_ssm_error([&] { SafeTensors::read_file(dir); }, {"not a regular file"});
  const fs::path bad = dir / "bad.safetensors";
  ssm::atomic_write_file(bad, std::string_view("\x02\0\0\0\0\0\0\0[]", 10));
  expect_ssm_error([&] { SafeTensors::read_file(bad); }, {bad.string(), "not a JSON object"});
  fs::remove_all(dir);
}

TEST(SafeTensors, AtomicWriteReplacesWholeFileAndLeavesNoTemporary) {
  const fs::path dir = fresh_dir("atomic");
  const fs::path target = dir / "state.bin";
  const std::vector<uint8_t> big(100000, 0xAB);
  ssm::atomic_write_file(target, big);
  EXPECT_EQ(read_bytes(target), big);
  const std::vector<uint8_t> small = {1, 2, 3};
  ssm::atomic_write_file(target, small);
  EXPECT_EQ(read_bytes(target), small) << "no tail of the old content may remain";
  ssm::atomic_write_file(target, std::string_view("text"));
  EXPECT_EQ(read_bytes(target), (std::vector<uint8_t>{'t', 'e', 'x', 't'}));
  ssm::atomic_write_file(target, std::span<const uint8_t>());
  EXPECT_EQ(fs::file_size(target), 0u);

  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    ++entries;
    EXPECT_EQ(e.path().filename().string(), "state.bin");
  }
  EXPECT_EQ(entries, 1u);

  // A directory that does not exist: an error naming the path, nothing written.
  const fs::path nowhere = dir / "no_such_dir" / "w.safetensors";
  expect_ssm_error([&] { ssm::atomic_write_file(nowhere, small); }, {nowhere.string()});
  // Renaming over a directory fails after the temporary was written: it must be removed.
  fs::create_directories(dir / "occupied" / "child");
  EXPECT_THROW(ssm::atomic_write_file(dir / "occupied", small), ssm::Error);
  entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    ++entries;
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path().string();
  }
  EXPECT_EQ(entries, 2u);
  fs::remove_all(dir);
}
