// The live path end to end without a sound card: a JACK dummy server, a JACK
// client playing a file into its "mic" port and recording its "speaker" port,
// and the real `ssm denoise --live` in between through PortAudio's JACK host
// API. The recording must be the offline `ssm denoise` of the same signal,
// delayed by the lag measured here (correlation >= 0.999), and so must the
// --output-file recording.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "denoise_testing.hpp"
#include "process.hpp"
#include "ssm/audio_file.hpp"
#include "ssm/model.hpp"
#include "testing.hpp"
#ifdef SSM_WITH_JACK
#include "jack/jack_loop.hpp"
#endif

namespace fs = std::filesystem;
using ssm::testing::correlation;

namespace {

using ssm::testing::kNoisy;
using ssm::testing::find_program;
using ssm::testing::kSsm;

fs::path temp_path(const std::string& name) { return ssm::testing::temp_file("live", name); }

// The lag of `rec` behind `ref` (in [0, max_lag)) that best matches a window
// of ref starting at `from`.
size_t find_lag(const std::vector<float>& rec, const std::vector<float>& ref, size_t from, size_t window,
                size_t max_lag) {
  size_t best = 0;
  double best_c = -2;
  for (size_t lag = 0; lag < max_lag && from + lag + window <= rec.size(); ++lag) {
    const double c = correlation(rec.data() + from + lag, ref.data() + from, window);
    if (c > best_c) {
      best_c = c;
      best = lag;
    }
  }
  return best;
}

}  // namespace

#ifdef SSM_WITH_PORTAUDIO
namespace {

// A dummy JACK server (killed by the guard) and `ssm denoise --live` on its
// system ports, recording to a file; returns once audio reaches the file.
struct LiveOnDummyServer {
  std::unique_ptr<ssm::testing::Child> server, live;
  std::string out, log, jack_log, jackd, name;
  bool killed = false;  // the server got SIGKILL: its registry slot is released at the end

  // Empty on success, else why the test cannot go on (a skip when jackd is absent).
  std::string start(const std::string& tag, bool* skip) {
    jackd = find_program("jackd");
    *skip = jackd.empty();
    if (jackd.empty()) return "jackd is not installed (Debian: jackd2): the live path cannot be tested";
    name = "ssmtest" + std::to_string(getpid()) + tag;
    setenv("JACK_DEFAULT_SERVER", name.c_str(), 1);
    setenv("JACK_NO_START_SERVER", "1", 1);
    out = temp_path(tag + ".wav");
    log = temp_path(tag + ".log");
    jack_log = temp_path(tag + "_jackd.log");
    server = std::make_unique<ssm::testing::Child>(
        std::vector<std::string>{jackd, "--no-realtime", "-n", name, "-d", "dummy", "-r", "16000", "-p", "256"},
        jack_log);
    // The server is up when a client can see its ports: ssm retries until then.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (int attempt = 0;; ++attempt) {
      live = std::make_unique<ssm::testing::Child>(
          std::vector<std::string>{kSsm, "denoise", "--live", "--host-api", "JACK", "--output-file", out}, log);
      // Audio is flowing once the recording grows past its header.
      for (;;) {
        std::error_code ec;
        const auto size = fs::file_size(out + ".part", ec);
        if (!ec && size > 44 + 4 * 4096) return "";
        if (!live->alive()) break;
        if (std::chrono::steady_clock::now() > give_up)
          return "ssm denoise --live never recorded anything:\n" + ssm::testing::read_text(log);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      // Exited: the server was not up yet (no JACK host API or no device).
      if (std::chrono::steady_clock::now() > give_up || !server->alive())
        return "ssm denoise --live exited:\n" + ssm::testing::read_text(log) + "\njackd:\n" +
               ssm::testing::read_text(jack_log);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  // A server killed with SIGKILL leaves its slot in JACK's registry of
  // servers (eight at most on a machine). A new server of the same name takes
  // the dead one's slot, and a clean stop gives it back.
  void release_killed_server() {
    const std::string lsp = find_program("jack_lsp");
    if (lsp.empty()) return;
    server = std::make_unique<ssm::testing::Child>(
        std::vector<std::string>{jackd, "--no-realtime", "-n", name, "-d", "dummy", "-r", "16000", "-p", "256"},
        jack_log);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (server->alive() && std::chrono::steady_clock::now() < give_up && ssm::testing::run({lsp}).status != 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    server.reset();  // SIGTERM: a clean stop
  }
  ~LiveOnDummyServer() {
    live.reset();
    if (killed) release_killed_server();
    server.reset();
    for (const auto& p : {out, out + ".part", log, jack_log}) fs::remove(p);
    // The semaphores of the clients the server took with it (named after
    // this test's unique server) stay in /dev/shm otherwise.
    std::error_code ec;
    if (!name.empty())
      for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
        const std::string f = e.path().filename().string();
        if (f.rfind("jack_sem.", 0) == 0 && f.find("_" + name + "_") != std::string::npos) fs::remove(e.path(), ec);
      }
  }
};

}  // namespace

// The sound server dies under a running `ssm denoise --live`: it notices,
// finishes the recording, and exits non-zero saying why, within a bound.
TEST(LiveJack, ServerKilledMidRunEndsWithAnErrorAndAFinishedFile) {
  for (int sig : {SIGKILL, SIGTERM}) {
    LiveOnDummyServer run;
    bool skip = false;
    const std::string why = run.start(sig == SIGKILL ? "kill" : "term", &skip);
    if (skip) GTEST_SKIP() << why;
    ASSERT_EQ(why, "");
    run.killed = sig == SIGKILL;
    run.server->signal(sig);
    const int status = run.live->wait(30);
    const std::string log = ssm::testing::read_text(run.log);
    std::printf("server stopped by signal %d; ssm said:\n%s\n", sig, log.c_str());
    ASSERT_NE(status, -1) << "ssm denoise --live did not exit after the server died:\n" << log;
    EXPECT_EQ(status, 1) << log;
    EXPECT_TRUE(log.find("gone") != std::string::npos || log.find("stopped by itself") != std::string::npos) << log;
    EXPECT_FALSE(fs::exists(run.out + ".part"));
    ASSERT_TRUE(fs::exists(run.out)) << log;
    const ssm::Audio a = ssm::read_audio(run.out);
    EXPECT_GE(a.frames(), 4096u);
    EXPECT_EQ(a.rate, 16000);
  }
}

// SIGTERM (as a service manager stops it) ends a live run cleanly: exit 0,
// the recording finished. The JACK client is named after the program.
TEST(LiveJack, SigtermStopsTheLiveRunAndFinishesTheFile) {
  LiveOnDummyServer run;
  bool skip = false;
  const std::string why = run.start("sigterm", &skip);
  if (skip) GTEST_SKIP() << why;
  ASSERT_EQ(why, "");
  if (const std::string lsp = find_program("jack_lsp"); !lsp.empty()) {
    const auto ports = ssm::testing::run({lsp});
    EXPECT_NE(ports.output.find("ssm:"), std::string::npos) << ports.output;
  }
  run.live->signal(SIGTERM);
  const int status = run.live->wait(30);
  const std::string log = ssm::testing::read_text(run.log);
  ASSERT_EQ(status, 0) << log;
  EXPECT_FALSE(fs::exists(run.out + ".part"));
  EXPECT_GE(ssm::read_audio(run.out).frames(), 4096u);
}
#endif

#ifdef SSM_WITH_JACK
namespace {

// One live run with jackd at `rate`; `min_correlation` with the offline
// result. With `speaker`, mic -> model -> speaker and file; without, mic -> file.
void live_run(int rate, double min_correlation, bool speaker = true) {
  const std::string jackd = find_program("jackd");
  if (jackd.empty()) GTEST_SKIP() << "jackd is not installed (Debian: jackd2): the live path cannot be tested";
  const std::string server = "ssmtest" + std::to_string(getpid()) + "r" + std::to_string(rate);
  setenv("JACK_DEFAULT_SERVER", server.c_str(), 1);
  setenv("JACK_NO_START_SERVER", "1", 1);
  const std::string jack_log = temp_path("jackd.log"), ssm_log = temp_path("ssm.log");
  ssm::testing::Child server_proc(
      {jackd, "--no-realtime", "--sync", "-n", server, "-t", "5000", "-d", "dummy", "-r", std::to_string(rate), "-p", "256"}, jack_log);

  std::unique_ptr<ssm::testing::JackLoop> loop;
  try {
    loop = std::make_unique<ssm::testing::JackLoop>("ssmloop", 15.0);
  } catch (const std::exception& e) {
    FAIL() << e.what() << "\njackd log:\n" << ssm::testing::read_text(jack_log);
  }
  ASSERT_EQ(loop->rate(), rate);

  // A small model keeps the processing thread far ahead of real time on a busy machine.
  const std::string model = ssm::testing::save_small_model(temp_path("model.safetensors"), 13);
  const std::string recorded_file = temp_path("live.wav");

  // One second of silence first: the model's state settles on silence in
  // the live run (which started earlier) and the offline run alike.
  const size_t lead = rate, extra = rate * 3 / 2;
  std::vector<float> signal(lead, 0.0f);
  const ssm::Audio noisy = ssm::read_audio(kNoisy);
  const std::vector<float> speech = ssm::resample(noisy.samples.data(), noisy.frames(), noisy.rate, rate);
  signal.insert(signal.end(), speech.begin(), speech.end());

  std::vector<std::string> args{kSsm,        "denoise", "--live",      "--host-api", "JACK",  "--input-device",
                                "ssmloop",   "--block", "256",         "--buffer-ms", "200",  "--model",
                                model,       "--output-file", recorded_file};
  if (speaker) args.insert(args.end(), {"--output-device", "ssmloop"});
  ssm::testing::Child live(args, ssm_log);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!loop->connected(speaker)) {
    ASSERT_TRUE(live.alive()) << "ssm denoise --live exited early:\n" << ssm::testing::read_text(ssm_log);
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "ssm never connected:\n"
                                                         << ssm::testing::read_text(ssm_log);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  loop->play_and_record(signal, extra);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!loop->done()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the recording never completed";
    ASSERT_TRUE(live.alive()) << ssm::testing::read_text(ssm_log);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Ctrl-C: a clean stop with the file finalised.
  live.signal(SIGINT);
  const int status = live.wait(30);
  const std::string log = ssm::testing::read_text(ssm_log);
  std::printf("ssm denoise --live said:\n%s\n", log.c_str());
  ASSERT_EQ(status, 0) << log;
  EXPECT_NE(log.find("latency"), std::string::npos);

  // The offline reference of the same signal, with the live path's rate
  // converter so that only the timing differs. At 48 kHz the converter keeps
  // one 16 kHz sample in three: which phase depends on when the live stream
  // started, so the reference is computed for each phase (k extra leading
  // zeros; the model has settled on silence by then) and the best one taken.
  const std::string in_file = temp_path("signal.wav"), ref_file = temp_path("offline.wav");
  const std::vector<float>& rec = loop->recording();
  const ssm::Audio file = ssm::read_audio(recorded_file);
  ASSERT_GT(file.frames(), signal.size());
  double c = -1, cf = -1;
  size_t lag = 0;
  for (int k = 0; k < rate / 16000; ++k) {
    std::vector<float> shifted(k, 0.0f);
    shifted.insert(shifted.end(), signal.begin(), signal.end());
    ssm::write_audio(in_file, shifted.data(), shifted.size(), rate, 1, /*float_wav=*/true);
    auto off = ssm::testing::run({kSsm, "denoise", in_file, ref_file, "--model", model, "--resample", "medium"});
    ASSERT_EQ(off.status, 0) << off.output;
    std::vector<float> ref = ssm::read_audio(ref_file).samples;
    ASSERT_EQ(ref.size(), shifted.size());
    ref.erase(ref.begin(), ref.begin() + k);  // back on the signal's time axis

    // The speaker: lag measured on the speech, then the whole signal compared.
    const size_t lk = find_lag(rec, ref, lead, rate / 8, extra);
    const size_t n = ref.size() - lead / 2;
    const double ck = speaker ? correlation(rec.data() + lead / 2 + lk, ref.data() + lead / 2, n) : 1.0;
    // The recording: the same stream, from whenever ssm started.
    const size_t max_file_lag = file.frames() - ref.size() + 1;
    const size_t fk = find_lag(file.samples, ref, lead, rate / 8, max_file_lag);
    const double cfk = correlation(file.samples.data() + lead / 2 + fk, ref.data() + lead / 2,
                                   std::min(n, file.frames() - lead / 2 - fk));
    if (ck > c) {
      c = ck;
      lag = lk;
    }
    cf = std::max(cf, cfk);
  }
  if (speaker)
    std::printf("%d Hz speaker: measured lag %zu frames (%.1f ms), correlation with offline %.6f\n", rate, lag,
                lag * 1000.0 / rate, c);
  std::printf("%d Hz --output-file: correlation with offline %.6f\n", rate, cf);
  if (speaker) EXPECT_GE(c, min_correlation);
  EXPECT_GE(cf, min_correlation);
  for (const auto& p : {model, recorded_file, in_file, ref_file, jack_log, ssm_log}) fs::remove(p);
}

}  // namespace

// At the model's rate the live path computes exactly what the offline one does.
TEST(LiveJack, DenoiseLiveMatchesOfflineThroughPortAudioJack) { live_run(16000, 0.999); }

// At 48 kHz the device cannot run at the model's rate: both paths convert.
TEST(LiveJack, DenoiseLiveAt48kHzConvertsRates) { live_run(48000, 0.999); }

// Microphone -> file only (no playback device): the recording is complete.
TEST(LiveJack, DenoiseLiveToFileOnly) { live_run(16000, 0.999, /*speaker=*/false); }
#else
TEST(LiveJack, NotBuilt) { GTEST_SKIP() << "built without libjack (Debian: libjack-jackd2-dev)"; }
#endif
