#include "ssm/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace ssm {

// Elements are copied with memcpy: the format is little-endian, so is every
// machine this library targets.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference reader
constexpr std::string_view kMetadataKey = "__metadata__";
// A valid header nests three deep (header > entry > shape); unknown fields
// may nest a little more. The bound keeps hostile input from building huge
// nested values.
constexpr int kMaxJsonDepth = 64;

// Names come from untrusted files: keep error messages bounded.
std::string quote_name(std::string_view s) {
  constexpr size_t kMax = 120;
  std::string out = "'";
  out.append(s.substr(0, kMax));
  out += '\'';
  if (s.size() > kMax) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string errno_text() { return std::strerror(errno); }

// Product of dims as an element count, false on overflow (also past the
// int64 range, so counts always fit the shape type).
bool checked_numel(std::span<const int64_t> shape, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = n;
  return true;
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    float v = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -v : v;
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

// Values beyond the float range are rounded by hand (to nearest: from half
// an ulp above FLT_MAX on they become inf): the plain conversion is undefined
// behaviour for them in C++.
float double_to_float(double d) {
  constexpr float kMax = std::numeric_limits<float>::max();
  constexpr double kHalfway = 0x1.ffffffp127;  // FLT_MAX + half an ulp
  if (d > kMax) return d >= kHalfway ? INFINITY : kMax;
  if (d < -kMax) return d <= -kHalfway ? -INFINITY : -kMax;
  return static_cast<float>(d);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Tracks keys per open JSON object so that duplicates, which nlohmann::json
// would silently merge (last one wins), are reported; and bounds the nesting
// depth, which no valid header exceeds.
struct HeaderParseGuard {
  const std::string& prefix;
  std::vector<std::set<std::string>> keys;  // one set per open object

  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth > kMaxJsonDepth) fail(prefix + "header nests JSON deeper than a safetensors header can");
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string()) {
          const auto& k = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(k).second) {
            fail(prefix + "duplicate key " + quote_name(k) + (depth == 1 ? " in the header" : " inside a tensor entry"));
          }
        }
        break;
      default:
        break;
    }
    return true;
  }
};

// A non-negative JSON integer, or an error naming what it is.
uint64_t json_size(const json& v, const std::string& where) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    const int64_t s = v.get<int64_t>();
    if (s < 0) fail(where + " is negative (" + std::to_string(s) + ")");
    return static_cast<uint64_t>(s);
  }
  fail(where + " must be a non-negative integer, got " + std::string(v.type_name()) +
       (v.is_number_float() ? " (not an integer or out of range)" : ""));
}

}  // namespace

size_t TensorInfo::numel() const {
  uint64_t n = 0;
  require(checked_numel(shape, &n), "tensor " + quote_name(name) + ": shape " + shape_string(shape) + " overflows");
  return static_cast<size_t>(n);
}

size_t safetensors_dtype_size(std::string_view dtype) {
  static const std::pair<std::string_view, size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"F64", 8}, {"I64", 8}, {"U64", 8},     {"C64", 8}};
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Reading

SafeTensors SafeTensors::read_file(const std::filesystem::path& path) {
  const std::string p = path.string();
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("safetensors " + p + ": cannot open: " + errno_text());
  std::vector<uint8_t> bytes;
  try {
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail("safetensors " + p + ": cannot stat: " + errno_text());
    if (!S_ISREG(st.st_mode)) fail("safetensors " + p + ": not a regular file");
    bytes.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < bytes.size()) {
      const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail("safetensors " + p + ": read failed: " + errno_text());
      if (r == 0) fail("safetensors " + p + ": file shrank while being read");
      got += static_cast<size_t>(r);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return parse(std::move(bytes), p);
}

SafeTensors SafeTensors::parse(std::vector<uint8_t> bytes, std::string source_name) {
  const std::string prefix = "safetensors " + source_name + ": ";
  const size_t size = bytes.size();
  if (size < 8) fail(prefix + "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");

  const uint64_t header_len = load<uint64_t>(bytes.data());
  if (header_len > kMaxHeaderBytes) {
    fail(prefix + "header length " + std::to_string(header_len) + " exceeds the limit of " +
         std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_len > size - 8) {
    fail(prefix + "header length " + std::to_string(header_len) + " runs past the end of the file (" +
         std::to_string(size) + " bytes)");
  }
  if (header_len < 2) fail(prefix + "header length " + std::to_string(header_len) + " is too short for a JSON object");

  json header;
  try {
    const auto* first = bytes.data() + 8;
    header = json::parse(first, first + header_len, HeaderParseGuard{prefix, {}});
  } catch (const json::exception& e) {
    fail(prefix + "header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) fail(prefix + "header is not a JSON object but " + std::string(header.type_name()));

  SafeTensors st;
  st.source_ = std::move(source_name);
  st.data_start_ = 8 + static_cast<size_t>(header_len);
  const size_t data_size = size - st.data_start_;

  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) fail(prefix + "__metadata__ must be an object of strings, got " + value.type_name());
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          fail(prefix + "__metadata__ value of " + quote_name(mk) + " must be a string, got " + mv.type_name());
        }
        st.metadata_.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    const std::string where = prefix + "tensor " + quote_name(key);
    if (!value.is_object()) fail(where + ": entry must be an object, got " + value.type_name());

    TensorInfo ti;
    ti.name = key;

    const auto dtype_it = value.find("dtype");
    if (dtype_it == value.end()) fail(where + ": missing field 'dtype'");
    if (!dtype_it->is_string()) fail(where + ": 'dtype' must be a string, got " + dtype_it->type_name());
    ti.dtype = dtype_it->get<std::string>();
    const size_t elem = safetensors_dtype_size(ti.dtype);
    if (elem == 0) fail(where + ": unknown dtype " + quote_name(ti.dtype));

    const auto shape_it = value.find("shape");
    if (shape_it == value.end()) fail(where + ": missing field 'shape'");
    if (!shape_it->is_array()) fail(where + ": 'shape' must be an array, got " + shape_it->type_name());
    for (size_t i = 0; i < shape_it->size(); ++i) {
      const uint64_t d = json_size((*shape_it)[i], where + ": shape[" + std::to_string(i) + "]");
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(where + ": shape[" + std::to_string(i) + "] = " + std::to_string(d) + " is too large");
      }
      ti.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t numel = 0, nbytes = 0;
    if (!checked_numel(ti.shape, &numel) || __builtin_mul_overflow(numel, static_cast<uint64_t>(elem), &nbytes)) {
      fail(where + ": the size of shape " + shape_string(ti.shape) + " overflows");
    }

    const auto off_it = value.find("data_offsets");
    if (off_it == value.end()) fail(where + ": missing field 'data_offsets'");
    if (!off_it->is_array() || off_it->size() != 2) {
      fail(where + ": 'data_offsets' must be an array of two integers [begin, end]");
    }
    const uint64_t begin = json_size((*off_it)[0], where + ": data_offsets[0]");
    const uint64_t end = json_size((*off_it)[1], where + ": data_offsets[1]");
    const std::string range = "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
    if (begin > end) fail(where + ": data_offsets " + range + " has begin > end");
    if (end > data_size) {
      fail(where + ": data_offsets " + range + " end beyond the data section of " + std::to_string(data_size) +
           " bytes");
    }
    if (end - begin != nbytes) {
      fail(where + ": data_offsets " + range + " hold " + std::to_string(end - begin) + " bytes but " + ti.dtype +
           " shape " + shape_string(ti.shape) + " needs " + std::to_string(nbytes));
    }
    ti.begin = static_cast<size_t>(begin);
    ti.end = static_cast<size_t>(end);
    st.tensors_.emplace(key, std::move(ti));
  }

  // The tensors must tile the data section: sorted by offset, each begins
  // where the previous one ended, and the last ends at the end of the file.
  std::vector<const TensorInfo*> order;
  order.reserve(st.tensors_.size());
  for (const auto& [name, ti] : st.tensors_) order.push_back(&ti);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  size_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* ti : order) {
    if (ti->begin < pos) {
      fail(prefix + "tensors " + quote_name(prev->name) + " [" + std::to_string(prev->begin) + ", " +
           std::to_string(prev->end) + ") and " + quote_name(ti->name) + " [" + std::to_string(ti->begin) + ", " +
           std::to_string(ti->end) + ") overlap");
    }
    if (ti->begin > pos) {
      fail(prefix + "gap of " + std::to_string(ti->begin - pos) + " unused bytes in the data section before tensor " +
           quote_name(ti->name) + " (begins at " + std::to_string(ti->begin) + ", previous data ends at " +
           std::to_string(pos) + ")");
    }
    pos = ti->end;
    prev = ti;
  }
  if (pos != data_size) {
    fail(prefix + std::to_string(data_size - pos) + " trailing bytes after the last tensor" +
         (prev ? " " + quote_name(prev->name) : std::string()) + " (data ends at " + std::to_string(pos) +
         ", data section is " + std::to_string(data_size) + " bytes)");
  }

  st.bytes_ = std::move(bytes);
  return st;
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, ti] : tensors_) out.push_back(name);
  return out;
}

bool SafeTensors::contains(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& SafeTensors::info(const std::string& name) const { return checked_info(name); }

const TensorInfo& SafeTensors::checked_info(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("safetensors " + source_ + ": no tensor " + quote_name(name));
  return it->second;
}

std::span<const uint8_t> SafeTensors::raw(const std::string& name) const {
  const TensorInfo& ti = checked_info(name);
  return std::span<const uint8_t>(bytes_.data() + data_start_ + ti.begin, ti.end - ti.begin);
}

std::vector<float> SafeTensors::to_float(const std::string& name) const {
  const TensorInfo& ti = checked_info(name);
  std::vector<float> out(ti.numel());  // (product of shape)
  read_float(name, out.data(), ti.shape);
  return out;
}

void SafeTensors::read_float(const std::string& name, float* dst, std::span<const int64_t> expected_shape) const {
  const TensorInfo& ti = checked_info(name);
  const std::string where = "safetensors " + source_ + ": tensor " + quote_name(name);
  if (!std::equal(ti.shape.begin(), ti.shape.end(), expected_shape.begin(), expected_shape.end())) {
    fail(where + " has shape " + shape_string(ti.shape) + ", expected " + shape_string(expected_shape));
  }
  const std::span<const uint8_t> src = raw(name);  // (numel * dtype size)
  const size_t n = ti.numel();
  if (ti.dtype == "F32") {
    if (n) std::memcpy(dst, src.data(), n * sizeof(float));
  } else if (ti.dtype == "F64") {
    for (size_t i = 0; i < n; ++i) dst[i] = double_to_float(load<double>(src.data() + 8 * i));
  } else if (ti.dtype == "F16") {
    for (size_t i = 0; i < n; ++i) dst[i] = f16_to_float(load<uint16_t>(src.data() + 2 * i));
  } else if (ti.dtype == "BF16") {
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load<uint16_t>(src.data() + 2 * i));
  } else {
    fail(where + ": dtype " + ti.dtype + " cannot be converted to float (F32, F64, BF16, F16 can)");
  }
}

// ---------------------------------------------------------------------------
// Writing

namespace {

void check_writer_name(const std::string& name, bool exists) {
  require(name != kMetadataKey, "safetensors writer: tensor name __metadata__ is reserved");
  require(!exists, "safetensors writer: duplicate tensor " + quote_name(name));
  try {
    (void)json(name).dump();
  } catch (const json::exception&) {
    fail("safetensors writer: tensor name " + quote_name(name) + " is not valid UTF-8");
  }
}

uint64_t writer_numel(const std::string& name, const std::vector<int64_t>& shape) {
  uint64_t n = 0;
  require(checked_numel(shape, &n),
          "safetensors writer: tensor " + quote_name(name) + ": shape " + shape_string(shape) + " is negative or overflows");
  return n;
}

}  // namespace

void SafeTensorsWriter::add(const std::string& name, const float* data, std::vector<int64_t> shape) {
  const uint64_t n = writer_numel(name, shape);
  add_raw(name, "F32", std::move(shape),
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), n * sizeof(float)));
}

void SafeTensorsWriter::add(const std::string& name, const double* data, std::vector<int64_t> shape) {
  const uint64_t n = writer_numel(name, shape);
  add_raw(name, "F64", std::move(shape),
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), n * sizeof(double)));
}

void SafeTensorsWriter::add_raw(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
                                std::span<const uint8_t> bytes) {
  check_writer_name(name, entries_.count(name) != 0);
  const size_t elem = safetensors_dtype_size(dtype);
  require(elem != 0, "safetensors writer: tensor " + quote_name(name) + ": unknown dtype " + quote_name(dtype));
  const uint64_t n = writer_numel(name, shape);
  uint64_t nbytes = 0;
  require(!__builtin_mul_overflow(n, static_cast<uint64_t>(elem), &nbytes) && nbytes == bytes.size(),
          "safetensors writer: tensor " + quote_name(name) + ": " + std::to_string(bytes.size()) + " bytes given, " +
              dtype + " shape " + shape_string(shape) + " needs " + std::to_string(n) + " elements of " +
              std::to_string(elem) + " bytes");
  entries_.emplace(name, Entry{dtype, std::move(shape), std::vector<uint8_t>(bytes.begin(), bytes.end())});
}

void SafeTensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  try {
    (void)json(key).dump();
    (void)json(value).dump();
  } catch (const json::exception&) {
    fail("safetensors writer: metadata " + quote_name(key) + " is not valid UTF-8");
  }
  metadata_[key] = value;
}

std::vector<uint8_t> SafeTensorsWriter::to_bytes() const {
  // Larger elements first keeps every tensor aligned to its element size
  // without gaps (which readers reject).
  std::vector<const std::pair<const std::string, Entry>*> order;
  for (const auto& e : entries_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return safetensors_dtype_size(a->second.dtype) > safetensors_dtype_size(b->second.dtype);
  });

  json header = json::object();
  if (!metadata_.empty()) header[std::string(kMetadataKey)] = metadata_;
  size_t offset = 0;
  for (const auto* e : order) {
    const size_t end = offset + e->second.bytes.size();
    header[e->first] = {{"dtype", e->second.dtype}, {"shape", e->second.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-aligned

  std::vector<uint8_t> out(8 + text.size() + offset);
  const uint64_t header_len = text.size();
  std::memcpy(out.data(), &header_len, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  uint8_t* data = out.data() + 8 + text.size();
  for (const auto* e : order) {
    if (!e->second.bytes.empty()) std::memcpy(data, e->second.bytes.data(), e->second.bytes.size());
    data += e->second.bytes.size();
  }
  return out;
}

void SafeTensorsWriter::write_file(const std::filesystem::path& path) const { atomic_write_file(path, to_bytes()); }

}  // namespace ssm
