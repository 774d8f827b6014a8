// The C API and its RAII wrapper: the same samples as Stream on the same
// model, for any piece size, from C and from C++; errors as NULL / -1 with a
// message, never an exception.
#include <unistd.h>

#include <cblas.h>

#include <filesystem>
#include <fstream>

#include "denoise_testing.hpp"
#include "ssm/c_api.h"
#include "ssm/default_model.hpp"
#include "ssm/model.hpp"
#include "testing.hpp"

extern "C" int c_denoise_in_pieces(const char* model, const float* in, float* out, int n, int piece);
extern "C" int c_create_fails_with_message(const char* bad_path);

namespace fs = std::filesystem;
using ssm::testing::rel_error;

namespace {

std::string saved_model(int lookahead) {
  return ssm::testing::save_small_model(
      fs::temp_directory_path() / ("ssm_test_capi_" + std::to_string(getpid()) + ".safetensors"), 11, lookahead);
}

std::vector<float> stream_reference(const ssm::Model& m, const std::vector<float>& x) {
  std::vector<float> y(x.size());
  ssm::Stream s(m, 1024);
  s.process(x.data(), y.data(), x.size());
  return y;
}

}  // namespace

TEST(CApi, FromCMatchesStreamForAnyPieceSize) {
  const std::string path = saved_model(2);
  const auto x = ssm::testing::random_vector<float>(3000, 5, -0.5, 0.5);
  const auto ref = stream_reference(ssm::Model::load(path), x);
  for (int piece : {1, 7, 256, 1000, 3000}) {
    std::vector<float> y(x.size());
    ASSERT_EQ(c_denoise_in_pieces(path.c_str(), x.data(), y.data(), static_cast<int>(x.size()), piece), 0)
        << ssm_last_error();
    EXPECT_LT(rel_error(y.data(), ref.data(), ref.size()), 1e-5) << "piece " << piece;
  }
  fs::remove(path);
}

TEST(CApi, WrapperInPlaceResetAndQueries) {
  const std::string path = saved_model(3);
  ssm::Denoiser d(path);
  EXPECT_EQ(d.sample_rate(), 16000);
  EXPECT_EQ(d.latency(), 3);
  EXPECT_GT(d.frame_size(), 0);
  const auto x = ssm::testing::random_vector<float>(1500, 9, -0.5, 0.5);
  const auto ref = stream_reference(ssm::Model::load(path), x);
  std::vector<float> buf = x;  // in place
  d.process(buf.data(), buf.data(), static_cast<int>(buf.size()));
  EXPECT_LT(rel_error(buf.data(), ref.data(), ref.size()), 1e-5);
  // After reset the same input gives the same output again.
  d.reset();
  std::vector<float> again(x.size());
  d.process(again.data(), x.data(), static_cast<int>(x.size()));
  EXPECT_LT(rel_error(again.data(), ref.data(), ref.size()), 1e-5);
  // Moves keep one owner.
  ssm::Denoiser moved = std::move(d);
  EXPECT_EQ(moved.latency(), 3);
  fs::remove(path);
}

// A model that reads 8-sample frames: the latency counts the frame wait, and
// any piece size gives the whole-sequence graph's output 7 samples late.
TEST(CApi, FramedModelReportsItsFrameWaitAndMatchesTheGraph) {
  const int F = 8, d = 2;
  const std::string path = ssm::testing::save_small_model(
      fs::temp_directory_path() / ("ssm_test_capi_frames_" + std::to_string(getpid()) + ".safetensors"), 12, d, 16,
      F);
  const ssm::Model m = ssm::Model::load(path);
  ssm::Denoiser den(path);
  EXPECT_EQ(den.latency(), d + F - 1);
  const int T = 2400;  // 300 frames
  const auto x = ssm::testing::random_vector<float>(T, 13, -0.5, 0.5);
  std::vector<double> xd(x.begin(), x.end()), ref(T);
  std::vector<double> P(m.params().data(), m.params().data() + m.params().size());
  ssm::ModelGraph<double>(m.config(), m.table()).forward(ref.data(), xd.data(), P.data(), 1, T);
  std::vector<double> delayed(T, 0.0);
  std::copy(ref.begin(), ref.end() - (F - 1), delayed.begin() + (F - 1));
  for (int piece : {1, 5, 64, T}) {
    std::vector<float> y(T);
    ASSERT_EQ(c_denoise_in_pieces(path.c_str(), x.data(), y.data(), T, piece), 0) << ssm_last_error();
    std::vector<double> yd(y.begin(), y.end());
    EXPECT_LT(rel_error(yd, delayed), 1e-5) << "piece " << piece;
  }
  fs::remove(path);
}

// NULL is the shipped model, compiled in: the same samples as the file in
// models/denoiser/, whatever the current directory holds.
TEST(CApi, NullModelIsTheShippedDenoiserCompiledIn) {
  const fs::path cwd = fs::current_path();
  fs::current_path(fs::temp_directory_path());
  ssm_denoiser* st = ssm_denoiser_create(nullptr);
  fs::current_path(cwd);
  ASSERT_NE(st, nullptr) << ssm_last_error();
  const ssm::Model m = ssm::Model::load(SSM_SOURCE_DIR "/models/denoiser/denoiser.safetensors");
  EXPECT_EQ(ssm_denoiser_sample_rate(st), m.config().sample_rate);
  EXPECT_EQ(ssm_denoiser_latency(st), m.config().latency());
  const auto x = ssm::testing::random_vector<float>(800, 2, -0.5, 0.5);
  std::vector<float> y(x.size());
  EXPECT_EQ(ssm_denoiser_process(st, y.data(), x.data(), static_cast<int>(x.size())), 800);
  const auto ref = stream_reference(m, x);
  EXPECT_LT(rel_error(y.data(), ref.data(), ref.size()), 1e-5);
  ssm_denoiser_destroy(st);
  std::string description;
  ssm::default_denoiser(&description);
  EXPECT_NE(description.find("built-in"), std::string::npos) << description;
}

// A library leaves the process's BLAS threading alone.
TEST(CApi, CreateAndProcessLeaveTheBlasThreadCountAlone) {
  const int before = openblas_get_num_threads();
  const int wanted = before > 1 ? before - 1 : 2;
  openblas_set_num_threads(wanted);
  ssm_denoiser* st = ssm_denoiser_create(nullptr);
  ASSERT_NE(st, nullptr) << ssm_last_error();
  std::vector<float> buf(512, 0.1f);
  ssm_denoiser_process(st, buf.data(), buf.data(), static_cast<int>(buf.size()));
  EXPECT_EQ(openblas_get_num_threads(), wanted);
  ssm_denoiser_destroy(st);
  openblas_set_num_threads(before);
}

// A model path that is not a readable model file is an error naming it,
// never a fall back to something else.
TEST(CApi, UnreadableModelIsAnErrorNamingIt) {
  const std::string dir = fs::temp_directory_path().string();
  EXPECT_EQ(ssm_denoiser_create(dir.c_str()), nullptr);
  EXPECT_NE(std::string(ssm_last_error()).find(dir), std::string::npos) << ssm_last_error();
  const fs::path junk = fs::temp_directory_path() / ("ssm_test_capi_junk_" + std::to_string(getpid()));
  { std::ofstream(junk) << "not a model"; }
  EXPECT_EQ(ssm_denoiser_create(junk.c_str()), nullptr);
  EXPECT_NE(std::string(ssm_last_error()).find(junk.string()), std::string::npos) << ssm_last_error();
  fs::remove(junk);
  setenv("SSM_DENOISER_MODEL", "/nonexistent/env_model.safetensors", 1);
  EXPECT_EQ(ssm_denoiser_create(nullptr), nullptr);
  EXPECT_NE(std::string(ssm_last_error()).find("/nonexistent/env_model.safetensors"), std::string::npos);
  unsetenv("SSM_DENOISER_MODEL");
}

TEST(CApi, ErrorsAreReturnedNotThrown) {
  EXPECT_EQ(c_create_fails_with_message("/nonexistent/denoiser.safetensors"), 1);
  ssm_denoiser* st = ssm_denoiser_create(nullptr);
  ASSERT_NE(st, nullptr);
  float buf[4] = {0, 0, 0, 0};
  EXPECT_EQ(ssm_denoiser_process(st, nullptr, buf, 4), -1);
  EXPECT_NE(std::string(ssm_last_error()), "");
  EXPECT_EQ(ssm_denoiser_process(nullptr, buf, buf, 4), -1);
  EXPECT_EQ(ssm_denoiser_process(st, buf, buf, -1), -1);
  EXPECT_EQ(ssm_denoiser_process(st, buf, buf, 0), 0);
  EXPECT_EQ(ssm_denoiser_frame_size(nullptr), -1);
  // A NaN in the input does not poison the state: it counts as silence.
  float with_nan[4] = {0.1f, NAN, 0.2f, INFINITY}, out[4];
  EXPECT_EQ(ssm_denoiser_process(st, out, with_nan, 4), 4);
  for (float v : out) EXPECT_TRUE(std::isfinite(v));
  ssm_denoiser_destroy(st);
  ssm_denoiser_destroy(nullptr);
  EXPECT_THROW(ssm::Denoiser("/nonexistent/x.safetensors"), std::runtime_error);
}

// The rule of every entry point: non-finite input samples are silence. The
// output equals that of the same input with zeros in their place.
TEST(CApi, NonFiniteInputIsSilence) {
  const std::string path = saved_model(2);
  auto x = ssm::testing::random_vector<float>(2000, 21, -0.5, 0.5);
  std::vector<float> zeroed = x;
  for (size_t i : {size_t{3}, size_t{700}, size_t{701}, size_t{1999}}) {
    x[i] = i == 700 ? -INFINITY : NAN;
    zeroed[i] = 0;
  }
  ssm::Denoiser a(path), b(path);
  std::vector<float> ya(x.size()), yb(x.size());
  a.process(ya.data(), x.data(), static_cast<int>(x.size()));
  b.process(yb.data(), zeroed.data(), static_cast<int>(zeroed.size()));
  EXPECT_EQ(ya, yb);
  fs::remove(path);
}

// ssm_denoiser_create_at: any rate and channel count, each channel its own
// state; the controls mix the delayed input back in; bad values are errors.
TEST(CApi, CreateAtRateAndChannelsAndTheMixControls) {
  const std::string path = saved_model(2);
  ssm_denoiser* st = ssm_denoiser_create_at(path.c_str(), 48000, 2);
  ASSERT_NE(st, nullptr) << ssm_last_error();
  EXPECT_EQ(ssm_denoiser_sample_rate(st), 48000);
  EXPECT_EQ(ssm_denoiser_channels(st), 2);
  EXPECT_GT(ssm_denoiser_latency(st), 6);  // the lookahead at 48 kHz and the converters' holdback
  const auto a = ssm::testing::random_vector<float>(4800, 31, -0.5, 0.5);
  std::vector<float> inter(2 * a.size()), y(inter.size());
  for (size_t t = 0; t < a.size(); ++t) inter[2 * t] = inter[2 * t + 1] = a[t];
  EXPECT_EQ(ssm_denoiser_process(st, y.data(), inter.data(), static_cast<int>(a.size())), 4800);
  for (size_t t = 0; t < a.size(); ++t) ASSERT_EQ(y[2 * t], y[2 * t + 1]) << t;  // same input, same state
  EXPECT_EQ(ssm_denoiser_set_mix(st, 1.5f), -1);
  EXPECT_EQ(ssm_denoiser_set_attenuation_limit(st, -3), -1);
  ssm_denoiser_destroy(st);
  EXPECT_EQ(ssm_denoiser_create_at(path.c_str(), 0, 1), nullptr);

  ssm::Denoiser d(path);
  d.set_mix(0);
  const int L = d.latency();
  std::vector<float> out(a.size());
  d.process(out.data(), a.data(), static_cast<int>(a.size()));
  for (size_t t = 0; t < a.size(); ++t) ASSERT_EQ(out[t], t >= size_t(L) ? a[t - L] : 0.0f) << t;
  fs::remove(path);
}
