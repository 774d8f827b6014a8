// NCCL through dlopen (lib/cuda/nccl.hpp).
#include "nccl.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "ssm/common.hpp"

namespace ssm {
namespace {

// NCCL's C ABI: results are an int enum (0 = success), communicators opaque
// pointers, and the data type and reduction are small enum values.
using NcclResult = int;
using NcclComm = void*;
constexpr int kNcclFloat32 = 7;
constexpr int kNcclSum = 0;

struct NcclApi {
  std::string file;
  NcclResult (*comm_init_all)(NcclComm* comms, int ndev, const int* devlist) = nullptr;
  NcclResult (*comm_destroy)(NcclComm comm) = nullptr;
  NcclResult (*all_reduce)(const void* send, void* recv, size_t count, int type, int op, NcclComm comm,
                           cudaStream_t stream) = nullptr;
  const char* (*error_string)(NcclResult r) = nullptr;
  NcclResult (*get_version)(int* version) = nullptr;
};

template <typename Fn>
void bind(void* lib, const std::string& file, const char* name, Fn& fn) {
  fn = reinterpret_cast<Fn>(dlsym(lib, name));
  require(fn != nullptr, "NCCL: " + file + " has no symbol " + name + " (too old an NCCL?)");
}

// Loaded once per process; the handle stays open.
const NcclApi& nccl_api() {
  static std::mutex loading;
  static NcclApi api;
  static bool loaded = false;
  const std::lock_guard<std::mutex> lock(loading);
  if (loaded) return api;
  const char* env = std::getenv("SSM_NCCL_LIBRARY");
  const std::string file = env && *env ? env : "libnccl.so.2";
  void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    fail("training on several GPUs needs NCCL, and " + file + " could not be loaded (" + (e ? e : "unknown") +
         "): install NCCL, or set SSM_NCCL_LIBRARY to its libnccl.so.2, or train on one GPU (training.gpus 1)");
  }
  api.file = file;
  bind(lib, file, "ncclCommInitAll", api.comm_init_all);
  bind(lib, file, "ncclCommDestroy", api.comm_destroy);
  bind(lib, file, "ncclAllReduce", api.all_reduce);
  bind(lib, file, "ncclGetErrorString", api.error_string);
  bind(lib, file, "ncclGetVersion", api.get_version);
  loaded = true;
  return api;
}

void check(NcclResult r, const char* what) {
  if (r == 0) return;
  fail(std::string("NCCL: ") + what + " failed: " + nccl_api().error_string(r) + " (" + std::to_string(r) + ")");
}

}  // namespace

NcclGroup::NcclGroup(const std::vector<int>& devices) {
  require(!devices.empty(), "NCCL: a group needs at least one GPU");
  // NVLink SHARP multicast stays off unless the user asks for it: on shared
  // machines its setup can hang or fail (the device notes).
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  const NcclApi& api = nccl_api();
  comms_.assign(devices.size(), nullptr);
  check(api.comm_init_all(comms_.data(), static_cast<int>(devices.size()), devices.data()), "ncclCommInitAll");
  int v = 0;
  api.get_version(&v);
  // Versions from 2.9 on are major * 10000 + minor * 100 + patch.
  description_ = "NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
                 std::to_string(v % 100) + " (" + api.file + ")";
}

NcclGroup::~NcclGroup() {
  for (void* c : comms_)
    if (c) nccl_api().comm_destroy(c);
}

void NcclGroup::all_reduce_sum(int rank, float* data, size_t n, cudaStream_t stream) const {
  require(rank >= 0 && rank < ranks(), "NCCL: rank " + std::to_string(rank) + " is not in the group");
  check(nccl_api().all_reduce(data, data, n, kNcclFloat32, kNcclSum, comms_[rank], stream), "ncclAllReduce");
}

}  // namespace ssm
