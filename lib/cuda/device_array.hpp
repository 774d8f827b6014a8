// Internal to lib/cuda: a growable array in device memory (cudaMalloc; the
// contents are not kept when it grows).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "cuda_check.cuh"
#include "ssm/common.hpp"

namespace ssm {

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { grow(n); }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), cap_(std::exchange(o.cap_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(cap_, o.cap_);
    return *this;
  }

  // At least n elements; a larger allocation replaces the old one (contents lost).
  T* grow(size_t n) {
    if (n > cap_) {
      cudaFree(ptr_);
      ptr_ = nullptr;
      cap_ = 0;
      cuda_check(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)),
                 "cudaMalloc of " + std::to_string(n * sizeof(T)) + " bytes");
      cap_ = n;
    }
    return ptr_;
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t capacity() const { return cap_; }

 private:
  T* ptr_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace ssm
