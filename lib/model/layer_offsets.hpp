// Internal to lib/model: where each layer's tensors sit in the flat
// parameter block, resolved once by name so hot loops only add offsets.
#pragma once
#include <string>
#include <vector>

#include "ssm/model.hpp"

namespace ssm {

// One per layer of cfg.layers(): an SSM block of cfg.block, or an attention
// layer (norm, in_proj and out_proj only).
struct LayerOffsets {
  bool attention;
  size_t norm, in_proj, conv_w, conv_b, out_proj;
  size_t dt_bias, A_log, D;  // dt_bias is dt_proj.bias for Mamba-1
  size_t mixer_norm;         // Mamba-2
  size_t x_proj, dt_proj;    // Mamba-1
};

inline std::vector<LayerOffsets> model_layer_offsets(const ModelConfig& cfg, const ParamTable& t) {
  std::vector<LayerOffsets> out;
  for (int i = 0; i < cfg.layers(); ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    LayerOffsets o{};
    o.attention = cfg.is_attention(i);
    o.norm = t.offset(p + "norm.weight");
    o.in_proj = t.offset(p + "mixer.in_proj.weight");
    o.out_proj = t.offset(p + "mixer.out_proj.weight");
    if (o.attention) {
      out.push_back(o);
      continue;
    }
    o.conv_w = t.offset(p + "mixer.conv1d.weight");
    o.conv_b = t.offset(p + "mixer.conv1d.bias");
    o.out_proj = t.offset(p + "mixer.out_proj.weight");
    o.A_log = t.offset(p + "mixer.A_log");
    o.D = t.offset(p + "mixer.D");
    if (cfg.block == BlockKind::Mamba2) {
      o.dt_bias = t.offset(p + "mixer.dt_bias");
      o.mixer_norm = t.offset(p + "mixer.norm.weight");
    } else {
      o.dt_bias = t.offset(p + "mixer.dt_proj.bias");
      o.x_proj = t.offset(p + "mixer.x_proj.weight");
      o.dt_proj = t.offset(p + "mixer.dt_proj.weight");
    }
    out.push_back(o);
  }
  return out;
}

}  // namespace ssm
