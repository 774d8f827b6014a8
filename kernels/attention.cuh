// Host-side entry points of kernels/attention.cu: causal sliding-window
// attention with ALiBi (ssm/attention.hpp), forward and backward, fp32.
// Called only by lib/cuda/attention.cpp, which checks the arguments and the
// rings' counters; sizes and counters reaching here are trusted.
#pragma once
#include <cuda_runtime_api.h>

#include "ssm/attention.hpp"

namespace ssm::kernels {

void attention_forward_launch(float* y,                    // (B, T, H, P)
                              float* lse,                  // (B, T, H)
                              float* final_state,          // (B, attention_state_size) or null
                              const float* qkv,            // (B, T, 3, H, P)
                              const float* initial_state,  // (B, attention_state_size) or null
                              const AttnDims& d, cudaStream_t stream);

void attention_backward_launch(float* dqkv,                 // (B, T, 3, H, P)                    =
                               float* dinitial_state,       // (B, attention_state_size) or null  =
                               const float* dy,             // (B, T, H, P)
                               const float* dfinal_state,   // (B, attention_state_size) or null
                               const float* lse,            // (B, T, H)
                               const float* qkv,            // (B, T, 3, H, P)
                               const float* initial_state,  // (B, attention_state_size) or null
                               const AttnDims& d, cudaStream_t stream);

}  // namespace ssm::kernels
