// BatchedStreamCuda (ssm/cuda_stream.hpp) in every build: a forwarder to the
// CUDA module's BatchedStreamDevice (lib/cuda/module.hpp), loaded by the
// constructor's first use (lib/backend.cpp). Without the module or a GPU the
// constructor throws ssm::Error saying why, so no object exists to call the
// other members on.
#include <memory>
#include <string>

#include "cuda/module.hpp"
#include "ssm/common.hpp"
#include "ssm/cuda_stream.hpp"

namespace ssm {

struct BatchedStreamCuda::Impl {
  std::unique_ptr<BatchedStreamDevice> device;
};

BatchedStreamCuda::BatchedStreamCuda(const Model& model, int streams, cudaStream_t stream, Options options)
    : impl_(std::make_unique<Impl>()) {
  // kernels/model_step.cu steps SSM blocks only.
  if (model.config().hybrid())
    fail("BatchedStreamCuda: the batched GPU step has no attention layers (the model has attention_every " +
         std::to_string(model.config().attention_every) + "); run it with ssm::Stream on the CPU");
  std::string why;
  const CudaModule* m = cuda_module(&why);
  if (!m) fail("BatchedStreamCuda: " + why);
  impl_->device.reset(m->make_batched_stream(model, streams, stream, options));
}
BatchedStreamCuda::~BatchedStreamCuda() = default;
BatchedStreamCuda::BatchedStreamCuda(BatchedStreamCuda&&) noexcept = default;
BatchedStreamCuda& BatchedStreamCuda::operator=(BatchedStreamCuda&&) noexcept = default;

const ModelConfig& BatchedStreamCuda::config() const { return impl_->device->config(); }
int BatchedStreamCuda::streams() const { return impl_->device->streams(); }
size_t BatchedStreamCuda::state_size() const { return impl_->device->state_size(); }
void BatchedStreamCuda::step(const float* in, float* out) { impl_->device->step_many(in, out, 1); }
void BatchedStreamCuda::step_many(const float* in, float* out, int n) { impl_->device->step_many(in, out, n); }
void BatchedStreamCuda::step_host(const float* in, float* out) { impl_->device->step_many_host(in, out, 1); }
void BatchedStreamCuda::step_many_host(const float* in, float* out, int n) {
  impl_->device->step_many_host(in, out, n);
}
void BatchedStreamCuda::step_subset_host(const int* slots, const float* in, float* out, int count) {
  impl_->device->step_subset_host(slots, in, out, count);
}
void BatchedStreamCuda::get_states(const int* slots, int count, float* dst) const {
  impl_->device->get_states(slots, count, dst);
}
void BatchedStreamCuda::reset(int stream) { impl_->device->reset(stream); }
void BatchedStreamCuda::reset_all() { impl_->device->reset_all(); }
void BatchedStreamCuda::get_state(int stream, float* dst) const { impl_->device->get_state(stream, dst); }
void BatchedStreamCuda::set_state(int stream, const float* src) { impl_->device->set_state(stream, src); }
std::string BatchedStreamCuda::launch_description() const { return impl_->device->launch_description(); }

}  // namespace ssm
