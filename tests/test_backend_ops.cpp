// Every op of ssm/backend_ops.hpp, on every backend, against cpu<double>:
// forward and backward together, on fresh random inputs at several shapes,
// to the tolerances of DESIGN §2 (‖out − ref‖ / ‖ref‖: cpu<float> 1e-5,
// cuda 1e-3; NaN never passes). Gradients (the buffers named d...) of
// cpu<float> are held to 1e-4, as tests/test_ssd.cpp holds the float SSD
// backward: whole-sequence sums such as dA_log cancel over few terms. Outputs that are assigned start as NaN on the
// backend under test (a value left unwritten fails); parameter gradients,
// which accumulate, start from the same random values on both sides.
//
// The seed is new each run and printed; SSM_OPS_SEED=<n> repeats a run.
// A new op is one entry in cases(), a new backend one entry in kBackends.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "ssm/backend_ops.hpp"
#include "ssm/params.hpp"

namespace {

namespace ops = ssm::ops;

enum class Kind {
  in,   // random input, not compared
  out,  // assigned by the op: NaN on the backend under test, compared
  acc,  // accumulated into (+=): the same random start on both sides, compared
};

struct BufSpec {
  std::string name;
  size_t n;
  Kind kind;
  double lo = -1, hi = 1;  // range of the random values
};

// A case's buffers on one backend, by name.
template <typename R>
class Bufs {
 public:
  using Real = R;
  explicit Bufs(const ops::OpsTable<Real>& be) : be_(be) {}
  ~Bufs() {
    for (auto& [name, p] : p_) be_.release(be_.ctx, p);
  }
  Bufs(const Bufs&) = delete;
  Bufs& operator=(const Bufs&) = delete;
  void add(const std::string& name, const std::vector<double>& values) {
    Real* p = be_.alloc(be_.ctx, values.size());
    p_[name] = p;
    const std::vector<Real> v(values.begin(), values.end());
    be_.upload(be_.ctx, p, v.data(), v.size());
    n_[name] = values.size();
  }
  Real* operator()(const std::string& name) const { return p_.at(name); }
  std::vector<double> read(const std::string& name) const {
    std::vector<Real> v(n_.at(name));
    be_.download(be_.ctx, v.data(), p_.at(name), v.size());
    return std::vector<double>(v.begin(), v.end());
  }
  // A host value (a loss) stored as a buffer of one element, or element i of a buffer.
  void put(const std::string& name, double value, size_t i = 0) {
    const Real v = static_cast<Real>(value);
    be_.upload(be_.ctx, p_.at(name) + i, &v, 1);
  }

 private:
  const ops::OpsTable<Real>& be_;
  std::map<std::string, Real*> p_;
  std::map<std::string, size_t> n_;
};

struct Case {
  std::string op, shape;
  std::vector<BufSpec> bufs;
  // Run the op (forward then backward) on a backend; false when it lacks it.
  std::function<bool(const ops::OpsTable<double>&, Bufs<double>&)> run64;
  std::function<bool(const ops::OpsTable<float>&, Bufs<float>&)> run32;
};

template <typename F>
Case make_case(std::string op, std::string shape, std::vector<BufSpec> bufs, F run) {
  return {std::move(op), std::move(shape), std::move(bufs), run, run};
}

template <typename B>
using RealOf = typename std::remove_reference_t<B>::Real;

std::string dims_text(std::initializer_list<std::pair<const char*, long>> dims) {
  std::string s;
  for (const auto& [k, v] : dims) s += (s.empty() ? "" : " ") + std::string(k) + "=" + std::to_string(v);
  return s;
}

// ---------------------------------------------------------------------------
// The ops, one function each, with the shapes they are tried at.

void data_movement_cases(std::vector<Case>& out) {
  struct S {
    int R, ld_src, c0_src, ld_dst, c0_dst, w;
  };
  for (const S s : {S{1, 1, 0, 1, 0, 1}, S{13, 40, 7, 25, 3, 19}, S{64, 96, 64, 32, 0, 32}}) {
    // dst is read back whole: the columns outside [c0_dst, c0_dst + w) must keep their values.
    out.push_back(make_case("copy_cols",
                            dims_text({{"R", s.R}, {"ld_src", s.ld_src}, {"c0_src", s.c0_src}, {"ld_dst", s.ld_dst},
                                       {"c0_dst", s.c0_dst}, {"w", s.w}}),
                            {{"src", size_t(s.R) * s.ld_src, Kind::in}, {"dst", size_t(s.R) * s.ld_dst, Kind::acc}},
                            [s](const auto& be, auto& p) {
                              if (!be.copy_cols) return false;
                              be.copy_cols(be.ctx, {p("dst"), s.ld_dst, s.c0_dst, p("src"), s.ld_src, s.c0_src,
                                                    size_t(s.R), s.w});
                              return true;
                            }));
  }
  for (const long n : {1L, 1000L}) {
    out.push_back(make_case("add_into", dims_text({{"n", n}}), {{"src", size_t(n), Kind::in}, {"dst", size_t(n), Kind::acc}},
                            [n](const auto& be, auto& p) {
                              if (!be.add_into) return false;
                              be.add_into(be.ctx, {p("dst"), p("src"), n});
                              return true;
                            }));
  }
}

void linear_cases(std::vector<Case>& out) {
  struct S {
    int R, I, O;
    bool bias, fixed_weight = false;  // fixed_weight: no dW (a tensor the model does not train)
  };
  for (const S s : {S{1, 1, 1, true}, S{7, 5, 3, false}, S{33, 16, 24, true}, S{64, 48, 96, true},
                    S{40, 12, 24, false, true}}) {
    const size_t R = s.R, I = s.I, O = s.O;
    std::vector<BufSpec> b = {{"x", R * I, Kind::in}, {"W", O * I, Kind::in}, {"dy", R * O, Kind::in},
                              {"y", R * O, Kind::out}, {"dx", R * I, Kind::out}};
    if (!s.fixed_weight) b.push_back({"dW", O * I, Kind::acc});
    if (s.bias) b.insert(b.end(), {{"bias", O, Kind::in}, {"dbias", O, Kind::acc}});
    out.push_back(make_case("linear",
                            dims_text({{"R", s.R}, {"I", s.I}, {"O", s.O}, {"bias", s.bias}, {"dW", !s.fixed_weight}}),
                            b, [s](const auto& be, auto& p) {
                              if (!be.linear_forward || !be.linear_backward) return false;
                              be.linear_forward(be.ctx, {p("y"), p("x"), p("W"), s.bias ? p("bias") : nullptr, s.R,
                                                         s.I, s.O});
                              be.linear_backward(be.ctx, {p("dx"), s.fixed_weight ? nullptr : p("dW"),
                                                          s.bias ? p("dbias") : nullptr, p("dy"), p("x"), p("W"), s.R,
                                                          s.I, s.O});
                              return true;
                            }));
  }
}

void rmsnorm_cases(std::vector<Case>& out) {
  struct S {
    int R, C, G;
    bool gated;
  };
  for (const S s : {S{1, 3, 1, false}, S{9, 40, 1, false}, S{5, 64, 1, true}, S{17, 48, 4, true}}) {
    const size_t R = s.R, C = s.C, G = s.G;
    std::vector<BufSpec> b = {{"x", R * C, Kind::in},       {"weight", C, Kind::in, 0.5, 1.5},
                              {"dy", R * C, Kind::in},      {"y", R * C, Kind::out},
                              {"rstd", R * G, Kind::out},   {"dx", R * C, Kind::out},
                              {"dweight", C, Kind::acc}};
    if (s.gated) b.insert(b.end(), {{"z", R * C, Kind::in, -3, 3}, {"dz", R * C, Kind::out}});
    out.push_back(make_case(s.gated ? "gated_rmsnorm" : "rmsnorm",
                            dims_text({{"R", s.R}, {"C", s.C}, {"G", s.G}}), b, [s](const auto& be, auto& p) {
                              if (!be.rmsnorm_forward || !be.rmsnorm_backward) return false;
                              auto* z = s.gated ? p("z") : nullptr;
                              be.rmsnorm_forward(be.ctx, {p("y"), p("rstd"), p("x"), z, p("weight"), s.R, s.C, s.G,
                                                          1e-5});
                              be.rmsnorm_backward(be.ctx, {p("dx"), s.gated ? p("dz") : nullptr, p("dweight"),
                                                           p("dy"), p("rstd"), p("x"), z, p("weight"), s.R, s.C,
                                                           s.G});
                              return true;
                            }));
  }
}

void silu_cases(std::vector<Case>& out) {
  for (const long n : {1L, 77L, 4096L}) {
    const size_t N = n;
    out.push_back(make_case("silu", dims_text({{"n", n}}),
                            {{"x", N, Kind::in, -6, 6}, {"dy", N, Kind::in}, {"y", N, Kind::out}, {"dx", N, Kind::out}},
                            [n](const auto& be, auto& p) {
                              if (!be.silu_forward || !be.silu_backward) return false;
                              be.silu_forward(be.ctx, {p("y"), p("x"), n});
                              be.silu_backward(be.ctx, {p("dx"), p("dy"), p("x"), n});
                              return true;
                            }));
  }
}

void gate_cases(std::vector<Case>& out) {
  for (const long n : {1L, 77L, 4096L}) {
    const size_t N = n;
    for (const bool with_dx : {true, false}) {
      std::vector<BufSpec> b = {{"x", N, Kind::in}, {"g", N, Kind::in, -6, 6}, {"dy", N, Kind::in},
                                {"y", N, Kind::out}, {"dg", N, Kind::out}};
      if (with_dx) b.push_back({"dx", N, Kind::out});
      out.push_back(make_case("sigmoid_gate", dims_text({{"n", n}, {"dx", with_dx}}), b,
                              [n, with_dx](const auto& be, auto& p) {
                                if (!be.gate_forward || !be.gate_backward) return false;
                                be.gate_forward(be.ctx, {p("y"), p("x"), p("g"), n});
                                be.gate_backward(be.ctx, {with_dx ? p("dx") : nullptr, p("dg"), p("dy"), p("x"),
                                                          p("g"), n});
                                return true;
                              }));
    }
  }
}

void log_power_cases(std::vector<Case>& out) {
  for (const long n : {1L, 77L, 4096L}) {
    const size_t N = n;
    // Bins in [0.05, 2] keep the power away from eps, where float and double
    // rightly part (the log of a power near eps is all rounding).
    out.push_back(make_case("log_power", dims_text({{"n", n}}),
                            {{"x", 2 * N, Kind::in, 0.05, 2}, {"dy", N, Kind::in}, {"y", N, Kind::out},
                             {"dx", 2 * N, Kind::out}},
                            [n](const auto& be, auto& p) {
                              if (!be.log_power_forward || !be.log_power_backward) return false;
                              be.log_power_forward(be.ctx, {p("y"), p("x"), n, 1e-8});
                              be.log_power_backward(be.ctx, {p("dx"), p("dy"), p("x"), n, 1e-8});
                              return true;
                            }));
  }
}

void unfold_cases(std::vector<Case>& out) {
  struct S {
    ssm::ops::UnfoldDims d;
    bool tails;
  };
  for (const S s : {S{{1, 1, 1, 1}, false}, S{{2, 13, 5, 4}, true}, S{{3, 40, 32, 8}, false}, S{{1, 3, 7, 6}, true}}) {
    const auto& d = s.d;
    const size_t nx = size_t(d.B) * d.T * d.C, ny = nx * d.W, tail = size_t(d.B) * (d.W - 1) * d.C;
    std::vector<BufSpec> b = {{"x", nx, Kind::in}, {"dy", ny, Kind::in}, {"y", ny, Kind::out}, {"dx", nx, Kind::out}};
    const bool tails = s.tails && tail;
    if (tails) b.insert(b.end(), {{"tail", tail, Kind::in}, {"next_tail", tail, Kind::out}});
    out.push_back(make_case("unfold", dims_text({{"B", d.B}, {"T", d.T}, {"C", d.C}, {"W", d.W}, {"tails", tails}}),
                            b, [d, tails](const auto& be, auto& p) {
                              if (!be.unfold_forward || !be.unfold_backward) return false;
                              auto t = [&](const char* n) { return tails ? p(n) : nullptr; };
                              be.unfold_forward(be.ctx, {p("y"), t("next_tail"), p("x"), t("tail"), d});
                              be.unfold_backward(be.ctx, {p("dx"), p("dy"), d});
                              return true;
                            }));
  }
}

void conv1d_cases(std::vector<Case>& out) {
  struct S {
    ssm::Conv1dDims d;
    bool tails;
  };
  for (const S s : {S{{1, 1, 1, 1}, false}, S{{2, 13, 5, 4}, true}, S{{3, 40, 24, 4}, false}, S{{1, 9, 7, 3}, true}}) {
    const auto& d = s.d;
    const size_t act = size_t(d.B) * d.T * d.C, tail = size_t(d.B) * (d.K - 1) * d.C;
    std::vector<BufSpec> b = {{"x", act, Kind::in},   {"weight", size_t(d.C) * d.K, Kind::in}, {"bias", size_t(d.C), Kind::in},
                              {"dy", act, Kind::in},  {"y", act, Kind::out},                   {"dx", act, Kind::out},
                              {"dweight", size_t(d.C) * d.K, Kind::acc},                      {"dbias", size_t(d.C), Kind::acc}};
    if (s.tails && tail)
      b.insert(b.end(), {{"init", tail, Kind::in},
                         {"dfinal", tail, Kind::in},
                         {"final", tail, Kind::out},
                         {"dinit", tail, Kind::out}});
    const bool tails = s.tails && tail;
    out.push_back(make_case("conv1d", dims_text({{"B", d.B}, {"T", d.T}, {"C", d.C}, {"K", d.K}, {"tails", tails}}), b,
                            [d, tails](const auto& be, auto& p) {
                              if (!be.conv1d_forward || !be.conv1d_backward) return false;
                              auto t = [&](const char* n) { return tails ? p(n) : nullptr; };
                              be.conv1d_forward(be.ctx, {p("y"), t("final"), p("x"), p("weight"), p("bias"), t("init"), d});
                              be.conv1d_backward(be.ctx, {p("dx"), p("dweight"), p("dbias"), t("dinit"), p("dy"),
                                                          t("dfinal"), p("x"), p("weight"), t("init"), d});
                              return true;
                            }));
  }
}

void ssd_cases(std::vector<Case>& out) {
  struct S {
    ssm::SsdDims d;
    int Q;
    bool states;
  };
  for (const S s : {S{{1, 1, 1, 1, 1, 1}, 1, false}, S{{2, 37, 4, 8, 2, 16}, 8, true},
                    S{{1, 130, 2, 16, 1, 32}, 64, true}, S{{2, 64, 3, 4, 3, 8}, 16, false}}) {
    const auto& d = s.d;
    const size_t nx = size_t(d.B) * d.T * d.H * d.P, ndt = size_t(d.B) * d.T * d.H,
                 nbc = size_t(d.B) * d.T * d.G * d.N, ns = size_t(d.B) * d.H * d.P * d.N, H = d.H;
    std::vector<BufSpec> b = {
        {"x", nx, Kind::in},          {"dt_raw", ndt, Kind::in, -4, 0}, {"A_log", H, Kind::in, 0, 2.7},
        {"Bm", nbc, Kind::in},        {"Cm", nbc, Kind::in},            {"D", H, Kind::in},
        {"dt_bias", H, Kind::in, -1, 0.5}, {"dy", nx, Kind::in},        {"y", nx, Kind::out},
        {"dx", nx, Kind::out},        {"ddt_raw", ndt, Kind::out},      {"dBm", nbc, Kind::out},
        {"dCm", nbc, Kind::out},      {"dA_log", H, Kind::acc},         {"dD", H, Kind::acc},
        {"ddt_bias", H, Kind::acc}};
    if (s.states)
      b.insert(b.end(), {{"init", ns, Kind::in}, {"dfinal", ns, Kind::in}, {"final", ns, Kind::out},
                         {"dinit", ns, Kind::out}});
    const bool st = s.states;
    out.push_back(make_case(
        "ssd", dims_text({{"B", d.B}, {"T", d.T}, {"H", d.H}, {"P", d.P}, {"G", d.G}, {"N", d.N}, {"Q", s.Q}}), b,
        [s, st](const auto& be, auto& p) {
          if (!be.ssd_forward || !be.ssd_backward) return false;
          auto o = [&](const char* n) { return st ? p(n) : nullptr; };
          const ops::SsdFwd<RealOf<decltype(p)>> f{p("y"),  o("final"), p("x"),       p("dt_raw"), p("A_log"), p("Bm"),
                                                   p("Cm"), p("D"),     p("dt_bias"), o("init"),   s.d,        s.Q};
          be.ssd_forward(be.ctx, f);
          be.ssd_backward(be.ctx, {p("dx"), p("ddt_raw"), p("dA_log"), p("dBm"), p("dCm"), p("dD"), p("ddt_bias"),
                                   o("dinit"), p("dy"), o("dfinal"), f});
          return true;
        }));
  }
}

void scan_cases(std::vector<Case>& out) {
  struct S {
    ssm::ScanDims d;
    int Q;
    bool gate, states;
  };
  for (const S s : {S{{1, 1, 1, 1, 1}, 1, false, false}, S{{2, 45, 6, 2, 8}, 16, true, true},
                    S{{1, 100, 16, 1, 16}, 32, false, true}, S{{3, 33, 8, 4, 4}, 8, true, false}}) {
    const auto& d = s.d;
    const size_t act = size_t(d.B) * d.T * d.E, nbc = size_t(d.B) * d.T * d.G * d.N, ns = size_t(d.B) * d.E * d.N,
                 E = d.E, EN = size_t(d.E) * d.N;
    std::vector<BufSpec> b = {
        {"x", act, Kind::in},          {"dt_raw", act, Kind::in, -4, 0}, {"A_log", EN, Kind::in, 0, 2.7},
        {"Bm", nbc, Kind::in},         {"Cm", nbc, Kind::in},            {"D", E, Kind::in},
        {"dt_bias", E, Kind::in, -1, 0.5}, {"dy", act, Kind::in},        {"y", act, Kind::out},
        {"dx", act, Kind::out},        {"ddt_raw", act, Kind::out},      {"dBm", nbc, Kind::out},
        {"dCm", nbc, Kind::out},       {"dA_log", EN, Kind::acc},        {"dD", E, Kind::acc},
        {"ddt_bias", E, Kind::acc}};
    if (s.gate) b.insert(b.end(), {{"z", act, Kind::in, -3, 3}, {"dz", act, Kind::out}});
    if (s.states)
      b.insert(b.end(), {{"init", ns, Kind::in}, {"dfinal", ns, Kind::in}, {"final", ns, Kind::out},
                         {"dinit", ns, Kind::out}});
    out.push_back(make_case(
        "s6_scan",
        dims_text({{"B", d.B}, {"T", d.T}, {"E", d.E}, {"G", d.G}, {"N", d.N}, {"Q", s.Q}, {"z", s.gate}}), b,
        [s](const auto& be, auto& p) {
          if (!be.scan_forward || !be.scan_backward) return false;
          auto st = [&](const char* n) { return s.states ? p(n) : nullptr; };
          auto gz = [&](const char* n) { return s.gate ? p(n) : nullptr; };
          const ops::ScanFwd<RealOf<decltype(p)>> f{p("y"),  st("final"), p("x"),       p("dt_raw"), p("A_log"),
                                                    p("Bm"), p("Cm"),      p("D"),       p("dt_bias"), gz("z"),
                                                    st("init"), s.d,       s.Q};
          be.scan_forward(be.ctx, f);
          be.scan_backward(be.ctx, {p("dx"), p("ddt_raw"), p("dA_log"), p("dBm"), p("dCm"), p("dD"), p("ddt_bias"),
                                    gz("dz"), st("dinit"), p("dy"), st("dfinal"), f});
          return true;
        }));
  }
}

void s4d_cases(std::vector<Case>& out) {
  for (const ssm::S4dDims d : {ssm::S4dDims{1, 1, 1, 1}, ssm::S4dDims{2, 50, 3, 4}, ssm::S4dDims{1, 256, 8, 16}}) {
    const size_t act = size_t(d.B) * d.T * d.H, H = d.H, HN = size_t(d.H) * d.N;
    out.push_back(make_case(
        "s4d", dims_text({{"B", d.B}, {"T", d.T}, {"H", d.H}, {"N", d.N}}),
        {{"x", act, Kind::in},         {"log_dt", H, Kind::in, -6.9, -2.3}, {"A_re_log", HN, Kind::in, -1.5, 0},
         {"A_im", HN, Kind::in, 0, 10}, {"C", 2 * HN, Kind::in},            {"D", H, Kind::in},
         {"dy", act, Kind::in},        {"y", act, Kind::out},               {"kernel", size_t(d.H) * d.T, Kind::out},
         {"final", size_t(d.B) * 2 * HN, Kind::out}, {"dx", act, Kind::out}, {"dlog_dt", H, Kind::acc},
         {"dA_re_log", HN, Kind::acc}, {"dA_im", HN, Kind::acc},            {"dC", 2 * HN, Kind::acc},
         {"dD", H, Kind::acc}},
        [d](const auto& be, auto& p) {
          if (!be.s4d_forward || !be.s4d_backward) return false;
          const ops::S4dFwd<RealOf<decltype(p)>> f{p("y"),    p("final"), p("kernel"), p("x"), p("log_dt"),
                                                   p("A_re_log"), p("A_im"), p("C"),     p("D"), d};
          be.s4d_forward(be.ctx, f);
          be.s4d_backward(be.ctx, {p("dx"), p("dlog_dt"), p("dA_re_log"), p("dA_im"), p("dC"), p("dD"), p("dy"),
                                   p("kernel"), f});
          return true;
        }));
  }
}

void attention_cases(std::vector<Case>& out) {
  struct S {
    ssm::AttnDims d;
    bool states;
  };
  // T < W, T > W, T = W, W = 1, with and without the rings carried.
  for (const S s : {S{{1, 1, 1, 1, 1}, false}, S{{2, 5, 2, 4, 16}, true}, S{{2, 45, 3, 8, 12}, true},
                    S{{1, 64, 4, 16, 64}, false}, S{{3, 9, 2, 3, 9}, true}, S{{2, 13, 2, 5, 1}, true}}) {
    const auto& d = s.d;
    const size_t R = size_t(d.B) * d.T, HP = size_t(d.H) * d.P, SS = ssm::attention_state_size(d.H, d.P, d.W),
                 ns = size_t(d.B) * SS;
    std::vector<BufSpec> b = {{"qkv", R * 3 * HP, Kind::in, -2, 2}, {"dy", R * HP, Kind::in},
                              {"y", R * HP, Kind::out},             {"lse", R * d.H, Kind::out},
                              {"dqkv", R * 3 * HP, Kind::out}};
    if (s.states)
      b.insert(b.end(), {{"init", ns, Kind::in}, {"dfinal", ns, Kind::in}, {"final", ns, Kind::out},
                         {"dinit", ns, Kind::out}});
    out.push_back(make_case(
        "attention", dims_text({{"B", d.B}, {"T", d.T}, {"H", d.H}, {"P", d.P}, {"W", d.W}, {"states", s.states}}), b,
        [s, SS](const auto& be, auto& p) {
          if (!be.attention_forward || !be.attention_backward) return false;
          auto st = [&](const char* n) { return s.states ? p(n) : nullptr; };
          if (s.states) {
            // Valid counters: stream b's ring at head b, holding W - 1 - b entries (full, partial, empty).
            const int S = s.d.W - 1;
            for (int i = 0; i < s.d.B; ++i) {
              const size_t at = i * SS + size_t(S) * 2 * s.d.H * s.d.P;
              p.put("init", S > 0 ? i % S : 0, at);
              p.put("init", std::max(0, S - i), at + 1);
            }
          }
          const ops::AttnFwd<RealOf<decltype(p)>> f{p("y"), p("lse"), st("final"), p("qkv"), st("init"), s.d};
          be.attention_forward(be.ctx, f);
          be.attention_backward(be.ctx, {p("dqkv"), st("dinit"), p("dy"), st("dfinal"), p("lse"), f});
          return true;
        }));
  }
}

void loss_cases(std::vector<Case>& out) {
  const std::pair<ops::LossKind, const char*> kinds[] = {
      {ops::LossKind::l1, "l1"}, {ops::LossKind::l2, "l2"}, {ops::LossKind::si_sdr, "si_sdr"}};
  for (const auto& [kind, name] : kinds) {
    for (const ssm::LossDims d : {ssm::LossDims{1, 1}, ssm::LossDims{3, 257}, ssm::LossDims{2, 4000}}) {
      if (kind == ops::LossKind::si_sdr && d.T < 2) continue;  // a one-sample item has no zero-mean signal
      const size_t n = size_t(d.B) * d.T;
      out.push_back(make_case(std::string("loss_") + name, dims_text({{"B", d.B}, {"T", d.T}}),
                              {{"pred", n, Kind::in}, {"target", n, Kind::in}, {"loss", 1, Kind::out},
                               {"dpred", n, Kind::out}},
                              [d, kind](const auto& be, auto& p) {
                                if (!be.loss_forward || !be.loss_backward) return false;
                                double loss = NAN;
                                const ops::LossFwd<RealOf<decltype(p)>> f{&loss, p("pred"), p("target"), d, kind,
                                                                          1e-8};
                                be.loss_forward(be.ctx, f);
                                p.put("loss", loss);
                                be.loss_backward(be.ctx, {p("dpred"), 0.75, f});
                                return true;
                              }));
    }
  }
}

void adamw_cases(std::vector<Case>& out) {
  // Two tensors with different decay multipliers and a gap between them.
  static const ssm::ParamTable table = [] {
    ssm::ParamTable t;
    t.add({"w", {37, 5}, 1.0});
    t.add({"norm", {19}, 0.0});
    return t;
  }();
  const size_t n = table.total();
  for (const int64_t step : {int64_t{1}, int64_t{1000}}) {
    out.push_back(make_case("adamw", dims_text({{"total", long(n)}, {"step", long(step)}}),
                            {{"grads", n, Kind::in}, {"params", n, Kind::acc}, {"m", n, Kind::acc},
                             {"v", n, Kind::acc, 0, 0.01}},
                            [step](const auto& be, auto& p) {
                              if (!be.adamw_step) return false;
                              ssm::AdamWConfig c;
                              c.weight_decay = 0.1;
                              be.adamw_step(be.ctx, {p("params"), p("m"), p("v"), p("grads"), &table, step, 1e-2, c});
                              return true;
                            }));
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  data_movement_cases(all);
  linear_cases(all);
  rmsnorm_cases(all);
  silu_cases(all);
  gate_cases(all);
  log_power_cases(all);
  unfold_cases(all);
  conv1d_cases(all);
  ssd_cases(all);
  scan_cases(all);
  s4d_cases(all);
  attention_cases(all);
  loss_cases(all);
  adamw_cases(all);
  return all;
}

// ---------------------------------------------------------------------------

struct BackendUnderTest {
  const char* name;
  std::function<const ops::OpsTable<float>*(std::string*)> get;
  double tolerance;       // outputs, DESIGN §2
  double grad_tolerance;  // gradients
};

const BackendUnderTest kBackends[] = {
    {"cpu_float", [](std::string*) { return &ops::cpu_f32(); }, 1e-5, 1e-4},
    {"cuda", [](std::string* why) { return ops::cuda(why); }, 1e-3, 1e-3},
};

uint64_t base_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("SSM_OPS_SEED");
    const uint64_t s = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("backend ops: seed %llu (repeat with SSM_OPS_SEED=%llu)\n", static_cast<unsigned long long>(s),
                static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// Values that are exact floats, so both sides start from the same numbers.
std::vector<double> random_values(const BufSpec& b, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(b.lo, b.hi);
  std::vector<double> v(b.n);
  for (double& x : v) x = static_cast<float>(u(rng));
  return v;
}

double rel_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void PrintTo(const BackendUnderTest& b, std::ostream* os) { *os << b.name; }

class BackendOps : public ::testing::TestWithParam<BackendUnderTest> {};

TEST_P(BackendOps, EveryOpMatchesTheFp64Reference) {
  const BackendUnderTest& bt = GetParam();
  std::string why;
  const ops::OpsTable<float>* be = bt.get(&why);
  if (!be) GTEST_SKIP() << bt.name << ": " << why;
  const ops::OpsTable<double>& ref_be = ops::cpu_f64();
  const std::vector<Case> all = cases();
  int run = 0;
  std::map<std::string, int> missing;
  for (size_t k = 0; k < all.size(); ++k) {
    const Case& c = all[k];
    SCOPED_TRACE(c.op + " " + c.shape);
    std::mt19937_64 rng(base_seed() + k);
    Bufs<double> ref(ref_be);
    Bufs<float> got(*be);
    for (const BufSpec& b : c.bufs) {
      const std::vector<double> v = b.kind == Kind::out ? std::vector<double>(b.n, NAN) : random_values(b, rng);
      ref.add(b.name, v);
      got.add(b.name, v);
    }
    ASSERT_TRUE(c.run64(ref_be, ref)) << "cpu<double> lacks " << c.op;
    if (!c.run32(*be, got)) {
      ++missing[c.op];
      continue;
    }
    ++run;
    for (const BufSpec& b : c.bufs) {
      if (b.kind == Kind::in) continue;
      const double err = rel_error(got.read(b.name), ref.read(b.name));
      EXPECT_LE(err, b.name[0] == 'd' ? bt.grad_tolerance : bt.tolerance) << bt.name << " " << c.op << " [" << c.shape << "] " << b.name;
    }
  }
  std::printf("%s: %d cases checked against cpu<double>\n", be->name, run);
  for (const auto& [op, n] : missing) std::printf("%s: no %s (%d cases not run)\n", be->name, op.c_str(), n);
  EXPECT_GT(run, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendOps, ::testing::ValuesIn(kBackends),
                         [](const ::testing::TestParamInfo<BackendUnderTest>& i) { return std::string(i.param.name); });

// The reference itself: every op is present in cpu<double> and its outputs
// are finite at every shape (the comparisons above would pass a NaN-for-NaN
// match only through rel_error's finiteness check on the tested side).
TEST(BackendOpsReference, EveryOpIsThereAndFinite) {
  const ops::OpsTable<double>& be = ops::cpu_f64();
  const std::vector<Case> all = cases();
  for (size_t k = 0; k < all.size(); ++k) {
    const Case& c = all[k];
    SCOPED_TRACE(c.op + " " + c.shape);
    std::mt19937_64 rng(base_seed() + k);
    Bufs<double> ref(be);
    for (const BufSpec& b : c.bufs)
      ref.add(b.name, b.kind == Kind::out ? std::vector<double>(b.n, NAN) : random_values(b, rng));
    ASSERT_TRUE(c.run64(be, ref));
    for (const BufSpec& b : c.bufs) {
      if (b.kind == Kind::in) continue;
      for (double v : ref.read(b.name)) ASSERT_TRUE(std::isfinite(v)) << b.name;
    }
  }
}

}  // namespace
