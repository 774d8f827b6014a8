// Training data from folders of sound files: scanning, loading with bad
// files skipped and named, the split by utterance, pairs matched by name,
// examples and batches as pure functions of (seed, index) whatever the
// loader threads do, and the held-out set with its metrics.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "ssm/audio_file.hpp"
#include "ssm/dataset.hpp"
#include "ssm/losses.hpp"
#include "testing.hpp"

namespace fs = std::filesystem;
using namespace ssm;

namespace {

using ssm::testing::TempDir;

std::vector<float> tone(size_t n, double hz, int rate, double amp = 0.3) {
  std::vector<float> x(n);
  for (size_t t = 0; t < n; ++t) x[t] = static_cast<float>(amp * std::sin(2 * M_PI * hz * t / rate));
  return x;
}

void write_tone(const std::string& path, size_t n, double hz, int rate) {
  fs::create_directories(fs::path(path).parent_path());
  const auto x = tone(n, hz, rate);
  write_audio(path, x.data(), x.size(), rate, 1, /*float_wav=*/true);
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

struct Warnings {
  std::vector<std::string> lines;
  WarnFn fn() {
    return [this](const std::string& w) { lines.push_back(w); };
  }
  bool any_names(const std::string& file) const {
    for (const auto& l : lines)
      if (l.find(file) != std::string::npos) return true;
    return false;
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Dataset, ScanFindsSoundFilesRecursivelySortedAndSkipsHiddenAndOthers) {
  TempDir dir;
  write_tone(dir / "a/zeta.wav", 100, 440, 16000);
  write_tone(dir / "a/sub/beta.flac", 100, 440, 16000);
  write_tone(dir / "a/sub/deeper/Gamma.WAV", 100, 440, 16000);
  write_tone(dir / "a/.hidden.wav", 100, 440, 16000);
  write_tone(dir / "a/.cache/inside.wav", 100, 440, 16000);
  write_text(dir / "a/README.txt", "not sound");
  const auto files = scan_sound_files(dir / "a");
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0], dir / "a/sub/beta.flac");
  EXPECT_EQ(files[1], dir / "a/sub/deeper/Gamma.WAV");
  EXPECT_EQ(files[2], dir / "a/zeta.wav");

  EXPECT_NE(error_of([&] { scan_sound_files(dir / "missing"); }).find("missing' does not exist"), std::string::npos);
  EXPECT_NE(error_of([&] { scan_sound_files(dir / "a/README.txt"); }).find("is not a folder"), std::string::npos);
  EXPECT_TRUE(is_sound_file_name("x.ogg"));
  EXPECT_TRUE(is_sound_file_name("x.AIFF"));
  EXPECT_FALSE(is_sound_file_name("x.txt"));
  EXPECT_FALSE(is_sound_file_name("wav"));
}

TEST(Dataset, LoadSkipsUnusableFilesNamingThemAndConvertsTheRest) {
  TempDir dir;
  const int rate = 16000;
  write_tone(dir / "good.wav", 1600, 300, rate);
  write_text(dir / "corrupt.wav", "RIFF this is not a wave file at all");
  write_audio(dir / "empty.wav", nullptr, 0, rate);
  const std::vector<float> zeros(800, 0.0f);
  write_audio(dir / "silent.wav", zeros.data(), zeros.size(), rate);
  // Stereo: the mean of the channels.
  std::vector<float> stereo(2 * 1000);  // (frames, 2)
  for (size_t t = 0; t < 1000; ++t) stereo[2 * t] = 0.5f, stereo[2 * t + 1] = -0.25f;
  write_audio(dir / "stereo.wav", stereo.data(), 1000, rate, 2, /*float_wav=*/true);
  // Another rate: resampled on load.
  write_tone(dir / "slow.flac", 8000, 200, 8000);

  Warnings w;
  const auto clips = load_clips(scan_sound_files(dir / ""), rate, 3, w.fn());
  ASSERT_EQ(clips.size(), 3u);
  EXPECT_EQ(clips[0].path, dir / "good.wav");
  EXPECT_EQ(clips[0].samples.size(), 1600u);
  EXPECT_EQ(clips[1].path, dir / "slow.flac");
  EXPECT_NEAR(static_cast<double>(clips[1].samples.size()), 16000.0, 2.0);
  EXPECT_EQ(clips[2].path, dir / "stereo.wav");
  EXPECT_NEAR(clips[2].samples[500], 0.125f, 1e-6);
  ASSERT_EQ(w.lines.size(), 3u);
  EXPECT_TRUE(w.any_names("corrupt.wav"));
  EXPECT_TRUE(w.any_names("empty.wav"));
  EXPECT_TRUE(w.any_names("silent.wav"));
  for (const auto& l : w.lines) EXPECT_EQ(l.rfind("skipped: ", 0), 0u) << l;

  // The same result on one thread (order and content do not depend on it).
  Warnings w1;
  const auto again = load_clips(scan_sound_files(dir / ""), rate, 1, w1.fn());
  ASSERT_EQ(again.size(), clips.size());
  for (size_t i = 0; i < clips.size(); ++i) EXPECT_EQ(again[i].samples, clips[i].samples);
  EXPECT_EQ(w1.lines, w.lines);
}

TEST(Dataset, SplitByUtteranceIsStableAndKeepsBothSidesNonEmpty) {
  std::vector<std::string> names;
  for (int i = 0; i < 400; ++i) names.push_back("spk/utt" + std::to_string(i) + ".flac");
  std::vector<std::string> train, held;
  split_by_utterance(names, 0.25, train, held);
  EXPECT_EQ(train.size() + held.size(), names.size());
  EXPECT_GT(held.size(), 60u);
  EXPECT_LT(held.size(), 140u);
  for (const auto& f : held) {
    EXPECT_TRUE(is_held_out(f, 0.25));
    // By the file name alone: another folder or extension lands on the same side.
    EXPECT_TRUE(is_held_out("other/place/" + fs::path(f).stem().string() + ".wav", 0.25));
  }
  // A larger fraction holds out a superset.
  std::vector<std::string> train2, held2;
  split_by_utterance(names, 0.5, train2, held2);
  for (const auto& f : held) EXPECT_NE(std::find(held2.begin(), held2.end(), f), held2.end());

  split_by_utterance(names, 0.0, train, held);
  EXPECT_TRUE(held.empty());
  EXPECT_EQ(train, names);

  // Three files and a small fraction: still one held out, order kept.
  const std::vector<std::string> three{"a.wav", "b.wav", "c.wav"};
  split_by_utterance(three, 0.01, train, held);
  EXPECT_EQ(held.size(), 1u);
  EXPECT_EQ(train.size(), 2u);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  split_by_utterance(three, 0.99, train, held);
  EXPECT_EQ(train.size(), 1u);
  split_by_utterance({"only.wav"}, 0.5, train, held);
  EXPECT_EQ(train.size() + held.size(), 1u);
}

TEST(Dataset, PairsAreMatchedByNameAndChecked) {
  TempDir dir;
  const int rate = 16000;
  write_tone(dir / "noisy/a.wav", 1000, 300, rate);
  write_tone(dir / "noisy/sub/b.wav", 1000, 300, rate);
  write_tone(dir / "noisy/c.wav", 1000, 300, rate);
  write_tone(dir / "noisy/long.wav", 1000, 300, rate);
  write_tone(dir / "clean/a.flac", 1000, 300, rate);
  write_tone(dir / "clean/sub/b.wav", 995, 300, rate);  // within 1%: cut to the shorter
  write_tone(dir / "clean/d.wav", 1000, 300, rate);
  write_tone(dir / "clean/long.wav", 1500, 300, rate);
  Warnings w;
  const auto files = match_pairs({dir / "noisy", dir / "clean"}, w.fn());
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].name, "a");
  EXPECT_EQ(files[1].name, "long");
  EXPECT_EQ(files[2].name, "sub/b");
  EXPECT_TRUE(w.any_names("noisy/c.wav"));
  EXPECT_TRUE(w.any_names("clean/d.wav"));
  EXPECT_EQ(w.lines.size(), 2u);

  Warnings w2;
  const auto pairs = load_pairs(files, rate, 2, w2.fn());
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].name, "a");
  EXPECT_EQ(pairs[1].name, "sub/b");
  EXPECT_EQ(pairs[1].noisy.size(), 995u);
  EXPECT_EQ(pairs[1].clean.size(), 995u);
  ASSERT_EQ(w2.lines.size(), 1u);
  EXPECT_NE(w2.lines[0].find("long.wav"), std::string::npos);
  EXPECT_NE(w2.lines[0].find("differs in length"), std::string::npos);
}

namespace {

std::vector<Clip> tone_clips(int count, size_t n, int rate) {
  std::vector<Clip> c;
  for (int i = 0; i < count; ++i) c.push_back({"tone" + std::to_string(i), tone(n, 150.0 + 70 * i, rate)});
  return c;
}

std::vector<Clip> noise_clips(size_t n, uint64_t seed) {
  std::vector<float> x(n);
  white_noise(x.data(), n, seed);
  return {{"noise", x}};
}

}  // namespace

TEST(Dataset, ExamplesArePureFunctionsOfSeedAndIndex) {
  const int rate = 8000, T = 700;
  // The pair's clean side is half its noisy side, so a pair example keeps that ratio.
  ClipPair p{"p", tone(2000, 500, rate), {}};
  for (float v : p.noisy) p.clean.push_back(0.5f * v);
  ExampleSource ex(tone_clips(3, 1500, rate), noise_clips(3000, 7), {p}, MixerConfig{}, 0.5, rate);
  std::vector<float> n1(T), c1(T), n2(T), c2(T);
  int from_pair = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    ex.example(n1.data(), c1.data(), T, 11, i);
    ex.example(n2.data(), c2.data(), T, 11, i);
    EXPECT_EQ(n1, n2);
    EXPECT_EQ(c1, c2);
    bool ratio = true;
    for (int t = 0; t < T; ++t) ratio = ratio && std::abs(c1[t] - 0.5f * n1[t]) <= 1e-6f * (1 + std::abs(n1[t]));
    from_pair += ratio;
    for (int t = 0; t < T; ++t) ASSERT_LE(std::abs(n1[t]), MixerConfig{}.max_peak + 1e-6);
  }
  EXPECT_GT(from_pair, 8);   // about half of 40
  EXPECT_LT(from_pair, 32);
  ex.example(n2.data(), c2.data(), T, 12, 39);
  EXPECT_NE(n1, n2);  // another seed, another example

  // Pairs only (no speech): every example is cut from a pair.
  ExampleSource pairs_only({}, {}, {p}, MixerConfig{}, 0.0, rate);
  pairs_only.example(n1.data(), c1.data(), T, 1, 5);
  for (int t = 0; t < T; ++t) EXPECT_NEAR(c1[t], 0.5f * n1[t], 1e-6);
}

TEST(Dataset, BatchesDoNotDependOnLoaderThreadsOrRequestOrder) {
  const int rate = 8000, B = 3, T = 400;
  auto ex = std::make_shared<const ExampleSource>(tone_clips(4, 1000, rate), noise_clips(2000, 3),
                                                  std::vector<ClipPair>{}, MixerConfig{}, 0.0, rate);
  AudioBatchSource direct(ex, 0, 1), threaded(ex, 3, 2);
  std::vector<float> in1(B * T), tg1(B * T), in2(B * T), tg2(B * T);
  for (int64_t step = 0; step < 12; ++step) {
    direct.batch(in1.data(), tg1.data(), B, T, 5, step);
    threaded.batch(in2.data(), tg2.data(), B, T, 5, step);
    ASSERT_EQ(in1, in2) << "step " << step;
    ASSERT_EQ(tg1, tg2) << "step " << step;
  }
  // Item b of step s is example s * B + b.
  std::vector<float> n(T), c(T);
  ex->example(n.data(), c.data(), T, 5, 11 * B + 2);
  EXPECT_TRUE(std::equal(n.begin(), n.end(), in1.begin() + 2 * T));
  EXPECT_TRUE(std::equal(c.begin(), c.end(), tg1.begin() + 2 * T));
  // A jump back (a resumed run) and another batch shape restart the pipeline.
  direct.batch(in1.data(), tg1.data(), B, T, 5, 4);
  threaded.batch(in2.data(), tg2.data(), B, T, 5, 4);
  EXPECT_EQ(in1, in2);
  std::vector<float> in3(2 * 200), tg3(2 * 200), in4(2 * 200), tg4(2 * 200);
  direct.batch(in3.data(), tg3.data(), 2, 200, 6, 100);
  threaded.batch(in4.data(), tg4.data(), 2, 200, 6, 100);
  EXPECT_EQ(in3, in4);
  EXPECT_EQ(tg3, tg4);
  EXPECT_NE(error_of([&] { threaded.batch(in4.data(), tg4.data(), 0, 200, 6, 0); }), "");
}

TEST(Dataset, LoadAudioDataSplitsAndReportsEmptyOrUnusableFolders) {
  TempDir dir;
  const int rate = 8000;
  for (int i = 0; i < 6; ++i) write_tone(dir / ("speech/u" + std::to_string(i) + ".wav"), 4000, 200 + 50 * i, rate);
  write_text(dir / "speech/broken.flac", "garbage");
  std::vector<float> nz(8000);
  white_noise(nz.data(), nz.size(), 1);
  for (auto& v : nz) v *= 0.1f;
  fs::create_directories(dir / "noise");
  write_audio(dir / "noise/n.wav", nz.data(), nz.size(), rate, 1, true);
  fs::create_directories(dir / "empty");

  TrainConfig cfg;
  cfg.model.sample_rate = rate;
  cfg.data.speech = {dir / "speech"};
  cfg.data.noise = {dir / "noise"};
  cfg.validation.fraction = 0.3;
  Warnings w;
  const AudioData d = load_audio_data(cfg, 2, w.fn());
  EXPECT_EQ(d.train.speech.size() + d.validation.speech.size(), 6u);
  EXPECT_GE(d.validation.speech.size(), 1u);
  EXPECT_GE(d.train.speech.size(), 1u);
  for (const auto& c : d.validation.speech) EXPECT_TRUE(is_held_out(c.path, 0.3) || d.validation.speech.size() == 1);
  EXPECT_EQ(d.train.skipped + d.validation.skipped, 1u);  // on whichever side its name fell
  EXPECT_TRUE(w.any_names("broken.flac"));
  ASSERT_EQ(d.validation.noise.size(), 1u);  // the training noise, for lack of validation noise
  EXPECT_EQ(d.validation.noise[0].samples, d.train.noise[0].samples);

  cfg.data.speech = {dir / "empty"};
  std::string e = error_of([&] { load_audio_data(cfg, 1, nullptr); });
  EXPECT_NE(e.find("no usable training audio"), std::string::npos) << e;
  EXPECT_NE(e.find(dir / "empty"), std::string::npos) << e;
  EXPECT_NE(e.find("no sound files found"), std::string::npos) << e;

  fs::create_directories(dir / "bad");
  write_text(dir / "bad/x.wav", "x");
  cfg.data.speech = {dir / "bad"};
  e = error_of([&] { load_audio_data(cfg, 1, nullptr); });
  EXPECT_NE(e.find("1 file(s) skipped"), std::string::npos) << e;

  cfg.data.speech = {dir / "speech"};
  cfg.data.noise = {dir / "empty"};
  e = error_of([&] { load_audio_data(cfg, 1, nullptr); });
  EXPECT_NE(e.find("no usable noise clips in data.noise"), std::string::npos) << e;
  cfg.data.mixer.weight_clip = 0;  // synthesized noise only: fine
  EXPECT_NO_THROW(load_audio_data(cfg, 1, nullptr));
}

TEST(Dataset, ValidationSetIsFixedAndScored) {
  const int rate = 8000;
  AudioSet held;
  held.speech = tone_clips(2, 12000, rate);
  held.noise = noise_clips(8000, 9);
  ClipPair p{"pair", tone(20000, 700, rate), tone(20000, 700, rate)};
  for (size_t t = 0; t < p.noisy.size(); t += 3) p.noisy[t] += 0.05f;
  held.pairs.push_back(p);
  TrainConfig cfg;
  cfg.model.sample_rate = rate;
  cfg.model.d_model = 16;
  cfg.model.n_layers = 1;
  cfg.model.head_dim = 8;
  cfg.model.d_state = 8;
  cfg.model.chunk = 32;
  cfg.model.lookahead = 3;
  cfg.validation.mixtures = 3;
  cfg.validation.seconds = 1.0;
  const auto items = make_validation_set(held, cfg);
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[3].name, "pair pair");
  EXPECT_EQ(items[3].noisy.size(), 8000u);  // cut to `seconds`
  const auto again = make_validation_set(held, cfg);
  for (size_t i = 0; i < items.size(); ++i) {
    EXPECT_EQ(items[i].noisy, again[i].noisy);
    EXPECT_EQ(items[i].clean, again[i].clean);
    EXPECT_EQ(items[i].noisy.size(), 8000u);
  }

  Model model(cfg.model);
  model.init(1);
  const ValidationMetrics m = validate_denoiser(model, items, /*with_stoi=*/true);
  EXPECT_EQ(m.items, 4u);
  // The noisy score is SI-SDR over the span the lookahead leaves.
  double expect_noisy = 0;
  for (const auto& it : items) {
    double db = 0;
    si_sdr(&db, it.noisy.data(), it.clean.data(), LossDims{1, static_cast<int>(it.noisy.size()) - 3});
    expect_noisy += db / items.size();
  }
  EXPECT_NEAR(m.si_sdr_noisy, expect_noisy, 1e-9);
  EXPECT_TRUE(std::isfinite(m.si_sdr_denoised));
  EXPECT_NEAR(m.si_sdr_improvement, m.si_sdr_denoised - m.si_sdr_noisy, 1e-12);
  EXPECT_EQ(m.stoi_items, 4u);
  // Tones are not speech: only the range of a correlation is certain.
  EXPECT_TRUE(m.stoi_noisy >= -1 && m.stoi_noisy <= 1) << m.stoi_noisy;
  EXPECT_TRUE(m.stoi_denoised >= -1 && m.stoi_denoised <= 1) << m.stoi_denoised;
  const ValidationMetrics no_stoi = validate_denoiser(model, items, false);
  EXPECT_EQ(no_stoi.stoi_items, 0u);
  // The same items and weights: equal up to float rounding, since a threaded
  // BLAS may split a product differently from one run to the next.
  EXPECT_NEAR(no_stoi.si_sdr_denoised, m.si_sdr_denoised, 1e-6 * std::abs(m.si_sdr_denoised));
}

TEST(Dataset, ValidationPathsAreNeverTrainedOn) {
  TempDir dir;
  const int rate = 8000;
  for (const char* spk : {"spk_a", "spk_b", "spk_c"})
    for (int i = 0; i < 3; ++i)
      write_tone(dir / ("speech/" + std::string(spk) + "/u" + std::to_string(i) + ".wav"), 4000, 200 + 50 * i, rate);
  for (const char* n : {"rain", "bus"}) write_tone(dir / ("noise/" + std::string(n) + ".wav"), 8000, 90, rate);
  TrainConfig cfg;
  cfg.model.sample_rate = rate;
  cfg.data.speech = {dir / "speech"};
  cfg.data.noise = {dir / "noise"};
  cfg.validation.fraction = 0;
  // A folder and a single file, spelled differently from the scanned root.
  cfg.validation.speech = {dir / "speech/./spk_b/"};
  cfg.validation.noise = {dir / "noise/../noise/bus.wav"};
  const AudioData d = load_audio_data(cfg, 1, nullptr);
  ASSERT_EQ(d.train.speech.size(), 6u);
  for (const auto& c : d.train.speech) EXPECT_EQ(c.path.find("spk_b"), std::string::npos) << c.path;
  ASSERT_EQ(d.validation.speech.size(), 3u);
  for (const auto& c : d.validation.speech) EXPECT_NE(c.path.find("spk_b"), std::string::npos) << c.path;
  ASSERT_EQ(d.train.noise.size(), 1u);
  EXPECT_NE(d.train.noise[0].path.find("rain"), std::string::npos);
  ASSERT_EQ(d.validation.noise.size(), 1u);
  EXPECT_NE(d.validation.noise[0].path.find("bus"), std::string::npos);
  EXPECT_TRUE(lies_within(dir / "speech/spk_b/u0.wav", dir / "speech/spk_b"));
  EXPECT_FALSE(lies_within(dir / "speech/spk_bb/u0.wav", dir / "speech/spk_b"));
  EXPECT_FALSE(lies_within(dir / "speech", dir / "speech/spk_b"));
  // Validation mixtures draw their noise from the held-out recordings only.
  cfg.validation.mixtures = 12;
  cfg.validation.seconds = 0.4;
  const auto items = make_validation_set(d.validation, cfg);
  size_t mixtures = 0;
  for (const auto& it : items) {
    if (it.name.rfind("mixture", 0) != 0) continue;
    ++mixtures;
    EXPECT_NE(it.name.find("+ clip)"), std::string::npos) << it.name;
  }
  EXPECT_EQ(mixtures, 12u);
}
