#include "ssm/model_config.hpp"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../common/json_fields.hpp"
#include "ssm/common.hpp"

namespace ssm {

const char* block_kind_name(BlockKind k) { return k == BlockKind::Mamba2 ? "mamba2" : "mamba1"; }

int ModelConfig::conv_channels() const {
  // Mamba-2 convolves x, B and C together; Mamba-1 only x.
  return block == BlockKind::Mamba2 ? inner() + 2 * n_groups * d_state : inner();
}

void ModelConfig::validate() const {
  auto positive = [](int v, const char* name) {
    require(v >= 1, std::string("model config: '") + name + "' must be >= 1, got " + std::to_string(v));
  };
  positive(d_model, "d_model");
  positive(n_layers, "n_layers");
  positive(expand, "expand");
  positive(head_dim, "head_dim");
  positive(d_state, "d_state");
  positive(d_conv, "d_conv");
  positive(n_groups, "n_groups");
  positive(chunk, "chunk");
  positive(in_channels, "in_channels");
  positive(out_channels, "out_channels");
  positive(sample_rate, "sample_rate");
  require(dt_rank >= 0, "model config: 'dt_rank' must be >= 0 (0 = ceil(d_model / 16))");
  require(lookahead >= 0, "model config: 'lookahead' must be >= 0");
  positive(frame, "frame");
  require(frame <= 4096, "model config: 'frame' must be <= 4096 samples");
  require(mask_bins >= 0 && mask_bins <= 65536, "model config: 'mask_bins' must be in [0, 65536] (0 = a mapping head)");
  require(analysis_frames >= 1 && analysis_frames <= 4096, "model config: 'analysis_frames' must be in [1, 4096]");
  require(analysis_frames == 1 || masking(), "model config: 'analysis_frames' > 1 needs a masking head ('mask_bins' > 0)");
  require(!log_power_input || (masking() && mask_bins % 2 == 0),
          "model config: 'log_power_input' needs a masking head with an even 'mask_bins' (bins pair up)");
  require(mask_bands >= 0 && (mask_bands == 0 || (masking() && mask_bins % 2 == 0 && mask_bands <= mask_bins / 2)),
          "model config: 'mask_bands' needs a masking head with an even 'mask_bins', and at most mask_bins / 2 bands "
          "(one per pair of bins)");
  require(!fixed_filterbank || (masking() && in_channels == 1 && (analysis_frames > 1 || log_power_input)),
          "model config: 'fixed_filterbank' needs a one-channel masking head with the windowed Fourier analysis "
          "('analysis_frames' > 1 or 'log_power_input')");
  require(int64_t{analysis_frames} * frame * in_channels <= (int64_t{1} << 24),
          "model config: analysis_frames * frame * in_channels is beyond what this library supports");
  require(int64_t{frame} * std::max(in_channels, out_channels) <= (int64_t{1} << 24),
          "model config: frame * channels is beyond what this library supports");
  require(d_model <= 65536 && n_layers <= 1024 && expand <= 64 && d_state <= 4096 && d_conv <= 64,
          "model config: sizes are beyond what this library supports");
  // B and C add 2 * G * N channels to the conv and rows to in_proj, counted
  // in int: bounded so that those counts cannot overflow.
  require(int64_t{n_groups} * d_state <= (int64_t{1} << 24),
          "model config: n_groups * d_state is beyond what this library supports");
  if (block == BlockKind::Mamba2) {
    require(inner() % head_dim == 0, "model config: expand * d_model (" + std::to_string(inner()) +
                                         ") must be a multiple of 'head_dim' (" + std::to_string(head_dim) + ")");
    require(heads() % n_groups == 0, "model config: the number of heads (" + std::to_string(heads()) +
                                         ") must be a multiple of 'n_groups' (" + std::to_string(n_groups) + ")");
  } else {
    require(n_groups == 1, "model config: mamba1 blocks use n_groups = 1");
  }
  if (hybrid()) {
    require(attention_every <= 1024, "model config: 'attention_every' must be in [0, 1024] (0 = no attention layers)");
    require(attention_every <= n_layers, "model config: 'attention_every' (" + std::to_string(attention_every) +
                                             ") is more than 'n_layers' (" + std::to_string(n_layers) +
                                             "): no attention layer would be placed");
    require(attention_window >= 1 && attention_window <= 65536,
            "model config: 'attention_window' must be in [1, 65536], got " + std::to_string(attention_window));
    require(attention_heads >= 1 && attention_heads <= 4096,
            "model config: 'attention_heads' must be in [1, 4096], got " + std::to_string(attention_heads));
    require(attention_head_dim >= 0 && attention_head_dim <= 4096,
            "model config: 'attention_head_dim' must be in [0, 4096] (0 = d_model / attention_heads), got " +
                std::to_string(attention_head_dim));
    require(attention_head_dim > 0 || d_model % attention_heads == 0,
            "model config: 'attention_head_dim' 0 takes d_model / attention_heads, but 'd_model' (" +
                std::to_string(d_model) + ") is not a multiple of 'attention_heads' (" +
                std::to_string(attention_heads) + ")");
    require(int64_t{attention_window} * attention_heads * attn_head_dim() <= (int64_t{1} << 26),
            "model config: attention_window * attention_heads * head dim is beyond what this library supports");
  } else {
    require(attention_every == 0, "model config: 'attention_every' must be >= 0 (0 = no attention layers), got " +
                                      std::to_string(attention_every));
    require(attention_window == 64 && attention_heads == 4 && attention_head_dim == 0,
            "model config: 'attention_window', 'attention_heads' and 'attention_head_dim' need 'attention_every' > 0");
  }
  require(dt_min > 0 && dt_max >= dt_min, "model config: need 0 < dt_min <= dt_max");
  require(dt_init_floor > 0, "model config: 'dt_init_floor' must be > 0");
  require(norm_eps > 0, "model config: 'norm_eps' must be > 0");
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  const detail::JsonFields f(j, source, "",
                             {"block", "d_model", "n_layers", "expand", "head_dim", "d_state", "d_conv", "n_groups",
                              "dt_rank", "chunk", "in_channels", "out_channels", "sample_rate", "lookahead", "frame", "mask_bins",
                              "mask_bands", "fixed_filterbank",
                              "analysis_frames", "log_power_input", "attention_every", "attention_window",
                              "attention_heads", "attention_head_dim",
                              "dt_min", "dt_max", "dt_init_floor", "norm_eps"});
  ModelConfig c;
  std::string block;
  f.get("block", block);
  if (block == "mamba2")
    c.block = BlockKind::Mamba2;
  else if (block == "mamba1")
    c.block = BlockKind::Mamba1;
  else if (f.find("block"))
    f.bad("block", "\"mamba2\" or \"mamba1\"");
  f.get("d_model", c.d_model);
  f.get("n_layers", c.n_layers);
  f.get("expand", c.expand);
  f.get("head_dim", c.head_dim);
  f.get("d_state", c.d_state);
  f.get("d_conv", c.d_conv);
  f.get("n_groups", c.n_groups);
  f.get("dt_rank", c.dt_rank);
  f.get("chunk", c.chunk);
  f.get("in_channels", c.in_channels);
  f.get("out_channels", c.out_channels);
  f.get("sample_rate", c.sample_rate);
  f.get("lookahead", c.lookahead);
  f.get("frame", c.frame);
  f.get("mask_bins", c.mask_bins);
  f.get("analysis_frames", c.analysis_frames);
  f.get("log_power_input", c.log_power_input);
  f.get("mask_bands", c.mask_bands);
  f.get("fixed_filterbank", c.fixed_filterbank);
  f.get("attention_every", c.attention_every);
  f.get("attention_window", c.attention_window);
  f.get("attention_heads", c.attention_heads);
  f.get("attention_head_dim", c.attention_head_dim);
  if (c.attention_every == 0)
    for (const char* k : {"attention_window", "attention_heads", "attention_head_dim"})
      if (f.find(k)) fail(source + ": '" + k + "' needs 'attention_every' > 0 (attention layers), which is 0");
  f.get("dt_min", c.dt_min);
  f.get("dt_max", c.dt_max);
  f.get("dt_init_floor", c.dt_init_floor);
  f.get("norm_eps", c.norm_eps);
  detail::validate_config(c, source);
  return c;
}

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& source) {
  return from_json(detail::parse_config_json(text, source, "model config"), source);
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("cannot open model config '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json_text(ss.str(), path);
}

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json j{{"block", block_kind_name(block)},
                        {"d_model", d_model},
                        {"n_layers", n_layers},
                        {"expand", expand},
                        {"head_dim", head_dim},
                        {"d_state", d_state},
                        {"d_conv", d_conv},
                        {"n_groups", n_groups},
                        {"dt_rank", dt_rank},
                        {"chunk", chunk},
                        {"in_channels", in_channels},
                        {"out_channels", out_channels},
                        {"sample_rate", sample_rate},
                        {"lookahead", lookahead},
                        {"dt_min", dt_min},
                        {"dt_max", dt_max},
                        {"dt_init_floor", dt_init_floor},
                        {"norm_eps", norm_eps}};
  // Written only when it is not the default, so that configs and checkpoints
  // of sample-by-sample models stay as they were before frames existed.
  if (frame != 1) j["frame"] = frame;
  if (mask_bins != 0) j["mask_bins"] = mask_bins;
  if (analysis_frames != 1) j["analysis_frames"] = analysis_frames;
  if (log_power_input) j["log_power_input"] = true;
  if (mask_bands != 0) j["mask_bands"] = mask_bands;
  if (fixed_filterbank) j["fixed_filterbank"] = true;
  if (hybrid()) {
    j["attention_every"] = attention_every;
    j["attention_window"] = attention_window;
    j["attention_heads"] = attention_heads;
    j["attention_head_dim"] = attention_head_dim;
  }
  return j;
}

std::string ModelConfig::to_json_text() const { return to_json().dump(2); }

}  // namespace ssm
