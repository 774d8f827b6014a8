#include "ssm/default_model.hpp"

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "ssm/common.hpp"
#include "ssm/detector.hpp"  // model_from_safetensors_bytes

// Generated at build time from models/denoiser/denoiser.safetensors
// (cmake/embed_file.cmake).
extern const unsigned char ssm_builtin_denoiser[];
extern const std::size_t ssm_builtin_denoiser_size;

namespace ssm {

std::span<const uint8_t> builtin_denoiser_bytes() {
  return {reinterpret_cast<const uint8_t*>(ssm_builtin_denoiser), ssm_builtin_denoiser_size};
}

namespace {

// A named model file: it must be a readable regular file, and the error says
// which path was wrong before the safetensors reader says anything else.
Model load_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) fail(what + " '" + path + "' does not exist");
  require(std::filesystem::is_regular_file(status), what + " '" + path + "' is not a file");
  return Model::load(path);
}

}  // namespace

Model default_denoiser(std::string* description) {
  if (const char* env = std::getenv("SSM_DENOISER_MODEL"); env && *env) {
    Model m = load_file(env, "SSM_DENOISER_MODEL names");
    if (description) *description = std::string("weights from ") + env + " ($SSM_DENOISER_MODEL)";
    return m;
  }
  const std::span<const uint8_t> bytes = builtin_denoiser_bytes();
  Model m = model_from_safetensors_bytes(std::vector<uint8_t>(bytes.begin(), bytes.end()), "built-in denoiser");
  if (description) *description = "built-in weights (models/denoiser/denoiser.safetensors, compiled in)";
  return m;
}

Model load_denoiser(const std::string& path, std::string* description) {
  Model m = path.empty() ? default_denoiser(description) : load_file(path, "model");
  if (!path.empty() && description) *description = "weights from " + path;
  const ModelConfig& c = m.config();
  const std::string name = path.empty() ? std::string("default") : path;
  require(c.in_channels == 1 && c.out_channels == 1,
          "model '" + name + "' has " + std::to_string(c.in_channels) + " input and " +
              std::to_string(c.out_channels) + " output channels; a denoiser is mono in and out");
  require(c.lookahead >= 0, "model '" + name + "': negative lookahead");
  return m;
}

}  // namespace ssm
