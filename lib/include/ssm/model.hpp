// A model: input projection -> L residual Mamba blocks -> final RMSNorm ->
// output head, on (B, T, in_channels) -> (B, T, out_channels).
//
// Mamba-2 block (DESIGN.md §1), pre-norm residual:
//   u -> RMSNorm -> in_proj -> [z | xBC | dt_raw]
//   xBC -> causal depthwise conv1d (K) -> SiLU -> [x | B | C]
//   y = SSD(x, dt, A, B, C, D);  y = RMSNorm(y * SiLU(z));  out = u + out_proj(y)
// Mamba-1 block (S6):
//   u -> RMSNorm -> in_proj -> [x | z];  x -> conv1d -> SiLU
//   [dt_low | B | C] = x_proj(x);  dt_raw = dt_proj(dt_low)
//   y = scan(x, dt_raw + dt_proj.bias, A, B, C, D) * SiLU(z);  out = u + out_proj(y)
//
// Tensor names follow mamba_ssm (layers.{i}.mixer.*, layers.{i}.norm.weight),
// so weights move between this library and PyTorch.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ssm/model_config.hpp"
#include "ssm/params.hpp"

namespace ssm {

namespace ops {
// The backend interface (lib/internal/ssm/backend_ops.hpp); ModelGraph takes
// a table of it, and without one runs on the CPU.
template <typename Real>
struct OpsTable;
}  // namespace ops

// Names, shapes and weight-decay multipliers of every parameter of `cfg`.
ParamTable model_param_table(const ModelConfig& cfg);

// The published initialisation: A_log = log(U[1, 16]) (Mamba-2) or
// log(1..N) (Mamba-1), dt_bias = inverse_softplus(exp(U[log dt_min, log dt_max])),
// D = 1, norms = 1, projections uniform(+-1/sqrt(fan_in)). Deterministic in `seed`.
void model_init(ParamBlock<float>& params, const ModelConfig& cfg, uint64_t seed);

// Floats of recurrent state one stream carries (every layer's conv tail and
// SSM state, or an attention layer's ring of keys and values).
size_t model_state_size(const ModelConfig& cfg);
// Of layer `layer` (0 <= layer < cfg.layers()) alone.
size_t model_layer_state_size(const ModelConfig& cfg, int layer);
// Multiply-adds counted as 2 FLOPs, per time step in recurrent mode.
double model_flops_per_step(const ModelConfig& cfg);

class Model {
 public:
  explicit Model(ModelConfig cfg);

  const ModelConfig& config() const { return cfg_; }
  const ParamTable& table() const { return params_.table(); }
  ParamBlock<float>& params() { return params_; }
  const ParamBlock<float>& params() const { return params_; }
  size_t num_params() const { return table().numel(); }
  void init(uint64_t seed) { model_init(params_, cfg_, seed); }

  // safetensors with mamba_ssm tensor names and the config in __metadata__.
  // save() is atomic (temp file + rename). load() checks every shape against
  // the config and names the offending tensor.
  void save(const std::string& path, const std::map<std::string, std::string>& extra_metadata = {}) const;
  static Model load(const std::string& path);

 private:
  ModelConfig cfg_;
  ParamBlock<float> params_;
};

// Forward and backward over whole sequences (the chunked mode), templated so
// that fp64 serves as the test reference, and written once over the ops of a
// backend (ssm/backend_ops.hpp, internal; the CPU one of Real when none is
// given). Every pointer passed in is memory of that backend. Holds the saved activations
// of the last forward; buffers grow to the largest (B, T) seen and are reused.
template <typename Real>
class ModelGraph {
 public:
  ModelGraph(const ModelConfig& cfg, const ParamTable& table);  // on ops::cpu<Real>()
  ModelGraph(const ModelConfig& cfg, const ParamTable& table, const ops::OpsTable<Real>& backend);
  ~ModelGraph();
  ModelGraph(ModelGraph&&) noexcept;
  ModelGraph& operator=(ModelGraph&&) noexcept;

  // out (B, T, out_channels) from in (B, T, in_channels); T counts samples
  // and must be a multiple of the config's frame (T / frame steps). With `state`
  // (per layer: conv tails (B, K-1, Cc), then SSM states (B, E, N); in all
  // B * model_state_size floats) the sequence continues
  // from it and `next_state` receives the state after the last step; either
  // may be null (zeros / not wanted). `chunk` 0 uses the config's.
  void forward(Real* out, const Real* in, const Real* params, int B, int T, const Real* state = nullptr,
               Real* next_state = nullptr, int chunk = 0);

  // Gradients of the last forward (which must have had no initial state).
  // dparams accumulate (+=); din, when not null, is assigned (=).
  void backward(Real* dparams, Real* din, const Real* dout, const Real* params);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The recurrent mode: a model run as a stream, any number of samples at a
// time, with every layer's conv tail and SSM state carried between calls.
// process() of n samples equals n calls of one sample (DESIGN.md §2.4). It
// runs on the calling thread only and allocates nothing after construction.
// The model must outlive the stream. The state layout is that of
// ModelGraph::forward's `state` for one stream, so the modes can hand over.
class Stream {
 public:
  explicit Stream(const Model& model, int max_block = 512);
  ~Stream();
  Stream(Stream&&) noexcept;

  // in (n, in_channels) -> out (n, out_channels), any n >= 0. With frame F > 1
  // the input gathers into frames and out[t] is the model's output for
  // sample t - (F - 1) (zeros before the first frame completes).
  void process(const float* in, float* out, size_t n);
  void reset();
  // Samples from an input to its output, frame wait and lookahead included.
  int latency() const;

  size_t state_size() const;  // floats
  // The state as bytes (a small header + the floats, and with frames the
  // partial input frame and pending outputs); restore() checks the header
  // against this model and names what differs.
  std::vector<uint8_t> snapshot() const;
  void restore(const std::vector<uint8_t>& bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
