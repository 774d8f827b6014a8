// `ssm denoise IN OUT`: a sound file of any length, rate and channel count
// (or raw PCM from stdin or a TCP peer, to a file or stdout) through the
// model's recurrent mode, chunk by chunk, so memory stays flat however long
// the input is. `ssm denoise --live` (further down): microphone -> model ->
// speaker and/or file through the real-time pipeline.
//
// The work is the library's DenoiseChain (ssm/denoise_chain.hpp), Aligned:
// every channel is denoised with its own stream state (--mono mixes them down
// first and writes one channel); the output keeps the input's rate; output
// sample i belongs to input sample i and both have the same length.
#include <sndfile.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ssm/audio_file.hpp"
#include "ssm/blas.hpp"
#include "ssm/common.hpp"
#include "ssm/default_model.hpp"
#include "ssm/denoise_chain.hpp"
#include "ssm/model.hpp"
#include "ssm/resampler.hpp"
#include "ssm/streams/io.hpp"
#ifdef SSM_WITH_PORTAUDIO
#include <cmath>
#include <optional>
#include <thread>

#include "ssm/streams/pipeline.hpp"
#include "ssm/streams/portaudio.hpp"
#endif

namespace fs = std::filesystem;

namespace ssm::cli {

struct DenoiseOptions {
  std::vector<std::string> files;  // IN OUT, or with -o the inputs
  std::string output_dir;          // -o: every input to DIR/<its name>
  std::string input, output, model;  // the one run of denoise_file
  bool quiet = false;               // -q: only warnings and errors
  float atten_limit_db = 0;         // the most the denoiser may attenuate; 0: no limit
  float mix = 1;                    // share of the denoised signal (dry/wet)
  int block = 256;
  bool mono = false;
  std::string high_band = "carry";  // above the model's band: carry (at its attenuation) or drop
  // --live
  bool live = false;
  std::string host_api, input_device, output_device, output_file;
  double duration = 0;  // seconds; 0 = until Ctrl-C
  double buffer_ms = 0;  // extra output buffering; 0 = automatic
  double stall_timeout = 2;  // seconds without a device callback before the stream counts as lost
  std::string raw = "f32";  // raw PCM encoding for "-" and tcp: inputs/outputs
  int rate = 0, channels = 1;  // of raw PCM input
  double idle_timeout = 10;  // seconds a tcp: peer may stay silent
  std::string resample;  // converter quality: best / medium / fastest; "" = best for files, medium live
};

void denoise_live(const DenoiseOptions& o);
void add_live_options(CLI::App* cmd, DenoiseOptions& o);
// `ssm devices` (devices.cpp) goes with `ssm denoise --live`, so it is registered here.
void add_devices_command(CLI::App& app);

namespace {

// --high-band: whether the band above the model's range is carried through.
bool carry_high_band(const std::string& name) {
  if (name == "carry") return true;
  if (name == "drop") return false;
  usage_error("--high-band '" + name + "': expected carry or drop");
}

ResampleQuality quality(const std::string& name, ResampleQuality fallback) {
  if (name.empty()) return fallback;
  if (name == "best") return ResampleQuality::Best;
  if (name == "medium") return ResampleQuality::Medium;
  if (name == "fastest") return ResampleQuality::Fastest;
  usage_error("--resample '" + name + "': expected best, medium or fastest");
}

// The signal that asked the run to stop (SIGINT, SIGTERM), 0 while none has.
std::atomic<int> g_interrupted{0};
extern "C" void on_sigint(int sig) { g_interrupted.store(sig); }

const char* signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : "SIGINT"; }

// IN: a sound file, "-" (raw PCM on stdin) or tcp:[ADDRESS:]PORT (raw PCM
// from one peer that connects there).
std::unique_ptr<Source> open_input(const DenoiseOptions& o) {
  // "-" without --rate: a sound file streamed on stdin (a WAV from a pipe).
  if (o.input == "-" && o.rate == 0) return open_sound_file_source(0, "stdin");
  const bool raw = o.input == "-" || o.input.rfind("tcp:", 0) == 0;
  if (!raw) return open_sound_file_source(o.input);
  require_usage(o.rate > 0, "denoise: raw PCM input '" + o.input + "' needs --rate");
  require_usage(o.channels >= 1 && o.channels <= 64, "denoise: --channels must be in 1..64");
  const PcmFormat f = parse_pcm_format(o.raw);
  if (o.input == "-") return open_raw_pcm_source(0, o.rate, o.channels, f, "stdin");
  TcpPcmOptions t;
  const std::string spec = o.input.substr(4);
  const size_t colon = spec.rfind(':');
  if (colon != std::string::npos) t.address = spec.substr(0, colon);
  const std::string port = colon == std::string::npos ? spec : spec.substr(colon + 1);
  require_usage(!port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), ::isdigit) && std::stoi(port) < 65536,
          "denoise: '" + o.input + "': expected tcp:[ADDRESS:]PORT");
  t.port = static_cast<uint16_t>(std::stoi(port));
  t.rate = o.rate;
  t.channels = o.channels;
  t.format = f;
  t.idle_timeout_s = o.idle_timeout;
  auto src = std::make_unique<TcpPcmSource>(t);
  std::fprintf(stderr, "waiting for raw PCM on %s:%u\n", t.address.c_str(), static_cast<unsigned>(src->port()));
  return src;
}

// The progress line of a long file on a terminal: rewritten in place four
// times a second, erased at the end; nothing at all when stderr is not a
// terminal (a log gets only the summary) or with --quiet.
class Progress {
 public:
  Progress(std::string name, uint64_t total, int rate, bool on)
      : name_(std::move(name)), total_(total), rate_(rate), on_(on), t0_(std::chrono::steady_clock::now()) {}
  void update(uint64_t frames) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(250)) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - t0_).count(), audio = double(frames) / rate_;
    if (total_ > 0)
      std::fprintf(stderr, "\r%s: %3.0f%% (%.1f of %.1f s of audio, %.1fx real time)\x1b[K", name_.c_str(),
                   100.0 * frames / total_, audio, double(total_) / rate_, secs > 0 ? audio / secs : 0.0);
    else
      std::fprintf(stderr, "\r%s: %.1f s of audio (%.1fx real time)\x1b[K", name_.c_str(), audio,
                   secs > 0 ? audio / secs : 0.0);
    shown_ = true;
  }
  void done() {
    if (shown_) std::fprintf(stderr, "\r\x1b[K");
    shown_ = false;
  }
  ~Progress() { done(); }

 private:
  std::string name_;
  uint64_t total_;
  int rate_;
  bool on_, shown_ = false;
  std::chrono::steady_clock::time_point t0_, last_{};
};

}  // namespace

void denoise_file(const DenoiseOptions& o, const Model& model);

// `ssm denoise IN OUT`, or `ssm denoise IN... -o DIR`: each input to
// DIR/<its name>; one that fails is reported and the others still run.
void denoise_files(DenoiseOptions o) {
  require_usage(o.block >= 1 && o.block <= 1 << 16, "denoise: --block must be in 1..65536, got " + std::to_string(o.block));
  require_usage(o.atten_limit_db >= 0 && o.atten_limit_db <= 200, "denoise: --atten-lim must be in 0..200 dB");
  require_usage(o.mix >= 0 && o.mix <= 1, "denoise: --mix must be in 0..1");
  quality(o.resample, ResampleQuality::Best);
  carry_high_band(o.high_band);
  std::vector<std::pair<std::string, std::string>> jobs;  // (input, output)
  if (o.output_dir.empty()) {
    require_usage(o.files.size() == 2, "denoise: give IN OUT, or one or more inputs with -o DIR (or --live)");
    jobs.emplace_back(o.files[0], o.files[1]);
  } else {
    require_usage(!o.files.empty(), "denoise: -o DIR needs one or more input files");
    std::error_code ec;
    require(fs::is_directory(o.output_dir, ec), "denoise: -o '" + o.output_dir + "' is not a directory");
    for (const std::string& in : o.files) {
      require_usage(in != "-" && in.rfind("tcp:", 0) != 0, "denoise: with -o DIR the inputs are files, not '" + in + "'");
      const fs::path out = fs::path(o.output_dir) / fs::path(in).filename();
      require_usage(!fs::equivalent(in, out, ec), "denoise: '" + out.string() + "' would overwrite its input");
      jobs.emplace_back(in, out.string());
    }
  }
  std::string description;
  const Model model = load_denoiser(o.model, &description);
  if (!o.quiet) std::fprintf(stderr, "model: %s\n", description.c_str());
  size_t failed = 0;
  for (const auto& [in, out] : jobs) {
    o.input = in;
    o.output = out;
    if (jobs.size() == 1) {
      denoise_file(o, model);
      continue;
    }
    try {
      denoise_file(o, model);
    } catch (const Error& e) {
      std::fprintf(stderr, "ssm: error: %s\n", e.what());
      ++failed;
      if (g_interrupted.load()) break;
    }
  }
  if (failed) fail(std::to_string(failed) + " of " + std::to_string(jobs.size()) + " files failed");
}

// One input to one output with `model`.
void denoise_file(const DenoiseOptions& o, const Model& model) {
  const ResampleQuality q = quality(o.resample, ResampleQuality::Best);
  const std::unique_ptr<Source> in = open_input(o);
  const ModelConfig& cfg = model.config();
  const int R = in->rate(), r = cfg.sample_rate, ch = in->channels();
  const int out_ch = o.mono ? 1 : ch;
  const size_t d = static_cast<size_t>(cfg.latency());
  // A file is written under a temporary name and renamed when complete, so an
  // error or Ctrl-C never leaves a truncated file that looks finished.
  const std::unique_ptr<Sink> out =
      o.output == "-" ? open_raw_pcm_sink(1, R, out_ch, parse_pcm_format(o.raw), "stdout")
                      : open_sound_file_sink(o.output, R, out_ch, sound_file_format(o.output, R, out_ch, in->sample_format()));

  blas_set_threads(1);  // one stream of small blocks: threads would only add overhead
  const size_t C = 4096;  // input frames per chunk
  DenoiseChainOptions co;
  co.rate = R;
  co.channels = ch;
  co.mono = o.mono;
  co.max_block = C;
  co.model_block = o.block;
  co.quality = q;
  co.timing = ChainTiming::Aligned;
  co.attenuation_limit_db = o.atten_limit_db;
  co.wet = o.mix;
  co.carry_high_band = carry_high_band(o.high_band);
  DenoiseChain chain(model, co);
  std::vector<float> ibuf(C * ch);                            // (C, ch) interleaved input
  std::vector<float> obuf(chain.max_output(C) * out_ch);      // (frames, out_ch) interleaved output

  size_t read_total = 0, written = 0;
  // Writes up to the input's length: the round trip through two resamplers
  // may come out a sample or two long.
  auto emit = [&](const float* y, size_t n) {
    n = std::min(n, read_total - std::min(read_total, written));
    out->write(y, n);
    written += n;
  };

  // SIGINT and SIGTERM end the run between chunks: the partial output is
  // removed (the sink's destructor), never left as OUT.part.
  g_interrupted.store(0);
  auto previous = std::signal(SIGINT, on_sigint);
  auto previous_term = std::signal(SIGTERM, on_sigint);
  const auto t0 = std::chrono::steady_clock::now();
  Progress progress(o.input, in->length(), R, !o.quiet && isatty(2));
  try {
    for (;;) {
      if (const int sig = g_interrupted.load())
        fail(std::string("interrupted by ") + signal_name(sig) + ": '" + o.output + "' was not written");
      const size_t got = in->read(ibuf.data(), C);
      if (got == 0) break;
      read_total += got;
      emit(obuf.data(), chain.process(ibuf.data(), got, obuf.data()));
      progress.update(read_total);
    }
    progress.done();
    require(read_total > 0, "sound file '" + o.input + "' holds no samples");
    std::vector<float> tail;
    chain.flush(tail);
    emit(tail.data(), tail.size() / out_ch);
    // Whatever the resamplers' rounding left short is silence, said out loud.
    if (written < read_total) {
      const size_t pad = read_total - written;
      if (pad > 4) std::fprintf(stderr, "ssm denoise: padded %zu missing frames at the end with silence\n", pad);
      std::fill(obuf.begin(), obuf.end(), 0.0f);
      while (written < read_total) emit(obuf.data(), std::min(obuf.size() / out_ch, read_total - written));
    }
    out->close();
  } catch (...) {
    std::signal(SIGINT, previous);
    std::signal(SIGTERM, previous_term);
    throw;
  }
  std::signal(SIGINT, previous);
  std::signal(SIGTERM, previous_term);
  if (const std::string damage = in->damage(); !damage.empty())
    std::fprintf(stderr, "ssm denoise: warning: '%s': %s\n", o.input.c_str(), damage.c_str());
  if (chain.non_finite() > 0)
    std::fprintf(stderr,
                 "ssm denoise: warning: '%s': %llu non-finite samples (NaN or infinite), the first at frame %llu, "
                 "were taken as silence\n",
                 o.input.c_str(), static_cast<unsigned long long>(chain.non_finite()),
                 static_cast<unsigned long long>(chain.first_non_finite()));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double audio = static_cast<double>(read_total) / R;
  if (!o.quiet)
    std::fprintf(stderr,
               "denoised '%s' -> '%s': %.2f s of audio (%d Hz, %d ch -> %d ch, model at %d Hz, latency %zu samples) in "
               "%.2f s: real-time factor %.3f\n",
               o.input.c_str(), o.output.c_str(), audio, R, ch, out_ch, r, d, secs, secs / audio);
}

#ifdef SSM_WITH_PORTAUDIO
namespace {

std::string format_seconds(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", s);
  return b;
}

// dBFS of an RMS level, floored at -120 (digital silence reads as the floor).
double to_db(double rms) { return rms > 1e-6 ? 20 * std::log10(rms) : -120; }

}  // namespace

// Microphone -> model -> speaker and/or file, through the real-time pipeline.
void denoise_live(const DenoiseOptions& o) {
  require_usage(o.files.empty() && o.output_dir.empty(),
          "denoise --live takes no input/output files (use --output-file to record the denoised stream)");
  require_usage(o.block >= 16 && o.block <= 8192, "denoise --live: --block must be in 16..8192 frames");
  std::string description;
  const Model model = load_denoiser(o.model, &description);
  std::fprintf(stderr, "model: %s\n", description.c_str());
  const int r = model.config().sample_rate;

  PortAudioSystem pa;
  const AudioDevice in = pa.find(o.input_device, o.host_api, true);
  const bool speaker = !o.output_device.empty() || o.output_file.empty();
  std::optional<AudioDevice> out;
  if (speaker) out = pa.find(o.output_device, o.host_api, false);
  const int out_channels = out ? std::min(2, out->max_output_channels) : 0;
  // The model's rate when the devices run at it; otherwise the input
  // device's own rate, converted on the processing thread.
  int rate = r;
  if (!pa.supports(&in, out ? &*out : nullptr, out_channels, rate)) {
    rate = static_cast<int>(std::lround(in.default_rate));
    require(pa.supports(&in, out ? &*out : nullptr, out_channels, rate),
            "devices '" + in.name + "'" + (out ? " and '" + out->name + "'" : std::string()) + " run neither at " +
                std::to_string(r) + " Hz nor at " + std::to_string(rate) + " Hz together");
  }
  blas_set_threads(1);
  const size_t frames = static_cast<size_t>(o.block);
  // The medium converter: a third of the best one's delay, at a fraction of its cost.
  DenoiseProcessor proc(model, rate, std::max<size_t>(frames, 1024), quality(o.resample, ResampleQuality::Medium),
                        carry_high_band(o.high_band));
  require_usage(o.atten_limit_db >= 0 && o.atten_limit_db <= 200 && o.mix >= 0 && o.mix <= 1,
                "denoise --live: --atten-lim must be in 0..200 dB and --mix in 0..1");
  proc.chain().set_attenuation_limit_db(o.atten_limit_db);
  proc.chain().set_wet(o.mix);
  // Buffering: one device buffer (its output cannot carry its own input),
  // what the converters hold back, and slack for the processing thread.
  const size_t slack = o.buffer_ms > 0 ? static_cast<size_t>(o.buffer_ms * rate / 1000)
                                       : std::max<size_t>(frames, static_cast<size_t>(rate / 50));
  PipelineOptions po;
  po.rate = rate;
  po.max_block = std::max<size_t>(frames, 1024);
  po.prefill = frames + proc.holdback() + slack;
  po.playback = out.has_value();
  std::unique_ptr<Sink> file;
  if (!o.output_file.empty()) file = open_sound_file_sink(o.output_file, rate, 1);
  Pipeline pipe(proc, po, file.get());
  PortAudioStream stream(pipe, &in, out ? &*out : nullptr, rate, static_cast<unsigned long>(frames));

  const double ms = 1000.0 / rate;
  const double model_ms = proc.model_latency_frames() * ms, buffer_ms = po.prefill * ms;
  // Some host APIs (PortAudio's JACK one) report nonsense here: count only plausible values.
  auto plausible = [](double s) { return s >= 0 && s < 2.0 ? s : 0.0; };
  const double device_ms = (plausible(stream.input_latency()) + plausible(stream.output_latency())) * 1000;
  std::fprintf(stderr, "input: %s (%s)%s%s%s\n", in.name.c_str(), in.host_api.c_str(),
               out ? (", output: " + out->name + " (" + out->host_api + ")").c_str() : "",
               o.output_file.empty() ? "" : ", recording to ", o.output_file.c_str());
  std::fprintf(stderr, "rate %d Hz (model %d Hz%s), %zu frames per buffer\n", rate, r,
               rate == r ? "" : ", converted", frames);
  std::fprintf(stderr,
               "latency: model %.1f ms + buffering %.1f ms (%zu frames: one buffer, %zu held by the "
               "converters, %zu slack) + device %.1f ms = %.1f ms\n",
               model_ms, buffer_ms, po.prefill, proc.holdback(), slack, device_ms,
               model_ms + buffer_ms + device_ms);

  g_interrupted.store(0);
  auto previous = std::signal(SIGINT, on_sigint);
  auto previous_term = std::signal(SIGTERM, on_sigint);
  const bool tty = isatty(2);
  const auto t0 = std::chrono::steady_clock::now();
  auto status = [&](bool final) {
    const PipelineStats st = pipe.stats();
    // Measured: the device's capture-to-playback time of a callback (its
    // timestamps) plus the frames the pipeline holds and the model latency.
    const double measured = st.device_latency_s >= 0 && st.device_latency_s < 2.0
                                ? st.device_latency_s * 1000 + buffer_ms + model_ms
                                : -1;
    char line[256];
    std::snprintf(line, sizeof line,
                  "%s%.1f s | in %6.1f dBFS | RTF %.3f | xruns %llu (dropped %llu, underruns %llu, device %llu) | "
                  "latency %.1f ms%s",
                  final ? "" : "live ", st.captured / double(rate), to_db(st.input_rms), st.rtf,
                  (unsigned long long)st.xruns(), (unsigned long long)st.dropped_blocks,
                  (unsigned long long)st.underruns, (unsigned long long)st.device_xruns,
                  measured >= 0 ? measured : model_ms + buffer_ms + device_ms,
                  measured >= 0 ? " (measured)" : " (reported)");
    if (tty && !final)
      std::fprintf(stderr, "\r%s\x1b[K", line);
    else
      std::fprintf(stderr, "%s%s\n", tty ? "\r" : "", line);
  };
  std::exception_ptr error;
  try {
    pipe.start();
    stream.start();
    std::fprintf(stderr, "running; Ctrl-C stops%s\n", o.duration > 0 ? " (or --duration)" : "");
    auto last = t0, last_progress = t0;
    uint64_t captured = 0;
    while (g_interrupted.load() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const auto now = std::chrono::steady_clock::now();
      if (o.duration > 0 && std::chrono::duration<double>(now - t0).count() >= o.duration) break;
      if (!stream.active()) fail("the audio stream stopped by itself (device or sound server gone?)");
      // A server that dies (JACK killed, PipeWire restarted) may leave the
      // stream "active" with no callback ever again.
      if (const uint64_t c = pipe.stats().captured; c != captured) {
        captured = c;
        last_progress = now;
      } else if (std::chrono::duration<double>(now - last_progress).count() > o.stall_timeout) {
        fail("no audio from '" + in.name + "' (" + in.host_api + ") for " + format_seconds(o.stall_timeout) +
             " s: the device or its sound server has gone away");
      }
      if (now - last >= std::chrono::milliseconds(tty ? 250 : 2000)) {
        status(false);
        last = now;
      }
    }
  } catch (...) {
    error = std::current_exception();
  }
  // Stop the device first, then let the pipeline process and write
  // everything captured, so a recording loses nothing. A host API that no
  // longer answers gets a bounded wait, then the stream is left to it.
  if (!stream.stop()) std::fprintf(stderr, "the audio system did not confirm the stop; leaving the stream to it\n");
  bool written = false;
  try {
    pipe.finish();
    written = true;
  } catch (...) {
    if (!error) error = std::current_exception();
  }
  std::signal(SIGINT, previous);
  std::signal(SIGTERM, previous_term);
  if (written && !o.output_file.empty() && error) std::fprintf(stderr, "wrote '%s' up to the failure\n", o.output_file.c_str());
  if (error) std::rethrow_exception(error);
  status(true);
  const PipelineStats st = pipe.stats();
  if (st.xruns() > 0)
    std::fprintf(stderr,
                 "processing fell behind: %llu input frames dropped in %llu blocks, %llu output frames of silence "
                 "in %llu underruns, %llu device xruns\n",
                 (unsigned long long)st.dropped_frames, (unsigned long long)st.dropped_blocks,
                 (unsigned long long)st.underrun_frames, (unsigned long long)st.underruns,
                 (unsigned long long)st.device_xruns);
  if (!o.output_file.empty()) std::fprintf(stderr, "wrote '%s'\n", o.output_file.c_str());
}
#else
void denoise_live(const DenoiseOptions&) {
  not_available("denoise --live", "this build has no PortAudio (configure with SSM_PORTAUDIO=ON)");
}
#endif

void add_live_options(CLI::App* cmd, DenoiseOptions& o) {
  cmd->add_flag("--live", o.live, "denoise a live input device (microphone) instead of a file");
  cmd->add_option("--host-api", o.host_api, "live: host API by name or part of it (alsa, jack, pulse); see ssm devices");
  cmd->add_option("--input-device", o.input_device, "live: capture device, index or name (default: the default)");
  cmd->add_option("--output-device", o.output_device,
                  "live: playback device, index or name (default: the default, unless --output-file alone)");
  cmd->add_option("--output-file", o.output_file, "live: record the denoised stream to this file");
  cmd->add_option("--duration", o.duration, "live: stop after this many seconds (default: at Ctrl-C)");
  cmd->add_option("--stall-timeout", o.stall_timeout,
                  "live: seconds without audio from the device before the run ends with an error")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--buffer-ms", o.buffer_ms,
                  "live: slack buffering for the processing thread, ms (default: one buffer or 20 ms)");
}

void add_denoise_command(CLI::App& app) {
  static DenoiseOptions o;
  auto* cmd = app.add_subcommand("denoise", "Denoise sound files (IN OUT, or IN... -o DIR), or a live microphone with --live");
  cmd->add_option("files", o.files,
                  "IN OUT, or with -o DIR one or more IN. IN: a sound file (any format libsndfile reads); - for "
                  "stdin: a sound file (WAV, AU) piped in, or raw PCM when --rate is given; or tcp:[ADDRESS:]PORT "
                  "to take raw PCM from one peer connecting there. OUT: a sound file (wav, flac, ogg, opus, mp3, "
                  "aiff, au, caf, w64; its container sets the encoding), or - for raw PCM on stdout");
  cmd->add_option("-o,--output-dir", o.output_dir, "write each input to DIR under its own name");
  cmd->add_flag("-q,--quiet", o.quiet, "print only warnings and errors (no model line, progress or summary)");
  cmd->add_option("-a,--atten-lim", o.atten_limit_db,
                  "the most the denoiser may attenuate, in dB (the input is mixed back in); 0 = no limit");
  cmd->add_option("--mix", o.mix, "dry/wet: share of the denoised signal, 0..1 (0 = the input unchanged)");
  cmd->add_option("--raw", o.raw, "raw PCM encoding of - and tcp: (f32 or s16, little-endian)");
  cmd->add_option("--rate", o.rate, "raw PCM input: sample rate (Hz); with - it makes stdin raw PCM");
  cmd->add_option("--channels", o.channels, "raw PCM input: interleaved channels");
  cmd->add_option("--idle-timeout", o.idle_timeout, "tcp: input: seconds without data before giving up");
  cmd->add_option("-m,--model", o.model, "model (.safetensors); default: the shipped denoiser, compiled in");
  cmd->add_option("--block", o.block, "samples per block through the model (file mode); frames per buffer (live)");
  cmd->add_flag("--mono", o.mono, "write one channel instead of the input's channel count");
  cmd->add_option("--high-band", o.high_band,
                  "above the model's band (audio at a higher rate): carry it through, attenuated as the model "
                  "attenuates the top of its own band, or drop it (default: carry)");
  cmd->add_option("--resample", o.resample,
                  "rate converter when the audio is not at the model rate: best, medium or fastest "
                  "(default: best for files, medium live)");
  add_live_options(cmd, o);
  cmd->footer(
      "The shipped model runs at 16 kHz: audio at another rate is converted to 16 kHz and back. At 44.1 or 48 kHz "
      "the band above 8 kHz is not denoised by the model: by default it is carried through at the gain the model "
      "applies to 4-8 kHz (measured every 10 ms), so it fades where the model removes noise; --high-band drop "
      "removes it instead.\n"
      "Every channel is denoised on its own (--mono mixes them down); non-finite samples are taken as silence.");
  add_devices_command(app);
  cmd->callback([] {
    if (o.live)
      denoise_live(o);
    else
      denoise_files(o);
  });
}

}  // namespace ssm::cli
