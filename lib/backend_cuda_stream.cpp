// CPU-only builds: BatchedStreamCuda (ssm/cuda_stream.hpp) exists, as every
// CUDA entry point does (backend.cpp), and its constructor says plainly that
// CUDA is not built. No object can exist, so the other members are never run.
#ifndef SSM_WITH_CUDA
#include <string>

#include "ssm/common.hpp"
#include "ssm/cuda_stream.hpp"

namespace ssm {
namespace {
[[noreturn]] void no_cuda(const char* fn) {
  fail(std::string("BatchedStreamCuda::") + fn +
       ": this build of ssm has no CUDA backend (configure with -DSSM_CUDA=ON)");
}
}  // namespace

struct BatchedStreamCuda::Impl {};

BatchedStreamCuda::BatchedStreamCuda(const Model&, int, cudaStream_t, Options) { no_cuda("BatchedStreamCuda"); }
BatchedStreamCuda::~BatchedStreamCuda() = default;
BatchedStreamCuda::BatchedStreamCuda(BatchedStreamCuda&&) noexcept = default;
BatchedStreamCuda& BatchedStreamCuda::operator=(BatchedStreamCuda&&) noexcept = default;

const ModelConfig& BatchedStreamCuda::config() const { no_cuda("config"); }
int BatchedStreamCuda::streams() const { no_cuda("streams"); }
size_t BatchedStreamCuda::state_size() const { no_cuda("state_size"); }
void BatchedStreamCuda::step(const float*, float*) { no_cuda("step"); }
void BatchedStreamCuda::step_many(const float*, float*, int) { no_cuda("step_many"); }
void BatchedStreamCuda::step_host(const float*, float*) { no_cuda("step_host"); }
void BatchedStreamCuda::step_many_host(const float*, float*, int) { no_cuda("step_many_host"); }
void BatchedStreamCuda::step_subset_host(const int*, const float*, float*, int) { no_cuda("step_subset_host"); }
void BatchedStreamCuda::get_states(const int*, int, float*) const { no_cuda("get_states"); }
void BatchedStreamCuda::reset(int) { no_cuda("reset"); }
void BatchedStreamCuda::reset_all() { no_cuda("reset_all"); }
void BatchedStreamCuda::get_state(int, float*) const { no_cuda("get_state"); }
void BatchedStreamCuda::set_state(int, const float*) { no_cuda("set_state"); }
std::string BatchedStreamCuda::launch_description() const { no_cuda("launch_description"); }

}  // namespace ssm
#endif  // SSM_WITH_CUDA
