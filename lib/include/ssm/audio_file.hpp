// Sound files through libsndfile (any format it reads) and sample-rate
// conversion through libsamplerate.
#pragma once
#include <string>
#include <vector>

namespace ssm {

struct Audio {
  std::vector<float> samples;  // (frames, channels) interleaved
  int rate = 0;
  int channels = 0;
  size_t frames() const { return channels ? samples.size() / channels : 0; }
};

// Reads a whole file. Throws ssm::Error naming the file for unreadable or
// empty files and for non-finite samples (with the frame index).
Audio read_audio(const std::string& path);

// Mean of the channels: (frames, channels) -> (frames).
std::vector<float> mix_to_mono(const Audio& audio);

// Reads, mixes to mono and resamples to `rate` (no-op when equal).
std::vector<float> read_mono(const std::string& path, int rate);

// libsndfile's format (SF_FORMAT_*) for writing `path`: the container from
// its extension (wav, w64, flac, ogg/oga, opus, mp3, aiff/aif, au/snd, caf,
// raw/f32) and a sample encoding of that container. `preferred` (a subtype
// such as the input's SF_FORMAT_PCM_24 or SF_FORMAT_FLOAT) is kept when it is
// a plain PCM or float encoding the container takes at this rate and channel
// count; anything else (0, or an input's MP3, Vorbis, ADPCM...) gets the
// container's own encoding: 16-bit PCM, Vorbis for ogg, Opus, MP3, float for
// raw. Throws ssm::Error naming the path for an unknown extension or a
// container that takes neither.
int sound_file_format(const std::string& path, int rate, int channels, int preferred = 0);

// Writes (frames, channels) interleaved samples; the format follows the file
// extension (sound_file_format: .wav is 16-bit PCM unless `float_wav`, .flac
// 16-bit, .ogg Vorbis).
void write_audio(const std::string& path, const float* samples, size_t frames, int rate, int channels = 1,
                 bool float_wav = false);

// Band-limited sample-rate conversion of a mono signal (libsamplerate, best quality).
std::vector<float> resample(const float* in, size_t n, int from_rate, int to_rate);

}  // namespace ssm
