// The denoiser that `ssm denoise`, the C API and the LADSPA plugin use when no
// model is named: the trained weights shipped in models/denoiser/ when they can
// be found, otherwise the default architecture with seeded (untrained) weights.
#pragma once
#include <string>

#include "ssm/model.hpp"

namespace ssm {

// Seed of the untrained fallback, so that every entry point builds the same model.
constexpr uint64_t kDefaultDenoiserSeed = 1;

// Where the trained default denoiser is looked for, first match wins:
//   1. $SSM_DENOISER_MODEL (set but unreadable is an error, not a fallback);
//   2. models/denoiser/denoiser.safetensors beside the executable or shared
//      object holding this code, or one or two folders up from it, or
//      ../share/ssm/denoiser.safetensors from it (an installed layout);
//   3. the source tree's models/denoiser/denoiser.safetensors, a path fixed
//      at build time.
// Returns "" when none exists.
std::string find_default_denoiser();

// The default denoiser. `description`, when given, receives where it came
// from ("trained weights from PATH" or the untrained notice); when it is null
// the untrained notice goes to stderr instead, so the fallback is never silent.
Model default_denoiser(std::string* description = nullptr);

// A model file (.safetensors) or, for an empty path, default_denoiser().
// Throws ssm::Error naming the file; checks that the model is mono in and out.
Model load_denoiser(const std::string& path, std::string* description = nullptr);

}  // namespace ssm
