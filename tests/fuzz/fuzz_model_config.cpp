// libFuzzer target for the model config reader (ModelConfig::from_json_text,
// also what a checkpoint's __metadata__ "ssm.config" goes through). Any text
// must either give a config or throw ssm::Error; an accepted config must
// validate, survive to_json_text / from_json_text unchanged, and give a
// parameter table and cost counts without overflow (UBSan watches the
// arithmetic).
#include <cmath>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "ssm/model.hpp"
#include "ssm/model_config.hpp"

using ssm_fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ssm::ModelConfig c;
  try {
    c = ssm::ModelConfig::from_json_text(text, "fuzz input");
  } catch (const ssm::Error&) {
    return 0;  // rejected: the expected outcome for most inputs
  }
  c.validate();
  const std::string written = c.to_json_text();
  const ssm::ModelConfig back = ssm::ModelConfig::from_json_text(written, "round trip");
  check(back.to_json() == c.to_json(), "round trip changed the config: " + written);

  // What a model of this config is made of, without allocating it.
  const ssm::ParamTable t = ssm::model_param_table(c);
  check(t.size() > 0 && t.numel() > 0 && t.total() >= t.numel(), "empty or inconsistent parameter table");
  check((c.block != ssm::BlockKind::Mamba2 || c.heads() >= 1) && c.conv_channels() >= c.inner() && c.rank() >= 1,
        "derived sizes out of range");
  check(ssm::model_state_size(c) > 0, "zero state size");
  const double flops = ssm::model_flops_per_step(c);
  check(std::isfinite(flops) && flops > 0, "cost count not a positive number");
  return 0;
}
