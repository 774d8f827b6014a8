// The ssm binary: every subcommand has --help with defaults, bad arguments
// give a clear message and a non-zero exit, and `ssm info` describes a model.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "ssm/model.hpp"
#include "testing.hpp"

namespace {

struct CliRun {
  int status;
  std::string output;  // stdout and stderr
};

// `env`: assignments put before the command ("LD_DEBUG=libs").
CliRun run_shell(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

CliRun run_ssm(const std::string& args, const std::string& env = "") {
  return run_shell(env + " " + std::string(SSM_BINARY_DIR) + "/apps/ssm " + args);
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// CPU-only work loads no CUDA library, in a CUDA build too: the CUDA backend
// is the module libssm_cuda.so, loaded at run time by the first GPU call
// (lib/cuda/module.hpp). LD_DEBUG=libs makes the dynamic loader name every
// library it loads.
TEST(Cli, CpuRunsLoadNoCudaLibrary) {
  const auto out = std::filesystem::temp_directory_path() / ("ssm_cli_nocuda_" + std::to_string(::getpid()) + ".wav");
  for (const std::string args : {std::string("--version"), "denoise -q " + std::string(SSM_SOURCE_DIR) +
                                                               "/samples/noisy_speech.flac " + out.string()}) {
    const CliRun r = run_ssm(args, "LD_DEBUG=libs");
    ASSERT_EQ(r.status, 0) << args << ": " << r.output;
    ASSERT_TRUE(contains(r.output, "calling init")) << "LD_DEBUG=libs traced nothing: " << r.output;
    for (const char* lib : {"libcudart", "libcublas", "libcufft", "libcuda.so", "libssm_cuda"})
      EXPECT_FALSE(contains(r.output, lib)) << "`ssm " << args << "` loaded " << lib << ":\n" << r.output;
  }
  std::filesystem::remove(out);
}

// The same for the library and the plugin: neither needs a CUDA library to load.
TEST(Cli, LibraryAndPluginNeedNoCudaLibrary) {
  int checked = 0;
  for (const char* rel : {"/lib/libssm.so", "/plugins/ladspa/ssm_denoise.so", "/apps/ssm"}) {
    const std::string file = std::string(SSM_BINARY_DIR) + rel;
    if (!std::filesystem::exists(file)) continue;  // not built in this configuration
    const CliRun r = run_shell("readelf -d " + file);
    ASSERT_EQ(r.status, 0) << r.output;
    ASSERT_TRUE(contains(r.output, "(NEEDED)")) << r.output;
    for (const char* lib : {"libcudart", "libcublas", "libcufft", "libcuda.so", "libssm_cuda"})
      EXPECT_FALSE(contains(r.output, lib)) << file << " needs " << lib << ":\n" << r.output;
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST(Cli, EverySubcommandHasHelp) {
  const CliRun root = run_ssm("--help");
  ASSERT_EQ(root.status, 0) << root.output;
  for (const char* sub : {"info", "train", "denoise", "detect", "eval", "bench", "modes"}) {
    EXPECT_TRUE(contains(root.output, sub)) << sub;
    const CliRun r = run_ssm(std::string(sub) + " --help");
    EXPECT_EQ(r.status, 0) << sub << ": " << r.output;
    EXPECT_TRUE(contains(r.output, "Usage")) << sub << ": " << r.output;
  }
  // Defaults are shown.
  EXPECT_TRUE(contains(run_ssm("bench core --help").output, "=16000")) << run_ssm("bench core --help").output;
}

TEST(Cli, BadArgumentsFailClearly) {
  const CliRun unknown = run_ssm("frobnicate");
  EXPECT_NE(unknown.status, 0);
  EXPECT_TRUE(contains(unknown.output, "frobnicate")) << unknown.output;
  const CliRun bad_value = run_ssm("bench core --repeats -3");
  EXPECT_NE(bad_value.status, 0);
  EXPECT_TRUE(contains(bad_value.output, "repeats")) << bad_value.output;
  const CliRun missing = run_ssm("info /nonexistent/model.safetensors");
  EXPECT_NE(missing.status, 0);
  EXPECT_TRUE(contains(missing.output, "/nonexistent/model.safetensors")) << missing.output;
}

TEST(Cli, InfoDescribesAModel) {
  ssm::ModelConfig cfg;
  cfg.d_model = 32;
  cfg.n_layers = 2;
  ssm::Model m(cfg);
  m.init(3);
  const auto path = std::filesystem::temp_directory_path() / ("ssm_cli_info_" + std::to_string(::getpid()) + ".safetensors");
  m.save(path);
  const CliRun r = run_ssm("info " + path.string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, std::to_string(m.num_params()))) << r.output;
  EXPECT_TRUE(contains(r.output, std::to_string(ssm::model_state_size(cfg)) + " floats")) << r.output;
  EXPECT_TRUE(contains(r.output, "\"d_model\": 32")) << r.output;
  std::filesystem::remove(path);
}

// Every usage error exits 2, whoever finds it (CLI11 or a command's own
// checks); a failure at run time (a missing file) exits 1.
TEST(Cli, UsageErrorsExitTwoAndRunTimeErrorsOne) {
  for (const char* args : {"frobnicate", "denoise", "denoise --no-such-flag", "denoise --block 0 a.wav b.wav",
                           "denoise --resample sloppy a.wav b.wav", "info", "denoise - out.wav --rate 16000 --channels 0",
                           "devices --host-api no-such-host-api"}) {
    const CliRun r = run_ssm(args);
    EXPECT_EQ(r.status, 2) << args << ": " << r.output;
  }
  const CliRun missing = run_ssm("denoise /nonexistent/in.wav /tmp/never.wav");
  EXPECT_EQ(missing.status, 1) << missing.output;
}

// `ssm devices --host-api` with a name no host API has: an error listing the
// ones there are, not an empty table with status 0.
TEST(Cli, DevicesWithAnUnknownHostApiNamesTheAvailableOnes) {
  const CliRun r = run_ssm("devices --host-api no-such-host-api");
  EXPECT_EQ(r.status, 2) << r.output;
#ifdef SSM_WITH_PORTAUDIO
  EXPECT_TRUE(contains(r.output, "'no-such-host-api' not found (available: ")) << r.output;
#endif
}

// `ssm info` of a sound file says what the file is and what info expects.
TEST(Cli, InfoOfASoundFileSaysItIsNotAModel) {
  const CliRun r = run_ssm(std::string("info ") + SSM_SOURCE_DIR "/samples/noisy_speech.flac");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "noisy_speech.flac' is a sound file (16000 Hz, 1 channel")) << r.output;
  EXPECT_TRUE(contains(r.output, "not a model")) << r.output;
}
