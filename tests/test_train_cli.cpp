// The training config (round trip, every kind of error) and `ssm train`
// end to end on generated sound files: what it writes, bad files skipped,
// --resume after --stop-at or Ctrl-C continuing bit for bit, and clear errors.
// Then `ssm train` on a forecaster's config (data.kind "series"): the loss
// falls, the detector loads the model, --resume continues bit for bit.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "ssm/audio_file.hpp"
#include "ssm/cuda.hpp"
#include "ssm/detector.hpp"
#include "ssm/model.hpp"
#include "ssm/noise.hpp"
#include "ssm/safetensors.hpp"
#include "ssm/train_config.hpp"
#include "testing.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using ssm::TrainConfig;

namespace {

const std::string kSsm = SSM_BINARY_DIR "/apps/ssm";

using ssm::testing::TempDir;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "";
}

// A config with every section, small enough to train in a blink.
json tiny_config(const std::string& root) {
  return json{
      {"model",
       {{"d_model", 8}, {"n_layers", 1}, {"expand", 2}, {"head_dim", 8}, {"d_state", 4}, {"chunk", 32},
        {"sample_rate", 8000}, {"lookahead", 2}}},
      {"training",
       {{"steps", 20}, {"batch", 2}, {"segment", 256}, {"lr", 0.01}, {"min_lr", 0.001}, {"warmup", 4},
        {"stft_weight", 0.5}, {"seed", 3}, {"threads", 1}}},
      {"data",
       {{"speech", {root + "/speech"}},
        {"noise", root + "/noise"},
        {"snr_db", {0, 10}},
        {"noise_kinds", {{"clip", 1}, {"white", 0.5}, {"hum", 0.5}}},
        {"pairs", {{{"noisy", root + "/pairs/noisy"}, {"clean", root + "/pairs/clean"}}}},
        {"pair_fraction", 0.3},
        {"loader_threads", 2},
        {"queue", 3}}},
      {"validation", {{"fraction", 0.2}, {"every", 10}, {"mixtures", 2}, {"seconds", 0.5}, {"seed", 4}, {"stoi", false}}},
      {"output", {{"dir", root + "/run"}, {"log_every", 5}, {"checkpoint_every", 10}, {"keep_checkpoints", 2}}},
  };
}

// Harmonic tones with a syllable-like envelope.
std::vector<float> speech_like(size_t n, double f0, int rate) {
  std::vector<float> x(n);
  for (size_t t = 0; t < n; ++t) {
    const double s = double(t) / rate, env = 0.5 + 0.5 * std::sin(2 * M_PI * 3 * s);
    x[t] = static_cast<float>(0.2 * env * (std::sin(2 * M_PI * f0 * s) + 0.5 * std::sin(4 * M_PI * f0 * s)));
  }
  return x;
}

// "Speech": speech_like tones; noise: white and brown, one of them stereo at
// another rate; (noisy, clean) pairs; plus a file that is not sound.
void make_data(const std::string& root) {
  const int rate = 8000;
  fs::create_directories(root + "/speech/more");
  fs::create_directories(root + "/noise");
  fs::create_directories(root + "/pairs/noisy");
  fs::create_directories(root + "/pairs/clean");
  for (int i = 0; i < 5; ++i) {
    const auto x = speech_like(6000 + 500 * i, 120 + 30 * i, rate);
    const std::string name = root + (i < 3 ? "/speech/tone" : "/speech/more/tone") + std::to_string(i) +
                             (i % 2 ? ".flac" : ".wav");
    ssm::write_audio(name, x.data(), x.size(), rate);
  }
  write_text(root + "/speech/broken.wav", "RIFF....WAVEfmt this file is damaged");
  std::vector<float> n(12000);
  ssm::white_noise(n.data(), n.size(), 5);
  for (auto& v : n) v *= 0.1f;
  ssm::write_audio(root + "/noise/white.wav", n.data(), n.size(), rate);
  for (int i = 0; i < 3; ++i) {
    const auto clean = speech_like(5000, 140 + 40 * i, rate);
    std::vector<float> noisy(clean);
    for (size_t t = 0; t < noisy.size(); ++t) noisy[t] += n[t + 1000 * i];
    const std::string name = "/p" + std::to_string(i) + ".wav";
    ssm::write_audio(root + "/pairs/clean" + name, clean.data(), clean.size(), rate);
    ssm::write_audio(root + "/pairs/noisy" + name, noisy.data(), noisy.size(), rate);
  }
  std::vector<float> st(2 * 16000);  // (frames, 2) at 16 kHz
  ssm::brown_noise(st.data(), st.size(), 16000, 9);
  for (auto& v : st) v *= 0.1f;
  ssm::write_audio(root + "/noise/brown.flac", st.data(), 16000, 16000, 2);
}

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs the ssm binary with `args` (already quoted), capturing both streams.
Result run_ssm(const std::string& args, const std::string& dir, const std::string& env = "") {
  const std::string out = dir + "/stdout.txt", err = dir + "/stderr.txt";
  const std::string cmd = env + " '" + kSsm + "' " + args + " > '" + out + "' 2> '" + err + "'";
  const int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

std::string train_args(const std::string& config, const std::string& extra = "") {
  return "train --config '" + config + "' " + extra;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) out.push_back(json::parse(line));
  return out;
}

std::vector<double> train_losses(const std::string& metrics) {
  std::vector<double> out;
  for (const auto& j : read_jsonl(metrics))
    if (j["kind"] == "train") out.push_back(j["loss"].get<double>());
  return out;
}

}  // namespace

// ---------------------------------------------------------------- the config

TEST(TrainConfig, RoundTripsThroughJson) {
  const json j = tiny_config("/data");
  const TrainConfig c = TrainConfig::from_json(j, "cfg.json");
  EXPECT_EQ(c.model.d_model, 8);
  EXPECT_EQ(c.model.lookahead, 2);
  EXPECT_EQ(c.training.steps, 20);
  EXPECT_EQ(c.training.seed, 3u);
  EXPECT_EQ(c.data.speech, std::vector<std::string>{"/data/speech"});
  EXPECT_EQ(c.data.noise, std::vector<std::string>{"/data/noise"});  // one name for a list of one
  EXPECT_EQ(c.data.mixer.snr_min_db, 0);
  EXPECT_EQ(c.data.mixer.snr_max_db, 10);
  EXPECT_EQ(c.data.mixer.weight_hum, 0.5);
  EXPECT_EQ(c.data.mixer.weight_fan, ssm::MixerConfig{}.weight_fan);  // unset: the default
  EXPECT_EQ(c.validation.every, 10);
  EXPECT_FALSE(c.validation.stoi);
  EXPECT_EQ(c.validation.snr_min_db, 0);  // unset: the training range
  EXPECT_EQ(c.validation.snr_max_db, 10);
  EXPECT_EQ(c.training.device, "cpu");
  EXPECT_EQ(c.output.dir, "/data/run");
  const json back = c.to_json();
  const TrainConfig c2 = TrainConfig::from_json(back, "back");
  EXPECT_EQ(c2.to_json(), back);
  EXPECT_EQ(TrainConfig::from_json_text(c2.to_json_text(), "text").to_json(), back);

  // Pairs, and the defaults of every section left out.
  const json minimal{{"model", json::object()},
                     {"data", {{"pairs", {{{"noisy", "n"}, {"clean", "c"}}}}, {"pair_fraction", 1.0}}}};
  const TrainConfig m = TrainConfig::from_json(minimal, "minimal");
  ASSERT_EQ(m.data.pairs.size(), 1u);
  EXPECT_EQ(m.data.pairs[0].noisy, "n");
  EXPECT_EQ(m.data.pairs[0].clean, "c");
  EXPECT_EQ(m.training.steps, ssm::TrainerConfig{}.steps);
  EXPECT_EQ(m.output.dir, "");
  EXPECT_EQ(TrainConfig::from_json(m.to_json(), "again").to_json(), m.to_json());
}

TEST(TrainConfig, ValidationSnrAndDeviceAreRead) {
  json j = tiny_config("/data");
  j["validation"]["snr_db"] = {-5, 15};
  j["training"]["device"] = "cuda";
  const TrainConfig c = TrainConfig::from_json(j, "cfg.json");
  EXPECT_EQ(c.validation.snr_min_db, -5);
  EXPECT_EQ(c.validation.snr_max_db, 15);
  EXPECT_EQ(c.data.mixer.snr_max_db, 10);  // training's own range untouched
  EXPECT_EQ(c.training.device, "cuda");
  EXPECT_EQ(TrainConfig::from_json(c.to_json(), "back").to_json(), c.to_json());
  j["validation"]["snr_db"] = {15, -5};
  EXPECT_NE(error_of([&] { TrainConfig::from_json(j, "cfg"); }).find("snr_db"), std::string::npos);
  j["validation"]["snr_db"] = {-5, 15};
  j["training"]["device"] = "gpu";
  EXPECT_NE(error_of([&] { TrainConfig::from_json(j, "cfg").validate(); }).find("device"), std::string::npos);
  // gpus: written only when not 1, read back; more than one needs "cuda".
  j["training"]["device"] = "cuda";
  EXPECT_FALSE(TrainConfig::from_json(j, "cfg").to_json()["training"].contains("gpus"));
  j["training"]["gpus"] = 4;
  const TrainConfig four = TrainConfig::from_json(j, "cfg");
  EXPECT_EQ(four.training.gpus, 4);
  EXPECT_EQ(four.training.global_batch(), 4 * four.training.batch);
  EXPECT_EQ(TrainConfig::from_json(four.to_json(), "back").training.gpus, 4);
  j["training"]["device"] = "cpu";
  const std::string on_cpu = error_of([&] { TrainConfig::from_json(j, "cfg").validate(); });
  EXPECT_NE(on_cpu.find("'gpus' is 4 but the device is \"cpu\""), std::string::npos) << on_cpu;
  j["training"]["device"] = "cuda";
  j["training"]["gpus"] = 0;
  EXPECT_NE(error_of([&] { TrainConfig::from_json(j, "cfg").validate(); }).find("'gpus' must be in [1, 64]"),
            std::string::npos);
}

TEST(TrainConfig, ModelMayBeAFileName) {
  TempDir dir;
  write_text(dir / "model.json", R"({"d_model": 16, "head_dim": 16})");
  json j = tiny_config("/data");
  j["model"] = dir / "model.json";
  EXPECT_EQ(TrainConfig::from_json(j, "cfg").model.d_model, 16);
  j["model"] = dir / "absent.json";
  EXPECT_NE(error_of([&] { TrainConfig::from_json(j, "cfg"); }).find("absent.json"), std::string::npos);
}

TEST(TrainConfig, EachErrorNamesTheKey) {
  struct Case {
    std::function<void(json&)> edit;
    std::vector<std::string> expect;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["trainng"] = json::object(); }, {"cfg.json", "unknown key 'trainng'"}},
      {[](json& j) { j["training"]["stpes"] = 1; }, {"unknown key 'training.stpes'", "steps"}},
      {[](json& j) { j["data"]["snr"] = 1; }, {"unknown key 'data.snr'"}},
      {[](json& j) { j["data"]["noise_kinds"]["rain"] = 1; }, {"unknown key 'data.noise_kinds.rain'"}},
      {[](json& j) { j["validation"]["each"] = 1; }, {"unknown key 'validation.each'"}},
      {[](json& j) { j["output"]["folder"] = "x"; }, {"unknown key 'output.folder'"}},
      {[](json& j) { j["model"]["width"] = 4; }, {"unknown key 'width'"}},
      {[](json& j) { j["data"]["pairs"] = {{{"noisy", "a"}, {"clean", "b"}, {"x", 1}}}; },
       {"unknown key 'data.pairs[0].x'"}},
      {[](json& j) { j["training"]["steps"] = "20"; }, {"'training.steps' must be an integer", "\"20\""}},
      {[](json& j) { j["training"]["lr"] = "fast"; }, {"'training.lr' must be a number"}},
      {[](json& j) { j["training"]["seed"] = -1; }, {"'training.seed' must be a non-negative integer"}},
      // 2^64 - 5: a JSON integer above every int64, not -5 read back as an int.
      {[](json& j) { j["training"]["batch"] = 18446744073709551611ull; }, {"'training.batch' must be an integer"}},
      {[](json& j) { j["model"]["d_model"] = 18446744073709551611ull; }, {"'d_model' must be an integer"}},
      {[](json& j) { j["data"]["snr_db"] = {5}; }, {"'data.snr_db' must be a list of two numbers"}},
      {[](json& j) { j["data"]["snr_db"] = {20, -5}; }, {"'data.snr_db'", "low <= high"}},
      {[](json& j) { j["data"]["speech"] = 5; }, {"'data.speech' must be a folder name or a list"}},
      {[](json& j) { j["data"]["speech"] = {"a", 3}; }, {"'data.speech' must be a list of non-empty folder"}},
      {[](json& j) { j["data"]["pairs"] = {{{"noisy", "a"}}}; }, {"'data.pairs[0].clean' is missing"}},
      {[](json& j) { j["data"]["pairs"] = "a"; }, {"'data.pairs' must be a list of"}},
      {[](json& j) { j["validation"]["stoi"] = 1; }, {"'validation.stoi' must be true or false"}},
      {[](json& j) { j["output"]["dir"] = 3; }, {"'output.dir' must be a string"}},
      {[](json& j) { j["training"] = 3; }, {"'training' must be a JSON object"}},
      {[](json& j) { j.erase("model"); }, {"'model' is missing"}},
      {[](json& j) { j.erase("data"); }, {"'data' is missing"}},
      {[](json& j) { j["model"] = 3; }, {"'model' must be a model config object"}},
      {[](json& j) { j["training"]["steps"] = 0; }, {"'steps' must be >= 1"}},
      {[](json& j) { j["data"]["pair_fraction"] = 2; }, {"'data.pair_fraction' must be in [0, 1]"}},
      {[](json& j) {
         j["data"]["speech"] = json::array();
         j["data"].erase("pairs");
       },
       {"'data' needs 'speech' folders or 'pairs'"}},
      {[](json& j) { j["data"]["noise_kinds"] = {{"clip", 0}, {"white", 0}, {"pink", 0}, {"brown", 0},
                                                 {"hum", 0}, {"fan", 0}, {"babble", 0}}; },
       {"'data.noise_kinds' has every weight 0"}},
      {[](json& j) { j["data"]["noise"] = json::array(); }, {"'data.noise' is empty but data.noise_kinds.clip"}},
      {[](json& j) { j["data"]["level_dbfs"] = {-20, 3}; }, {"'data.level_dbfs'"}},
      {[](json& j) { j["data"]["highpass_hz"] = {100, 5000}; }, {"'data.highpass_hz'", "sample_rate / 2"}},
      {[](json& j) { j["data"]["noise_lowpass_prob"] = 1.5; }, {"'data.noise_lowpass_prob' must be in [0, 1]"}},
      {[](json& j) { j["data"]["queue"] = 0; }, {"'data.queue'"}},
      {[](json& j) { j["validation"]["fraction"] = 1; }, {"'validation.fraction' must be in [0, 1)"}},
      {[](json& j) { j["validation"]["seconds"] = 0; }, {"'validation.seconds'"}},
      {[](json& j) { j["output"]["log_every"] = 0; }, {"'output.log_every' must be >= 1"}},
      {[](json& j) { j["model"]["in_channels"] = 2; }, {"in_channels = out_channels = 1"}},
      {[](json& j) { j["model"]["head_dim"] = 5; }, {"head_dim"}},
      {[](json& j) {
         j["model"]["frame"] = 48;
         j["training"]["segment"] = 1000;
       },
       {"'training.segment' must be a multiple of the model's frame (48 samples), got 1000"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    json j = tiny_config("/data");
    cases[i].edit(j);
    const std::string e = error_of([&] { TrainConfig::from_json(j, "cfg.json"); });
    ASSERT_FALSE(e.empty()) << "case " << i << " did not throw: " << j.dump();
    for (const auto& want : cases[i].expect)
      EXPECT_NE(e.find(want), std::string::npos) << "case " << i << ": '" << want << "' not in: " << e;
  }
  EXPECT_NE(error_of([] { TrainConfig::from_json_text("{\"model\": ", "bad.json"); }).find("bad.json: not valid JSON"),
            std::string::npos);
  EXPECT_NE(error_of([] { TrainConfig::from_file("/nonexistent/cfg.json"); }).find("/nonexistent/cfg.json"),
            std::string::npos);
}

// Found by fuzz_train_config: a number beyond a double's range made the JSON
// library throw its own out_of_range instead of ssm::Error.
TEST(TrainConfig, NumberBeyondADoubleIsAnError) {
  for (const char* lr : {"1e400", "-1e400"}) {
    const std::string text = R"({"model": {}, "training": {"lr": )" + std::string(lr) + "}}";
    const std::string e = error_of([&] { TrainConfig::from_json_text(text, "big.json"); });
    EXPECT_NE(e.find("big.json: not valid JSON"), std::string::npos) << lr << ": " << e;
  }
}

// Found while fuzzing the config readers: an error message quotes the wrong
// value with nlohmann::json::dump(), which recurses once per nesting level,
// so a deeply nested value crashed with a stack overflow.
TEST(TrainConfig, DeeplyNestedValueIsAnErrorNotAStackOverflow) {
  const size_t n = 1000000;
  const std::string text = R"({"model": )" + std::string(n, '[') + std::string(n, ']') + "}";
  const std::string e = error_of([&] { TrainConfig::from_json_text(text, "deep.json"); });
  EXPECT_NE(e.find("deep.json: nests JSON deeper"), std::string::npos) << e;
}

TEST(TrainConfig, MissingFoldersAreAllNamed) {
  TempDir dir;
  fs::create_directories(dir / "speech");
  write_text(dir / "file", "x");
  json j = tiny_config(dir / "");
  j["data"]["speech"] = {dir / "speech", dir / "nope1"};
  j["data"]["noise"] = dir / "file";
  j["validation"]["pairs"] = {{{"noisy", dir / "nope2"}, {"clean", dir / "speech"}}};
  const TrainConfig c = TrainConfig::from_json(j, "cfg");
  const std::string e = error_of([&] { c.check_folders(); });
  EXPECT_NE(e.find("data.speech: '" + (dir / "nope1") + "' does not exist"), std::string::npos) << e;
  EXPECT_NE(e.find("data.noise: '" + (dir / "file") + "' is not a folder"), std::string::npos) << e;
  EXPECT_NE(e.find("validation.pairs[0].noisy: '" + (dir / "nope2") + "' does not exist"), std::string::npos) << e;
  EXPECT_EQ(e.find("'" + (dir / "speech") + "'"), std::string::npos) << e;  // present: not listed
}

// ---------------------------------------------------------------- ssm train

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kSsm)) GTEST_SKIP() << "ssm binary not built: " << kSsm;
    make_data(dir / "data");
  }
  std::string config(const std::string& name, const std::function<void(json&)>& edit = {}) {
    json j = tiny_config(dir / "data");
    j["output"]["dir"] = dir / name;
    if (edit) edit(j);
    const std::string path = dir / (name + ".json");
    write_text(path, j.dump(2));
    return path;
  }
  TempDir dir;
};

// True once signal `sig` is no longer pending for process `pid` (it has been
// delivered) or the process has ended, read from /proc/<pid>/status; false
// if that cannot be read.
bool signal_delivered(pid_t pid, int sig) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  bool pending = false, seen = false;
  while (std::getline(f, line)) {
    if (line.rfind("State:", 0) == 0 && line.find('Z') != std::string::npos) return true;
    if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) {
      seen = true;
      pending = pending || ((std::stoull(line.substr(7), nullptr, 16) >> (sig - 1)) & 1);
    }
  }
  return seen && !pending;
}

// Starts `ssm train` on `cfg` in a child process, waits for its first
// training step, sends `signals`, each once the one before it has been
// delivered (pending signals of one kind would merge), and returns the
// child's wait status; its stdout goes to `log`. The run is meant to be far
// longer than the test: a child still running 120 s after the signals is
// killed and reported as killed by SIGKILL.
int train_and_signal(const std::string& cfg, const std::string& log, const std::string& metrics,
                     std::initializer_list<int> signals) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    // The child only redirects its streams and execs.
    if (!std::freopen(log.c_str(), "w", stdout) || !std::freopen((log + ".err").c_str(), "w", stderr)) _exit(126);
    execl(kSsm.c_str(), kSsm.c_str(), "train", "--config", cfg.c_str(), "--threads", "1", nullptr);
    _exit(127);
  }
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  while (read_text(metrics).empty() && clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  for (int sig : signals) {
    kill(pid, sig);
    t0 = clock::now();
    while (!signal_delivered(pid, sig) && clock::now() - t0 < std::chrono::seconds(10))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  int status = 0;
  t0 = clock::now();
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (clock::now() - t0 > std::chrono::seconds(120)) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status;
}

// The step of "interrupted at step N" in `out`, or -1.
int64_t interrupted_step(const std::string& out) {
  const auto at = out.find("interrupted at step ");
  return at == std::string::npos ? -1 : std::stoll(out.substr(at + 20));
}

TEST_F(TrainCli, WritesCheckpointsMetricsAndModelAndSkipsBadFiles) {
  const Result r = run_ssm(train_args(config("run")), dir / "");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string out = dir / "run";
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/best.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  EXPECT_TRUE(fs::exists(out + "/checkpoints/step-00000020.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/checkpoints/step-00000020.safetensors.optim"));
  EXPECT_TRUE(fs::exists(out + "/checkpoints/step-00000010.safetensors"));
  // The damaged file is named in a warning and training goes on without it.
  EXPECT_NE(r.err.find("warning: skipped:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("broken.wav"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("1 file(s) skipped"), std::string::npos) << r.out;
  EXPECT_TRUE(r.out.find("3 pairs") != std::string::npos || r.out.find("2 pairs") != std::string::npos) << r.out;
  // Progress lines every 5 steps, validation at 10 and 20.
  for (const char* want : {"step 5/20", "step 20/20", "samples/s", "ETA", "lr ", "grad ", "validation @ 10",
                           "validation @ 20", "SI-SDR"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << " not in:\n" << r.out;

  const auto records = read_jsonl(out + "/metrics.jsonl");
  int train = 0, val = 0;
  for (const auto& j : records) {
    if (j["kind"] == "train") {
      ++train;
      EXPECT_EQ(j["step"], train);
      EXPECT_TRUE(std::isfinite(j["loss"].get<double>()));
      EXPECT_TRUE(j.contains("lr") && j.contains("grad_norm"));
    } else {
      ++val;
      EXPECT_EQ(j["kind"], "validation");
      EXPECT_EQ(j["step"], 10 * val);
      EXPECT_GE(j["items"].get<int>(), 2);
      EXPECT_NEAR(j["si_sdr_improvement"].get<double>(),
                  j["si_sdr_denoised"].get<double>() - j["si_sdr_noisy"].get<double>(), 1e-9);
    }
  }
  EXPECT_EQ(train, 20);
  EXPECT_EQ(val, 2);

  const ssm::Model m = ssm::Model::load(out + "/model.safetensors");
  EXPECT_EQ(m.config().d_model, 8);
  EXPECT_EQ(m.config().lookahead, 2);
  EXPECT_EQ(TrainConfig::from_file(out + "/config.json").to_json(),
            TrainConfig::from_file(dir / "run.json").to_json());

  // The plot, or one plain note that gnuplot is missing.
  const Result no_plot =
      run_ssm(train_args(dir / "run.json", "--out '" + (dir / "run2") + "' --steps 2"), dir / "", "PATH=/nonexistent");
  ASSERT_EQ(no_plot.code, 0) << no_plot.out << no_plot.err;
  EXPECT_NE(no_plot.out.find("gnuplot is not installed"), std::string::npos) << no_plot.out;
  if (std::system("command -v gnuplot > /dev/null 2>&1") == 0) EXPECT_TRUE(fs::exists(out + "/metrics.png"));

  // The same folder again without --resume: refused, nothing overwritten.
  const auto before = read_text(out + "/model.safetensors");
  const Result again = run_ssm(train_args(dir / "run.json"), dir / "");
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("already holds checkpoints"), std::string::npos) << again.err;
  EXPECT_EQ(read_text(out + "/model.safetensors"), before);
}

TEST_F(TrainCli, ResumeAfterStopAtGivesTheSameWeights) {
  const auto cfg = config("whole");
  const Result whole = run_ssm(train_args(cfg, "--threads 1"), dir / "");
  ASSERT_EQ(whole.code, 0) << whole.out << whole.err;

  const auto cfg2 = config("parts");
  const Result first = run_ssm(train_args(cfg2, "--threads 1 --stop-at 7"), dir / "");
  ASSERT_EQ(first.code, 0) << first.out << first.err;
  EXPECT_NE(first.out.find("stopped (--stop-at) at step 7"), std::string::npos) << first.out;
  EXPECT_TRUE(fs::exists(dir / "parts/checkpoints/step-00000007.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "parts/model.safetensors"));
  const Result rest = run_ssm(train_args(cfg2, "--threads 1 --resume"), dir / "");
  ASSERT_EQ(rest.code, 0) << rest.out << rest.err;
  EXPECT_NE(rest.out.find("resumed from"), std::string::npos) << rest.out;

  EXPECT_EQ(read_text(dir / "parts/model.safetensors"), read_text(dir / "whole/model.safetensors"));
  EXPECT_EQ(train_losses(dir / "parts/metrics.jsonl"), train_losses(dir / "whole/metrics.jsonl"));
  // Only the newest two checkpoints are kept.
  EXPECT_FALSE(fs::exists(dir / "parts/checkpoints/step-00000007.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "parts/checkpoints/step-00000010.safetensors"));

  // Resuming a finished run does nothing.
  const Result done = run_ssm(train_args(cfg2, "--resume"), dir / "");
  EXPECT_EQ(done.code, 0);
  EXPECT_NE(done.out.find("already finished"), std::string::npos) << done.out;
}

// Largest absolute difference between two models' parameters.
float max_param_diff(const std::string& a, const std::string& b) {
  const ssm::Model ma = ssm::Model::load(a), mb = ssm::Model::load(b);
  float d = 0;
  for (size_t i = 0; i < ma.params().size(); ++i) d = std::max(d, std::abs(ma.params().data()[i] - mb.params().data()[i]));
  return d;
}

TEST_F(TrainCli, InitStartsFromGivenWeights) {
  const Result a = run_ssm(train_args(config("first"), "--threads 1"), dir / "");
  ASSERT_EQ(a.code, 0) << a.out << a.err;
  const std::string trained = dir / "first/model.safetensors";
  // One more step from the trained weights moves each parameter by at most
  // the learning rate (0.01: --steps 1 shortens the warm-up to that step) and
  // a little decay; one step from the seeded initialisation lands far from them.
  const Result b = run_ssm(train_args(config("second"), "--threads 1 --steps 1 --init '" + trained + "'"), dir / "");
  ASSERT_EQ(b.code, 0) << b.out << b.err;
  EXPECT_NE(b.out.find("starting from the weights in " + trained), std::string::npos) << b.out;
  EXPECT_LT(max_param_diff(dir / "second/model.safetensors", trained), 0.0105f);
  const Result c = run_ssm(train_args(config("fresh"), "--threads 1 --steps 1"), dir / "");
  ASSERT_EQ(c.code, 0) << c.out << c.err;
  EXPECT_GT(max_param_diff(dir / "fresh/model.safetensors", trained), 0.03f);
  // training.init in the config does the same; weights of another shape are refused.
  const Result d = run_ssm(train_args(config("other", [&](json& j) {
                             j["model"]["d_model"] = 16;
                             j["training"]["init"] = trained;
                           })),
                           dir / "");
  EXPECT_EQ(d.code, 1);
  EXPECT_NE(d.err.find("training.init '" + trained + "': its model config differs"), std::string::npos) << d.err;
}

TEST_F(TrainCli, CtrlCSavesACheckpointAndResumeContinuesExactly) {
  // A run far longer than the test, so it is always still going when the
  // signal comes; both runs stop (--stop-at) a few steps after the step the
  // signal stopped the first one at, on the same schedule of 10^6 steps.
  auto endless = [](json& j) {
    j["training"]["steps"] = 1000000;
    j["validation"]["every"] = 0;
    j["output"]["checkpoint_every"] = 0;
  };
  const auto cfg = config("interrupted", endless);
  const std::string log = dir / "interrupted.out";
  // After the first training step, press Ctrl-C.
  const int status = train_and_signal(cfg, log, dir / "interrupted/metrics.jsonl", {SIGINT});
  const std::string out = read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << "\n"
                                 << out;
  EXPECT_EQ(WEXITSTATUS(status), 130) << out;
  const int64_t stopped = interrupted_step(out);
  ASSERT_GE(stopped, 1) << out;
  EXPECT_FALSE(fs::exists(dir / "interrupted/model.safetensors"));
  ASSERT_FALSE(fs::is_empty(dir / "interrupted/checkpoints"));

  const std::string stop_at = " --stop-at " + std::to_string(stopped + 3);
  const Result rest = run_ssm(train_args(cfg, "--threads 1 --resume" + stop_at), dir / "");
  ASSERT_EQ(rest.code, 0) << rest.out << rest.err;
  const Result whole = run_ssm(train_args(config("whole", endless), "--threads 1" + stop_at), dir / "");
  ASSERT_EQ(whole.code, 0) << whole.out << whole.err;
  char name[64];
  std::snprintf(name, sizeof name, "checkpoints/step-%08lld.safetensors", static_cast<long long>(stopped + 3));
  ASSERT_TRUE(fs::exists(dir / ("whole/" + std::string(name)))) << whole.out;
  EXPECT_EQ(read_text(dir / ("interrupted/" + std::string(name))), read_text(dir / ("whole/" + std::string(name))));
  EXPECT_EQ(train_losses(dir / "interrupted/metrics.jsonl"), train_losses(dir / "whole/metrics.jsonl"));
}

TEST_F(TrainCli, RepeatedSigtermStillSavesACheckpoint) {
  // As timeout(1) or a supervisor does: SIGTERM more than once. The later
  // ones must not kill the run before it saves. The run is far longer than
  // the test, so it is always still going when the signals come.
  const auto cfg = config("terminated", [](json& j) {
    j["training"]["steps"] = 1000000;
    j["validation"]["every"] = 0;
    j["output"]["checkpoint_every"] = 0;
  });
  const std::string log = dir / "terminated.out";
  const int status = train_and_signal(cfg, log, dir / "terminated/metrics.jsonl", {SIGTERM, SIGTERM, SIGTERM});
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  const std::string out = read_text(log);
  EXPECT_EQ(WEXITSTATUS(status), 130) << out;
  EXPECT_GE(interrupted_step(out), 1) << out;
  ASSERT_FALSE(fs::is_empty(dir / "terminated/checkpoints"));
}

TEST_F(TrainCli, CudaWithoutAGpuIsAnErrorBeforeAnythingIsWritten) {
  if (ssm::cuda_available()) GTEST_SKIP() << "a GPU is present: " << ssm::cuda_device_description();
  const auto cfg = config("gpu", [](json& j) { j["training"]["device"] = "cuda"; });
  const Result r = run_ssm(train_args(cfg), dir / "");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("training.device is \"cuda\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--device cpu"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "gpu"));
  // Several GPUs on the CPU is a config error, said before anything is written.
  const Result gpus = run_ssm(train_args(cfg, "--device cpu --gpus 2"), dir / "");
  EXPECT_EQ(gpus.code, 1);
  EXPECT_NE(gpus.err.find("'gpus' is 2 but the device is \"cpu\""), std::string::npos) << gpus.err;
  EXPECT_FALSE(fs::exists(dir / "gpu"));
  // The same config with --device cpu trains.
  const Result cpu = run_ssm(train_args(cfg, "--device cpu --steps 2"), dir / "");
  EXPECT_EQ(cpu.code, 0) << cpu.out << cpu.err;
  EXPECT_TRUE(fs::exists(dir / "gpu/model.safetensors"));
}

TEST_F(TrainCli, EmptyOrMissingDataFoldersAreClearErrors) {
  fs::create_directories(dir / "empty");
  const Result empty = run_ssm(train_args(config("e", [&](json& j) {
                                  j["data"]["speech"] = dir / "empty";
                                  j["data"].erase("pairs");
                                })), dir / "");
  EXPECT_EQ(empty.code, 1);
  EXPECT_NE(empty.err.find("no usable training audio in data.speech"), std::string::npos) << empty.err;
  EXPECT_NE(empty.err.find(dir / "empty"), std::string::npos) << empty.err;
  EXPECT_FALSE(fs::exists(dir / "e/checkpoints"));

  const Result missing =
      run_ssm(train_args(config("m", [&](json& j) { j["data"]["noise"] = dir / "no-such-noise"; })), dir / "");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("data.noise: '" + (dir / "no-such-noise") + "' does not exist"), std::string::npos)
      << missing.err;

  write_text(dir / "bad.json", R"({"model": {}, "data": {"speech": "x"}, "output": {"dir": 5}})");
  const Result bad = run_ssm(train_args(dir / "bad.json"), dir / "");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("'output.dir' must be a string"), std::string::npos) << bad.err;

  const Result no_out = run_ssm(train_args(config("n", [](json& j) { j["output"].erase("dir"); })), dir / "");
  EXPECT_EQ(no_out.code, 1);
  EXPECT_NE(no_out.err.find("--out"), std::string::npos) << no_out.err;
}

// ---------------------------------------------------------------- ssm train, forecaster

class SeriesTrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kSsm)) GTEST_SKIP() << "ssm binary not built: " << kSsm;
  }
  // A forecaster small enough to train in a blink, on synthetic series and
  // the sample NAB files.
  std::string config(const std::string& name, const std::function<void(json&)>& edit = {}) {
    json j{{"model",
            {{"block", "mamba2"}, {"d_model", 8}, {"n_layers", 1}, {"head_dim", 8}, {"d_state", 8}, {"chunk", 32},
             {"sample_rate", 1}}},
           {"training",
            {{"steps", 150}, {"batch", 8}, {"segment", 64}, {"lr", 0.01}, {"min_lr", 0.001}, {"warmup", 10},
             {"l1_weight", 0.0}, {"l2_weight", 1.0}, {"seed", 2}, {"threads", 1}}},
           {"data",
            {{"kind", "series"},
             {"folders", {std::string(SSM_SOURCE_DIR) + "/samples/nab/data"}},
             {"synthetic_fraction", 0.5},
             {"warmup_skip", 16}}},
           {"output",
            {{"dir", dir / name},
             {"model", dir / (name + ".safetensors")},
             {"log_every", 30},
             {"checkpoint_every", 50},
             {"keep_checkpoints", 2},
             {"plot", false}}}};
    if (edit) edit(j);
    const std::string path = dir / (name + ".json");
    write_text(path, j.dump(2));
    return path;
  }
  TempDir dir;
};

TEST_F(SeriesTrainCli, TrainsAForecasterTheDetectorRuns) {
  const auto cfg = config("run");
  const Result r = run_ssm(train_args(cfg), dir / "");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  for (const char* want : {"synthetic series", "step 30/150", "step 150/150", "values/s", "ETA", "done: 150 steps"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << " not in:\n" << r.out;

  // Every step logged; the loss falls (means of the first and last 20
  // steps: about 2.4 -> 1.6 whatever the seed; real data keep it above 1).
  const auto loss = train_losses(dir / "run/metrics.jsonl");
  ASSERT_EQ(loss.size(), 150u);
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) first += loss[i], last += loss[130 + i];
  EXPECT_LT(last, 0.8 * first) << "first 20 " << first / 20 << ", last 20 " << last / 20;

  // The final weights go to output.model; the newest checkpoints are kept.
  EXPECT_FALSE(fs::exists(dir / "run/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "run/checkpoints/step-00000150.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "run/checkpoints/step-00000100.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "run/checkpoints/step-00000050.safetensors"));
  EXPECT_EQ(json::parse(read_text(dir / "run/config.json")), json::parse(read_text(cfg)));

  // The detector runs the model; a jump in a series scores higher than the
  // values before it.
  const auto f = ssm::Forecaster::load(dir / "run.safetensors");
  EXPECT_EQ(f->config().d_model, 8);
  ssm::Detector det(f, {});
  ssm::SeriesState st = det.new_series();
  double before = 0, at_jump = 0;
  for (int t = 0; t < 3000; ++t) {
    const double x = 10 + std::sin(t * 0.3) + (t >= 2900 ? 8 : 0);
    const double score = det.update(st, 1600000000 + 60 * t, x).score;
    ASSERT_TRUE(std::isfinite(score) && score >= 0 && score <= 1);
    if (t >= 2800 && t < 2900) before = std::max(before, score);
    if (t >= 2900 && t < 2905) at_jump = std::max(at_jump, score);
  }
  EXPECT_GT(at_jump, before);

  // The last checkpoint holds the model's weights.
  auto weights = [](const std::string& path) {
    const ssm::Model m = ssm::Model::load(path);
    return std::vector<float>(m.params().data(), m.params().data() + m.params().size());
  };
  EXPECT_EQ(weights(dir / "run/checkpoints/step-00000150.safetensors"), weights(dir / "run.safetensors"));
}

TEST_F(SeriesTrainCli, ResumeAfterStopAtGivesTheSameModel) {
  const Result whole = run_ssm(train_args(config("whole")), dir / "");
  ASSERT_EQ(whole.code, 0) << whole.out << whole.err;

  const auto cfg = config("parts");
  const Result first = run_ssm(train_args(cfg, "--stop-at 70"), dir / "");
  ASSERT_EQ(first.code, 0) << first.out << first.err;
  EXPECT_NE(first.out.find("stopped (--stop-at) at step 70"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("resume with: ssm train --config " + cfg + " --resume"), std::string::npos) << first.out;
  EXPECT_FALSE(fs::exists(dir / "parts.safetensors"));
  const Result rest = run_ssm(train_args(cfg, "--resume"), dir / "");
  ASSERT_EQ(rest.code, 0) << rest.out << rest.err;
  EXPECT_NE(rest.out.find("resumed from"), std::string::npos) << rest.out;
  EXPECT_EQ(read_text(dir / "parts.safetensors"), read_text(dir / "whole.safetensors"));
  EXPECT_EQ(train_losses(dir / "parts/metrics.jsonl"), train_losses(dir / "whole/metrics.jsonl"));

  // `ssm detect --train-config` is the same run.
  const Result detect = run_ssm("detect --train-config '" + config("detect") + "'", dir / "");
  ASSERT_EQ(detect.code, 0) << detect.out << detect.err;
  EXPECT_EQ(read_text(dir / "detect.safetensors"), read_text(dir / "whole.safetensors"));

  // --out sends everything, the model too, to another folder; --steps
  // shortens the run and is recorded in config.json and the model.
  const Result out = run_ssm(train_args(cfg, "--out '" + (dir / "elsewhere") + "' --steps 3"), dir / "");
  ASSERT_EQ(out.code, 0) << out.out << out.err;
  EXPECT_NE(out.out.find("training.warmup lowered from 10 to 3"), std::string::npos) << out.out;
  const auto meta = ssm::SafeTensors::read_file(dir / "elsewhere/model.safetensors").metadata();
  EXPECT_EQ(json::parse(meta.at("ssm.training"))["steps"], 3);
  EXPECT_EQ(json::parse(read_text(dir / "elsewhere/config.json"))["training"]["steps"], 3);
  EXPECT_EQ(read_text(dir / "parts.safetensors"), read_text(dir / "whole.safetensors"));  // untouched
}

TEST_F(SeriesTrainCli, ConfigErrorsStopBeforeTraining) {
  const Result no_dir = run_ssm(train_args(config("n", [](json& j) { j["output"].erase("dir"); })), dir / "");
  EXPECT_EQ(no_dir.code, 1);
  EXPECT_NE(no_dir.err.find("'output.dir' is not set"), std::string::npos) << no_dir.err;

  const Result key = run_ssm(train_args(config("k", [](json& j) { j["data"]["folder"] = "x"; })), dir / "");
  EXPECT_EQ(key.code, 1);
  EXPECT_NE(key.err.find("unknown key 'data.folder'"), std::string::npos) << key.err;

  // A model the detector cannot run is refused before anything is written.
  const Result shape =
      run_ssm(train_args(config("s", [](json& j) { j["model"]["block"] = "mamba1"; })), dir / "");
  EXPECT_EQ(shape.code, 1);
  EXPECT_NE(shape.err.find("forecaster: the model must be Mamba-2"), std::string::npos) << shape.err;
  EXPECT_FALSE(fs::exists(dir / "s"));

  const Result missing = run_ssm(
      train_args(config("m", [&](json& j) { j["data"]["folders"] = {dir / "no-such-folder"}; })), dir / "");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("no-such-folder' does not exist"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(dir / "m"));
}
