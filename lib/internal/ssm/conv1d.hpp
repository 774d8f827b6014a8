// Causal depthwise conv1d of width K over C channels (the short conv of the
// Mamba block, DESIGN.md §1). Here C is the channel count of the conv (the
// xBC width of the block), not the SSM's C matrix.
//
//   y[t,c] = bias[c] + sum_{k<K} weight[c,k] * x[t-K+1+k, c]
//
// Inputs before t = 0 come from the tail, the last K-1 inputs of the previous
// call (zeros when none). final_tail returns the last K-1 inputs of this call
// (taken from the tail when T < K-1), so that a sequence cut anywhere and fed
// in pieces with the tail carried gives the same output as one call.
// final_tail may be the same buffer as initial_tail.
//
// Backward: activation gradients (dx, dinitial_tail) are assigned (=);
// parameter gradients (dweight, dbias) accumulate (+=). Null bias /
// initial_tail / final_tail / dfinal_tail / dbias / dinitial_tail mean zeros /
// "not wanted".
#pragma once
#include "ssm/common.hpp"

namespace ssm {

struct Conv1dDims {
  int B;  // batch
  int T;  // time steps
  int C;  // channels
  int K;  // kernel width
};

// Throws ssm::Error naming the bad field unless every size is >= 1.
void conv1d_check_dims(const Conv1dDims& d);

template <typename Real>
void conv1d_forward(Real* y,                   // (B, T, C)
                    Real* final_tail,          // (B, K-1, C) or null
                    const Real* x,             // (B, T, C)
                    const Real* weight,        // (C, K)
                    const Real* bias,          // (C) or null
                    const Real* initial_tail,  // (B, K-1, C) or null
                    const Conv1dDims& d);

template <typename Real>
void conv1d_backward(Real* dx,                  // (B, T, C)             =
                     Real* dweight,             // (C, K)                +=
                     Real* dbias,               // (C) or null           +=
                     Real* dinitial_tail,       // (B, K-1, C) or null   =
                     const Real* dy,            // (B, T, C)
                     const Real* dfinal_tail,   // (B, K-1, C) or null
                     const Real* x,             // (B, T, C)
                     const Real* weight,        // (C, K)
                     const Real* initial_tail,  // (B, K-1, C) or null
                     const Conv1dDims& d);

// One sample for B independent streams; d.T is ignored. tail holds the last
// K-1 inputs and is shifted in place. Never allocates (real-time path).
template <typename Real>
void conv1d_step(Real* y,             // (B, C)
                 Real* tail,          // (B, K-1, C)  in/out
                 const Real* x,       // (B, C)
                 const Real* weight,  // (C, K)
                 const Real* bias,    // (C) or null
                 const Conv1dDims& d);

}  // namespace ssm
