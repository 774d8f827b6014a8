// The chunked mode of a whole model on the GPU: ModelGraph (ssm/model.hpp)
// with device pointers. Same function, same parameter layout (the flat block
// of ssm/params.hpp copied to the device as is), fp32 with TF32 products.
#pragma once
#include <memory>

#include "ssm/cuda_ssd.hpp"
#include "ssm/model.hpp"

namespace ssm {

class ModelGraphCuda {
 public:
  // Buffers grow to the largest (B, T) seen and are reused. Work goes to
  // `stream`. `math` picks the products' precision: tf32 (training) or fp32
  // (3xTF32 in the SSD, no TF32 in cuBLAS; the tests' reference tolerance).
  ModelGraphCuda(const ModelConfig& cfg, const ParamTable& table, cudaStream_t stream = nullptr,
                 CudaMath math = CudaMath::tf32);
  ~ModelGraphCuda();
  ModelGraphCuda(const ModelGraphCuda&) = delete;
  ModelGraphCuda& operator=(const ModelGraphCuda&) = delete;

  // out (B, T, out_channels) from in (B, T, in_channels), all device memory,
  // from zero state. `chunk` 0 uses the config's.
  void forward(float* out, const float* in, const float* params, int B, int T, int chunk = 0);

  // Gradients of the last forward: dparams accumulate (+=); din, when not
  // null, is assigned (=). Device memory.
  void backward(float* dparams, float* din, const float* dout, const float* params);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
