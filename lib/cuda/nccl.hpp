// NCCL, loaded at run time (libnccl.so.2; SSM_NCCL_LIBRARY names another
// file), for data-parallel training over the GPUs of one process
// (TrainerConfig::gpus). Only the few entry points used are declared here,
// with NCCL's C ABI; a build needs no NCCL headers, and a machine without
// NCCL can still train on one GPU.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

namespace ssm {

// One communicator per GPU of the group, made together (ncclCommInitAll).
class NcclGroup {
 public:
  // devices[r] is rank r's GPU. Throws ssm::Error saying what is missing
  // (the library, a symbol) or what NCCL answered.
  explicit NcclGroup(const std::vector<int>& devices);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int ranks() const { return static_cast<int>(comms_.size()); }
  // In place, summed over the ranks, on rank r's stream. Every rank calls it
  // with the same n, from its own thread, at the same point of its step.
  void all_reduce_sum(int rank, float* data, size_t n, cudaStream_t stream) const;
  // "NCCL 2.21.5 (libnccl.so.2)".
  std::string description() const { return description_; }

 private:
  std::vector<void*> comms_;  // ncclComm_t per rank
  std::string description_;
};

}  // namespace ssm
