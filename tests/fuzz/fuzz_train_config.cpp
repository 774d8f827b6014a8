// libFuzzer target for the training config reader (TrainConfig::from_json_text).
// Any text must either give a config or throw ssm::Error; an accepted config
// must validate and survive to_json / from_json unchanged.
//
// "model" may name a model config file; the file system is no part of this
// target (that path is ModelConfig::from_file, whose parser fuzz_model_config
// covers), so such inputs are skipped.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "ssm/train_config.hpp"

using ssm_fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  {
    const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("model") && j["model"].is_string()) return -1;  // not kept in the corpus
  }
  ssm::TrainConfig c;
  try {
    c = ssm::TrainConfig::from_json_text(text, "fuzz input");
  } catch (const ssm::Error&) {
    return 0;  // rejected: the expected outcome for most inputs
  }
  c.validate();
  const nlohmann::json written = c.to_json();
  const ssm::TrainConfig back = ssm::TrainConfig::from_json(written, "round trip");
  check(back.to_json() == written, "round trip changed the config: " + written.dump());
  return 0;
}
