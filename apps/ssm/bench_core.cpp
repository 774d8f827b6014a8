// `ssm bench core`: CPU throughput of the chunked forward+backward and the
// cost of one recurrent step, per op family.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "commands.hpp"
#include "ssm/blas.hpp"
#include "ssm/selective_scan.hpp"
#include "ssm/ssd.hpp"

namespace ssm::cli {

namespace {

std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

// Median seconds of `repeats` timed calls after `warmup` untimed ones.
template <typename F>
double median_seconds(int warmup, int repeats, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t(repeats);
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::nth_element(t.begin(), t.begin() + repeats / 2, t.end());
  return t[repeats / 2];
}

struct CoreBenchArgs {
  int B = 4, T = 16000, H = 4, P = 32, N = 32, G = 1, Q = 64, repeats = 5, threads = 0;
};

void bench_ssd(const CoreBenchArgs& a) {
  SsdDims d{a.B, a.T, a.H, a.P, a.G, a.N};
  const size_t nx = size_t(a.B) * a.T * a.H * a.P, ndt = size_t(a.B) * a.T * a.H, nbc = size_t(a.B) * a.T * a.G * a.N;
  auto x = uniform(nx, 1, -1, 1), dt = uniform(ndt, 2, -2, 1), Bm = uniform(nbc, 3, -1, 1), Cm = uniform(nbc, 4, -1, 1);
  auto dy = uniform(nx, 5, -1, 1), A_log = uniform(a.H, 6, 0, 2.7f), D = uniform(a.H, 7, 0.5, 1.5);
  auto dt_bias = uniform(a.H, 8, -3, -1);
  std::vector<float> y(nx), dx(nx), ddt(ndt), dB(nbc), dC(nbc), dA(a.H), dD(a.H), ddb(a.H);
  const double fwd = median_seconds(1, a.repeats, [&] {
    ssd_chunked_forward(y.data(), static_cast<float*>(nullptr), x.data(), dt.data(), A_log.data(), Bm.data(),
                        Cm.data(), D.data(), dt_bias.data(), static_cast<const float*>(nullptr), d, a.Q);
  });
  const double bwd = median_seconds(1, a.repeats, [&] {
    ssd_chunked_backward(dx.data(), ddt.data(), dA.data(), dB.data(), dC.data(), dD.data(), ddb.data(),
                         static_cast<float*>(nullptr), dy.data(), static_cast<const float*>(nullptr), x.data(),
                         dt.data(), A_log.data(), Bm.data(), Cm.data(), D.data(), dt_bias.data(),
                         static_cast<const float*>(nullptr), d, a.Q);
  });
  const double samples = double(a.B) * a.T;
  std::printf("SSD chunked   B=%d T=%d H=%d P=%d N=%d G=%d Q=%d: fwd %.2f ms, bwd %.2f ms, fwd+bwd %.2f ms = %.2f M samples/s\n",
              a.B, a.T, a.H, a.P, a.N, a.G, a.Q, fwd * 1e3, bwd * 1e3, (fwd + bwd) * 1e3, samples / (fwd + bwd) / 1e6);

  // One recurrent step of one layer for one stream.
  SsdDims s{1, 1, a.H, a.P, a.G, a.N};
  std::vector<float> state(size_t(a.H) * a.P * a.N, 0.0f), ys(size_t(a.H) * a.P);
  const int steps = 20000;
  const double step = median_seconds(1, a.repeats, [&] {
    for (int t = 0; t < steps; ++t)
      ssd_step(ys.data(), state.data(), x.data() + size_t(t) * a.H * a.P, dt.data() + size_t(t) * a.H, A_log.data(),
               Bm.data() + size_t(t) * a.G * a.N, Cm.data() + size_t(t) * a.G * a.N, D.data(), dt_bias.data(), s);
  });
  std::printf("SSD step      H=%d P=%d N=%d, one stream: %.0f ns per step per layer\n", a.H, a.P, a.N,
              step / steps * 1e9);
}

void bench_scan(const CoreBenchArgs& a) {
  const int E = a.H * a.P;  // same inner width as the SSD case
  ScanDims d{a.B, a.T, E, 1, a.N};
  const size_t nx = size_t(a.B) * a.T * E, nbc = size_t(a.B) * a.T * a.N;
  auto x = uniform(nx, 1, -1, 1), dt = uniform(nx, 2, -2, 1), z = uniform(nx, 9, -1, 1);
  auto Bm = uniform(nbc, 3, -1, 1), Cm = uniform(nbc, 4, -1, 1), dy = uniform(nx, 5, -1, 1);
  auto A_log = uniform(size_t(E) * a.N, 6, 0, 2.7f), D = uniform(E, 7, 0.5, 1.5), dt_bias = uniform(E, 8, -3, -1);
  std::vector<float> y(nx), dx(nx), ddt(nx), dz(nx), dB(nbc), dC(nbc), dA(size_t(E) * a.N), dD(E), ddb(E);
  const double fwd = median_seconds(1, a.repeats, [&] {
    selective_scan_blocked_forward(y.data(), static_cast<float*>(nullptr), x.data(), dt.data(), A_log.data(),
                                   Bm.data(), Cm.data(), D.data(), dt_bias.data(), z.data(),
                                   static_cast<const float*>(nullptr), d, a.Q);
  });
  const double bwd = median_seconds(1, a.repeats, [&] {
    selective_scan_backward(dx.data(), ddt.data(), dA.data(), dB.data(), dC.data(), dD.data(), ddb.data(), dz.data(),
                            static_cast<float*>(nullptr), dy.data(), static_cast<const float*>(nullptr), x.data(),
                            dt.data(), A_log.data(), Bm.data(), Cm.data(), D.data(), dt_bias.data(), z.data(),
                            static_cast<const float*>(nullptr), d, a.Q);
  });
  const double samples = double(a.B) * a.T;
  std::printf("S6 scan       B=%d T=%d E=%d N=%d Q=%d: fwd %.2f ms, bwd %.2f ms, fwd+bwd %.2f ms = %.2f M samples/s\n",
              a.B, a.T, E, a.N, a.Q, fwd * 1e3, bwd * 1e3, (fwd + bwd) * 1e3, samples / (fwd + bwd) / 1e6);
  ScanDims s{1, 1, E, 1, a.N};
  std::vector<float> state(size_t(E) * a.N, 0.0f), ys(E);
  const int steps = 20000;
  const double step = median_seconds(1, a.repeats, [&] {
    for (int t = 0; t < steps; ++t)
      selective_scan_step(ys.data(), state.data(), x.data() + size_t(t) * E, dt.data() + size_t(t) * E, A_log.data(),
                          Bm.data() + size_t(t) * a.N, Cm.data() + size_t(t) * a.N, D.data(), dt_bias.data(),
                          z.data() + size_t(t) * E, s);
  });
  std::printf("S6 step       E=%d N=%d, one stream: %.0f ns per step per layer\n", E, a.N, step / steps * 1e9);
}

}  // namespace

void add_bench_core(CLI::App& bench) {
  auto* cmd = bench.add_subcommand("core", "CPU: chunked forward+backward throughput and single-step cost");
  static CoreBenchArgs a;
  cmd->add_option("--batch", a.B, "B");
  cmd->add_option("--time", a.T, "T");
  cmd->add_option("--heads", a.H, "H");
  cmd->add_option("--head-dim", a.P, "P");
  cmd->add_option("--state", a.N, "N");
  cmd->add_option("--groups", a.G, "G");
  cmd->add_option("--chunk", a.Q, "Q");
  cmd->add_option("--repeats", a.repeats, "timed repeats (median reported)")->check(CLI::PositiveNumber);
  cmd->add_option("--threads", a.threads, "OpenMP threads (0 = all cores)");
  cmd->callback([] {
    if (a.threads > 0) omp_set_num_threads(a.threads);
    blas_set_threads(1);  // the ops parallelise over (batch, head) themselves
    std::printf("threads: %d\n", a.threads > 0 ? a.threads : omp_get_max_threads());
    bench_ssd(a);
    bench_scan(a);
  });
}

}  // namespace ssm::cli
