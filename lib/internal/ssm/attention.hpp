// Causal sliding-window attention with ALiBi positions, over H heads of head
// dim P: the attention layer of a hybrid model (an SSM with a short window of
// exact attention interleaved, as Griffin or Based).
//
// Each step t attends to itself and the W - 1 steps before it (window W):
//
//   s[t,h,τ] = scale * q[t,h] . k[τ,h] - m[h] * (t - τ),   τ in [t - W + 1, t]
//   y[t,h]   = Σ_τ softmax_τ(s[t,h,·]) v[τ,h],             scale = 1 / sqrt(P)
//
// with the ALiBi slopes m[h] = 2^(-8 (h + 1) / H). Positions are ALiBi's, not
// rotary: the bias depends only on the distance t - τ, so a stream needs no
// position counter (a rotary angle t * θ at t = 10^9 samples is beyond fp32's
// resolution), the state is nothing but the window's keys and values, and a
// sequence cut anywhere continues exactly from that state.
//
// Steps before the start of the sequence do not exist (they are not zero
// keys): early steps attend to fewer than W. The state of one stream is a ring
// of the last S = W - 1 keys and values and two counters:
//
//   (S, 2, H, P)  slot j: [k (H, P) | v (H, P)]
//   head          the slot the next entry goes to, in [0, S)  (0 when S = 0)
//   count         entries held, in [0, S]; the newest is at slot head - 1,
//                 the one before at head - 2, ... (mod S)
//
// stored as attention_state_size() numbers per stream (the counters as exact
// small integers). A zero state is the empty ring. final_state is the state
// after the call (slot by slot what the recurrent step would hold), and may
// be the same buffer as initial_state.
//
// qkv packs the three projections of a step, [q (H, P) | k (H, P) | v (H, P)].
// Backward: dqkv and dinitial_state are assigned (=); dinitial_state's
// counters are 0. The saved lse is each row's log-sum-exp of its scores.
#pragma once
#include <cstddef>

#include "ssm/common.hpp"

namespace ssm {

struct AttnDims {
  int B;  // batch
  int T;  // time steps
  int H;  // heads
  int P;  // head dim
  int W;  // window: the step itself and the W - 1 before it
};

// Numbers of state one stream carries: (W - 1) * 2 * H * P + 2.
inline size_t attention_state_size(int H, int P, int W) {
  return static_cast<size_t>(W - 1) * 2 * H * P + 2;
}

// ALiBi slope of head h of H: 2^(-8 (h + 1) / H).
double alibi_slope(int h, int H);

// Throws ssm::Error naming the bad field unless every size is >= 1.
void attention_check_dims(const AttnDims& d);
// Throws ssm::Error unless one stream's counters (head, count) are a ring
// position of the window (whole numbers, head < W - 1, count <= W - 1).
template <typename Real>
void attention_check_state(const Real* state, const AttnDims& d);

template <typename Real>
void attention_forward(Real* y,                    // (B, T, H, P)
                       Real* lse,                  // (B, T, H)  saved
                       Real* final_state,          // (B, attention_state_size) or null
                       const Real* qkv,            // (B, T, 3, H, P)
                       const Real* initial_state,  // (B, attention_state_size) or null (empty)
                       const AttnDims& d);

template <typename Real>
void attention_backward(Real* dqkv,                 // (B, T, 3, H, P)                     =
                        Real* dinitial_state,       // (B, attention_state_size) or null   =
                        const Real* dy,             // (B, T, H, P)
                        const Real* dfinal_state,   // (B, attention_state_size) or null
                        const Real* lse,            // (B, T, H)  from the forward
                        const Real* qkv,            // (B, T, 3, H, P)
                        const Real* initial_state,  // (B, attention_state_size) or null
                        const AttnDims& d);

// One step of one stream, the recurrent form: y from the ring and this
// step's qkv, then the step's k and v into the ring. O(W H P), never
// allocates (real-time path): `scores` is the caller's scratch of W
// numbers. d.B and d.T are ignored; the counters are trusted (a state from
// outside goes through attention_check_state first).
template <typename Real>
void attention_step(Real* y,          // (H, P)
                    Real* state,      // (attention_state_size)  in/out
                    const Real* qkv,  // (3, H, P)
                    const AttnDims& d,
                    Real* scores);    // (W)  scratch

}  // namespace ssm
