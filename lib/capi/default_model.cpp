#include "ssm/default_model.hpp"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

#include "ssm/common.hpp"

namespace fs = std::filesystem;

namespace ssm {

namespace {

// The file holding this code: the ssm executable, a test, or a plugin .so
// loaded by a host whose executable is elsewhere.
fs::path this_binary_dir() {
  Dl_info info{};
  std::error_code ec;
  if (dladdr(reinterpret_cast<void*>(&find_default_denoiser), &info) && info.dli_fname) {
    fs::path p = fs::canonical(info.dli_fname, ec);
    if (!ec) return p.parent_path();
  }
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

std::string find_default_denoiser() {
  if (const char* env = std::getenv("SSM_DENOISER_MODEL"); env && *env) {
    require(is_file(env), std::string("SSM_DENOISER_MODEL names '") + env + "', which is not a readable file");
    return env;
  }
  const fs::path rel = fs::path("models") / "denoiser" / "denoiser.safetensors";
  if (fs::path dir = this_binary_dir(); !dir.empty()) {
    for (const fs::path& p : {dir / rel, dir.parent_path() / rel, dir.parent_path().parent_path() / rel,
                              dir.parent_path() / "share" / "ssm" / "denoiser.safetensors"})
      if (is_file(p)) return p.string();
  }
#ifdef SSM_MODELS_DIR
  if (const fs::path p = fs::path(SSM_MODELS_DIR) / "denoiser" / "denoiser.safetensors"; is_file(p))
    return p.string();
#endif
  return "";
}

Model default_denoiser(std::string* description) {
  if (const std::string path = find_default_denoiser(); !path.empty()) {
    Model m = Model::load(path);
    if (description) *description = "trained weights from " + path;
    return m;
  }
  Model m{ModelConfig{}};
  m.init(kDefaultDenoiserSeed);
  const std::string notice =
      "no trained denoiser found (models/denoiser/denoiser.safetensors, or set SSM_DENOISER_MODEL): using the "
      "default architecture with untrained weights (seed " +
      std::to_string(kDefaultDenoiserSeed) + "), which does not remove noise";
  if (description)
    *description = notice;
  else
    std::fprintf(stderr, "ssm: notice: %s\n", notice.c_str());
  return m;
}

Model load_denoiser(const std::string& path, std::string* description) {
  Model m = path.empty() ? default_denoiser(description) : Model::load(path);
  if (!path.empty() && description) *description = "weights from " + path;
  const ModelConfig& c = m.config();
  require(c.in_channels == 1 && c.out_channels == 1,
          "model '" + (path.empty() ? std::string("default") : path) + "' has " + std::to_string(c.in_channels) +
              " input and " + std::to_string(c.out_channels) + " output channels; a denoiser is mono in and out");
  require(c.lookahead >= 0, "model '" + path + "': negative lookahead");
  return m;
}

}  // namespace ssm
