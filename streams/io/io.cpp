// Sound-file, raw-PCM and TCP sources and sinks.
#include <utility>  // before Asio: Boost 1.74 with g++ 12 in C++20 mode needs it

#include "ssm/streams/io.hpp"

#include <sndfile.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "ssm/audio_file.hpp"
#include "ssm/common.hpp"

namespace fs = std::filesystem;

namespace ssm {

PcmFormat parse_pcm_format(const std::string& name) {
  if (name == "f32" || name == "float32") return PcmFormat::F32;
  if (name == "s16" || name == "int16") return PcmFormat::S16;
  fail("unknown raw PCM format '" + name + "' (expected f32 or s16)");
}

size_t pcm_bytes(PcmFormat f) { return f == PcmFormat::F32 ? 4 : 2; }

namespace {

// Little-endian bytes (n samples) <-> floats; this library runs on little-endian hosts.
void decode(const uint8_t* bytes, size_t n, PcmFormat f, float* out) {
  if (f == PcmFormat::F32) {
    std::memcpy(out, bytes, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      int16_t v;
      std::memcpy(&v, bytes + 2 * i, 2);
      out[i] = v / 32768.0f;
    }
  }
}

void encode(const float* in, size_t n, PcmFormat f, uint8_t* bytes) {
  if (f == PcmFormat::F32) {
    std::memcpy(bytes, in, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      const float c = std::clamp(in[i], -1.0f, 32767.0f / 32768.0f);
      const int16_t v = static_cast<int16_t>(std::lrint(c * 32768.0f));
      std::memcpy(bytes + 2 * i, &v, 2);
    }
  }
}

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

class SoundFileSource : public Source {
 public:
  // A file by path, or (fd >= 0) a stream on a descriptor such as a pipe,
  // named `path` in messages.
  SoundFileSource(const std::string& path, int fd = -1) : path_(path) {
    file_.reset(fd >= 0 ? sf_open_fd(fd, SFM_READ, &info_, SF_FALSE) : sf_open(path.c_str(), SFM_READ, &info_));
    if (!file_) fail("cannot read sound file '" + path + "': " + sf_strerror(nullptr));
    require(info_.channels > 0 && info_.samplerate > 0, "sound file '" + path + "': invalid channels or rate");
    // libsndfile trims a length the header claims beyond the file's end, and
    // says so only in its log ("data : N (should be M)").
    char log[4096] = {0};
    sf_command(file_.get(), SFC_GET_LOG_INFO, log, sizeof log);
    if (std::strstr(log, "should be")) damage_ = "its header claims more data than it holds (truncated?)";
  }
  int rate() const override { return info_.samplerate; }
  int channels() const override { return info_.channels; }
  int sample_format() const override { return info_.format & SF_FORMAT_SUBMASK; }
  size_t read(float* out, size_t frames) override {
    if (ended_) return 0;
    const sf_count_t got = sf_readf_float(file_.get(), out, static_cast<sf_count_t>(frames));
    if (got < 0 || (got == 0 && sf_error(file_.get()))) {
      const std::string why = sf_strerror(file_.get());
      if (read_ == 0) fail("sound file '" + path_ + "': read error: " + why);
      // What decoded so far is kept, as sox does, and the damage reported.
      damage_ = "decoding stopped after " + std::to_string(read_) + " frames: " + why + " (truncated or damaged?)";
      ended_ = true;
      return 0;
    }
    read_ += static_cast<size_t>(got);
    if (got == 0 && frames > 0 && info_.frames > 0 && info_.frames != SF_COUNT_MAX &&
        read_ < static_cast<size_t>(info_.frames) && damage_.empty())
      damage_ = "its header announces " + std::to_string(info_.frames) + " frames, only " + std::to_string(read_) +
                " could be decoded (truncated?)";
    return static_cast<size_t>(got);
  }
  std::string damage() const override { return damage_; }
  uint64_t length() const override {
    return info_.frames > 0 && info_.frames != SF_COUNT_MAX ? static_cast<uint64_t>(info_.frames) : 0;
  }

 private:
  std::string path_;
  SF_INFO info_{};
  SndfilePtr file_;
  size_t read_ = 0;
  bool ended_ = false;
  std::string damage_;
};

class SoundFileSink : public Sink {
 public:
  SoundFileSink(const std::string& path, int rate, int channels, int sf_format)
      : path_(path), part_(path + ".part") {
    SF_INFO info{};
    info.samplerate = rate;
    info.channels = channels;
    info.format = sf_format ? sf_format : sound_file_format(path, rate, channels, SF_FORMAT_FLOAT);
    file_.reset(sf_open(part_.c_str(), SFM_WRITE, &info));
    if (!file_) {
      // libsndfile may have created the file before refusing the format.
      const std::string why = sf_strerror(nullptr);
      std::error_code ec;
      fs::remove(part_, ec);
      fail("cannot write sound file '" + path + "': " + why);
    }
    sf_command(file_.get(), SFC_SET_CLIPPING, nullptr, SF_TRUE);
  }
  ~SoundFileSink() override {
    if (file_) {
      file_.reset();
      std::error_code ec;
      fs::remove(part_, ec);
    }
  }
  void write(const float* in, size_t frames) override {
    require(file_ != nullptr, "sound file '" + path_ + "': written after close");
    if (frames && sf_writef_float(file_.get(), in, static_cast<sf_count_t>(frames)) != static_cast<sf_count_t>(frames))
      fail("writing sound file '" + path_ + "' failed: " + sf_strerror(file_.get()));
  }
  void close() override {
    if (!file_) return;
    file_.reset();
    std::error_code ec;
    fs::rename(part_, path_, ec);
    if (ec) fail("cannot move the finished file to '" + path_ + "': " + ec.message());
  }

 private:
  std::string path_, part_;
  SndfilePtr file_;
};

class RawPcmSource : public Source {
 public:
  RawPcmSource(int fd, int rate, int channels, PcmFormat f, std::string name)
      : fd_(fd), rate_(rate), channels_(channels), f_(f), name_(std::move(name)) {
    require(rate > 0 && channels > 0, "raw PCM source '" + name_ + "': rate and channels must be positive");
  }
  int rate() const override { return rate_; }
  int channels() const override { return channels_; }
  int sample_format() const override { return f_ == PcmFormat::F32 ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16; }
  size_t read(float* out, size_t frames) override {
    // Nothing asked for: below, a carried partial frame would underflow the
    // room left in the buffer.
    if (frames == 0) return 0;
    const size_t frame_bytes = pcm_bytes(f_) * channels_;
    bytes_.resize(std::max(bytes_.size(), frames * frame_bytes));
    // Carry-over bytes of a partial frame from the last read come first.
    size_t have = carry_;
    while (have < frame_bytes || (have < frames * frame_bytes && have % frame_bytes)) {
      const ssize_t r = ::read(fd_, bytes_.data() + have, frames * frame_bytes - have);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail("raw PCM source '" + name_ + "': read failed: " + std::strerror(errno));
      if (r == 0) {
        // Whole frames before a stray partial one are delivered first; the
        // next read finds only the stray bytes and reports them.
        if (have > 0 && have < frame_bytes)
          fail("raw PCM source '" + name_ + "': stream ended inside a frame (" + std::to_string(have) +
               " stray bytes)");
        break;
      }
      have += static_cast<size_t>(r);
    }
    const size_t n = have / frame_bytes;
    decode(bytes_.data(), n * channels_, f_, out);
    carry_ = have - n * frame_bytes;
    std::memmove(bytes_.data(), bytes_.data() + n * frame_bytes, carry_);
    return n;
  }

 private:
  int fd_, rate_, channels_;
  PcmFormat f_;
  std::string name_;
  std::vector<uint8_t> bytes_;
  size_t carry_ = 0;
};

class RawPcmSink : public Sink {
 public:
  RawPcmSink(int fd, int channels, PcmFormat f, std::string name)
      : fd_(fd), channels_(channels), f_(f), name_(std::move(name)) {}
  void write(const float* in, size_t frames) override {
    const size_t n = frames * channels_;
    bytes_.resize(std::max(bytes_.size(), n * pcm_bytes(f_)));
    encode(in, n, f_, bytes_.data());
    for (size_t done = 0, total = n * pcm_bytes(f_); done < total;) {
      const ssize_t w = ::write(fd_, bytes_.data() + done, total - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail("raw PCM sink '" + name_ + "': write failed: " + std::strerror(errno));
      done += static_cast<size_t>(w);
    }
  }

 private:
  int fd_, channels_;
  PcmFormat f_;
  std::string name_;
  std::vector<uint8_t> bytes_;
};

}  // namespace

std::unique_ptr<Source> open_sound_file_source(const std::string& path) {
  return std::make_unique<SoundFileSource>(path);
}
std::unique_ptr<Source> open_sound_file_source(int fd, const std::string& name) {
  return std::make_unique<SoundFileSource>(name, fd);
}
std::unique_ptr<Sink> open_sound_file_sink(const std::string& path, int rate, int channels, int sf_format) {
  return std::make_unique<SoundFileSink>(path, rate, channels, sf_format);
}
std::unique_ptr<Source> open_raw_pcm_source(int fd, int rate, int channels, PcmFormat f, const std::string& name) {
  return std::make_unique<RawPcmSource>(fd, rate, channels, f, name);
}
std::unique_ptr<Sink> open_raw_pcm_sink(int fd, int rate, int channels, PcmFormat f, const std::string& name) {
  require(rate > 0 && channels > 0, "raw PCM sink '" + name + "': rate and channels must be positive");
  return std::make_unique<RawPcmSink>(fd, channels, f, name);
}

// TCP: one peer, synchronous reads with a deadline enforced by a timer.
struct TcpPcmSource::Impl {
  TcpPcmOptions o;
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor{io};
  boost::asio::ip::tcp::socket socket{io};
  bool open = false;
  std::vector<uint8_t> bytes;  // (frames * frame bytes) the last chunk read
  size_t carry = 0;
  bool broken = false;  // a timed-out operation may still hold its handler: never run the context again

  std::string name() const { return "tcp " + o.address + ":" + std::to_string(o.port); }

  // Runs the io_context until `done` or the idle timeout.
  template <typename Done>
  void run_until(Done&& done, const char* what) {
    io.restart();
    io.run_for(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(o.idle_timeout_s)));
    if (!done()) {
      broken = true;
      socket.close();
      acceptor.close();
      fail("pcm source " + name() + ": no data for " + std::to_string(o.idle_timeout_s) + " s while " + what);
    }
  }
};

TcpPcmSource::TcpPcmSource(const TcpPcmOptions& o) : impl_(std::make_unique<Impl>()) {
  impl_->o = o;
  require(o.rate > 0 && o.channels > 0, "pcm source: rate and channels must be positive");
  require(o.idle_timeout_s > 0, "pcm source: the idle timeout must be positive");
  if (o.connect) return;
  using boost::asio::ip::tcp;
  boost::system::error_code ec;
  const auto addr = boost::asio::ip::make_address(o.address, ec);
  if (ec) fail("pcm source: bad address '" + o.address + "': " + ec.message());
  const tcp::endpoint ep(addr, o.port);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(1, ec);
  if (ec) fail("pcm source: cannot listen on " + o.address + ":" + std::to_string(o.port) + ": " + ec.message());
  impl_->o.port = impl_->acceptor.local_endpoint().port();
}

TcpPcmSource::~TcpPcmSource() = default;
uint16_t TcpPcmSource::port() const { return impl_->o.port; }
int TcpPcmSource::rate() const { return impl_->o.rate; }
int TcpPcmSource::channels() const { return impl_->o.channels; }

void TcpPcmSource::open() {
  Impl& s = *impl_;
  require(!s.broken, "pcm source " + s.name() + ": read after a timeout");
  if (s.open) return;
  boost::system::error_code ec;
  bool done = false;
  if (s.o.connect) {
    using boost::asio::ip::tcp;
    const auto addr = boost::asio::ip::make_address(s.o.address, ec);
    if (ec) fail("pcm source: bad address '" + s.o.address + "': " + ec.message());
    s.socket.async_connect(tcp::endpoint(addr, s.o.port), [&](const boost::system::error_code& e) {
      ec = e;
      done = true;
    });
    s.run_until([&] { return done; }, "connecting");
  } else {
    s.acceptor.async_accept(s.socket, [&](const boost::system::error_code& e) {
      ec = e;
      done = true;
    });
    s.run_until([&] { return done; }, "waiting for a peer");
    s.acceptor.close();
  }
  if (ec) fail("pcm source " + s.name() + ": " + ec.message());
  s.open = true;
}

size_t TcpPcmSource::read(float* out, size_t frames) {
  // Nothing asked for: below, a carried partial frame would underflow the
  // room left in the buffer.
  if (frames == 0) return 0;
  open();
  Impl& s = *impl_;
  require(!s.broken, "pcm source " + s.name() + ": read after a timeout");
  const size_t frame_bytes = pcm_bytes(s.o.format) * s.o.channels;
  s.bytes.resize(std::max(s.bytes.size(), frames * frame_bytes));
  size_t have = s.carry;
  while (have < frame_bytes) {
    boost::system::error_code ec;
    size_t got = 0;
    bool done = false;
    s.socket.async_read_some(boost::asio::buffer(s.bytes.data() + have, frames * frame_bytes - have),
                             [&](const boost::system::error_code& e, size_t n) {
                               ec = e;
                               got = n;
                               done = true;
                             });
    s.run_until([&] { return done; }, "reading");
    have += got;
    if (ec == boost::asio::error::eof) {
      if (have % frame_bytes)
        fail("pcm source " + s.name() + ": peer closed inside a frame (" + std::to_string(have % frame_bytes) +
             " stray bytes)");
      break;
    }
    if (ec) fail("pcm source " + s.name() + ": " + ec.message());
  }
  const size_t n = have / frame_bytes;
  decode(s.bytes.data(), n * s.o.channels, s.o.format, out);
  s.carry = have - n * frame_bytes;
  std::memmove(s.bytes.data(), s.bytes.data() + n * frame_bytes, s.carry);
  return n;
}

}  // namespace ssm
