// The CUDA backend as a whole: is it built, is there a GPU. Every function
// here exists in every build; without SSM_WITH_CUDA (or without a usable GPU)
// cuda_available() is false and the CUDA ops throw ssm::Error saying so.
#pragma once
#include <string>

namespace ssm {

// True when the library was built with CUDA and at least one GPU answers.
// A failing cudaGetDeviceCount (no driver: error 35 on CPU-only machines) is
// "no GPU", and the error is cleared.
bool cuda_available();

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" for the current device, or the
// reason there is none ("built without CUDA", "no CUDA device: ...").
std::string cuda_device_description();

}  // namespace ssm
