// `ssm modes`: runs each layer kind in each of its execution modes on one
// signal and shows that they compute the same function, with timings.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "commands.hpp"
#include "ssm/audio_file.hpp"
#include "ssm/model.hpp"
#include "ssm/s4d.hpp"

namespace ssm::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <typename F>
double timed(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return seconds_since(t0);
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void report(const char* mode, double secs, size_t samples, int rate, double diff) {
  std::printf("  %-34s %9.1f ms  %7.2fx real time", mode, secs * 1e3, samples / (secs * rate));
  if (diff >= 0)
    std::printf("   diff %.1e\n", diff);
  else
    std::printf("   (reference)\n");
}

void run_s4d(const std::vector<float>& signal, int rate) {
  const int H = 4, N = 32, T = static_cast<int>(signal.size());
  S4dDims d{1, T, H, N};
  std::vector<float> log_dt(H), A_re_log(H * N), A_im(H * N), C(H * N * 2), D(H);
  s4d_init_lin(log_dt.data(), A_re_log.data(), A_im.data(), C.data(), D.data(), d, 7);
  std::vector<float> x(static_cast<size_t>(T) * H);  // (T, H): the signal at four gains
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) x[t * H + h] = signal[t] * (1.0f + 0.5f * h);
  std::vector<float> y_conv(x.size()), y_rec(x.size()), kernel(static_cast<size_t>(H) * T);
  std::printf("S4D layer (LTI, H=%d, N=%d, S4D-Lin), %d samples\n", H, N, T);
  double tc = timed([&] {
    s4d_conv_forward(y_conv.data(), static_cast<float*>(nullptr), kernel.data(), x.data(), log_dt.data(),
                     A_re_log.data(), A_im.data(), C.data(), D.data(), d);
  });
  report("convolution (FFT)", tc, T, rate, -1);
  double tr = timed([&] {
    s4d_recurrent_forward(y_rec.data(), static_cast<float*>(nullptr), x.data(), log_dt.data(), A_re_log.data(),
                          A_im.data(), C.data(), D.data(), static_cast<const float*>(nullptr), d);
  });
  report("recurrent (one sample at a time)", tr, T, rate, rel_diff(y_rec, y_conv));
}

// `frame` > 1: the model reads that many samples per step; its stream hands
// each sample out frame - 1 samples later, which the comparison takes out.
void run_model(BlockKind kind, const std::vector<float>& full, int rate, int frame = 1) {
  ModelConfig cfg;  // the built-in default architecture, seeded initialisation
  cfg.block = kind;
  cfg.frame = frame;
  Model model(cfg);
  model.init(1234);
  const std::vector<float> signal(full.begin(), full.end() - full.size() % frame);  // whole frames
  const int T = static_cast<int>(signal.size()), wait = frame - 1;
  std::printf("%s model (D=%d, L=%d, E=%d, N=%d, %zu parameters", kind == BlockKind::Mamba2 ? "Mamba-2 (SSD)" : "Mamba-1 (S6)",
              cfg.d_model, cfg.n_layers, cfg.inner(), cfg.d_state, model.num_params());
  if (frame > 1) std::printf(", frames of %d samples", frame);
  std::printf("), %d samples\n", T);
  ModelGraph<float> graph(cfg, model.table());
  std::vector<float> chunked(T), per_sample(T), blocks(T);
  double tc = timed([&] { graph.forward(chunked.data(), signal.data(), model.params().data(), 1, T); });
  report(kind == BlockKind::Mamba2 ? "chunked (SSD, Q=64)" : "blocked scan (Q=64)", tc, T, rate, -1);
  // The streamed outputs from `wait` on against the chunked ones up to T - wait.
  auto aligned = [&](const std::vector<float>& streamed) {
    return rel_diff(std::vector<float>(streamed.begin() + wait, streamed.end()),
                    std::vector<float>(chunked.begin(), chunked.end() - wait));
  };
  Stream s1(model, 1);
  double t1 = timed([&] {
    for (int t = 0; t < T; ++t) s1.process(&signal[t], &per_sample[t], 1);
  });
  report("recurrent (one sample at a time)", t1, T, rate, aligned(per_sample));
  Stream s64(model, 64);
  double t64 = timed([&] { s64.process(signal.data(), blocks.data(), T); });
  report("streaming (blocks of 64)", t64, T, rate, aligned(blocks));
}

}  // namespace

void add_modes_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("modes", "Run each layer kind in each execution mode on a signal; show they agree");
  static std::string input = "samples/noisy_speech.flac";
  static double max_seconds = 3.0;
  cmd->add_option("input", input, "sound file (any format libsndfile reads; resampled to 16 kHz)");
  cmd->add_option("--seconds", max_seconds, "use at most this many seconds of the file")->check(CLI::PositiveNumber);
  cmd->callback([] {
    const int rate = 16000;
    std::vector<float> signal = read_mono(input, rate);
    if (signal.size() > max_seconds * rate) signal.resize(static_cast<size_t>(max_seconds * rate));
    std::printf("%s: %.2f s at %d Hz\n\n", input.c_str(), signal.size() / double(rate), rate);
    run_s4d(signal, rate);
    std::printf("\n");
    run_model(BlockKind::Mamba2, signal, rate);
    std::printf("\n");
    run_model(BlockKind::Mamba1, signal, rate);
    std::printf("\n");
    run_model(BlockKind::Mamba2, signal, rate, 16);
    std::printf("\n'diff' is ||mode - reference|| / ||reference||; the modes compute the same function\n"
                "(a model that reads frames streams each sample out frame - 1 samples later; compared aligned).\n");
  });
}

}  // namespace ssm::cli
