#include "ssm/audio_file.hpp"

#include <samplerate.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "ssm/common.hpp"

namespace ssm {

namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

std::string lower_extension(const std::string& path) {
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos) return "";
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

}  // namespace

Audio read_audio(const std::string& path) {
  SF_INFO info{};
  SndfilePtr file(sf_open(path.c_str(), SFM_READ, &info));
  if (!file) fail("cannot read sound file '" + path + "': " + sf_strerror(nullptr));
  if (info.channels <= 0 || info.samplerate <= 0)
    fail("sound file '" + path + "': invalid channel count or sample rate");
  if (info.frames <= 0) fail("sound file '" + path + "' holds no samples");
  Audio audio;
  audio.rate = info.samplerate;
  audio.channels = info.channels;
  // info.frames is what the header claims, and a few damaged bytes can claim
  // billions (a FLAC header holds 36 bits of it): the buffer grows with what
  // actually decodes, one chunk at a time, never by the claim.
  const size_t channels = static_cast<size_t>(info.channels);
  constexpr sf_count_t kChunk = sf_count_t{1} << 16;  // frames per read
  // Room up front for the claim, up to 16 MB; a longer file grows past it.
  const sf_count_t up_front = std::min<sf_count_t>(info.frames, (sf_count_t{1} << 22) / info.channels);
  audio.samples.reserve(static_cast<size_t>(up_front) * channels);
  size_t frames = 0;
  for (;;) {
    audio.samples.resize((frames + kChunk) * channels);
    const sf_count_t got = sf_readf_float(file.get(), audio.samples.data() + frames * channels, kChunk);
    if (got <= 0) break;
    frames += static_cast<size_t>(got);
  }
  audio.samples.resize(frames * channels);
  if (frames == 0) fail("sound file '" + path + "': no frames could be decoded: " + sf_strerror(file.get()));
  for (size_t i = 0; i < audio.samples.size(); ++i)
    if (!std::isfinite(audio.samples[i]))
      fail("sound file '" + path + "': non-finite sample at frame " + std::to_string(i / info.channels));
  return audio;
}

std::vector<float> mix_to_mono(const Audio& audio) {
  const size_t frames = audio.frames();
  std::vector<float> mono(frames);  // (frames)
  for (size_t t = 0; t < frames; ++t) {
    float s = 0;
    for (int c = 0; c < audio.channels; ++c) s += audio.samples[t * audio.channels + c];
    mono[t] = s / static_cast<float>(audio.channels);
  }
  return mono;
}

std::vector<float> read_mono(const std::string& path, int rate) {
  Audio audio = read_audio(path);
  std::vector<float> mono = audio.channels == 1 ? std::move(audio.samples) : mix_to_mono(audio);
  if (audio.rate == rate) return mono;
  return resample(mono.data(), mono.size(), audio.rate, rate);
}

int sound_file_format(const std::string& path, int rate, int channels, int preferred) {
  const std::string ext = lower_extension(path);
  struct Container {
    const char* ext;
    int major, encoding;  // the container and its own encoding
  };
  static const Container kContainers[] = {
      {"wav", SF_FORMAT_WAV, SF_FORMAT_PCM_16},     {"w64", SF_FORMAT_W64, SF_FORMAT_PCM_16},
      {"flac", SF_FORMAT_FLAC, SF_FORMAT_PCM_16},   {"ogg", SF_FORMAT_OGG, SF_FORMAT_VORBIS},
      {"oga", SF_FORMAT_OGG, SF_FORMAT_VORBIS},     {"opus", SF_FORMAT_OGG, SF_FORMAT_OPUS},
      {"mp3", SF_FORMAT_MPEG, SF_FORMAT_MPEG_LAYER_III}, {"aiff", SF_FORMAT_AIFF, SF_FORMAT_PCM_16},
      {"aif", SF_FORMAT_AIFF, SF_FORMAT_PCM_16},    {"au", SF_FORMAT_AU, SF_FORMAT_PCM_16},
      {"snd", SF_FORMAT_AU, SF_FORMAT_PCM_16},      {"caf", SF_FORMAT_CAF, SF_FORMAT_PCM_16},
      {"raw", SF_FORMAT_RAW, SF_FORMAT_FLOAT},      {"f32", SF_FORMAT_RAW, SF_FORMAT_FLOAT},
  };
  const Container* c = nullptr;
  for (const Container& k : kContainers)
    if (ext == k.ext) c = &k;
  if (!c)
    fail("cannot write '" + path + "': unknown extension '" + ext +
         "' (expected wav, w64, flac, ogg, opus, mp3, aiff, au, caf or raw)");
  // Only a plain encoding carries over from elsewhere: a compressed one
  // (the input's MP3 or Vorbis) is the input container's business.
  static const int kPlain[] = {SF_FORMAT_PCM_S8, SF_FORMAT_PCM_U8, SF_FORMAT_PCM_16, SF_FORMAT_PCM_24,
                               SF_FORMAT_PCM_32, SF_FORMAT_FLOAT,  SF_FORMAT_DOUBLE};
  const bool plain = std::find(std::begin(kPlain), std::end(kPlain), preferred) != std::end(kPlain);
  SF_INFO probe{};
  probe.samplerate = rate;
  probe.channels = channels;
  for (int sub : {plain ? preferred : 0, c->encoding}) {
    if (!sub) continue;
    probe.format = c->major | sub;
    if (sf_format_check(&probe)) return probe.format;
  }
  fail("cannot write '" + path + "': no sample encoding of that container takes " + std::to_string(channels) +
       " channels at " + std::to_string(rate) + " Hz");
}

void write_audio(const std::string& path, const float* samples, size_t frames, int rate, int channels,
                 bool float_wav) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = sound_file_format(path, rate, channels, float_wav ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16);
  SndfilePtr file(sf_open(path.c_str(), SFM_WRITE, &info));
  if (!file) fail("cannot write sound file '" + path + "': " + sf_strerror(nullptr));
  // Integer formats clip instead of wrapping around.
  sf_command(file.get(), SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const sf_count_t put = sf_writef_float(file.get(), samples, static_cast<sf_count_t>(frames));
  if (put != static_cast<sf_count_t>(frames))
    fail("writing sound file '" + path + "' failed: " + sf_strerror(file.get()));
}

std::vector<float> resample(const float* in, size_t n, int from_rate, int to_rate) {
  require(from_rate > 0 && to_rate > 0, "resample: sample rates must be positive");
  if (from_rate == to_rate) return std::vector<float>(in, in + n);
  const double ratio = static_cast<double>(to_rate) / from_rate;
  std::vector<float> out(static_cast<size_t>(std::ceil(n * ratio)) + 16);  // (n * ratio)
  SRC_DATA data{};
  data.data_in = in;
  data.input_frames = static_cast<long>(n);
  data.data_out = out.data();
  data.output_frames = static_cast<long>(out.size());
  data.src_ratio = ratio;
  data.end_of_input = 1;
  const int err = src_simple(&data, SRC_SINC_BEST_QUALITY, 1);
  if (err) fail(std::string("resampling failed: ") + src_strerror(err));
  out.resize(static_cast<size_t>(data.output_frames_gen));
  return out;
}

}  // namespace ssm
