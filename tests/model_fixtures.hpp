// Model configs shared by the model, trainer and CLI tests.
#pragma once
#include "ssm/model_config.hpp"

namespace ssm::testing {

// A small model of either block kind: D=16, L=2, E=32, P=8 (H=4), N=8, K=4.
inline ModelConfig small_model_config(BlockKind kind, int chunk) {
  ModelConfig c;
  c.block = kind;
  c.d_model = 16;
  c.n_layers = 2;
  c.expand = 2;
  c.head_dim = 8;
  c.d_state = 8;
  c.d_conv = 4;
  c.chunk = chunk;
  return c;
}

}  // namespace ssm::testing
