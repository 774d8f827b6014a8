// Hyper-parameters of a model, read from a JSON file (or a checkpoint's
// __metadata__). Letters as in DESIGN.md §1.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace ssm {

enum class BlockKind { Mamba2, Mamba1 };

struct ModelConfig {
  BlockKind block = BlockKind::Mamba2;
  int d_model = 64;       // D
  int n_layers = 4;       // L
  int expand = 2;         // E = expand * D
  int head_dim = 32;      // P (Mamba-2); H = E / P
  int d_state = 32;       // N
  int d_conv = 4;         // K
  int n_groups = 1;       // G (Mamba-2)
  int dt_rank = 0;        // Mamba-1 low-rank dt projection; 0 = ceil(D / 16)
  int chunk = 64;         // Q used by the chunked mode
  int in_channels = 1;    // values per time step in
  int out_channels = 1;   // values per time step out
  int sample_rate = 16000;
  int lookahead = 0;      // samples: output at t estimates the target at t - lookahead
  // Samples per time step (F): the model reads F consecutive samples of each
  // input channel at once and writes F samples of each output channel, so a
  // sequence of T samples is T / F steps. F > 1 gives an audio model a learned
  // filterbank at 1/F of the per-sample cost; streaming it delays the output
  // by F - 1 samples (latency()).
  int frame = 1;
  // The output head. 0: a mapping head, out = W h + b. K > 0: a masking
  // head over a learned filterbank of K bins, out = S (sigmoid(W h + b) *
  // (A x)) with A (K, F * in_channels) the analysis and S (F * out_channels,
  // K) the synthesis of the frame x: the model can only attenuate what each
  // bin already holds, which keeps the voice's level and spectrum.
  int mask_bins = 0;
  // Frames the analysis A reads (masking head): the current frame and the
  // W - 1 before it, so A is (K, W * F * in_channels). A long window gives
  // the bins a fine frequency resolution while the output still comes a
  // frame at a time: the latency stays F - 1 samples.
  int analysis_frames = 1;
  // What the encoder reads: the frame's samples, or (masking head, K even)
  // the log power of the K / 2 (cosine, sine) pairs of bins, which keeps
  // the features' scale the same from a whisper to a shout.
  bool log_power_input = false;
  // Masking head, K even: 0 gives each bin its own gain. B > 0: the head
  // writes B band gains (as logits), spread on the ERB scale over the K / 2
  // (cosine, sine) pairs and interpolated between band centres by a fixed
  // (K, B) matrix, both bins of a pair alike. A gain then cannot turn a
  // pair's phase, and it varies smoothly over frequency, as the ear resolves
  // it: what the head can learn is less tied to one voice's harmonics.
  int mask_bands = 0;
  // Masking head: the analysis and synthesis stay the windowed Fourier basis
  // and its inverse they start as (tensors the optimizer does not move).
  bool fixed_filterbank = false;
  // Hybrid: one causal sliding-window attention layer (ALiBi positions,
  // lib/internal/ssm/attention.hpp) after every `attention_every` SSM
  // layers; 0 = none. n_layers counts the SSM layers, layers() all of them;
  // layer i is an attention layer when (i + 1) is a multiple of
  // attention_every + 1 (k = 2: SSM, SSM, attention, SSM, SSM, attention).
  // The other three are set only with attention_every > 0.
  int attention_every = 0;
  int attention_window = 64;   // W: a step attends to itself and the W - 1 steps before it
  int attention_heads = 4;     // heads of an attention layer
  int attention_head_dim = 0;  // head dim of an attention layer; 0 = d_model / attention_heads
  double dt_min = 0.001;  // dt initialisation range
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double norm_eps = 1e-5;

  int inner() const { return expand * d_model; }               // E
  int heads() const { return inner() / head_dim; }             // H
  int conv_channels() const;                                   // channels of the depthwise conv
  int rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  bool hybrid() const { return attention_every > 0; }
  int attention_layers() const { return hybrid() ? n_layers / attention_every : 0; }
  int layers() const { return n_layers + attention_layers(); }  // SSM and attention layers
  bool is_attention(int layer) const { return hybrid() && (layer + 1) % (attention_every + 1) == 0; }
  int attn_head_dim() const { return attention_head_dim > 0 ? attention_head_dim : d_model / attention_heads; }
  int attn_inner() const { return attention_heads * attn_head_dim(); }  // H * P of an attention layer
  int step_in() const { return frame * in_channels; }    // values read per time step
  int step_out() const { return frame * out_channels; }  // values written per time step
  bool masking() const { return mask_bins > 0; }
  int head_out() const { return masking() ? (mask_bands > 0 ? mask_bands : mask_bins) : step_out(); }  // rows of head.weight
  int analysis_in() const { return analysis_frames * step_in(); }       // columns of analysis.weight
  int encoder_in() const { return log_power_input ? mask_bins / 2 : step_in(); }  // columns of encoder.weight
  static constexpr double kLogPowerEps = 1e-10;  // the floor of log_power_input's power
  // Samples from an input sample to the streamed output that estimates it:
  // the lookahead plus the wait for the rest of its frame.
  int latency() const { return lookahead + frame - 1; }

  // Throws ssm::Error naming the field when a value is out of range or
  // inconsistent (e.g. E not a multiple of P, H not a multiple of G).
  void validate() const;

  // Strict: unknown keys and wrong types are errors naming the key and `source`.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_json_text(const std::string& text, const std::string& source);
  static ModelConfig from_file(const std::string& path);
  nlohmann::json to_json() const;
  std::string to_json_text() const;
};

const char* block_kind_name(BlockKind k);

}  // namespace ssm
