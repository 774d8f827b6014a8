// CPU-only builds: the CUDA entry points the rest of the library reaches
// (ssm/cuda.hpp, ssm/cuda_ssd.hpp, ssm/cuda_train.hpp, ops::cuda of
// ssm/backend_ops.hpp) exist and say plainly
// that CUDA is not built.
#ifndef SSM_WITH_CUDA
#include <string>

#include "ssm/backend_ops.hpp"
#include "ssm/common.hpp"
#include "ssm/cuda.hpp"
#include "ssm/cuda_ssd.hpp"
#include "ssm/cuda_train.hpp"

namespace ssm {
namespace {
[[noreturn]] void no_cuda(const char* fn) {
  fail(std::string(fn) + ": this build of ssm has no CUDA backend (configure with -DSSM_CUDA=ON)");
}
}  // namespace

bool cuda_available() { return false; }
std::string cuda_device_description() { return "built without CUDA"; }

void ssd_cuda_check_dims(const SsdDims&, int) { no_cuda("ssd_cuda_check_dims"); }
size_t ssd_chunked_forward_cuda_workspace(const SsdDims&, int) { no_cuda("ssd_chunked_forward_cuda_workspace"); }
size_t ssd_chunked_backward_cuda_workspace(const SsdDims&, int) { no_cuda("ssd_chunked_backward_cuda_workspace"); }

void ssd_chunked_forward_cuda(float*, float*, const float*, const float*, const float*, const float*, const float*,
                              const float*, const float*, const float*, const SsdDims&, int, cudaStream_t,
                              const SsdCudaConfig&) {
  no_cuda("ssd_chunked_forward_cuda");
}

void ssd_chunked_backward_cuda(float*, float*, float*, float*, float*, float*, float*, float*, const float*,
                               const float*, const float*, const float*, const float*, const float*, const float*,
                               const float*, const float*, const float*, const SsdDims&, int, cudaStream_t,
                               const SsdCudaConfig&) {
  no_cuda("ssd_chunked_backward_cuda");
}

struct TrainStepCuda::Impl {};
TrainStepCuda::TrainStepCuda(const ModelConfig&, const ParamTable&, const TrainerConfig&) {
  no_cuda("training with device \"cuda\" (to train on the CPU: --device cpu, or training.device \"cpu\")");
}
TrainStepCuda::~TrainStepCuda() = default;
void TrainStepCuda::upload(const float*, const float*, const float*) { no_cuda("TrainStepCuda::upload"); }
void TrainStepCuda::download(float*, float*, float*) { no_cuda("TrainStepCuda::download"); }
CudaStepResult TrainStepCuda::step(const float*, const float*, int, int, bool, int64_t, double) {
  no_cuda("TrainStepCuda::step");
}

const ops::OpsTable<float>* ops::cuda(std::string* why) {
  if (why) *why = "this build of ssm has no CUDA backend (configure with -DSSM_CUDA=ON)";
  return nullptr;
}
const ops::OpsTable<float>* ops::cuda_fp32(std::string* why) { return ops::cuda(why); }

}  // namespace ssm
#endif  // SSM_WITH_CUDA
