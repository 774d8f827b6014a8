// Sources and sinks of mono or multichannel float frames behind one small
// interface: sound files (libsndfile), raw PCM on a file descriptor (stdin /
// stdout), and raw PCM over TCP (Boost.Asio). The PortAudio device source and
// sink are in portaudio.hpp; they feed the real-time Pipeline instead, since
// a device pushes samples from its callback rather than being read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ssm {

class Source {
 public:
  virtual ~Source() = default;
  virtual int rate() const = 0;
  virtual int channels() const = 0;
  // Up to `frames` frames into out (frames, channels) interleaved; waits until
  // some are there; 0 means the end (or that `frames` was 0: nothing is read).
  // Throws ssm::Error naming the source.
  virtual size_t read(float* out, size_t frames) = 0;
  // libsndfile's subtype of the stored samples (SF_FORMAT_PCM_16, _FLOAT, ...), 0 when unknown.
  virtual int sample_format() const { return 0; }
  // What was found wrong with the input while reading it (a file shorter
  // than its header says), "" when nothing: the caller warns about it.
  virtual std::string damage() const { return ""; }
  // Frames the source announces (a file's header), 0 when unknown.
  virtual uint64_t length() const { return 0; }
};

class Sink {
 public:
  virtual ~Sink() = default;
  // All of in (frames, channels) interleaved, or throws ssm::Error naming the sink.
  virtual void write(const float* in, size_t frames) = 0;
  // Finalises (a file gets its header and final name); writing after it is an error.
  virtual void close() {}
};

// Raw PCM sample encodings: little-endian float32 or int16 (scaled by 1/32768).
enum class PcmFormat { F32, S16 };
PcmFormat parse_pcm_format(const std::string& name);  // "f32" / "s16"; throws naming it
size_t pcm_bytes(PcmFormat f);

// Reads a sound file in chunks; or a sound file streamed on a descriptor
// (a WAV, AU or raw-header format piped to stdin), named `name` in messages.
std::unique_ptr<Source> open_sound_file_source(const std::string& path);
std::unique_ptr<Source> open_sound_file_source(int fd, const std::string& name);
// Writes a sound file under a temporary name, renamed at close(); the format
// is libsndfile's `sf_format` or, for 0, sound_file_format(path, ..., float):
// float where the container takes it (wav, w64, caf, aiff), else its own
// encoding. Integer formats clip. A sink destroyed without close() removes
// its partial file.
std::unique_ptr<Sink> open_sound_file_sink(const std::string& path, int rate, int channels, int sf_format = 0);

// Raw PCM on a file descriptor (0 = stdin, 1 = stdout); the descriptor is not closed.
std::unique_ptr<Source> open_raw_pcm_source(int fd, int rate, int channels, PcmFormat f, const std::string& name);
std::unique_ptr<Sink> open_raw_pcm_sink(int fd, int rate, int channels, PcmFormat f, const std::string& name);

// Raw PCM from one TCP peer: listens on `port` at `address` (or connects to
// address:port when `connect`), then reads frames until the peer closes.
// Bounded: a read returns after at most `frames` frames, holds at most one
// chunk, and a peer silent for `idle_timeout_s` seconds ends the stream with
// an error. A trailing partial frame at close is an error naming the count.
struct TcpPcmOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;
  bool connect = false;
  int rate = 16000, channels = 1;
  PcmFormat format = PcmFormat::F32;
  double idle_timeout_s = 10.0;
};
class TcpPcmSource : public Source {
 public:
  explicit TcpPcmSource(const TcpPcmOptions& o);
  ~TcpPcmSource() override;
  // The bound port (useful with port 0) before the peer connects.
  uint16_t port() const;
  // Waits for the peer (listening) or connects; read() calls it when needed.
  void open();
  int rate() const override;
  int channels() const override;
  size_t read(float* out, size_t frames) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
