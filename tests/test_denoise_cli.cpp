// `ssm denoise IN OUT` against a reference: the file path (chunked reading,
// streaming resampling, block processing, lookahead alignment) must give the
// samples of running the model's Stream over the whole resampled signal.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sndfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "denoise_testing.hpp"
#include "process.hpp"
#include "ssm/audio_file.hpp"
#include "ssm/default_model.hpp"
#include "ssm/model.hpp"
#include "testing.hpp"

namespace fs = std::filesystem;
using ssm::testing::rel_error;
using ssm::testing::run;

namespace {

using ssm::testing::kNoisy;
using ssm::testing::kSsm;

fs::path temp_path(const std::string& name) { return ssm::testing::temp_file("denoise", name); }

// A small seeded model with a lookahead, so the test is quick and exercises
// the alignment (drop d outputs, flush d zeros).
std::string small_model(int lookahead) {
  return ssm::testing::save_small_model(temp_path("model_d" + std::to_string(lookahead) + ".safetensors"), 7,
                                        lookahead);
}

// What `ssm denoise` must produce: the mono mix resampled to the model rate as
// a whole, the model over all of it (plus d zeros, first d outputs dropped),
// resampled back as a whole.
std::vector<float> reference(const ssm::Model& m, const ssm::Audio& in) {
  std::vector<float> mono = ssm::mix_to_mono(in);
  const int r = m.config().sample_rate;
  const size_t d = static_cast<size_t>(m.config().latency());  // lookahead and the frame wait
  std::vector<float> x = ssm::resample(mono.data(), mono.size(), in.rate, r);  // (T) at the model rate
  const size_t T = x.size();
  x.resize(T + d, 0.0f);
  std::vector<float> y(x.size());
  ssm::Stream s(m, 4096);
  s.process(x.data(), y.data(), x.size());
  std::vector<float> back = ssm::resample(y.data() + d, T, r, in.rate);
  back.resize(in.frames(), 0.0f);
  return back;
}

std::vector<float> channel(const ssm::Audio& a, int c) {
  std::vector<float> v(a.frames());
  for (size_t t = 0; t < v.size(); ++t) v[t] = a.samples[t * a.channels + c];
  return v;
}

}  // namespace

// The sample as a float WAV, so that the output is float too (an untrained
// model's output may pass full scale, which 16-bit output would clip).
std::string float_copy_of_sample() {
  const ssm::Audio a = ssm::read_audio(kNoisy);
  const std::string path = temp_path("noisy_float.wav");
  ssm::write_audio(path, a.samples.data(), a.frames(), a.rate, a.channels, /*float_wav=*/true);
  return path;
}

TEST(DenoiseCli, SameRateFileMatchesWholeSignalStream) {
  const std::string model = small_model(5), in_path = float_copy_of_sample();
  const auto out = temp_path("out16k.wav");
  // An odd block size, so blocks straddle the reading chunks.
  auto r = run({kSsm, "denoise", in_path, out, "--model", model, "--block", "97"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("real-time factor"), std::string::npos) << r.output;
  const ssm::Audio in = ssm::read_audio(in_path);
  const ssm::Audio got = ssm::read_audio(out);
  EXPECT_EQ(got.rate, in.rate);
  ASSERT_EQ(got.channels, 1);
  ASSERT_EQ(got.frames(), in.frames());
  const std::vector<float> ref = reference(ssm::Model::load(model), in);
  // No resampling: block processing is exact up to float rounding.
  EXPECT_LT(rel_error(got.samples.data(), ref.data(), ref.size()), 1e-5);
  for (const auto& p : {out.string(), model, in_path}) fs::remove(p);
}

// A model that reads 8-sample frames, with a lookahead of 3: the file's
// output sample i is the whole-sequence model's estimate for input sample i,
// so both the frame wait and the lookahead are taken out.
TEST(DenoiseCli, FramedModelOutputIsAlignedWithItsInput) {
  const int F = 8, d = 3;
  const std::string model =
      ssm::testing::save_small_model(temp_path("model_frames.safetensors"), 9, d, 16, F);
  const std::string in_path = float_copy_of_sample();
  const auto out = temp_path("out_frames.wav");
  auto r = run({kSsm, "denoise", in_path, out, "--model", model, "--block", "53"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("latency 10 samples"), std::string::npos) << r.output;
  const ssm::Audio in = ssm::read_audio(in_path);
  const ssm::Audio got = ssm::read_audio(out);
  ASSERT_EQ(got.frames(), in.frames());
  // Reference: the chunked graph in fp64 over the input plus d zeros, padded
  // to whole frames; output i is graph output i + d.
  const ssm::Model m = ssm::Model::load(model);
  const size_t T = in.frames(), padded = (T + d + F - 1) / F * F;
  std::vector<double> x(padded, 0.0), y(padded);
  for (size_t t = 0; t < T; ++t) x[t] = in.samples[t];
  std::vector<double> P(m.params().data(), m.params().data() + m.params().size());
  ssm::ModelGraph<double>(m.config(), m.table()).forward(y.data(), x.data(), P.data(), 1, static_cast<int>(padded));
  std::vector<double> ref(y.begin() + d, y.begin() + d + T);
  std::vector<double> got_d(got.samples.begin(), got.samples.end());
  EXPECT_LT(rel_error(got_d, ref), 1e-5);
  for (const auto& p : {out.string(), model, in_path}) fs::remove(p);
}

// 44.1 kHz stereo, float, with different channels: each channel is denoised
// with its own stream state (resampled to 16 kHz and back), as if it were a
// mono file of its own; --mono denoises the mix into one channel.
TEST(DenoiseCli, ResampledStereoFileDenoisesEachChannelOnItsOwn) {
  const std::string model = small_model(3);
  const ssm::Audio mono16 = ssm::read_audio(kNoisy);
  std::vector<float> x44 = ssm::resample(mono16.samples.data(), mono16.frames(), 16000, 44100);
  ssm::Audio st;
  st.rate = 44100;
  st.channels = 2;
  st.samples.resize(2 * x44.size());
  for (size_t t = 0; t < x44.size(); ++t) {
    st.samples[2 * t] = x44[t];
    st.samples[2 * t + 1] = 0.5f * x44[(t + 3000) % x44.size()] + 0.01f * std::sin(0.01f * t);
  }
  const auto in = temp_path("in44.wav"), out = temp_path("out44.wav");
  ssm::write_audio(in, st.samples.data(), st.frames(), st.rate, 2, /*float_wav=*/true);
  // The converters' path alone (the band above the model's: further down).
  auto r = run({kSsm, "denoise", in, out, "--model", model, "--block", "64", "--high-band", "drop"});
  ASSERT_EQ(r.status, 0) << r.output;
  const ssm::Audio got = ssm::read_audio(out);
  EXPECT_EQ(got.rate, 44100);
  ASSERT_EQ(got.channels, 2);
  ASSERT_EQ(got.frames(), st.frames());
  const ssm::Model m = ssm::Model::load(model);
  for (int c = 0; c < 2; ++c) {
    ssm::Audio one;
    one.rate = st.rate;
    one.channels = 1;
    one.samples = channel(st, c);
    const std::vector<float> ref = reference(m, one);
    // Float output: only the chunked vs whole-signal resampling may differ.
    EXPECT_LT(rel_error(channel(got, c).data(), ref.data(), ref.size()), 1e-4) << "channel " << c;
  }

  // --mono writes one channel: the mix, denoised.
  const auto out_mono = temp_path("out44m.w64");
  r = run({kSsm, "denoise", in, out_mono, "--model", model, "--mono", "--high-band", "drop"});
  ASSERT_EQ(r.status, 0) << r.output;
  const ssm::Audio mixed = ssm::read_audio(out_mono);
  ASSERT_EQ(mixed.channels, 1);
  ASSERT_EQ(mixed.frames(), st.frames());
  const std::vector<float> ref = reference(m, st);
  EXPECT_LT(rel_error(mixed.samples.data(), ref.data(), ref.size()), 1e-4);
  for (const auto& p : {in, out, out_mono}) fs::remove(p);
  fs::remove(model);
}

// Without --model: the shipped model, compiled in, and said so.
TEST(DenoiseCli, DefaultModelIsTheShippedOneCompiledIn) {
  const auto out = temp_path("default.wav");
  const std::string in_path = float_copy_of_sample();
  auto r = run({kSsm, "denoise", in_path, out});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("model: built-in"), std::string::npos) << r.output;
  const ssm::Audio in = ssm::read_audio(in_path);
  const ssm::Audio got = ssm::read_audio(out);
  ASSERT_EQ(got.frames(), in.frames());
  const ssm::Model m = ssm::Model::load(SSM_SOURCE_DIR "/models/denoiser/denoiser.safetensors");
  const std::vector<float> ref = reference(m, in);
  EXPECT_LT(rel_error(got.samples.data(), ref.data(), ref.size()), 1e-5);
  fs::remove(out);
  fs::remove(in_path);
}

// A long file keeps memory flat: peak RSS of a 10-minute file is within a few
// MB of a 5-second one (the whole file as floats would be 38 MB more).
TEST(DenoiseCli, LongFileKeepsMemoryFlat) {
  const std::string model = ssm::testing::save_small_model(temp_path("tiny.safetensors"), 3, 0, /*width=*/8);
  auto write_noise = [](const fs::path& path, size_t frames) {
    SF_INFO info{};
    info.samplerate = 16000;
    info.channels = 1;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
    ASSERT_NE(f, nullptr);
    std::vector<float> chunk(16000);  // (one second)
    uint32_t s = 1;
    for (size_t done = 0; done < frames; done += chunk.size()) {
      for (auto& v : chunk) v = ((s = s * 1664525u + 1013904223u) >> 8) * (0.2f / (1 << 24)) - 0.1f;
      sf_writef_float(f, chunk.data(), std::min(chunk.size(), frames - done));
    }
    sf_close(f);
  };
  const auto short_in = temp_path("short.wav"), long_in = temp_path("long.wav"), out = temp_path("long_out.wav");
  write_noise(short_in, 5 * 16000);
  write_noise(long_in, 600 * 16000);
  auto a = run({kSsm, "denoise", short_in, out, "--model", model});
  ASSERT_EQ(a.status, 0) << a.output;
  auto b = run({kSsm, "denoise", long_in, out, "--model", model});
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_EQ(ssm::read_audio(out).frames(), 600u * 16000u);
  std::printf("peak RSS: 5 s file %ld kB, 600 s file %ld kB\n", a.peak_rss_kb, b.peak_rss_kb);
  EXPECT_LT(b.peak_rss_kb - a.peak_rss_kb, 8 * 1024);
  for (const auto& p : {short_in, long_in, out, fs::path(model)}) fs::remove(p);
}

// Raw PCM: stdin -> stdout (f32) and a TCP peer -> file (s16), the same samples.
TEST(DenoiseCli, RawPcmFromStdinToStdoutAndFromTcp) {
  const std::string model = small_model(2);
  const ssm::Audio a = ssm::read_audio(kNoisy);
  const std::vector<float> ref = reference(ssm::Model::load(model), a);
  const auto in = temp_path("in.f32"), out = temp_path("out.f32");
  {
    std::ofstream f(in, std::ios::binary);
    f.write(reinterpret_cast<const char*>(a.samples.data()), a.samples.size() * sizeof(float));
  }
  auto r = run({kSsm, "denoise", "-", "-", "--model", model, "--rate", "16000"}, {}, in, out);
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<float> got(a.samples.size() + 1);
  std::ifstream f(out, std::ios::binary);
  f.read(reinterpret_cast<char*>(got.data()), got.size() * sizeof(float));
  ASSERT_EQ(static_cast<size_t>(f.gcount()), a.samples.size() * sizeof(float));
  got.resize(a.samples.size());
  EXPECT_LT(rel_error(got.data(), ref.data(), ref.size()), 1e-5);

  // TCP: ssm listens; the test connects once it says so and sends int16. A
  // port that happens to be taken is a retry on another.
  const auto wav = temp_path("tcp.wav"), log = temp_path("tcp.log");
  std::unique_ptr<ssm::testing::Child> listener;
  uint16_t port = 0;
  for (int attempt = 0; attempt < 5 && !listener; ++attempt) {
    port = static_cast<uint16_t>(20000 + (getpid() * 7 + attempt * 1031) % 40000);
    listener = std::make_unique<ssm::testing::Child>(
        std::vector<std::string>{kSsm, "denoise", "tcp:127.0.0.1:" + std::to_string(port), wav, "--model", model,
                                 "--rate", "16000", "--raw", "s16", "--idle-timeout", "20"},
        log);
    while (ssm::testing::read_text(log).find("waiting for raw PCM") == std::string::npos) {
      if (!listener->alive()) {
        ASSERT_NE(ssm::testing::read_text(log).find("cannot listen"), std::string::npos) << ssm::testing::read_text(log);
        listener.reset();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_TRUE(listener) << "no free port found";
  {
    std::vector<int16_t> pcm(a.samples.size());
    for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = static_cast<int16_t>(std::lrint(a.samples[i] * 32768.0f));
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(write(s, pcm.data(), pcm.size() * 2), static_cast<ssize_t>(pcm.size() * 2));
    close(s);
  }
  ASSERT_EQ(listener->wait(60), 0) << ssm::testing::read_text(log);
  const ssm::Audio t = ssm::read_audio(wav);
  ASSERT_EQ(t.frames(), a.frames());
  // The sample is 16-bit, so int16 carries it exactly; the output file is
  // 16-bit like the input: within quantisation where the model's output
  // (untrained) does not pass full scale, clipped where it does.
  for (size_t i = 0; i < ref.size(); ++i) {
    const float want = std::clamp(ref[i], -1.0f, 32767.0f / 32768.0f);
    ASSERT_NEAR(t.samples[i], want, 1.5 / 32768) << "frame " << i;
  }
  for (const auto& p : {in, out, wav, log, fs::path(model)}) fs::remove(p);
}

TEST(DenoiseCli, MissingOrCorruptInputIsAClearError) {
  const auto out = temp_path("never.wav");
  auto r = run({kSsm, "denoise", "/nonexistent/input.wav", out});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("/nonexistent/input.wav"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));

  const auto bad = temp_path("corrupt.wav");
  {
    std::ofstream f(bad, std::ios::binary);
    f << "RIFF\x10\x00\x00\x00WAVEjunk that is not a sound file";
  }
  r = run({kSsm, "denoise", bad, out});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("corrupt.wav"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out.string() + ".part"));

  r = run({kSsm, "denoise", kNoisy, temp_path("out.xyz")});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("unknown extension"), std::string::npos) << r.output;

  r = run({kSsm, "denoise", kNoisy, out, "--model", "/nonexistent/model.safetensors"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("/nonexistent/model.safetensors"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  fs::remove(bad);
}

// MP3 in, WAV out: the WAV gets the WAV container's encoding (16-bit PCM),
// not the input's MP3 one, and holds the denoised decoded samples.
TEST(DenoiseCli, Mp3InputGivesAPcmWav) {
  const ssm::Audio a = ssm::read_audio(kNoisy);
  const auto mp3 = temp_path("in.mp3"), out = temp_path("from_mp3.wav");
  SF_INFO probe{};
  probe.samplerate = a.rate;
  probe.channels = 1;
  probe.format = SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
  if (sf_format_check(&probe)) {
    ssm::write_audio(mp3, a.samples.data(), a.frames(), a.rate, 1);
  } else {
    const auto wav = temp_path("for_sox.wav");
    ssm::write_audio(wav, a.samples.data(), a.frames(), a.rate, 1);
    const auto sox = run({"sox", wav, mp3});
    fs::remove(wav);
    if (sox.status != 0)
      GTEST_SKIP() << "neither libsndfile nor sox writes MP3 here, so no MP3 input can be made: " << sox.output;
  }
  const std::string model = small_model(2);
  auto r = run({kSsm, "denoise", mp3, out, "--model", model});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(fs::exists(out.string() + ".part"));
  SF_INFO info{};
  SNDFILE* f = sf_open(out.c_str(), SFM_READ, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  sf_close(f);
  EXPECT_EQ(info.format, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  const ssm::Audio in = ssm::read_audio(mp3);
  const ssm::Audio got = ssm::read_audio(out);
  ASSERT_EQ(got.frames(), in.frames());
  const std::vector<float> ref = reference(ssm::Model::load(model), in);
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_NEAR(got.samples[i], std::clamp(ref[i], -1.0f, 32767.0f / 32768.0f), 1.5 / 32768) << "frame " << i;
  for (const auto& p : {mp3, out, fs::path(model)}) fs::remove(p);
}

// SIGTERM in the middle of a file: the run stops, saying so, and leaves
// neither OUT nor OUT.part behind.
TEST(DenoiseCli, SigtermDuringAFileRunLeavesNoPartialFile) {
  const std::string model = ssm::testing::save_small_model(temp_path("tiny_term.safetensors"), 3, 0, /*width=*/8);
  const auto in = temp_path("long_term.wav"), out = temp_path("term_out.wav"), log = temp_path("term.log");
  {
    std::vector<float> x(16000 * 300);  // 5 minutes: several seconds of work
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * std::sin(0.01f * static_cast<float>(i % 100000));
    ssm::write_audio(in, x.data(), x.size(), 16000, 1);
  }
  ssm::testing::Child c({kSsm, "denoise", in, out, "--model", model}, log);
  // Once output is being written, the run is in the middle of the file.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    std::error_code ec;
    if (fs::file_size(out.string() + ".part", ec) > 64 * 1024 && !ec) break;
    ASSERT_TRUE(c.alive()) << "finished before it could be interrupted:\n" << ssm::testing::read_text(log);
    ASSERT_LT(std::chrono::steady_clock::now(), give_up);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  c.signal(SIGTERM);
  const int status = c.wait(30);
  const std::string said = ssm::testing::read_text(log);
  EXPECT_EQ(status, 1) << said;
  EXPECT_NE(said.find("interrupted by SIGTERM"), std::string::npos) << said;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out.string() + ".part"));
  for (const auto& p : {in, log, fs::path(model)}) fs::remove(p);
}

// A file cut short (WAV with its header's length, FLAC mid-frame): what can
// be read is denoised, and a warning says the file is damaged, as sox does.
TEST(DenoiseCli, TruncatedFilesAreDenoisedWithAWarning) {
  const std::string model = small_model(1);
  const ssm::Audio a = ssm::read_audio(kNoisy);
  for (const std::string ext : {"wav", "flac"}) {
    const auto whole = temp_path("whole." + ext), cut = temp_path("cut." + ext), out = temp_path("cut_out.wav");
    ssm::write_audio(whole, a.samples.data(), a.frames(), a.rate, 1);
    {
      std::ifstream f(whole, std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    }
    auto r = run({kSsm, "denoise", cut, out, "--model", model});
    ASSERT_EQ(r.status, 0) << ext << ": " << r.output;
    EXPECT_NE(r.output.find("warning"), std::string::npos) << ext << ": " << r.output;
    EXPECT_NE(r.output.find("truncated"), std::string::npos) << ext << ": " << r.output;
    const size_t frames = ssm::read_audio(out).frames();
    EXPECT_GT(frames, a.frames() / 3) << ext;
    EXPECT_LT(frames, a.frames() * 2 / 3) << ext;
    // The whole file gives no warning.
    r = run({kSsm, "denoise", whole, out, "--model", model});
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;
    for (const auto& p : {whole, cut, out}) fs::remove(p);
  }
  fs::remove(model);
}

// The one rule for non-finite input at every entry point: NaN and infinity
// are silence. The CLI says how many it met; the output is that of the same
// file with zeros in their place.
TEST(DenoiseCli, NonFiniteSamplesAreSilenceWithAWarning) {
  const std::string model = small_model(2);
  ssm::Audio a = ssm::read_audio(kNoisy);
  std::vector<float> zeroed = a.samples;
  for (size_t i : {size_t{100}, size_t{5000}, size_t{5001}, size_t{30000}}) {
    a.samples[i] = i == 5001 ? INFINITY : NAN;
    zeroed[i] = 0;
  }
  const auto bad = temp_path("nan.wav"), clean = temp_path("zeros.wav"), out1 = temp_path("nan_out.wav"),
             out2 = temp_path("zeros_out.wav");
  ssm::write_audio(bad, a.samples.data(), a.frames(), a.rate, 1, /*float_wav=*/true);
  ssm::write_audio(clean, zeroed.data(), zeroed.size(), a.rate, 1, /*float_wav=*/true);
  auto r = run({kSsm, "denoise", bad, out1, "--model", model});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("4 non-finite samples (NaN or infinite), the first at frame 100"), std::string::npos)
      << r.output;
  r = run({kSsm, "denoise", clean, out2, "--model", model});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(ssm::read_audio(out1).samples, ssm::read_audio(out2).samples);
  for (const auto& p : {bad, clean, out1, out2, fs::path(model)}) fs::remove(p);
}

// A WAV piped to "-" (a stream that cannot seek) is read as a sound file;
// with --rate, "-" is raw PCM as before.
TEST(DenoiseCli, WavPipedToStdin) {
  const std::string model = small_model(2), in_path = float_copy_of_sample();
  const auto piped = temp_path("piped.wav"), direct = temp_path("direct.wav");
  auto r = run({"/bin/sh", "-c", "cat '" + in_path + "' | '" + kSsm + "' denoise - '" + piped.string() + "' --model '" + model + "'"});
  ASSERT_EQ(r.status, 0) << r.output;
  r = run({kSsm, "denoise", in_path, direct, "--model", model});
  ASSERT_EQ(r.status, 0) << r.output;
  const ssm::Audio p = ssm::read_audio(piped), d = ssm::read_audio(direct);
  EXPECT_EQ(p.rate, d.rate);
  EXPECT_EQ(p.samples, d.samples);
  for (const auto& f : {piped, direct, fs::path(model), fs::path(in_path)}) fs::remove(f);
}

// Several inputs and -o DIR: each written there under its own name, the same
// samples as a run of its own; -q prints nothing for clean files.
TEST(DenoiseCli, SeveralInputsToADirectoryQuietly) {
  const std::string model = small_model(2);
  const fs::path dir = temp_path("outdir");
  fs::create_directories(dir);
  const ssm::Audio a = ssm::read_audio(kNoisy);
  const auto one = temp_path("one.wav"), two = temp_path("two.flac");
  ssm::write_audio(one, a.samples.data(), a.frames(), a.rate, 1, /*float_wav=*/true);
  ssm::write_audio(two, a.samples.data(), a.frames() / 2, a.rate, 1);
  auto r = run({kSsm, "denoise", one, two, "-o", dir, "-m", model, "-q"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "");
  for (const auto& in : {one, two}) {
    const fs::path out = dir / in.filename();
    ASSERT_TRUE(fs::exists(out)) << out;
    const auto single = temp_path("single" + in.extension().string());
    r = run({kSsm, "denoise", in, single, "--model", model});
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(ssm::read_audio(out).samples, ssm::read_audio(single).samples) << in;
    fs::remove(single);
  }
  // A missing input fails alone: the others are written, the status is 1.
  fs::remove(dir / one.filename());
  r = run({kSsm, "denoise", "/nonexistent/x.wav", one, "-o", dir, "-m", model});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("1 of 2 files failed"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir / one.filename()));
  // -o with an input inside DIR would overwrite it.
  r = run({kSsm, "denoise", (dir / one.filename()).string(), "-o", dir, "-m", model});
  EXPECT_EQ(r.status, 2) << r.output;
  fs::remove_all(dir);
  for (const auto& p : {one, two, fs::path(model)}) fs::remove(p);
}

// The progress line: on a terminal it is rewritten in place and erased at the
// end; into a pipe or a log, or with --quiet, there is none.
TEST(DenoiseCli, ProgressLineOnlyOnATerminal) {
  const std::string script = ssm::testing::find_program("script");
  const std::string model = small_model(1), in = float_copy_of_sample();
  const auto out = temp_path("progress.wav");
  auto plain = run({kSsm, "denoise", in, out, "--model", model});
  ASSERT_EQ(plain.status, 0) << plain.output;
  EXPECT_EQ(plain.output.find('\r'), std::string::npos) << plain.output;
  if (script.empty()) GTEST_SKIP() << "no `script` (util-linux) to give the run a terminal";
  const std::string cmd = "'" + kSsm + "' denoise '" + in + "' '" + out.string() + "' --model '" + model + "'";
  auto tty = run({script, "-qec", cmd, "/dev/null"});
  ASSERT_EQ(tty.status, 0) << tty.output;
  EXPECT_NE(tty.output.find("\r" + in + ": "), std::string::npos) << tty.output;
  EXPECT_NE(tty.output.find("% ("), std::string::npos) << tty.output;
  EXPECT_NE(tty.output.find("\r\x1b[K"), std::string::npos) << tty.output;
  auto quiet = run({script, "-qec", cmd + " -q", "/dev/null"});
  ASSERT_EQ(quiet.status, 0) << quiet.output;
  EXPECT_EQ(quiet.output.find('%'), std::string::npos) << quiet.output;
  for (const auto& p : {fs::path(in), out, fs::path(model)}) fs::remove(p);
}

// --mix 0 is the input itself (aligned, so sample for sample); --atten-lim
// mixes the input back at 10^(-limit/20) into the denoised output.
TEST(DenoiseCli, MixAndAttenuationLimit) {
  const std::string model = small_model(2), in = float_copy_of_sample();
  const auto den = temp_path("den.wav"), dry = temp_path("dry.wav"), lim = temp_path("lim.wav");
  ASSERT_EQ(run({kSsm, "denoise", in, den, "-m", model}).status, 0);
  ASSERT_EQ(run({kSsm, "denoise", in, dry, "-m", model, "--mix", "0"}).status, 0);
  ASSERT_EQ(run({kSsm, "denoise", in, lim, "-m", model, "-a", "20"}).status, 0);
  const auto x = ssm::read_audio(in).samples, yd = ssm::read_audio(den).samples, y0 = ssm::read_audio(dry).samples,
             yl = ssm::read_audio(lim).samples;
  EXPECT_EQ(y0, x);
  for (size_t t = 0; t < x.size(); ++t) ASSERT_NEAR(yl[t], 0.9f * yd[t] + 0.1f * x[t], 1e-5) << t;
  EXPECT_EQ(run({kSsm, "denoise", in, lim, "-m", model, "--mix", "2"}).status, 2);
  for (const auto& p : {fs::path(in), den, dry, lim, fs::path(model)}) fs::remove(p);
}

// 48 kHz: the band above the model's 8 kHz is carried through by default,
// at the gain the model applies below it (here a model that scales its
// input by a known factor), and gone with --high-band drop. At 16 kHz there
// is none: the option changes nothing. --help says which.
TEST(DenoiseCli, HighBandIsCarriedByDefaultOrDropped) {
  float scale = 0;
  const std::string model = temp_path("scale.safetensors");
  ssm::testing::scaling_model(-1.0f, &scale).save(model);
  const ssm::Audio a = ssm::read_audio(kNoisy);
  std::vector<float> x = ssm::resample(a.samples.data(), a.frames(), a.rate, 48000);
  const double tone = 0.1;
  for (size_t t = 0; t < x.size(); ++t) x[t] = 0.5f * x[t] + static_cast<float>(tone * std::sin(M_PI / 2 * t));
  const auto in = temp_path("tone48.wav"), carried = temp_path("carried48.wav"), dropped = temp_path("dropped48.wav");
  ssm::write_audio(in, x.data(), x.size(), 48000, 1, /*float_wav=*/true);
  ASSERT_EQ(run({kSsm, "denoise", in, carried, "-m", model}).status, 0);
  auto r = run({kSsm, "denoise", in, dropped, "-m", model, "--high-band", "drop"});
  ASSERT_EQ(r.status, 0) << r.output;
  const auto yc = ssm::read_audio(carried).samples, yd = ssm::read_audio(dropped).samples;
  ASSERT_EQ(yc.size(), x.size());
  ASSERT_EQ(yd.size(), x.size());
  const size_t from = 24000, n = 48000;  // a second, once the gain has settled
  EXPECT_NEAR(ssm::testing::tone_amplitude(yc, from, n, 48000, 12000) / tone, scale, 0.02 * scale);
  EXPECT_LT(20 * std::log10(ssm::testing::tone_amplitude(yd, from, n, 48000, 12000) / tone), -60);
  EXPECT_EQ(run({kSsm, "denoise", in, dropped, "-m", model, "--high-band", "keep"}).status, 2);

  const std::string in16 = float_copy_of_sample();
  const auto out16 = temp_path("out16_carry.wav"), out16d = temp_path("out16_drop.wav");
  ASSERT_EQ(run({kSsm, "denoise", in16, out16, "-m", model}).status, 0);
  ASSERT_EQ(run({kSsm, "denoise", in16, out16d, "-m", model, "--high-band", "drop"}).status, 0);
  EXPECT_EQ(ssm::read_audio(out16).samples, ssm::read_audio(out16d).samples);

  r = run({kSsm, "denoise", "--help"});
  EXPECT_NE(r.output.find("--high-band"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("carried through"), std::string::npos) << r.output;
  for (const auto& p : {fs::path(model), in, carried, dropped, fs::path(in16), out16, out16d}) fs::remove(p);
}

// The quick start of docs/TRAINING.md on a folder of WAVs that is nothing but
// speech: ssm train with the shipped quick-start config, then ssm denoise
// with the model it wrote.
TEST(DenoiseCli, TrainingQuickStartWorksOnAFolderOfWavs) {
  const fs::path dir = temp_path("quickstart");
  fs::create_directories(dir / "data" / "speech");
  const ssm::Audio a = ssm::read_audio(kNoisy);
  const size_t piece = a.frames() / 10;
  for (int i = 0; i < 10; ++i)
    ssm::write_audio((dir / "data" / "speech" / ("u" + std::to_string(i) + ".wav")).string(),
                     a.samples.data() + i * piece, piece, a.rate, 1);
  const std::string cfg = SSM_SOURCE_DIR "/models/denoiser/quickstart/train.json";
  auto r = run({"/bin/sh", "-c", "cd '" + dir.string() + "' && '" + kSsm + "' train --config '" + cfg + "' --steps 4"});
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path model = dir / "runs" / "quickstart" / "best.safetensors";
  ASSERT_TRUE(fs::exists(model)) << r.output;
  const auto in = dir / "data" / "speech" / "u0.wav", out = dir / "clean.wav";
  r = run({kSsm, "denoise", in, out, "--model", model});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(ssm::read_audio(out).frames(), piece);
  fs::remove_all(dir);
}
