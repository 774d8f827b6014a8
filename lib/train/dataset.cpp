#include "ssm/dataset.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "ssm/audio_file.hpp"
#include "ssm/losses.hpp"
#include "ssm/noise.hpp"
#include "ssm/stoi.hpp"

namespace ssm {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// 64-bit FNV-1a of the file name without folder and extension, through a
// splitmix64 finaliser so that similar names spread over the whole range.
uint64_t name_hash(const std::string& path) {
  const std::string stem = fs::path(path).stem().string();
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : stem) h = (h ^ c) * 1099511628211ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

double unit_hash(const std::string& path) { return static_cast<double>(name_hash(path) >> 11) * 0x1.0p-53; }

int worker_count(int threads, size_t jobs) {
  size_t n = threads > 0 ? static_cast<size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::max<size_t>(1, std::min(n, jobs)));
}

// Runs job(i) for i < n on `threads` threads; each job catches its own errors.
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& job) {
  std::atomic<size_t> next{0};
  auto run = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) job(i);
  };
  std::vector<std::thread> pool;
  const int k = worker_count(threads, n);
  for (int t = 1; t < k; ++t) pool.emplace_back(run);
  run();
  for (auto& t : pool) t.join();
}

bool all_zero(const std::vector<float>& x) {
  return std::all_of(x.begin(), x.end(), [](float v) { return v == 0.0f; });
}

// Reads one file as mono at `rate`; on failure returns the reason.
std::string read_clip(const std::string& path, int rate, std::vector<float>& out) {
  try {
    out = read_mono(path, rate);
  } catch (const std::exception& e) {
    return e.what();
  }
  if (out.empty()) return "sound file '" + path + "' holds no samples at " + std::to_string(rate) + " Hz";
  if (all_zero(out)) return "sound file '" + path + "' is silent (every sample is 0)";
  return "";
}

// Path below `root` without the extension: the key pairs are matched by.
std::string pair_key(const std::string& path, const std::string& root) {
  fs::path rel = fs::path(path).lexically_relative(root);
  return rel.replace_extension().generic_string();
}

}  // namespace

// ---------------------------------------------------------------- files

bool is_sound_file_name(const std::string& path) {
  static const std::set<std::string> known = {"wav", "wave", "flac", "ogg", "oga",  "opus", "aif",
                                              "aiff", "aifc", "au",   "snd", "caf", "w64",  "rf64",
                                              "mp3",  "voc",  "paf",  "svx", "nist", "sph",  "sd2"};
  const std::string ext = fs::path(path).extension().string();
  return ext.size() > 1 && known.count(lower(ext.substr(1)));
}

std::vector<std::string> scan_sound_files(const std::string& folder) {
  std::error_code ec;
  if (fs::is_regular_file(folder, ec) && is_sound_file_name(folder)) return {folder};
  if (!fs::is_directory(folder, ec))
    fail("sound folder '" + folder + "' " + (fs::exists(folder, ec) ? "is not a folder" : "does not exist"));
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(folder, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) fail("cannot read sound folder '" + folder + "': " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) fail("cannot read sound folder '" + folder + "': " + ec.message());
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {  // hidden: editor and OS litter
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && is_sound_file_name(name)) files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

bool lies_within(const std::string& path, const std::string& root) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(path, ec), r = fs::weakly_canonical(root, ec);
  auto pi = p.begin();
  for (auto ri = r.begin(); ri != r.end(); ++ri, ++pi) {
    if (ri->empty() && std::next(ri) == r.end()) break;  // a trailing separator
    if (pi == p.end() || *pi != *ri) return false;
  }
  return true;
}

bool is_held_out(const std::string& path, double fraction) { return unit_hash(path) < fraction; }

void split_by_utterance(const std::vector<std::string>& files, double fraction, std::vector<std::string>& train,
                        std::vector<std::string>& held_out) {
  train.clear();
  held_out.clear();
  if (files.empty()) return;
  for (const auto& f : files) (is_held_out(f, fraction) ? held_out : train).push_back(f);
  if (fraction <= 0 || files.size() < 2) return;
  // A small folder can fall all on one side; move the file nearest the
  // threshold so that both sides have one (still a function of the names).
  auto by_hash = [](const std::string& a, const std::string& b) { return unit_hash(a) < unit_hash(b); };
  if (held_out.empty()) {
    auto it = std::min_element(train.begin(), train.end(), by_hash);
    held_out.push_back(*it);
    train.erase(it);
  } else if (train.empty()) {
    auto it = std::max_element(held_out.begin(), held_out.end(), by_hash);
    train.push_back(*it);
    held_out.erase(it);
  }
  auto order = [&](std::vector<std::string>& v) {
    std::vector<std::string> sorted;
    for (const auto& f : files)
      if (std::find(v.begin(), v.end(), f) != v.end()) sorted.push_back(f);
    v = std::move(sorted);
  };
  order(train);
  order(held_out);
}

std::vector<Clip> load_clips(const std::vector<std::string>& files, int rate, int threads, const WarnFn& warn) {
  std::vector<std::vector<float>> samples(files.size());  // each (n_i)
  std::vector<std::string> why(files.size());
  parallel_for(files.size(), threads, [&](size_t i) { why[i] = read_clip(files[i], rate, samples[i]); });
  std::vector<Clip> clips;
  for (size_t i = 0; i < files.size(); ++i) {
    if (!why[i].empty()) {
      if (warn) warn("skipped: " + why[i]);
      continue;
    }
    clips.push_back({files[i], std::move(samples[i])});
  }
  return clips;
}

std::vector<PairFiles> match_pairs(const PairFolders& folders, const WarnFn& warn) {
  std::map<std::string, std::string> noisy, clean;  // key -> file
  auto index = [&](const std::string& root, std::map<std::string, std::string>& out) {
    for (const auto& f : scan_sound_files(root)) {
      const std::string key = pair_key(f, root);
      if (!out.emplace(key, f).second && warn)
        warn("skipped: '" + f + "' has the same name as '" + out[key] + "' (pairs are matched by name)");
    }
  };
  index(folders.noisy, noisy);
  index(folders.clean, clean);
  std::vector<PairFiles> pairs;
  for (const auto& [key, file] : noisy) {
    auto it = clean.find(key);
    if (it == clean.end()) {
      if (warn) warn("skipped: noisy file '" + file + "' has no clean file of that name in '" + folders.clean + "'");
      continue;
    }
    pairs.push_back({key, file, it->second});
  }
  for (const auto& [key, file] : clean)
    if (!noisy.count(key) && warn)
      warn("skipped: clean file '" + file + "' has no noisy file of that name in '" + folders.noisy + "'");
  return pairs;
}

std::vector<ClipPair> load_pairs(const std::vector<PairFiles>& files, int rate, int threads, const WarnFn& warn) {
  std::vector<ClipPair> pairs(files.size());
  std::vector<std::string> why(files.size());
  parallel_for(files.size(), threads, [&](size_t i) {
    ClipPair& p = pairs[i];
    p.name = files[i].name;
    why[i] = read_clip(files[i].noisy, rate, p.noisy);
    if (why[i].empty()) why[i] = read_clip(files[i].clean, rate, p.clean);
    if (!why[i].empty()) return;
    const size_t a = p.noisy.size(), b = p.clean.size(), n = std::min(a, b);
    if (std::max(a, b) - n > std::max<size_t>(1, std::max(a, b) / 100)) {
      why[i] = "pair '" + files[i].noisy + "' / '" + files[i].clean + "' differs in length (" + std::to_string(a) +
               " and " + std::to_string(b) + " samples at " + std::to_string(rate) + " Hz)";
      return;
    }
    p.noisy.resize(n);
    p.clean.resize(n);
  });
  std::vector<ClipPair> out;
  for (size_t i = 0; i < files.size(); ++i) {
    if (!why[i].empty()) {
      if (warn) warn("skipped: " + why[i]);
      continue;
    }
    out.push_back(std::move(pairs[i]));
  }
  return out;
}

AudioData load_audio_data(const TrainConfig& cfg, int threads, const WarnFn& warn) {
  const int rate = cfg.model.sample_rate;
  const double fraction = cfg.validation.fraction;
  auto scan = [&](const std::vector<std::string>& folders, const std::string& key) {
    std::vector<std::string> files;
    for (const auto& folder : folders) {
      auto f = scan_sound_files(folder);
      if (f.empty() && warn) warn(key + " folder '" + folder + "' holds no sound files");
      files.insert(files.end(), f.begin(), f.end());
    }
    return files;
  };
  auto scan_pairs = [&](const std::vector<PairFolders>& folders) {
    std::vector<PairFiles> files;
    for (const auto& pf : folders) {
      auto p = match_pairs(pf, warn);
      files.insert(files.end(), p.begin(), p.end());
    }
    return files;
  };
  auto load = [&](const std::vector<std::string>& files, std::vector<Clip>& into, size_t& skipped) {
    auto clips = load_clips(files, rate, threads, warn);
    skipped += files.size() - clips.size();
    into.insert(into.end(), std::make_move_iterator(clips.begin()), std::make_move_iterator(clips.end()));
  };
  auto load_p = [&](const std::vector<PairFiles>& files, std::vector<ClipPair>& into, size_t& skipped) {
    auto pairs = load_pairs(files, rate, threads, warn);
    skipped += files.size() - pairs.size();
    into.insert(into.end(), std::make_move_iterator(pairs.begin()), std::make_move_iterator(pairs.end()));
  };
  auto folder_list = [](const std::vector<std::string>& folders) {
    std::string s;
    for (const auto& f : folders) s += (s.empty() ? "'" : ", '") + f + "'";
    return s;
  };

  // Files under a validation path are never trained on, so a training folder
  // may hold the validation speakers or noises (split by speaker, by noise).
  auto less_validation = [&](std::vector<std::string> files, const std::vector<std::string>& held) {
    std::erase_if(files, [&](const std::string& f) {
      return std::any_of(held.begin(), held.end(), [&](const std::string& h) { return lies_within(f, h); });
    });
    return files;
  };

  AudioData d;
  // Speech: split by utterance, then the validation-only folders.
  std::vector<std::string> speech_train, speech_held;
  split_by_utterance(less_validation(scan(cfg.data.speech, "data.speech"), cfg.validation.speech), fraction,
                     speech_train, speech_held);
  load(speech_train, d.train.speech, d.train.skipped);
  load(speech_held, d.validation.speech, d.validation.skipped);
  load(scan(cfg.validation.speech, "validation.speech"), d.validation.speech, d.validation.skipped);

  // Pairs: the same split by name.
  const auto pairs = scan_pairs(cfg.data.pairs);
  std::vector<std::string> names, names_train, names_held;
  for (const auto& p : pairs) names.push_back(p.name);
  split_by_utterance(names, fraction, names_train, names_held);
  std::vector<PairFiles> pairs_train, pairs_held;
  for (const auto& p : pairs)
    (std::find(names_held.begin(), names_held.end(), p.name) != names_held.end() ? pairs_held : pairs_train)
        .push_back(p);
  load_p(pairs_train, d.train.pairs, d.train.skipped);
  load_p(pairs_held, d.validation.pairs, d.validation.skipped);
  load_p(scan_pairs(cfg.validation.pairs), d.validation.pairs, d.validation.skipped);

  if (d.train.speech.empty() && d.train.pairs.empty()) {
    std::string where;
    if (!cfg.data.speech.empty()) where += " data.speech (" + folder_list(cfg.data.speech) + ")";
    if (!cfg.data.pairs.empty()) where += std::string(where.empty() ? "" : " or") + " data.pairs";
    fail("no usable training audio in" + where + ": " +
         (d.train.skipped == 0 ? std::string("no sound files found")
                               : std::to_string(d.train.skipped) + " file(s) skipped, see the warnings above"));
  }

  // Noise: not split (a few long recordings); validation draws other segments.
  size_t noise_skipped = 0;
  load(less_validation(scan(cfg.data.noise, "data.noise"), cfg.validation.noise), d.train.noise, noise_skipped);
  d.train.skipped += noise_skipped;
  if (!d.train.speech.empty() && cfg.data.mixer.weight_clip > 0 && d.train.noise.empty())
    fail("no usable noise clips in data.noise (" + folder_list(cfg.data.noise) + "): " +
         (noise_skipped == 0 ? std::string("no sound files found")
                             : std::to_string(noise_skipped) + " file(s) skipped, see the warnings above") +
         "; add noise files or set data.noise_kinds.clip to 0");
  if (!cfg.validation.noise.empty())
    load(scan(cfg.validation.noise, "validation.noise"), d.validation.noise, d.validation.skipped);
  else
    d.validation.noise = d.train.noise;
  return d;
}

// ---------------------------------------------------------------- examples

namespace {

std::vector<std::vector<float>> samples_of(std::vector<Clip>& clips) {
  std::vector<std::vector<float>> out;
  out.reserve(clips.size());
  for (auto& c : clips) out.push_back(std::move(c.samples));
  return out;
}

// Independent of the Mixer's random stream for the same (seed, index).
constexpr uint64_t kPairStream = 0x70a1d5e6c3b2f481ull;

}  // namespace

ExampleSource::ExampleSource(std::vector<Clip> speech, std::vector<Clip> noise, std::vector<ClipPair> pairs,
                             const MixerConfig& mixer, double pair_fraction, int rate)
    : pairs_(std::move(pairs)), mixer_config_(mixer), pair_fraction_(pair_fraction) {
  require(!speech.empty() || !pairs_.empty(), "training examples: no speech clips and no pairs");
  for (const auto& c : speech) speech_names_.push_back(c.path);
  if (!speech.empty()) mixer_.emplace(samples_of(speech), samples_of(noise), mixer, rate);
  for (const auto& p : pairs_)
    require(!p.noisy.empty() && p.noisy.size() == p.clean.size(),
            "training examples: pair '" + p.name + "' is empty or its two sides differ in length");
}

void ExampleSource::example(float* noisy, float* clean, int T, uint64_t seed, uint64_t index) const {
  require(T >= 1, "training examples: T must be >= 1, got " + std::to_string(T));
  NoiseRng rng(seed ^ kPairStream, index);
  const bool from_pair = !pairs_.empty() && (!mixer_ || rng.uniform() < pair_fraction_);
  if (!from_pair) {
    mixer_->example(noisy, clean, T, seed, index);
    return;
  }
  const ClipPair& p = pairs_[rng.below(pairs_.size())];
  const size_t n = static_cast<size_t>(T), len = p.noisy.size();
  std::fill(noisy, noisy + n, 0.0f);
  std::fill(clean, clean + n, 0.0f);
  if (len >= n) {
    const size_t start = rng.below(len - n + 1);
    std::copy_n(p.noisy.begin() + start, n, noisy);
    std::copy_n(p.clean.begin() + start, n, clean);
  } else {
    const size_t pad = rng.below(n - len + 1);
    std::copy(p.noisy.begin(), p.noisy.end(), noisy + pad);
    std::copy(p.clean.begin(), p.clean.end(), clean + pad);
  }
  // The level as the Mixer sets it: RMS of the noisy side, capped by peaks.
  const double level = rng.uniform(mixer_config_.level_min_dbfs, mixer_config_.level_max_dbfs);
  const double rms = std::sqrt(mean_square(noisy, n));
  double peak = 0;
  for (size_t t = 0; t < n; ++t) peak = std::max({peak, std::abs(double(noisy[t])), std::abs(double(clean[t]))});
  double gain = rms > 0 ? std::pow(10.0, level / 20) / rms : 1.0;
  if (gain * peak > mixer_config_.max_peak) gain = mixer_config_.max_peak / peak;
  for (size_t t = 0; t < n; ++t) {
    noisy[t] = static_cast<float>(gain * noisy[t]);
    clean[t] = static_cast<float>(gain * clean[t]);
  }
}

// ---------------------------------------------------------------- batches

AudioBatchSource::AudioBatchSource(std::shared_ptr<const ExampleSource> examples, int threads, int queue)
    : examples_(std::move(examples)), queue_(std::max(1, queue)) {
  require(examples_ != nullptr, "AudioBatchSource: no example source");
  require(threads >= 0, "AudioBatchSource: threads must be >= 0, got " + std::to_string(threads));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

AudioBatchSource::~AudioBatchSource() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void AudioBatchSource::fill(Ready& r, int B, int T, uint64_t seed, int64_t step) const {
  const size_t n = static_cast<size_t>(T);
  r.noisy.resize(static_cast<size_t>(B) * n);
  r.clean.resize(r.noisy.size());
  for (int b = 0; b < B; ++b)
    examples_->example(r.noisy.data() + b * n, r.clean.data() + b * n, T, seed,
                       static_cast<uint64_t>(step) * static_cast<uint64_t>(B) + static_cast<uint64_t>(b));
}

void AudioBatchSource::work() {
  std::unique_lock lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] { return stop_ || (planned_ && !error_ && next_ < want_ + queue_); });
    if (stop_) return;
    const int64_t step = next_++;
    const uint64_t generation = generation_;
    const int B = B_, T = T_;
    const uint64_t seed = seed_;
    lk.unlock();
    Ready r;
    std::exception_ptr error;
    try {
      fill(r, B, T, seed, step);
    } catch (...) {
      error = std::current_exception();
    }
    lk.lock();
    if (generation != generation_) continue;  // restarted meanwhile: the result is not wanted
    if (error)
      error_ = error;
    else
      ready_.emplace(step, std::move(r));
    ready_cv_.notify_all();
  }
}

void AudioBatchSource::batch(float* in, float* target, int B, int T, uint64_t seed, int64_t step) {
  require(B >= 1 && T >= 1 && step >= 0, "AudioBatchSource: need B >= 1, T >= 1 and step >= 0");
  const size_t n = static_cast<size_t>(B) * T;
  if (workers_.empty()) {
    Ready r;
    fill(r, B, T, seed, step);
    std::copy(r.noisy.begin(), r.noisy.end(), in);
    std::copy(r.clean.begin(), r.clean.end(), target);
    return;
  }
  std::unique_lock lk(mu_);
  if (!planned_ || B != B_ || T != T_ || seed != seed_ || step != want_) {
    ++generation_;
    ready_.clear();
    error_ = nullptr;
    planned_ = true;
    B_ = B, T_ = T, seed_ = seed, want_ = step, next_ = step;
    work_cv_.notify_all();
  }
  const auto t0 = std::chrono::steady_clock::now();
  ready_cv_.wait(lk, [&] { return error_ || ready_.count(step); });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto it = ready_.find(step);
  if (it == ready_.end()) {
    const std::exception_ptr e = error_;
    planned_ = false;  // the next call starts afresh
    std::rethrow_exception(e);
  }
  Ready r = std::move(it->second);
  ready_.erase(it);
  want_ = step + 1;
  lk.unlock();
  work_cv_.notify_all();
  std::copy_n(r.noisy.begin(), n, in);
  std::copy_n(r.clean.begin(), n, target);
}

// ---------------------------------------------------------------- validation

std::vector<ValidationItem> make_validation_set(const AudioSet& held_out, const TrainConfig& cfg) {
  std::vector<ValidationItem> items;
  const auto& v = cfg.validation;
  const int rate = cfg.model.sample_rate;
  const int T = std::max(1, static_cast<int>(std::lround(v.seconds * rate)));
  if (v.mixtures > 0 && !held_out.speech.empty()) {
    // The training mix, less what the held-out set cannot feed.
    MixerConfig m = cfg.data.mixer;
    m.snr_min_db = v.snr_min_db;
    m.snr_max_db = v.snr_max_db;
    // Held-out speakers as they spoke, in plain additive mixtures: scores stay
    // comparable across configs.
    m.speed_min = m.speed_max = 1;
    m.silence_prob = m.noise_only_prob = m.reverb_prob = m.eq_prob = m.clipping_prob = m.codec_prob = 0;
    if (held_out.noise.empty()) m.weight_clip = 0;
    if (held_out.speech.size() < 2) m.weight_babble = 0;
    // Held-out noise recordings, when the config names them, are the whole
    // noise of the validation mixtures: the synthesized kinds are easy, and a
    // score half made of them overstates how a model does on unheard noise.
    if (!cfg.validation.noise.empty() && !held_out.noise.empty()) {
      m.weight_clip = 1;
      m.weight_white = m.weight_pink = m.weight_brown = m.weight_hum = m.weight_fan = m.weight_babble = 0;
    }
    if (m.weight_clip + m.weight_white + m.weight_pink + m.weight_brown + m.weight_hum + m.weight_fan +
            m.weight_babble <=
        0)
      m.weight_white = 1;
    std::vector<std::vector<float>> speech, noise;
    for (const auto& c : held_out.speech) speech.push_back(c.samples);
    for (const auto& c : held_out.noise) noise.push_back(c.samples);
    const Mixer mixer(std::move(speech), std::move(noise), m, rate);
    // Examples that drew a silent stretch of speech have nothing to score;
    // the next index is taken instead (still a function of the config).
    for (uint64_t index = 0; items.size() < static_cast<size_t>(v.mixtures) && index < 10u * v.mixtures; ++index) {
      ValidationItem it;
      it.noisy.resize(T);
      it.clean.resize(T);
      const MixInfo info = mixer.example(it.noisy.data(), it.clean.data(), T, v.seed, index);
      if (active_mean_square(it.clean.data(), T, rate) == 0) continue;
      it.name = "mixture " + std::to_string(index) + " (" + held_out.speech[info.speech_clip].path + " + " +
                noise_source_name(info.noise) + ")";
      items.push_back(std::move(it));
    }
  }
  for (const auto& p : held_out.pairs) {
    const size_t n = std::min(p.noisy.size(), static_cast<size_t>(T));
    items.push_back({"pair " + p.name, std::vector<float>(p.noisy.begin(), p.noisy.begin() + n),
                     std::vector<float>(p.clean.begin(), p.clean.begin() + n)});
  }
  return items;
}

ValidationMetrics validate_denoiser(const Model& model, const std::vector<ValidationItem>& items, bool with_stoi) {
  const ModelConfig& mc = model.config();
  const int d = mc.lookahead;
  // Items in parallel, one graph per thread; the sums run in item order so
  // the metrics do not depend on the thread count.
  struct Scores {
    bool scored = false, with_stoi = false;
    double si_sdr_noisy = 0, si_sdr_denoised = 0, stoi_noisy = 0, stoi_denoised = 0;
  };
  std::vector<Scores> scores(items.size());
#pragma omp parallel
  {
    ModelGraph<float> graph(mc, model.table());
    std::vector<float> out;  // (n)
#pragma omp for schedule(dynamic, 1)
    for (size_t i = 0; i < items.size(); ++i) {
      const ValidationItem& it = items[i];
      // Whole frames only: the model reads a frame at a time.
      const int n = static_cast<int>(it.noisy.size() - it.noisy.size() % mc.frame);
      if (n - d < 1) continue;
      out.resize(n);
      graph.forward(out.data(), it.noisy.data(), model.params().data(), 1, n);
      const LossDims dims{1, n - d};
      Scores& s = scores[i];
      si_sdr(&s.si_sdr_noisy, it.noisy.data(), it.clean.data(), dims);
      si_sdr(&s.si_sdr_denoised, out.data() + d, it.clean.data(), dims);
      s.scored = true;
      if (with_stoi) {
        try {
          s.stoi_noisy = stoi(it.clean.data(), it.noisy.data(), n - d, mc.sample_rate);
          s.stoi_denoised = stoi(it.clean.data(), out.data() + d, n - d, mc.sample_rate);
          s.with_stoi = true;
        } catch (const Error&) {
          // Too short or too quiet for STOI's 30 frames: scored by SI-SDR only.
        }
      }
    }
  }
  ValidationMetrics m;
  for (const Scores& s : scores) {
    if (!s.scored) continue;
    m.si_sdr_noisy += s.si_sdr_noisy;
    m.si_sdr_denoised += s.si_sdr_denoised;
    ++m.items;
    if (s.with_stoi) {
      m.stoi_noisy += s.stoi_noisy;
      m.stoi_denoised += s.stoi_denoised;
      ++m.stoi_items;
    }
  }
  if (m.items > 0) {
    m.si_sdr_noisy /= m.items;
    m.si_sdr_denoised /= m.items;
    m.si_sdr_improvement = m.si_sdr_denoised - m.si_sdr_noisy;
  }
  if (m.stoi_items > 0) {
    m.stoi_noisy /= m.stoi_items;
    m.stoi_denoised /= m.stoi_items;
  }
  return m;
}

}  // namespace ssm
