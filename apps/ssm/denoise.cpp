// `ssm denoise IN OUT`: a sound file of any length, rate and channel count
// through the model's recurrent mode, chunk by chunk, so memory stays flat
// however long the file is. `ssm denoise --live`: microphone -> model ->
// speaker (or file) through the real-time pipeline (live_denoise.cpp).
//
// Channel policy: the denoiser is mono, so the channels are mixed down; the
// output keeps the input's rate and channel count (the denoised signal in every
// channel) unless --mono asks for one channel.
// Alignment: with lookahead d the model's output at t estimates the clean
// sample t - d; the first d outputs are dropped and d zeros flushed at the end,
// so output sample i belongs to input sample i and both have the same length.
#include <sndfile.h>

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
#include "ssm/blas.hpp"
#include "ssm/common.hpp"
#include "ssm/default_model.hpp"
#include "ssm/model.hpp"
#include "ssm/streams/resampler.hpp"

namespace fs = std::filesystem;

namespace ssm::cli {

struct DenoiseOptions {
  std::string input, output, model;
  int block = 256;
  bool mono = false;
  // --live
  bool live = false;
  std::string host_api, input_device, output_device, output_file;
  double duration = 0;  // seconds; 0 = until Ctrl-C
  double buffer_ms = 0;  // extra output buffering; 0 = automatic
};

void denoise_live(const DenoiseOptions& o);
void add_live_options(CLI::App* cmd, DenoiseOptions& o);

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  if (!ext.empty()) ext.erase(0, 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

// The output's format from its extension; the input's sample format is kept
// when the container allows it (24-bit stays 24-bit, float stays float).
int output_format(const std::string& path, const SF_INFO& in, int channels) {
  const std::string ext = lower_extension(path);
  int major = 0;
  if (ext == "wav") major = SF_FORMAT_WAV;
  else if (ext == "flac") major = SF_FORMAT_FLAC;
  else if (ext == "ogg" || ext == "oga") major = SF_FORMAT_OGG;
  else if (ext == "aif" || ext == "aiff") major = SF_FORMAT_AIFF;
  else if (ext == "au" || ext == "snd") major = SF_FORMAT_AU;
  else if (ext == "caf") major = SF_FORMAT_CAF;
  else if (ext == "w64") major = SF_FORMAT_W64;
  else
    fail("cannot write '" + path + "': unknown extension '" + ext + "' (expected wav, flac, ogg, aiff, au, caf or w64)");
  SF_INFO probe{};
  probe.samplerate = in.samplerate;
  probe.channels = channels;
  for (int sub : {in.format & SF_FORMAT_SUBMASK, int(SF_FORMAT_PCM_16), int(SF_FORMAT_VORBIS)}) {
    probe.format = major | sub;
    if (sf_format_check(&probe)) return probe.format;
  }
  fail("cannot write '" + path + "': no sample format of that container takes " + std::to_string(channels) +
       " channels at " + std::to_string(in.samplerate) + " Hz");
}

// The output file, written under a temporary name and renamed when complete,
// so an error or Ctrl-C never leaves a truncated file that looks finished.
class OutputFile {
 public:
  OutputFile(const std::string& path, int format, int rate, int channels)
      : path_(path), part_(path + ".part"), channels_(channels) {
    SF_INFO info{};
    info.samplerate = rate;
    info.channels = channels;
    info.format = format;
    file_.reset(sf_open(part_.c_str(), SFM_WRITE, &info));
    if (!file_) fail("cannot write sound file '" + path + "': " + sf_strerror(nullptr));
    sf_command(file_.get(), SFC_SET_CLIPPING, nullptr, SF_TRUE);  // integer formats clip, never wrap
  }
  ~OutputFile() {
    if (file_) {
      file_.reset();
      std::error_code ec;
      fs::remove(part_, ec);
    }
  }
  // frames (n, channels) interleaved.
  void write(const float* frames, size_t n) {
    if (n && sf_writef_float(file_.get(), frames, static_cast<sf_count_t>(n)) != static_cast<sf_count_t>(n))
      fail("writing sound file '" + path_ + "' failed: " + sf_strerror(file_.get()));
  }
  void commit() {
    sf_write_sync(file_.get());
    file_.reset();
    std::error_code ec;
    fs::rename(part_, path_, ec);
    if (ec) fail("cannot move the finished output to '" + path_ + "': " + ec.message());
  }

 private:
  std::string path_, part_;
  int channels_;
  SndfilePtr file_;
};

}  // namespace

void denoise_file(const DenoiseOptions& o) {
  require(!o.input.empty() && !o.output.empty(), "denoise: give an input and an output file (or --live)");
  require(o.block >= 1 && o.block <= 1 << 16, "denoise: --block must be in 1..65536, got " + std::to_string(o.block));
  SF_INFO info{};
  SndfilePtr in(sf_open(o.input.c_str(), SFM_READ, &info));
  if (!in) fail("cannot read sound file '" + o.input + "': " + sf_strerror(nullptr));
  require(info.channels > 0 && info.samplerate > 0,
          "sound file '" + o.input + "': invalid channel count or sample rate");

  std::string description;
  const Model model = load_denoiser(o.model, &description);
  const ModelConfig& cfg = model.config();
  std::fprintf(stderr, "model: %s\n", description.c_str());
  const int R = info.samplerate, r = cfg.sample_rate, ch = info.channels;
  const int out_ch = o.mono ? 1 : ch;
  const size_t d = static_cast<size_t>(cfg.lookahead);
  OutputFile out(o.output, output_format(o.output, info, out_ch), R, out_ch);

  Resampler down(R, r), up(r, R);
  blas_set_threads(1);  // one stream of small blocks: threads would only add overhead
  Stream stream(model, o.block);
  const size_t C = 4096;                      // input frames per chunk
  std::vector<float> ibuf(C * ch);            // (C, ch) interleaved input
  std::vector<float> mono(C);                 // (C)
  std::vector<float> m_in(down.max_output(C));  // (<= C * r / R) at the model rate
  std::vector<float> m_out(m_in.size());      // (same)
  std::vector<float> o_mono(up.max_output(m_in.size()));  // (<= C) back at the file rate
  std::vector<float> o_inter(o_mono.size() * out_ch);     // (frames, out_ch) interleaved

  size_t read_total = 0, written = 0, dropped = 0;
  // Writes up to the input's length: the round trip through two resamplers
  // may come out a sample or two long.
  auto emit = [&](size_t n, size_t limit) {
    n = std::min(n, limit - std::min(limit, written));
    for (size_t t = 0; t < n; ++t)
      for (int c = 0; c < out_ch; ++c) o_inter[t * out_ch + c] = o_mono[t];
    out.write(o_inter.data(), n);
    written += n;
  };
  // m model-rate samples through the model, the lookahead dropped, back to the file rate.
  auto through_model = [&](size_t m, bool end, size_t limit) {
    stream.process(m_in.data(), m_out.data(), m);
    const size_t skip = std::min(m, d - dropped);
    dropped += skip;
    emit(up.process(m_out.data() + skip, m - skip, o_mono.data(), o_mono.size(), end), limit);
  };

  g_interrupted.store(false);
  auto previous = std::signal(SIGINT, on_sigint);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    for (;;) {
      if (g_interrupted.load()) fail("interrupted: '" + o.output + "' was not written");
      const sf_count_t got = sf_readf_float(in.get(), ibuf.data(), static_cast<sf_count_t>(C));
      if (got < 0) fail("sound file '" + o.input + "': read error: " + sf_strerror(in.get()));
      if (got == 0) break;
      for (sf_count_t t = 0; t < got; ++t) {
        float s = 0;
        for (int c = 0; c < ch; ++c) s += ibuf[t * ch + c];
        if (!std::isfinite(s))
          fail("sound file '" + o.input + "': non-finite sample at frame " + std::to_string(read_total + t));
        mono[t] = s / static_cast<float>(ch);
      }
      read_total += static_cast<size_t>(got);
      through_model(down.process(mono.data(), static_cast<size_t>(got), m_in.data(), m_in.size()), false, read_total);
    }
    if (sf_error(in.get())) fail("sound file '" + o.input + "': decoding failed: " + sf_strerror(in.get()));
    require(read_total > 0, "sound file '" + o.input + "' holds no samples");
    through_model(down.process(nullptr, 0, m_in.data(), m_in.size(), true), false, read_total);
    // The lookahead's last d outputs need d more inputs: zeros.
    for (size_t left = d; left > 0;) {
      const size_t m = std::min(left, m_in.size());
      std::fill_n(m_in.data(), m, 0.0f);
      through_model(m, false, read_total);
      left -= m;
    }
    emit(up.process(nullptr, 0, o_mono.data(), o_mono.size(), true), read_total);
    // Whatever the resamplers' rounding left short is silence, said out loud.
    if (written < read_total) {
      const size_t pad = read_total - written;
      if (pad > 4) std::fprintf(stderr, "ssm denoise: padded %zu missing frames at the end with silence\n", pad);
      std::fill(o_mono.begin(), o_mono.end(), 0.0f);
      while (written < read_total) emit(std::min(o_mono.size(), read_total - written), read_total);
    }
    out.commit();
  } catch (...) {
    std::signal(SIGINT, previous);
    throw;
  }
  std::signal(SIGINT, previous);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double audio = static_cast<double>(read_total) / R;
  std::fprintf(stderr,
               "denoised '%s' -> '%s': %.2f s of audio (%d Hz, %d ch -> %d ch, model at %d Hz, lookahead %zu) in "
               "%.2f s: real-time factor %.3f\n",
               o.input.c_str(), o.output.c_str(), audio, R, ch, out_ch, r, d, secs, secs / audio);
}

void denoise_live(const DenoiseOptions&) { fail("denoise --live: not built yet"); }
void add_live_options(CLI::App*, DenoiseOptions&) {}

void add_denoise_command(CLI::App& app) {
  static DenoiseOptions o;
  auto* cmd = app.add_subcommand("denoise", "Denoise a sound file, or a live microphone with --live");
  cmd->add_option("input", o.input, "noisy sound file (any format libsndfile reads)");
  cmd->add_option("output", o.output, "denoised sound file (wav, flac, ogg, aiff, au, caf, w64)");
  cmd->add_option("--model", o.model, "model (.safetensors); default: the shipped denoiser");
  cmd->add_option("--block", o.block, "samples per block through the model (file mode); frames per buffer (live)");
  cmd->add_flag("--mono", o.mono, "write one channel instead of the input's channel count");
  add_live_options(cmd, o);
  cmd->callback([] {
    if (o.live)
      denoise_live(o);
    else
      denoise_file(o);
  });
}

}  // namespace ssm::cli
