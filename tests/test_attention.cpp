// Sliding-window attention with ALiBi (ssm/attention.hpp): the whole-sequence
// reference against an independent fp64 loop over the full score matrix,
// outputs known in closed form (W = 1 gives the values back, q = 0 gives the
// ALiBi-weighted mean of the window), finite-difference gradients, the
// recurrent step against the whole sequence (outputs and ring, slot by slot),
// and the state's counters checked.
#include <cmath>
#include <random>
#include <vector>

#include "ssm/attention.hpp"
#include "testing.hpp"

using ssm::AttnDims;
using ssm::testing::numeric_gradient;
using ssm::testing::random_vector;
using ssm::testing::rel_error;
using ssm::testing::weighted_sum;

namespace {

size_t state_n(const AttnDims& d) { return ssm::attention_state_size(d.H, d.P, d.W); }

// A random ring for each of the B streams: random keys and values, a random
// head and count (the empty ring and a full one among them).
std::vector<double> random_state(const AttnDims& d, uint64_t seed) {
  const size_t SS = state_n(d), S = d.W - 1, HP = size_t(d.H) * d.P;
  std::vector<double> st = random_vector<double>(d.B * SS, seed);
  std::mt19937_64 rng(seed + 7);
  for (int b = 0; b < d.B; ++b) {
    double* c = st.data() + b * SS + S * 2 * HP;
    c[0] = S > 0 ? double(rng() % S) : 0.0;
    c[1] = b == 0 ? double(S) : b == 1 ? 0.0 : double(rng() % (S + 1));
  }
  return st;
}

// The definition, written out over all pairs: the keys and values of a
// stream are the ring's entries (oldest first) followed by the call's; step
// t sees every key of the window, scored scale q.k minus the slope times the
// distance; everything else is masked out.
void reference(std::vector<double>& y, const std::vector<double>& qkv, const std::vector<double>* state,
               const AttnDims& d) {
  const size_t HP = size_t(d.H) * d.P, S = d.W - 1, SS = state_n(d);
  y.assign(size_t(d.B) * d.T * HP, 0.0);
  for (int b = 0; b < d.B; ++b) {
    std::vector<std::vector<double>> keys, vals;  // (count + T) rows of (H, P)
    int past = 0;
    if (state) {
      const double* st = state->data() + b * SS;
      const int head = int(st[S * 2 * HP]);
      past = int(st[S * 2 * HP + 1]);
      for (int j = 0; j < past; ++j) {
        const size_t slot = ((head - past + j) % int(S) + S) % S;
        keys.emplace_back(st + slot * 2 * HP, st + slot * 2 * HP + HP);
        vals.emplace_back(st + slot * 2 * HP + HP, st + slot * 2 * HP + 2 * HP);
      }
    }
    for (int t = 0; t < d.T; ++t) {
      const double* r = qkv.data() + (size_t(b) * d.T + t) * 3 * HP;
      keys.emplace_back(r + HP, r + 2 * HP);
      vals.emplace_back(r + 2 * HP, r + 3 * HP);
    }
    for (int t = 0; t < d.T; ++t)
      for (int h = 0; h < d.H; ++h) {
        const double* q = qkv.data() + (size_t(b) * d.T + t) * 3 * HP + h * d.P;
        const double slope = std::pow(2.0, -8.0 * (h + 1) / d.H);
        const int i = past + t;  // this step among all keys
        std::vector<double> w(keys.size(), 0.0);
        double mx = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          if (i - j >= d.W) continue;
          double s = 0;
          for (int p = 0; p < d.P; ++p) s += q[p] * keys[j][h * d.P + p];
          w[j] = s / std::sqrt(double(d.P)) - slope * (i - j);
          mx = std::max(mx, w[j]);
        }
        double z = 0;
        for (int j = 0; j <= i; ++j)
          if (i - j < d.W) z += std::exp(w[j] - mx);
        double* yr = y.data() + (size_t(b) * d.T + t) * HP + h * d.P;
        for (int j = 0; j <= i; ++j)
          if (i - j < d.W)
            for (int p = 0; p < d.P; ++p) yr[p] += std::exp(w[j] - mx) / z * vals[j][h * d.P + p];
      }
  }
}

struct Shape {
  AttnDims d;
  bool state;
};
const Shape kShapes[] = {
    {{1, 1, 1, 1, 1}, false},  {{2, 5, 2, 3, 8}, true},   // T < W
    {{2, 19, 3, 4, 6}, true},  {{1, 40, 2, 8, 16}, false},  // T > W
    {{3, 7, 1, 5, 7}, true},   {{1, 9, 4, 2, 1}, true},     // T = W, W = 1
};

}  // namespace

TEST(Attention, ForwardMatchesTheDefinition) {
  for (const Shape& s : kShapes) {
    const AttnDims& d = s.d;
    SCOPED_TRACE("B=" + std::to_string(d.B) + " T=" + std::to_string(d.T) + " H=" + std::to_string(d.H) +
                 " P=" + std::to_string(d.P) + " W=" + std::to_string(d.W));
    const size_t HP = size_t(d.H) * d.P;
    auto qkv = random_vector<double>(size_t(d.B) * d.T * 3 * HP, 1, -2, 2);
    auto st = random_state(d, 2);
    std::vector<double> y(size_t(d.B) * d.T * HP), lse(size_t(d.B) * d.T * d.H), ref;
    ssm::attention_forward<double>(y.data(), lse.data(), nullptr, qkv.data(), s.state ? st.data() : nullptr, d);
    reference(ref, qkv, s.state ? &st : nullptr, d);
    EXPECT_LT(rel_error(y, ref), 1e-13);
  }
}

TEST(Attention, WindowOfOneGivesTheValuesBack) {
  const AttnDims d{2, 11, 3, 4, 1};
  const size_t HP = size_t(d.H) * d.P;
  auto qkv = random_vector<double>(size_t(d.B) * d.T * 3 * HP, 3, -3, 3);
  std::vector<double> y(size_t(d.B) * d.T * HP), lse(size_t(d.B) * d.T * d.H);
  ssm::attention_forward<double>(y.data(), lse.data(), nullptr, qkv.data(), nullptr, d);
  for (int r = 0; r < d.B * d.T; ++r)
    for (size_t i = 0; i < HP; ++i) ASSERT_EQ(y[r * HP + i], qkv[r * 3 * HP + 2 * HP + i]) << r << " " << i;
}

// q = 0: every score is the ALiBi bias alone, so step t is the mean of the
// window's values weighted by 2^(-8 (h+1) / H * distance): the slopes are the
// ALiBi paper's (H = 4: 1/4, 1/16, 1/64, 1/256).
TEST(Attention, ZeroQueriesGiveTheAlibiWeightedWindowMean) {
  const AttnDims d{1, 12, 4, 1, 5};
  EXPECT_DOUBLE_EQ(ssm::alibi_slope(0, 4), 0.25);
  EXPECT_DOUBLE_EQ(ssm::alibi_slope(3, 4), 1.0 / 256);
  const size_t HP = size_t(d.H) * d.P;
  std::vector<double> qkv(size_t(d.T) * 3 * HP, 0.0);
  for (int t = 0; t < d.T; ++t)
    for (int h = 0; h < d.H; ++h) {
      qkv[t * 3 * HP + HP + h] = 0.3 * t - h;  // keys do not matter when q = 0
      qkv[t * 3 * HP + 2 * HP + h] = t + 1;    // value of step t: t + 1
    }
  std::vector<double> y(size_t(d.T) * HP), lse(size_t(d.T) * d.H);
  ssm::attention_forward<double>(y.data(), lse.data(), nullptr, qkv.data(), nullptr, d);
  const double m[4] = {0.25, 1.0 / 16, 1.0 / 64, 1.0 / 256};
  for (int t = 0; t < d.T; ++t)
    for (int h = 0; h < d.H; ++h) {
      double num = 0, den = 0;
      for (int k = 0; k < d.W && k <= t; ++k) {
        num += std::exp(-m[h] * k) * (t - k + 1);
        den += std::exp(-m[h] * k);
      }
      EXPECT_NEAR(y[t * HP + h], num / den, 1e-13) << "t=" << t << " h=" << h;
      EXPECT_NEAR(lse[t * d.H + h], std::log(den), 1e-13);
    }
  // The first step sees only itself.
  for (int h = 0; h < d.H; ++h) EXPECT_EQ(y[h], 1.0);
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  for (const Shape& s : kShapes) {
    const AttnDims& d = s.d;
    SCOPED_TRACE("T=" + std::to_string(d.T) + " W=" + std::to_string(d.W) + " state=" + std::to_string(s.state));
    const size_t HP = size_t(d.H) * d.P, SS = state_n(d), S = d.W - 1;
    auto qkv = random_vector<double>(size_t(d.B) * d.T * 3 * HP, 4, -1.5, 1.5);
    auto st = random_state(d, 5);
    auto wy = random_vector<double>(size_t(d.B) * d.T * HP, 6);
    auto wf = random_vector<double>(d.B * SS, 7);
    for (int b = 0; b < d.B; ++b) wf[b * SS + S * 2 * HP] = wf[b * SS + S * 2 * HP + 1] = 0;  // counters
    std::vector<double> y(wy.size()), lse(size_t(d.B) * d.T * d.H), fin(d.B * SS);
    const double* init = s.state ? st.data() : nullptr;
    auto loss = [&] {
      ssm::attention_forward<double>(y.data(), lse.data(), fin.data(), qkv.data(), init, d);
      return weighted_sum(y, wy) + weighted_sum(fin, wf);
    };
    loss();
    std::vector<double> dqkv(qkv.size()), dinit(st.size());
    ssm::attention_backward<double>(dqkv.data(), s.state ? dinit.data() : nullptr, wy.data(), wf.data(), lse.data(),
                            qkv.data(), init, d);
    EXPECT_LT(rel_error(dqkv, numeric_gradient(loss, qkv)), 1e-7);
    if (s.state) {
      // Only the slots move (the counters are whole numbers, not differentiable).
      std::vector<double> slots, got;
      for (int b = 0; b < d.B; ++b) {
        slots.insert(slots.end(), st.begin() + b * SS, st.begin() + b * SS + S * 2 * HP);
        got.insert(got.end(), dinit.begin() + b * SS, dinit.begin() + b * SS + S * 2 * HP);
        EXPECT_EQ(dinit[b * SS + S * 2 * HP], 0.0);
        EXPECT_EQ(dinit[b * SS + S * 2 * HP + 1], 0.0);
      }
      auto loss_of_slots = [&] {
        for (int b = 0; b < d.B; ++b)
          std::copy(slots.begin() + b * S * 2 * HP, slots.begin() + (b + 1) * S * 2 * HP, st.begin() + b * SS);
        return loss();
      };
      if (!slots.empty()) EXPECT_LT(rel_error(got, numeric_gradient(loss_of_slots, slots)), 1e-7);
    }
  }
}

// The recurrent step, one sample at a time from the same ring, gives the
// whole-sequence outputs, and leaves the ring the sequence's final state holds.
TEST(Attention, StepsMatchTheWholeSequence) {
  for (const Shape& s : kShapes) {
    AttnDims d = s.d;
    SCOPED_TRACE("T=" + std::to_string(d.T) + " W=" + std::to_string(d.W));
    const size_t HP = size_t(d.H) * d.P, SS = state_n(d);
    auto qkv = random_vector<double>(size_t(d.B) * d.T * 3 * HP, 8, -2, 2);
    auto st = s.state ? random_state(d, 9) : std::vector<double>(d.B * SS, 0.0);
    std::vector<double> y(size_t(d.B) * d.T * HP), lse(size_t(d.B) * d.T * d.H), fin(d.B * SS);
    ssm::attention_forward<double>(y.data(), lse.data(), fin.data(), qkv.data(), st.data(), d);
    std::vector<double> ys(y.size()), scores(d.W);
    for (int b = 0; b < d.B; ++b)
      for (int t = 0; t < d.T; ++t)
        ssm::attention_step<double>(ys.data() + (size_t(b) * d.T + t) * HP, st.data() + b * SS,
                                    qkv.data() + (size_t(b) * d.T + t) * 3 * HP, d, scores.data());
    EXPECT_LT(rel_error(ys, y), 1e-13);
    for (size_t i = 0; i < fin.size(); ++i) ASSERT_EQ(st[i], fin[i]) << "state element " << i;
    // In place: final_state may be initial_state.
    auto st2 = s.state ? random_state(d, 9) : std::vector<double>(d.B * SS, 0.0);
    ssm::attention_forward<double>(y.data(), lse.data(), st2.data(), qkv.data(), st2.data(), d);
    for (size_t i = 0; i < fin.size(); ++i) ASSERT_EQ(st2[i], fin[i]) << "in place, element " << i;
  }
}

TEST(Attention, CountersOutsideTheRingAreAnError) {
  const AttnDims d{1, 3, 1, 2, 4};
  const size_t SS = state_n(d), at = (d.W - 1) * 2 * d.H * d.P;
  std::vector<double> qkv(size_t(d.T) * 3 * d.H * d.P, 0.1), y(d.T * d.H * d.P), lse(d.T * d.H);
  for (const auto& [head, count] : {std::pair{3.0, 1.0}, std::pair{0.0, 4.0}, std::pair{0.5, 1.0}, std::pair{-1.0, 0.0}}) {
    std::vector<double> st(SS, 0.0);
    st[at] = head;
    st[at + 1] = count;
    const std::string what = ssm::testing::error_of(
        [&] { ssm::attention_forward<double>(y.data(), lse.data(), nullptr, qkv.data(), st.data(), d); });
    EXPECT_NE(what.find("state counters"), std::string::npos) << head << " " << count << ": " << what;
  }
}
