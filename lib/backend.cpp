// The CUDA entry points of the core (ssm/cuda.hpp, ssm/cuda_ssd.hpp,
// ssm/cuda_train.hpp, ops::cuda of ssm/backend_ops.hpp; BatchedStreamCuda is
// in backend_cuda_stream.cpp), in every build, as forwarders to the CUDA
// module (lib/cuda/module.hpp). The core links no CUDA library: the module is
// loaded on the first call that needs it, and a program that never makes one
// never loads libcudart, libcublas or libcufft.
//
// Where the module is looked for, first found first: the file the
// environment variable SSM_CUDA_MODULE names (then only there); else
// libssm_cuda.so beside the object holding this code (libssm.so in P/lib, or
// the program) and beside the running program, in that directory, its parent
// and their lib/ (P/bin/ssm -> P/lib; build/apps/ssm, build/tests/test_* ->
// build/lib; P/lib/ladspa/ssm_denoise.so -> P/lib); last the dynamic loader's
// own search (LD_LIBRARY_PATH, the cache). When it is missing, fails to load
// (a CUDA library it needs is absent) or is from another build,
// cuda_available() is false, cuda_device_description() gives the reason, and
// every GPU entry point throws ssm::Error naming it.
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cuda/module.hpp"
#include "ssm/backend_ops.hpp"
#include "ssm/common.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_ssd.hpp"
#include "ssm/cuda_train.hpp"

namespace ssm {
namespace {

namespace fs = std::filesystem;

struct LoadedModule {
  const CudaModule* table = nullptr;  // null: not loaded, `why` says why
  std::string why;
};

#ifdef SSM_CUDA_MODULE_BUILT
// The directories the module may be in (see the top of this file).
std::vector<fs::path> module_dirs() {
  std::vector<fs::path> bases;
  std::error_code ec;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&cuda_available), &info) && info.dli_fname && info.dli_fname[0]) {
    const fs::path self = fs::canonical(info.dli_fname, ec);
    if (!ec) bases.push_back(self.parent_path());
  }
  const fs::path exe = fs::canonical("/proc/self/exe", ec);
  if (!ec) bases.push_back(exe.parent_path());
  std::vector<fs::path> dirs;
  for (const fs::path& b : bases)
    for (const fs::path& d : {b, b.parent_path(), b / "lib", b.parent_path() / "lib", b.parent_path().parent_path() / "lib"})
      if (std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
  return dirs;
}

LoadedModule open_module(const std::string& file) {
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = dlerror();
    return {nullptr, "CUDA module " + file + " failed to load: " + (e ? e : "unknown error")};
  }
  using Entry = const CudaModule* (*)();
  const auto entry = reinterpret_cast<Entry>(dlsym(handle, kCudaModuleEntry));
  if (!entry) return {nullptr, "CUDA module " + file + " is not an ssm CUDA module (it has no " + kCudaModuleEntry + ")"};
  const CudaModule* t = entry();
  if (!t || t->abi != kCudaModuleAbi || t->table_bytes != sizeof(CudaModule) ||
      std::strcmp(t->version, SSM_VERSION_STRING) != 0) {
    // Left loaded: its code may not be unloadable, and nothing calls it.
    return {nullptr, "CUDA module " + file + " is from another build of ssm (module: ABI " +
                         std::to_string(t ? t->abi : -1) + ", version " + (t ? t->version : "?") +
                         "; this library: ABI " + std::to_string(kCudaModuleAbi) + ", version " +
                         SSM_VERSION_STRING + ")"};
  }
  return {t, ""};
}

LoadedModule load_module() {
  if (const char* env = std::getenv("SSM_CUDA_MODULE"); env && *env) return open_module(env);
  std::string looked;
  for (const fs::path& d : module_dirs()) {
    std::error_code ec;
    const fs::path f = d / kCudaModuleFile;
    if (fs::exists(f, ec)) return open_module(f.string());
    looked += (looked.empty() ? "" : ", ") + d.string();
  }
  // Last: wherever the dynamic loader finds it.
  LoadedModule m = open_module(kCudaModuleFile);
  if (!m.table)
    m.why = std::string("CUDA module ") + kCudaModuleFile + " not found (looked in " + looked +
            "; SSM_CUDA_MODULE names the file) or not loadable (" + m.why + ")";
  return m;
}
#else
LoadedModule load_module() { return {nullptr, "built without CUDA"}; }
constexpr const char* kNotBuilt = "this build of ssm has no CUDA backend (configure with -DSSM_CUDA=ON)";
#endif

const LoadedModule& loaded() {
  static const LoadedModule m = load_module();
  return m;
}

// The table, or ssm::Error "<what>: <why there is none>".
const CudaModule& module_for(const std::string& what) {
  const LoadedModule& m = loaded();
  if (!m.table) {
#ifdef SSM_CUDA_MODULE_BUILT
    fail(what + ": " + m.why);
#else
    fail(what + ": " + kNotBuilt);
#endif
  }
  return *m.table;
}

}  // namespace

const CudaModule* cuda_module(std::string* why) {
  const LoadedModule& m = loaded();
#ifdef SSM_CUDA_MODULE_BUILT
  if (!m.table && why) *why = m.why;
#else
  if (why) *why = kNotBuilt;
#endif
  return m.table;
}

bool cuda_available() {
  const CudaModule* m = loaded().table;
  return m && m->available();
}

std::string cuda_device_description() {
  const LoadedModule& m = loaded();
  return m.table ? m.table->device_description() : m.why;
}

void cuda_bench_kernels(const CudaKernelBench& o) { module_for("bench kernels").bench_kernels(o); }

void ssd_cuda_check_dims(const SsdDims& d, int Q) { module_for("ssd_cuda_check_dims").ssd_check_dims(d, Q); }
size_t ssd_chunked_forward_cuda_workspace(const SsdDims& d, int Q) {
  return module_for("ssd_chunked_forward_cuda_workspace").ssd_forward_workspace(d, Q);
}
size_t ssd_chunked_backward_cuda_workspace(const SsdDims& d, int Q) {
  return module_for("ssd_chunked_backward_cuda_workspace").ssd_backward_workspace(d, Q);
}

void ssd_chunked_forward_cuda(float* y, float* final_state, const float* x, const float* dt_raw, const float* A_log,
                              const float* Bm, const float* Cm, const float* D, const float* dt_bias,
                              const float* initial_state, const SsdDims& d, int Q, cudaStream_t stream,
                              const SsdCudaConfig& cfg) {
  module_for("ssd_chunked_forward_cuda")
      .ssd_forward(y, final_state, x, dt_raw, A_log, Bm, Cm, D, dt_bias, initial_state, d, Q, stream, cfg);
}

void ssd_chunked_backward_cuda(float* dx, float* ddt_raw, float* dA_log, float* dBm, float* dCm, float* dD,
                               float* ddt_bias, float* dinitial_state, const float* dy, const float* dfinal_state,
                               const float* x, const float* dt_raw, const float* A_log, const float* Bm,
                               const float* Cm, const float* D, const float* dt_bias, const float* initial_state,
                               const SsdDims& d, int Q, cudaStream_t stream, const SsdCudaConfig& cfg) {
  module_for("ssd_chunked_backward_cuda")
      .ssd_backward(dx, ddt_raw, dA_log, dBm, dCm, dD, ddt_bias, dinitial_state, dy, dfinal_state, x, dt_raw, A_log,
                    Bm, Cm, D, dt_bias, initial_state, d, Q, stream, cfg);
}

struct TrainStepCuda::Impl {
  std::unique_ptr<TrainStepDevice> device;
};

TrainStepCuda::TrainStepCuda(const ModelConfig& model, const ParamTable& table, const TrainerConfig& cfg)
    : impl_(std::make_unique<Impl>()) {
  const CudaModule& m = module_for(
      "training with device \"cuda\" (to train on the CPU: --device cpu, or training.device \"cpu\")");
  impl_->device.reset(m.make_train_step(model, table, cfg));
}
TrainStepCuda::~TrainStepCuda() = default;
void TrainStepCuda::upload(const float* params, const float* m, const float* v) { impl_->device->upload(params, m, v); }
void TrainStepCuda::download(float* params, float* m, float* v) { impl_->device->download(params, m, v); }
CudaStepResult TrainStepCuda::step(const float* in, const float* target, int B, int T, bool update, int64_t t,
                                   double lr) {
  return impl_->device->step(in, target, B, T, update, t, lr);
}

const ops::OpsTable<float>* ops::cuda(std::string* why) {
  const CudaModule* m = cuda_module(why);
  return m ? m->ops(why) : nullptr;
}
const ops::OpsTable<float>* ops::cuda_fp32(std::string* why) {
  const CudaModule* m = cuda_module(why);
  return m ? m->ops_fp32(why) : nullptr;
}

}  // namespace ssm
