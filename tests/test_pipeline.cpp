// The real-time pipeline and the sources/sinks:
//  - whatever the callback's block sizes, the output is the model's
//    per-sample output delayed by the prefill (DESIGN.md §2.4);
//  - when processing falls behind, blocks are dropped and underruns played as
//    silence, counted, and the output keeps its position (no drift);
//  - the callback allocates nothing (a replaced operator new counts the
//    allocations made on a thread while it is "armed");
//  - sound-file, raw-PCM and TCP sources and sinks move samples intact.
#include <utility>  // before Asio (Boost 1.74, g++ 12, C++20)

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <random>
#include <thread>

#include "ssm/audio_file.hpp"
#include "ssm/streams/io.hpp"
#include "ssm/streams/pipeline.hpp"
#include "denoise_testing.hpp"
#include "testing.hpp"

namespace fs = std::filesystem;
using ssm::testing::rel_error;

// ---- allocation counter: every operator new of this program goes through here.
namespace {
thread_local bool t_armed = false;
std::atomic<long> g_armed_allocations{0};
}  // namespace

void* operator new(size_t n) {
  if (t_armed) g_armed_allocations.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, std::align_val_t a) {
  if (t_armed) g_armed_allocations.fetch_add(1);
  if (void* p = std::aligned_alloc(static_cast<size_t>(a), (n + static_cast<size_t>(a) - 1) & ~(static_cast<size_t>(a) - 1)))
    return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

ssm::Model small_model() { return ssm::testing::small_model(21); }

// out = in, optionally stalling once: a processor that falls behind on demand.
class Identity : public ssm::BlockProcessor {
 public:
  size_t max_output(size_t n) const override { return n; }
  size_t process(const float* in, size_t n, float* out) override {
    if (stall_ms.exchange(0) > 0) std::this_thread::sleep_for(std::chrono::milliseconds(150));
    std::copy(in, in + n, out);
    return n;
  }
  std::atomic<int> stall_ms{0};
};

// A sink that keeps what it gets.
class Collect : public ssm::Sink {
 public:
  void write(const float* in, size_t frames) override { got.insert(got.end(), in, in + frames); }
  void close() override { closed = true; }
  std::vector<float> got;
  bool closed = false;
};

void wait_processed(const ssm::Pipeline& p) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (p.stats().processed < p.stats().captured - p.stats().dropped_frames &&
         std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("ssm_test_pipeline_" + std::to_string(getpid()) + "_" + name);
}

}  // namespace

TEST(Pipeline, AnyCallbackBlockSizeGivesThePerSampleModelDelayedByThePrefill) {
  const ssm::Model m = small_model();
  const auto x = ssm::testing::random_vector<float>(20000, 4, -0.5, 0.5);
  std::vector<float> ref(x.size());
  ssm::Stream s(m, 1);
  for (size_t i = 0; i < x.size(); ++i) s.process(&x[i], &ref[i], 1);  // one sample at a time

  ssm::DenoiseProcessor proc(m, 16000, 1024);
  ssm::PipelineOptions o;
  o.prefill = 700;  // at least the largest callback: its output cannot carry its own input
  Collect tap;
  ssm::Pipeline p(proc, o, &tap);
  p.start();
  std::vector<float> played;
  std::vector<float> out(1024);
  std::mt19937 rng(3);
  for (size_t i = 0; i < x.size();) {
    const size_t n = std::min<size_t>(1 + rng() % 700, x.size() - i);
    p.audio_callback(x.data() + i, out.data(), n);
    played.insert(played.end(), out.begin(), out.begin() + n);
    wait_processed(p);  // a processor far faster than the device
    i += n;
  }
  for (int k = 0; k < 8; ++k) {  // silence in, the rest of the output out
    std::vector<float> zeros(100, 0.0f);
    p.audio_callback(zeros.data(), out.data(), 100);
    played.insert(played.end(), out.begin(), out.begin() + 100);
    wait_processed(p);
  }
  p.finish();
  const ssm::PipelineStats st = p.stats();
  EXPECT_EQ(st.xruns(), 0u);
  for (size_t i = 0; i < o.prefill; ++i) ASSERT_EQ(played[i], 0.0f);
  EXPECT_LT(rel_error(played.data() + o.prefill, ref.data(), ref.size()), 1e-5);
  // The tap saw every processed frame, and was closed.
  ASSERT_GE(tap.got.size(), ref.size());
  EXPECT_LT(rel_error(tap.got.data(), ref.data(), ref.size()), 1e-5);
  EXPECT_TRUE(tap.closed);
}

TEST(Pipeline, FallingBehindIsCountedAndRecoversWithoutDrift) {
  Identity proc;
  ssm::PipelineOptions o;
  o.prefill = 512;
  o.ring = 2048;
  o.max_block = 256;
  ssm::Pipeline p(proc, o);
  p.start();
  // A ramp: every output frame must be its input frame `prefill` earlier, or silence.
  const size_t total = 300 * 128;
  std::vector<float> x(total);
  for (size_t i = 0; i < total; ++i) x[i] = 1.0f + static_cast<float>(i);
  std::vector<float> played(total), out(128);
  for (size_t i = 0; i < total; i += 128) {
    if (i == 40 * 128) proc.stall_ms = 150;  // the processing thread stops for 150 ms
    p.audio_callback(x.data() + i, played.data() + i, 128);
    std::this_thread::sleep_for(std::chrono::microseconds(1000));
  }
  p.finish();
  const ssm::PipelineStats st = p.stats();
  std::printf("dropped %llu frames in %llu blocks, %llu underrun frames in %llu underruns, %llu skipped\n",
              (unsigned long long)st.dropped_frames, (unsigned long long)st.dropped_blocks,
              (unsigned long long)st.underrun_frames, (unsigned long long)st.underruns,
              (unsigned long long)st.skipped_frames);
  EXPECT_GT(st.dropped_blocks, 0u);
  EXPECT_GT(st.underruns, 0u);
  size_t silent = 0;
  for (size_t j = 0; j < total; ++j) {
    const float want = j < o.prefill ? 0.0f : x[j - o.prefill];
    if (played[j] == 0.0f) {
      ++silent;
      continue;
    }
    ASSERT_EQ(played[j], want) << "output frame " << j << " out of place";
  }
  // After the stall the output is exact again, up to the end.
  for (size_t j = total - 60 * 128; j < total; ++j) ASSERT_EQ(played[j], x[j - o.prefill]) << j;
  EXPECT_GE(silent, st.dropped_frames);
}

TEST(Pipeline, TheCallbackDoesNotAllocate) {
  Identity proc;
  ssm::PipelineOptions o;
  o.prefill = 256;
  o.ring = 1024;
  ssm::Pipeline p(proc, o);
  p.start();
  std::vector<float> in(4096, 0.25f), out(4096);
  g_armed_allocations = 0;
  // Normal blocks, blocks too large for the ring (dropped), and reads past
  // the output (underruns): every path of the callback, armed.
  for (int i = 0; i < 200; ++i) {
    const size_t n = i % 17 == 0 ? 3000 : 64 + (i * 37) % 500;
    t_armed = true;
    p.audio_callback(in.data(), out.data(), n);
    p.audio_callback(nullptr, out.data(), n % 300);
    t_armed = false;
  }
  p.finish();
  EXPECT_GT(p.stats().dropped_blocks, 0u);
  EXPECT_GT(p.stats().underruns, 0u);
  EXPECT_EQ(g_armed_allocations.load(), 0);
  // The counter works: an allocation while armed is seen.
  t_armed = true;
  auto* probe = new std::vector<float>(10);
  t_armed = false;
  delete probe;
  EXPECT_GT(g_armed_allocations.load(), 0);
}

// The denoiser's own process() at 48 kHz (converters, model, the carried
// band above the model's) allocates nothing either: it runs on audio threads.
TEST(Pipeline, ResamplingProcessorDoesNotAllocate) {
  const ssm::Model m = small_model();
  ssm::DenoiseProcessor proc(m, 48000, 1024);
  ASSERT_TRUE(proc.chain().carries_high_band());
  std::vector<float> x(1024), y(proc.max_output(1024));
  std::mt19937 rng(6);
  g_armed_allocations = 0;
  for (int i = 0; i < 200; ++i) {
    const size_t n = 1 + rng() % 1024;
    for (size_t t = 0; t < n; ++t) x[t] = 0.3f * std::sin(0.05f * t) + 0.1f * std::sin(2.5f * t);
    t_armed = true;
    proc.process(x.data(), n, y.data());
    t_armed = false;
  }
  EXPECT_EQ(g_armed_allocations.load(), 0);
}

TEST(Pipeline, ResamplingProcessorKeepsItsHoldbackPromise) {
  // At 48 kHz the processor converts to 16 kHz and back; after k inputs it
  // must have produced at least k - holdback outputs, for any block sizes.
  const ssm::Model m = small_model();
  ssm::DenoiseProcessor proc(m, 48000, 1024);
  EXPECT_GT(proc.holdback(), 0u);
  std::vector<float> x(1024), y(proc.max_output(1024));
  std::mt19937 rng(5);
  size_t fed = 0, got = 0;
  for (int i = 0; i < 300; ++i) {
    const size_t n = 1 + rng() % 1024;
    for (size_t t = 0; t < n; ++t) x[t] = 0.3f * std::sin(0.05f * (fed + t));
    got += proc.process(x.data(), n, y.data());
    fed += n;
    ASSERT_GE(got + proc.holdback(), fed) << "after " << fed << " frames";
  }
}

TEST(Sources, SoundFileSourceAndSink) {
  const auto x = ssm::testing::random_vector<float>(2 * 5000, 8, -0.9, 0.9);
  const auto path = temp_path("st.wav");
  {
    auto sink = ssm::open_sound_file_sink(path, 22050, 2);
    sink->write(x.data(), 1234);
    sink->write(x.data() + 2 * 1234, 5000 - 1234);
    EXPECT_FALSE(fs::exists(path));  // under its temporary name until closed
    sink->close();
  }
  auto src = ssm::open_sound_file_source(path);
  EXPECT_EQ(src->rate(), 22050);
  EXPECT_EQ(src->channels(), 2);
  std::vector<float> got(2 * 6000);
  size_t n = 0, k;
  while ((k = src->read(got.data() + 2 * n, 777)) > 0) n += k;
  ASSERT_EQ(n, 5000u);
  got.resize(2 * n);
  EXPECT_EQ(got, x);  // float WAV: exact
  {
    auto abandoned = ssm::open_sound_file_sink(temp_path("gone.wav"), 16000, 1);
    abandoned->write(x.data(), 10);
  }
  EXPECT_FALSE(fs::exists(temp_path("gone.wav")));
  EXPECT_FALSE(fs::exists(temp_path("gone.wav").string() + ".part"));
  EXPECT_THROW(ssm::open_sound_file_source("/nonexistent/a.wav"), ssm::Error);
  fs::remove(path);
}

TEST(Sources, RawPcmThroughAPipe) {
  for (auto f : {ssm::PcmFormat::F32, ssm::PcmFormat::S16}) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    std::vector<float> x(3001);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::lrint(8000 * std::sin(0.01 * i))) / 32768.0f;
    std::thread writer([&] {
      auto sink = ssm::open_raw_pcm_sink(fds[1], 16000, 1, f, "pipe");
      for (size_t i = 0; i < x.size(); i += 333) sink->write(x.data() + i, std::min<size_t>(333, x.size() - i));
      close(fds[1]);
    });
    auto src = ssm::open_raw_pcm_source(fds[0], 16000, 1, f, "pipe");
    std::vector<float> got(x.size() + 10);
    size_t n = 0, k;
    while ((k = src->read(got.data() + n, 100)) > 0) n += k;
    writer.join();
    close(fds[0]);
    ASSERT_EQ(n, x.size());
    got.resize(n);
    EXPECT_EQ(got, x);  // both formats represent these values exactly
  }
  // A stream that stops inside a frame is an error naming the stray bytes.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const char three[3] = {1, 2, 3};
  ASSERT_EQ(write(fds[1], three, 3), 3);
  close(fds[1]);
  auto src = ssm::open_raw_pcm_source(fds[0], 16000, 1, ssm::PcmFormat::F32, "pipe");
  float buf[4];
  EXPECT_THROW(src->read(buf, 4), ssm::Error);
  close(fds[0]);
  EXPECT_THROW(ssm::parse_pcm_format("u8"), ssm::Error);
}

TEST(Sources, TcpPcmFromALoopbackPeer) {
  ssm::TcpPcmOptions o;
  o.port = 0;  // any free port
  o.channels = 2;
  o.idle_timeout_s = 5;
  ssm::TcpPcmSource src(o);
  const uint16_t port = src.port();
  ASSERT_GT(port, 0);
  const auto x = ssm::testing::random_vector<float>(2 * 4000, 6, -1, 1);
  std::thread peer([&] {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket s(io);
    s.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    // Odd-sized pieces: frames split across reads.
    const auto* bytes = reinterpret_cast<const uint8_t*>(x.data());
    const size_t total = x.size() * sizeof(float);
    for (size_t i = 0; i < total; i += 1001) boost::asio::write(s, boost::asio::buffer(bytes + i, std::min<size_t>(1001, total - i)));
  });
  std::vector<float> got(x.size() + 8);
  size_t n = 0, k;
  while ((k = src.read(got.data() + 2 * n, 500)) > 0) n += k;
  peer.join();
  ASSERT_EQ(n, 4000u);
  got.resize(2 * n);
  EXPECT_EQ(got, x);
}

TEST(Sources, TcpPcmSilentPeerTimesOut) {
  ssm::TcpPcmOptions o;
  o.idle_timeout_s = 0.3;
  ssm::TcpPcmSource src(o);
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), src.port()});
  float buf[16];
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(src.read(buf, 16), ssm::Error);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
}

// Found by fuzz_pcm_framing: a read of 0 frames while part of a frame was
// carried over underflowed the room left in the buffer (size_t), so the
// socket read could write past it and whole frames went into a caller
// buffer of size 0. A read of 0 frames now reads nothing and returns 0.
TEST(Sources, TcpPcmReadOfZeroFramesReadsNothing) {
  ssm::TcpPcmOptions o;
  o.idle_timeout_s = 5;
  ssm::TcpPcmSource src(o);
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket peer(io);
  peer.connect({boost::asio::ip::make_address("127.0.0.1"), src.port()});
  std::vector<float> x(1024);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) - 0.5f;
  const auto* bytes = reinterpret_cast<const uint8_t*>(x.data());
  // A frame and a half first: the source keeps the half.
  boost::asio::write(peer, boost::asio::buffer(bytes, 6));
  std::vector<float> got(x.size());
  size_t n = src.read(got.data(), 4);
  ASSERT_EQ(n, 1u);
  boost::asio::write(peer, boost::asio::buffer(bytes + 6, x.size() * 4 - 6));
  float none[1] = {-9.0f};
  EXPECT_EQ(src.read(none, 0), 0u);
  EXPECT_EQ(none[0], -9.0f);
  peer.shutdown(boost::asio::ip::tcp::socket::shutdown_send);
  size_t k;
  while ((k = src.read(got.data() + n, x.size() - n)) > 0) n += k;
  ASSERT_EQ(n, x.size());
  EXPECT_EQ(got, x);
}

// Found by fuzz_pcm_framing: a pipe that ended inside a frame lost the whole
// frames read with it (the error came before they were returned); the TCP
// source returned them first. Now both do: the frames, then the error.
TEST(Sources, RawPcmDeliversWholeFramesBeforeReportingStrayBytes) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const float x[3] = {0.25f, -0.5f, 0.75f};
  ASSERT_EQ(write(fds[1], x, 10), 10);  // two frames and two bytes of a third
  close(fds[1]);
  auto src = ssm::open_raw_pcm_source(fds[0], 16000, 1, ssm::PcmFormat::F32, "pipe");
  float got[4] = {};
  float none[1] = {-9.0f};
  EXPECT_EQ(src->read(none, 0), 0u);
  ASSERT_EQ(src->read(got, 4), 2u);
  EXPECT_EQ(got[0], x[0]);
  EXPECT_EQ(got[1], x[1]);
  try {
    src->read(got, 4);
    ADD_FAILURE() << "expected an error naming the stray bytes";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("2 stray bytes"), std::string::npos) << e.what();
  }
  close(fds[0]);
}
