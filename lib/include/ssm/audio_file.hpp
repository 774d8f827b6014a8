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

// Writes (frames, channels) interleaved samples; the format follows the file
// extension (.wav is 16-bit PCM unless `float_wav`, .flac 16-bit, .ogg Vorbis).
void write_audio(const std::string& path, const float* samples, size_t frames, int rate, int channels = 1,
                 bool float_wav = false);

// Band-limited sample-rate conversion of a mono signal (libsamplerate, best quality).
std::vector<float> resample(const float* in, size_t n, int from_rate, int to_rate);

}  // namespace ssm
