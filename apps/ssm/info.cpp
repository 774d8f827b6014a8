// `ssm info MODEL`: what a model is and what it costs to run.
#include <cstdio>

#include "commands.hpp"
#include "ssm/model.hpp"

namespace ssm::cli {

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a model's config, parameter count, state per stream and cost");
  static std::string path;
  cmd->add_option("model", path, "model weights (.safetensors) or a model config (.json)")->required();
  cmd->callback([] {
    const bool is_json = path.size() >= 5 && path.substr(path.size() - 5) == ".json";
    Model model = is_json ? Model(ModelConfig::from_file(path)) : Model::load(path);
    const ModelConfig& c = model.config();
    std::printf("model: %s%s\n", path.c_str(), is_json ? " (config only, untrained)" : "");
    std::printf("config:\n%s\n", c.to_json_text().c_str());
    std::printf("parameters:        %zu (%.1f KB as float32)\n", model.num_params(), model.num_params() * 4 / 1024.0);
    const size_t state = model_state_size(c);
    std::printf("state per stream:  %zu floats (%.1f KB)\n", state, state * 4 / 1024.0);
    const double flops = model_flops_per_step(c) / c.frame;
    std::printf("cost per sample:   %.0f FLOPs (%.1f MFLOP/s at %d Hz)\n", flops, flops * c.sample_rate / 1e6,
                c.sample_rate);
    std::printf("samples per step:  %d\n", c.frame);
    std::printf("latency:           %d samples (%.2f ms): lookahead %d + frame wait %d\n", c.latency(),
                1e3 * c.latency() / c.sample_rate, c.lookahead, c.frame - 1);
  });
}

}  // namespace ssm::cli
