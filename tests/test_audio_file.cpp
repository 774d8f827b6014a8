#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "ssm/audio_file.hpp"
#include "ssm/common.hpp"
#include "testing.hpp"

namespace fs = std::filesystem;

namespace {

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("ssm_test_audio_" + std::to_string(::getpid()) + "_" + name);
}

std::vector<float> sine(int rate, double hz, double seconds, double amp) {
  std::vector<float> s(static_cast<size_t>(rate * seconds));
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<float>(amp * std::sin(2 * M_PI * hz * i / rate));
  return s;
}

}  // namespace

TEST(AudioFile, FloatWavRoundTripIsExact) {
  auto path = temp_path("rt.wav");
  auto s = ssm::testing::random_vector<float>(2 * 1000, 3, -0.9, 0.9);
  ssm::write_audio(path, s.data(), 1000, 22050, 2, /*float_wav=*/true);
  auto a = ssm::read_audio(path);
  EXPECT_EQ(a.rate, 22050);
  EXPECT_EQ(a.channels, 2);
  ASSERT_EQ(a.samples.size(), s.size());
  for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(a.samples[i], s[i]);
  auto mono = ssm::mix_to_mono(a);
  ASSERT_EQ(mono.size(), 1000u);
  EXPECT_FLOAT_EQ(mono[7], 0.5f * (s[14] + s[15]));
  fs::remove(path);
}

TEST(AudioFile, Pcm16RoundTripWithinQuantisation) {
  auto path = temp_path("pcm.wav");
  auto s = sine(16000, 440, 0.1, 0.5);
  ssm::write_audio(path, s.data(), s.size(), 16000);
  auto a = ssm::read_audio(path);
  ASSERT_EQ(a.samples.size(), s.size());
  for (size_t i = 0; i < s.size(); ++i) ASSERT_NEAR(a.samples[i], s[i], 1.0 / 32768 + 1e-7);
  fs::remove(path);
}

TEST(AudioFile, ResampleKeepsToneAndLength) {
  // 1 kHz at 48 kHz -> 16 kHz: same tone, a third of the samples.
  auto in = sine(48000, 1000, 1.0, 0.5);
  auto out = ssm::resample(in.data(), in.size(), 48000, 16000);
  EXPECT_NEAR(static_cast<double>(out.size()), 16000.0, 2.0);
  auto ref = sine(16000, 1000, 1.0, 0.5);
  // Compare away from the edges, where the filter has settled.
  double err = ssm::testing::rel_error(out.data() + 1000, ref.data() + 1000, 14000);
  EXPECT_LT(err, 1e-3);
}

TEST(AudioFile, ReadMonoResamplesOnLoad) {
  auto path = temp_path("r.wav");
  auto s = sine(8000, 300, 0.5, 0.25);
  ssm::write_audio(path, s.data(), s.size(), 8000, 1, true);
  auto m = ssm::read_mono(path, 16000);
  EXPECT_NEAR(static_cast<double>(m.size()), 8000.0, 2.0);
  fs::remove(path);
}

TEST(AudioFile, MissingAndCorruptFilesNameTheFile) {
  try {
    ssm::read_audio("/nonexistent/dir/nothing.wav");
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing.wav"), std::string::npos) << e.what();
  }
  auto path = temp_path("corrupt.wav");
  {
    std::ofstream f(path, std::ios::binary);
    f << "RIFF\x10\x00\x00\x00WAVEjunkjunkjunk";
  }
  try {
    ssm::read_audio(path);
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt.wav"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

TEST(AudioFile, NonFiniteSamplesAreRejected) {
  auto path = temp_path("nan.wav");
  std::vector<float> s(100, 0.1f);
  s[42] = NAN;
  ssm::write_audio(path, s.data(), s.size(), 16000, 1, true);
  try {
    ssm::read_audio(path);
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("frame 42"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

// Found by fuzz_audio_file: the buffer was sized by the frame count the
// header claims, so a small FLAC file whose STREAMINFO claims 2^36 - 1
// samples asked for 256 GB (std::bad_alloc, or the OOM killer). Now the
// frames that decode are what is kept.
TEST(AudioFile, HeaderClaimingBillionsOfFramesReadsWhatIsThere) {
  auto path = temp_path("claims.flac");
  const auto s = sine(8000, 440, 0.05, 0.5);
  ssm::write_audio(path, s.data(), s.size(), 8000);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // "fLaC", the STREAMINFO block header, then 10 bytes of block and frame
  // sizes: the next 8 bytes are rate (20 bits), channels - 1 (3), bits - 1
  // (5) and the total sample count (36), big-endian.
  ASSERT_GE(bytes.size(), 26u);
  ASSERT_EQ(bytes.substr(0, 4), "fLaC");
  for (int i = 0; i < 4; ++i) bytes[22 + i] = static_cast<char>(0xFF);
  bytes[21] = static_cast<char>(bytes[21] | 0x0F);
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  try {
    const auto a = ssm::read_audio(path);
    EXPECT_LE(a.frames(), s.size());
  } catch (const ssm::Error&) {
    // Refusing the file is fine too; std::bad_alloc is not.
  }
  fs::remove(path);
}

TEST(AudioFile, UnknownOutputExtensionIsAnError) {
  float s[4] = {0, 0, 0, 0};
  EXPECT_THROW(ssm::write_audio(temp_path("x.xyz"), s, 4, 16000), ssm::Error);
}
