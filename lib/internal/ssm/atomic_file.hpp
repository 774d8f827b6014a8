// The one way the library and the CLI write a whole file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

namespace ssm {

// Replaces path with exactly these bytes or leaves it untouched: writes
// "<path>.tmp.<pid>.<n>" in the same directory, fsyncs it, renames it over
// path and fsyncs the directory. A reader never sees a partial file; the
// temporary file is removed on failure. Throws ssm::Error naming the path.
void atomic_write_file(const std::filesystem::path& path, std::span<const uint8_t> bytes);
void atomic_write_file(const std::filesystem::path& path, std::string_view text);

}  // namespace ssm
