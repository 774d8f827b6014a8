#include "ssm/model_config.hpp"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

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
  require(dt_min > 0 && dt_max >= dt_min, "model config: need 0 < dt_min <= dt_max");
  require(dt_init_floor > 0, "model config: 'dt_init_floor' must be > 0");
  require(norm_eps > 0, "model config: 'norm_eps' must be > 0");
}

namespace {

template <typename V>
void read_field(const nlohmann::json& j, const char* key, V& out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if constexpr (std::is_same_v<V, int>) {
    if (!it->is_number_integer())
      fail(source + ": model config key '" + key + "' must be an integer, got " + it->dump());
    const auto v = it->get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) fail(source + ": model config key '" + key + "' is out of range");
    out = static_cast<int>(v);
  } else {
    if (!it->is_number()) fail(source + ": model config key '" + key + "' must be a number, got " + it->dump());
    out = it->get<double>();
  }
}

}  // namespace

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) fail(source + ": model config must be a JSON object");
  static const char* known[] = {"block",     "d_model",     "n_layers",     "expand",      "head_dim",
                                "d_state",   "d_conv",      "n_groups",     "dt_rank",     "chunk",
                                "in_channels", "out_channels", "sample_rate", "lookahead", "frame", "dt_min",
                                "dt_max",    "dt_init_floor", "norm_eps"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* k : known) ok = ok || it.key() == k;
    if (!ok) fail(source + ": unknown model config key '" + it.key() + "'");
  }
  ModelConfig c;
  if (auto it = j.find("block"); it != j.end()) {
    if (!it->is_string()) fail(source + ": model config key 'block' must be \"mamba2\" or \"mamba1\"");
    const auto s = it->get<std::string>();
    if (s == "mamba2")
      c.block = BlockKind::Mamba2;
    else if (s == "mamba1")
      c.block = BlockKind::Mamba1;
    else
      fail(source + ": model config key 'block' must be \"mamba2\" or \"mamba1\", got \"" + s + "\"");
  }
  read_field(j, "d_model", c.d_model, source);
  read_field(j, "n_layers", c.n_layers, source);
  read_field(j, "expand", c.expand, source);
  read_field(j, "head_dim", c.head_dim, source);
  read_field(j, "d_state", c.d_state, source);
  read_field(j, "d_conv", c.d_conv, source);
  read_field(j, "n_groups", c.n_groups, source);
  read_field(j, "dt_rank", c.dt_rank, source);
  read_field(j, "chunk", c.chunk, source);
  read_field(j, "in_channels", c.in_channels, source);
  read_field(j, "out_channels", c.out_channels, source);
  read_field(j, "sample_rate", c.sample_rate, source);
  read_field(j, "lookahead", c.lookahead, source);
  read_field(j, "frame", c.frame, source);
  read_field(j, "dt_min", c.dt_min, source);
  read_field(j, "dt_max", c.dt_max, source);
  read_field(j, "dt_init_floor", c.dt_init_floor, source);
  read_field(j, "norm_eps", c.norm_eps, source);
  try {
    c.validate();
  } catch (const Error& e) {
    fail(source + ": " + e.what());
  }
  return c;
}

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& source) {
  // Messages quote a wrong value with dump(), which recurses once per level
  // of nesting: a value nested deep enough would overflow the stack. A model
  // config nests one level.
  constexpr int kMaxDepth = 64;
  auto bounded = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth > kMaxDepth)
      fail(source + ": model config nests JSON deeper than " + std::to_string(kMaxDepth) + " levels");
    return true;
  };
  nlohmann::json j = nlohmann::json::parse(text, bounded, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(source + ": model config is not valid JSON");
  return from_json(j, source);
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
  return j;
}

std::string ModelConfig::to_json_text() const { return to_json().dump(2); }

}  // namespace ssm
