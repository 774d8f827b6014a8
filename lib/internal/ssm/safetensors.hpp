// safetensors: the weight format shared with PyTorch (DESIGN.md §5).
//
//   [8 bytes]  N, little-endian u64: length of the header
//   [N bytes]  JSON object, UTF-8, may end in spaces:
//                "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
//                "__metadata__": {"key": "value", ...}      (optional, strings only)
//   [rest]     data section; [begin, end) of each tensor is relative to its start,
//              raw little-endian elements, row-major
//
// Reading is strict: a file is accepted only if the PyTorch reference reader
// would accept it, and every violation throws ssm::Error naming the file and
// the tensor. Checked: header length (>= 2 bytes, <= 100 MB, inside the file),
// valid JSON object without duplicate keys, every entry an object with dtype
// (a known safetensors dtype), shape (integers >= 0, product without
// overflow) and data_offsets (two integers, begin <= end <= data size),
// end - begin == product(shape) * dtype size, no two tensors overlapping, and
// the tensors tiling the data section exactly: no gaps and no trailing bytes
// (hidden bytes between tensors are rejected the same way the reference
// reader does). Unknown fields inside a tensor entry are ignored.
//
// Conversion to float is offered for F32, F64, BF16 and F16; tensors of the
// other dtypes (integers, bool, fp8) are validated and reachable raw.
//
// Writing: F32 and F64 (and raw bytes of any dtype). Tensors are laid out
// contiguously, larger element sizes first and then by name, and the header is
// padded with spaces so that the data section starts at a multiple of 8: every
// tensor is then aligned to its element size.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ssm/atomic_file.hpp"  // SafeTensorsWriter::write_file writes through it
#include "ssm/common.hpp"

namespace ssm {

struct TensorInfo {
  std::string name;
  std::string dtype;           // "F32", "F64", "BF16", "F16", "I64", ...
  std::vector<int64_t> shape;  // empty = scalar (one element)
  size_t begin = 0;            // byte range [begin, end) relative to the data section
  size_t end = 0;

  size_t numel() const;  // product of shape
};

// Bytes per element of a safetensors dtype name; 0 if the name is not a dtype.
size_t safetensors_dtype_size(std::string_view dtype);

class SafeTensors {
 public:
  // Reads and validates the whole file; errors name the path.
  static SafeTensors read_file(const std::filesystem::path& path);
  // Validates a complete file held in memory; errors name source_name.
  static SafeTensors parse(std::vector<uint8_t> bytes, std::string source_name = "<memory>");

  const std::string& source_name() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  // Throws ssm::Error naming the file and the tensor if it is absent.
  const TensorInfo& info(const std::string& name) const;

  // The tensor's bytes as stored (little-endian elements).
  std::span<const uint8_t> raw(const std::string& name) const;

  // The tensor converted to float (F32, F64, BF16, F16; throws for other dtypes).
  std::vector<float> to_float(const std::string& name) const;
  // Converts into dst after checking that the stored shape equals
  // expected_shape; the error names the tensor and both shapes.
  void read_float(const std::string& name,
                  float* dst,  // (product of expected_shape)
                  std::span<const int64_t> expected_shape) const;

 private:
  SafeTensors() = default;
  const TensorInfo& checked_info(const std::string& name) const;

  std::string source_;
  std::vector<uint8_t> bytes_;  // the whole file
  size_t data_start_ = 0;       // file offset of the data section
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafeTensorsWriter {
 public:
  // Copies the data. Throws on a duplicate or reserved name or a negative /
  // overflowing shape.
  void add(const std::string& name, const float* data /* (product of shape) */, std::vector<int64_t> shape);
  void add(const std::string& name, const double* data /* (product of shape) */, std::vector<int64_t> shape);
  // Any safetensors dtype; bytes.size() must equal product(shape) * dtype size.
  void add_raw(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
               std::span<const uint8_t> bytes);
  void set_metadata(const std::string& key, const std::string& value);

  std::vector<uint8_t> to_bytes() const;
  // atomic_write_file(path, to_bytes()).
  void write_file(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ssm
