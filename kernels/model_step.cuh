// Host-side entry points of the batched recurrent model step in
// kernels/model_step.cu. Called only by lib/cuda/stream.cpp, which packs the
// weights, owns the state and checks the sizes; the public API is
// ssm/cuda_stream.hpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace ssm::kernels {

constexpr int kStepThreads = 256;  // threads per block
constexpr int kStepMaxUnits = 16;  // SSM state units (VEC floats each) a thread holds in registers
constexpr int kStepMaxChunk = 32;  // samples per launch (their residual stream sits in shared memory)

// Where one layer's tensors sit in the packed weights, in floats from the
// layer's start. Projections are stored transposed, (in features, out
// features), so that a warp's 32 output columns read 32 consecutive floats.
struct StepLayerOffsets {
  size_t norm;        // (D)
  size_t in_wT;       // (D, F)  F = 2E + 2GN + H: [z | xBC | dt_raw]
  size_t conv_w;      // (Cc, K) Cc = E + 2GN
  size_t conv_b;      // (Cc)
  size_t dt_bias;     // (H)
  size_t A;           // (H)     -exp(A_log), computed once on the host as Stream does
  size_t D;           // (H)
  size_t mixer_norm;  // (E)
  size_t out_wT;      // (E, D)
};

struct StepArgs {
  const float* weights;                         // packed: the tensors below, then L layers
  size_t enc_w, enc_b, norm_f, head_w, head_b;  // offsets: (D, ci), (D), (D), (co, D), (co)
  size_t layer0, layer_stride;                  // offset of layer 0, floats between layers
  StepLayerOffsets lo;
  float* ssm_state;  // (L, S, E, N) = (L, S, H, P, N)
  float* conv_tail;  // (L, S, K-1, Cc)
  const float* in;   // (n, S, ci)
  float* out;        // (n, S, co)
  int S, n, L;
  int D, E, H, P, G, N, K, ci, co;
  float eps;
  // The cut (chosen on the host, see lib/cuda/stream.cpp):
  int streams_per_block;  // St
  int vec;                // floats per state unit: 4 (N % 4 == 0) or 1
  int lanes_per_row;      // LPR: power of two >= N / vec, <= 32; lanes that share one (P, N) row
  int units;              // state units per thread per pass: 1, 2, 4, 8 or 16
  int passes;             // passes over a block's rows per sample; 1 = state kept in registers
};

// Dynamic shared memory of one launch of a.n samples.
size_t model_step_smem_bytes(const StepArgs& a);
// Allows the kernel for (vec, units) to use at least `bytes` of shared memory.
void model_step_prepare(int vec, int units, size_t bytes);
// Enqueues one launch on `stream`; throws ssm::Error on a launch error.
void model_step_launch(const StepArgs& a, cudaStream_t stream);

// Copies the rows of `count` chosen streams between the full state and a
// compact one, per layer: full (L, S, row), compact (L, count, row), the
// compact stream i being full stream slots[i] (device array, distinct
// entries). GATHER: full -> compact; otherwise compact -> full. The batched
// step of a subset of the streams runs on the compact copy in between.
void state_rows_copy(bool gather, float* full, float* compact, const int* slots, int count, int S, int L,
                     size_t row, cudaStream_t stream);

}  // namespace ssm::kernels
