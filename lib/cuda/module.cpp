// The CUDA module's one entry point (lib/cuda/module.hpp): the table of the
// functions the core's forwarders (lib/backend.cpp) call.
#include "module.hpp"

#include "ssm/backend_ops.hpp"

#ifndef SSM_VERSION_STRING
#error "SSM_VERSION_STRING must be defined by the build"
#endif

extern "C" __attribute__((visibility("default"))) const ssm::CudaModule* ssm_cuda_module_v1() {
  using namespace ssm;
  static const CudaModule table{
      kCudaModuleAbi,
      sizeof(CudaModule),
      SSM_VERSION_STRING,
      &cuda_available,
      &cuda_device_description,
      &ssd_cuda_check_dims,
      &ssd_chunked_forward_cuda_workspace,
      &ssd_chunked_backward_cuda_workspace,
      &ssd_chunked_forward_cuda,
      &ssd_chunked_backward_cuda,
      &ops::cuda,
      &ops::cuda_fp32,
      &make_train_step_device,
      &make_batched_stream_device,
      &bench_kernels_device,
  };
  return &table;
}
