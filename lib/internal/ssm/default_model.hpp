// The denoiser that `ssm denoise`, the C API and the LADSPA plugin use when no
// model is named: the trained weights of models/denoiser/denoiser.safetensors,
// compiled into the library at build time (as rnnoise does), so that an
// installed binary, library or plugin needs no file beside it. Nothing ever
// falls back to untrained weights.
#pragma once
#include <string>

#include <cstdint>
#include <span>

#include "ssm/model.hpp"

namespace ssm {

// The bytes of the compiled-in default denoiser (a safetensors file).
std::span<const uint8_t> builtin_denoiser_bytes();

// The default denoiser: the file named by $SSM_DENOISER_MODEL when it is set
// (unreadable is an error naming it, never a fallback), else the built-in
// weights. `description`, when given, receives which one it is.
Model default_denoiser(std::string* description = nullptr);

// A model file (.safetensors) or, for an empty path, default_denoiser().
// Throws ssm::Error naming the file; checks that the model is mono in and out.
Model load_denoiser(const std::string& path, std::string* description = nullptr);

}  // namespace ssm
