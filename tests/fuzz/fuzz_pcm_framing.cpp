// libFuzzer target for the framing of raw PCM streams: the TCP source
// (TcpPcmSource, a real loopback connection) and the pipe / stdin source
// (open_raw_pcm_source). The last bytes of the input choose the sample
// format, the channel count, where the peer's writes are cut and how many
// frames each read asks for (0 included); the rest is the byte stream.
//
// Writes and reads interleave in one thread: a read is issued only when the
// bytes already written let it finish without waiting for more. Then the
// writer closes. Whatever the cuts and read sizes, both sources must deliver
// exactly the whole frames of the stream, decoded as a plain loop decodes
// them, never more frames than a read asked for, and end with ssm::Error
// exactly when the stream stops inside a frame.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "ssm/common.hpp"
#include "ssm/streams/io.hpp"

using ssm_fuzz::broken;
using ssm_fuzz::check;

namespace {

// Larger streams would not fit the pipe and socket buffers of a writer
// that runs ahead of its reader in the same thread.
constexpr size_t kMaxStream = 16384;

struct Plan {
  ssm::PcmFormat format;
  int channels;
  size_t frame_bytes;
  std::vector<size_t> cuts;   // sorted offsets where the writer pauses
  std::vector<size_t> reads;  // frames asked for, used in turn
  std::string bytes;
};

// The reference: every whole frame of the stream, decoded sample by sample.
std::vector<float> reference(const Plan& p) {
  const size_t frames = p.bytes.size() / p.frame_bytes;
  std::vector<float> out(frames * p.channels);  // (frames, channels)
  for (size_t i = 0; i < out.size(); ++i) {
    if (p.format == ssm::PcmFormat::F32) {
      std::memcpy(&out[i], p.bytes.data() + 4 * i, 4);
    } else {
      int16_t v;
      std::memcpy(&v, p.bytes.data() + 2 * i, 2);
      out[i] = v / 32768.0f;
    }
  }
  return out;
}

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) broken(std::string("peer write failed: ") + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Drives `src` against a peer writing into `peer_fd`. `can_finish(pending,
// frames)` says whether a read of `frames` returns without more bytes, given
// the bytes written and not yet delivered. Calls close_peer() after the
// last write.
template <typename CanFinish, typename ClosePeer>
void drive(const char* what, ssm::Source& src, int peer_fd, const Plan& p, CanFinish can_finish,
           ClosePeer close_peer) {
  const std::string name(what);
  const std::vector<float> want = reference(p);
  std::vector<float> got;
  size_t written = 0, delivered = 0, next_read = 0;  // bytes, frames, index into p.reads
  // One read of `frames` into a buffer of exactly that size, so that ASan
  // sees a write past it; returns the frames delivered.
  auto read_frames = [&](size_t frames) {
    const auto out = std::make_unique<float[]>(frames * p.channels);  // (frames, channels)
    const size_t n = src.read(out.get(), frames);
    if (n > frames) broken(name + ": read returned more frames than asked for");
    got.insert(got.end(), out.get(), out.get() + n * p.channels);
    delivered += n;
    return n;
  };
  for (size_t cut : p.cuts) {
    write_all(peer_fd, p.bytes.data() + written, cut - written);
    written = cut;
    // The reads that the bytes written so far let finish (a run of reads of
    // 0 frames as long as the list of sizes at most).
    for (size_t zeros = 0; zeros < p.reads.size();) {
      const size_t frames = p.reads[next_read % p.reads.size()];
      if (!can_finish(written - delivered * p.frame_bytes, frames)) break;
      ++next_read;
      const size_t n = read_frames(frames);
      if (frames == 0) {
        if (n != 0) broken(name + ": a read of 0 frames returned some");
        ++zeros;
      } else {
        if (n == 0) broken(name + ": end of stream before the peer closed");
        zeros = 0;
      }
    }
  }
  write_all(peer_fd, p.bytes.data() + written, p.bytes.size() - written);
  close_peer();
  const bool partial = p.bytes.size() % p.frame_bytes != 0;
  try {
    for (;;) {
      size_t frames = p.reads[next_read++ % p.reads.size()];
      if (frames == 0) {
        if (read_frames(0) != 0) broken(name + ": a read of 0 frames returned some");
        frames = 1;
      }
      if (read_frames(frames) == 0) break;
    }
    check(!partial, name + ": a stream ending inside a frame ended without an error");
  } catch (const ssm::Error&) {
    check(partial, name + ": error on a stream of whole frames");
  }
  check(got.size() == want.size() &&
            (want.empty() || std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0),
        name + ": delivered samples differ from the stream's whole frames");
}

void run_pipe(const Plan& p) {
  int fds[2];
  if (pipe(fds) != 0) broken("pipe failed");
  auto src = ssm::open_raw_pcm_source(fds[0], 16000, p.channels, p.format, "fuzz pipe");
  bool peer_open = true;
  // A pipe read returns all that is there: the source waits only for an
  // unfinished frame, and stops early only at a full buffer.
  auto can_finish = [&](size_t pending, size_t frames) {
    return frames == 0 || pending >= frames * p.frame_bytes ||
           (pending >= p.frame_bytes && pending % p.frame_bytes == 0);
  };
  drive("pipe", *src, fds[1], p, can_finish, [&] {
    close(fds[1]);
    peer_open = false;
  });
  if (peer_open) close(fds[1]);
  close(fds[0]);
}

void run_tcp(const Plan& p) {
  ssm::TcpPcmOptions o;
  o.port = 0;
  o.channels = p.channels;
  o.format = p.format;
  o.idle_timeout_s = 5;  // a read that waits this long is a framing bug: it fails the run
  ssm::TcpPcmSource src(o);
  const int peer = socket(AF_INET, SOCK_STREAM, 0);
  if (peer < 0) broken("socket failed");
  const int one = 1;
  setsockopt(peer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // each cut goes out as its own segment
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(src.port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(peer, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    broken(std::string("connect failed: ") + std::strerror(errno));
  src.open();  // the connection waits in the backlog
  // The TCP source returns as soon as it holds one whole frame.
  auto can_finish = [&](size_t pending, size_t frames) { return frames == 0 || pending >= p.frame_bytes; };
  drive("tcp", src, peer, p, can_finish, [&] { shutdown(peer, SHUT_WR); });
  // Reset instead of TIME_WAIT: millions of runs would use up the ports.
  const linger l{1, 0};
  setsockopt(peer, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(peer);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Plan p;
  p.format = in.ConsumeBool() ? ssm::PcmFormat::S16 : ssm::PcmFormat::F32;
  p.channels = in.ConsumeIntegralInRange(1, 6);
  p.frame_bytes = ssm::pcm_bytes(p.format) * p.channels;
  const int reads = in.ConsumeIntegralInRange(1, 8);
  for (int i = 0; i < reads; ++i) p.reads.push_back(in.ConsumeIntegralInRange<size_t>(0, 40));
  const int cuts = in.ConsumeIntegralInRange(0, 12);
  std::vector<uint16_t> cut_at;
  for (int i = 0; i < cuts; ++i) cut_at.push_back(in.ConsumeIntegral<uint16_t>());
  p.bytes = in.ConsumeRemainingBytesAsString();
  if (p.bytes.size() > kMaxStream) p.bytes.resize(kMaxStream);
  for (uint16_t c : cut_at) p.cuts.push_back(c % (p.bytes.size() + 1));
  std::sort(p.cuts.begin(), p.cuts.end());

  run_pipe(p);
  run_tcp(p);
  return 0;
}
