// The CUDA backend as a module loaded at run time (libssm_cuda.so).
//
// The core library (libssm.a / libssm.so) links no CUDA library. The public
// CUDA entry points (ssm/cuda.hpp, ssm/cuda_ssd.hpp, ssm/cuda_train.hpp,
// ssm/cuda_stream.hpp, ops::cuda of ssm/backend_ops.hpp) are forwarders in
// lib/backend.cpp: on first use they dlopen the module and take this table
// from its one C entry, ssm_cuda_module_v1(). A program that never reaches a
// GPU entry point never loads libcudart, libcublas or libcufft.
//
// The module holds lib/cuda/*.cpp, the kernels and (hidden, with
// --exclude-libs) the parts of the core they use; it shares nothing with the
// host process but the C++ runtime, so one built by the same build as the
// library is the only one accepted: the ABI number, the table size and the
// version string must all match, else the module is refused with a message
// saying which differs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "ssm/backend_ops.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_ssd.hpp"
#include "ssm/cuda_stream.hpp"
#include "ssm/cuda_train.hpp"

namespace ssm {

// Bump on any change to CudaModule, to the two interfaces below or to
// ops::OpsTable (2: the attention entries).
constexpr int kCudaModuleAbi = 2;
// The module's file name (next to the library or the program, see
// lib/backend.cpp for where it is looked for) and its entry point.
inline constexpr char kCudaModuleFile[] = "libssm_cuda.so";
inline constexpr char kCudaModuleEntry[] = "ssm_cuda_module_v1";

// TrainStepCuda's work, on the device (lib/cuda/train_step.cpp).
class TrainStepDevice {
 public:
  virtual ~TrainStepDevice() = default;
  virtual void upload(const float* params, const float* m, const float* v) = 0;
  virtual void download(float* params, float* m, float* v) = 0;
  virtual CudaStepResult step(const float* in, const float* target, int B, int T, bool update, int64_t t,
                              double lr) = 0;
};

// BatchedStreamCuda's work, on the device (lib/cuda/stream.cpp); the same
// members, the same contracts (ssm/cuda_stream.hpp).
class BatchedStreamDevice {
 public:
  virtual ~BatchedStreamDevice() = default;
  virtual const ModelConfig& config() const = 0;
  virtual int streams() const = 0;
  virtual size_t state_size() const = 0;
  virtual void step_many(const float* in, float* out, int n) = 0;
  virtual void step_many_host(const float* in, float* out, int n) = 0;
  virtual void step_subset_host(const int* slots, const float* in, float* out, int count) = 0;
  virtual void reset(int stream) = 0;
  virtual void reset_all() = 0;
  virtual void get_state(int stream, float* dst) const = 0;
  virtual void set_state(int stream, const float* src) = 0;
  virtual void get_states(const int* slots, int count, float* dst) const = 0;
  virtual std::string launch_description() const = 0;
};

// What ssm_cuda_module_v1() returns: the module's build and its entry points,
// each the function of the public header it is named after. Errors are
// ssm::Error, thrown through (the module and the host share the C++ runtime).
struct CudaModule {
  int abi;             // kCudaModuleAbi of the module's build
  size_t table_bytes;  // sizeof(CudaModule) there
  const char* version; // the project version of the module's build

  bool (*available)();
  std::string (*device_description)();

  void (*ssd_check_dims)(const SsdDims& d, int Q);
  size_t (*ssd_forward_workspace)(const SsdDims& d, int Q);
  size_t (*ssd_backward_workspace)(const SsdDims& d, int Q);
  decltype(&ssd_chunked_forward_cuda) ssd_forward;
  decltype(&ssd_chunked_backward_cuda) ssd_backward;

  const ops::OpsTable<float>* (*ops)(std::string* why);       // ops::cuda
  const ops::OpsTable<float>* (*ops_fp32)(std::string* why);  // ops::cuda_fp32

  // New objects, owned by the caller (delete through the virtual destructor).
  TrainStepDevice* (*make_train_step)(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg);
  BatchedStreamDevice* (*make_batched_stream)(const Model& model, int streams, cudaStream_t stream,
                                              const BatchedStreamCudaOptions& options);

  void (*bench_kernels)(const CudaKernelBench& options);  // `ssm bench kernels`
};

// The core's side (lib/backend.cpp): the loaded module's table, or null with
// `why` saying why there is none. Loaded on the first call; never unloaded.
const CudaModule* cuda_module(std::string* why = nullptr);

// The module's factories (lib/cuda/train_step.cpp, lib/cuda/stream.cpp) and
// the benchmark (lib/cuda/bench_kernels.cpp), as the table names them.
TrainStepDevice* make_train_step_device(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg);
BatchedStreamDevice* make_batched_stream_device(const Model& model, int streams, cudaStream_t stream,
                                                const BatchedStreamCudaOptions& options);
void bench_kernels_device(const CudaKernelBench& options);

}  // namespace ssm

extern "C" const ssm::CudaModule* ssm_cuda_module_v1();
