// Causal sliding-window attention with ALiBi on the GPU: the same functions
// as attention_forward / attention_backward of ssm/attention.hpp, on device
// pointers, fp32, with the same optional (null) arguments and conventions
// (dqkv and dinitial_state assigned; final_state may be initial_state).
// The rings' counters are checked on the host first (a short copy that
// waits for the stream). A straightforward kernel, one thread per row:
// correctness first (kernels/attention.cu). Defined in the CUDA module only.
#pragma once
#include "ssm/attention.hpp"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace ssm {

void attention_forward_cuda(float* y, float* lse, float* final_state, const float* qkv, const float* initial_state,
                            const AttnDims& d, cudaStream_t stream = nullptr);

void attention_backward_cuda(float* dqkv, float* dinitial_state, const float* dy, const float* dfinal_state,
                             const float* lse, const float* qkv, const float* initial_state, const AttnDims& d,
                             cudaStream_t stream = nullptr);

}  // namespace ssm
