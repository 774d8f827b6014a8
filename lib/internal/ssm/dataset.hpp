// Training data for the denoiser from folders of sound files: scanning,
// loading (mono, resampled to the model rate), the held-out split by
// utterance, training examples as a pure function of (seed, index), the
// BatchSource that makes batches ahead on background threads, and the fixed
// held-out set with its denoising metrics.
//
// Unusable files (unreadable, not a sound file, empty, silent, non-finite
// samples) are skipped with a warning that names the file; running out of
// usable files is an error.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ssm/mixer.hpp"
#include "ssm/model.hpp"
#include "ssm/train_config.hpp"
#include "ssm/trainer.hpp"

namespace ssm {

// Receives each warning (one line, naming the file).
using WarnFn = std::function<void(const std::string&)>;

// ---------------------------------------------------------------- files

// True for the extensions of the formats libsndfile reads (wav, flac, ogg,
// aiff, ...; case-insensitive).
bool is_sound_file_name(const std::string& path);

// Sound files below `folder`, recursively, sorted by path; hidden files and
// folders (".name") and files of other extensions are left out; a sound file
// given itself is a list of one. Throws ssm::Error naming the folder when it
// is missing or unreadable.
std::vector<std::string> scan_sound_files(const std::string& folder);

// The held-out side of the split by utterance: a hash of the file name
// (without folder and extension) below `fraction`. Stable: the same name
// always lands on the same side.
bool is_held_out(const std::string& path, double fraction);

// Whether `path` is `root` or lies below it (both made canonical first, so
// differently spelled paths to one file agree).
bool lies_within(const std::string& path, const std::string& root);

// Splits `files` by is_held_out; when both sides could be non-empty but one
// is empty, the file with the smallest (largest) hash moves over so that
// neither is. Order is kept.
void split_by_utterance(const std::vector<std::string>& files, double fraction, std::vector<std::string>& train,
                        std::vector<std::string>& held_out);

struct Clip {
  std::string path;
  std::vector<float> samples;  // (n) mono at the model rate
};

struct ClipPair {
  std::string name;          // the matching key: path below the folder, no extension
  std::vector<float> noisy;  // (n) mono at the model rate
  std::vector<float> clean;  // (n)
};

// Reads `files` on `threads` threads (0 = one per core) as mono at `rate`.
// The result is in the order of `files`, less the skipped ones; warnings
// come in that order too.
std::vector<Clip> load_clips(const std::vector<std::string>& files, int rate, int threads, const WarnFn& warn);

// Noisy and clean files matched by their path below their folders, without
// the extension. Unmatched files and pairs whose lengths differ by more than
// 1% (after resampling) are skipped with a warning; smaller differences are
// cut to the shorter. Sorted by name.
struct PairFiles {
  std::string name, noisy, clean;
};
std::vector<PairFiles> match_pairs(const PairFolders& folders, const WarnFn& warn);
std::vector<ClipPair> load_pairs(const std::vector<PairFiles>& files, int rate, int threads, const WarnFn& warn);

// ---------------------------------------------------------------- examples

// Clean speech, noise and pairs of one side of the split.
struct AudioSet {
  std::vector<Clip> speech;
  std::vector<Clip> noise;
  std::vector<ClipPair> pairs;
  size_t skipped = 0;  // files left out with a warning
};

struct AudioData {
  AudioSet train;
  AudioSet validation;  // the held-out utterances and the validation folders
};

// Scans and loads every folder of the config. Speech and pairs are split by
// utterance (validation.fraction); validation.speech / .pairs are added to
// the held-out side; validation noise is validation.noise when given, else
// the training noise. Files that lie within a validation.speech or
// validation.noise path are left out of training (a split by speaker and by
// noise recording with one root folder for each). Throws ssm::Error when no usable training speech or
// pairs are left, or no noise although data.noise_kinds.clip > 0.
AudioData load_audio_data(const TrainConfig& cfg, int threads, const WarnFn& warn);

// Training examples: (noisy, clean) of T samples, a pure function of
// (seed, index). With pairs present, an example is cut from a pair with
// probability pair_fraction (1 without speech), else mixed by the Mixer.
// A pair example is a uniform T-sample segment of the pair (or the whole
// pair at a uniform offset, zeros around it) at a level uniform in the
// mixer's level range, lowered so that no sample exceeds max_peak.
class ExampleSource {
 public:
  // Throws ssm::Error (the Mixer's) on an invalid mixer config or clips.
  ExampleSource(std::vector<Clip> speech, std::vector<Clip> noise, std::vector<ClipPair> pairs,
                const MixerConfig& mixer, double pair_fraction, int rate);

  // Thread-safe.
  void example(float* noisy,  // (T)
               float* clean,  // (T)
               int T, uint64_t seed, uint64_t index) const;

  size_t speech_clips() const { return speech_names_.size(); }
  size_t pairs() const { return pairs_.size(); }

 private:
  std::vector<std::string> speech_names_;
  std::optional<Mixer> mixer_;  // absent without speech
  std::vector<ClipPair> pairs_;
  MixerConfig mixer_config_;
  double pair_fraction_;
};

// Batches for the Trainer: item b of step s is example s * B + b, so a batch
// depends on (seed, step) only. `threads` background threads make up to
// `queue` batches ahead of the last one asked for; the queue only reorders
// the work, never the results. threads == 0 makes each batch on the caller's
// thread. A batch asked for out of order (a resumed run) restarts the
// pipeline there. An error in a worker is rethrown by batch().
class AudioBatchSource : public BatchSource {
 public:
  AudioBatchSource(std::shared_ptr<const ExampleSource> examples, int threads, int queue);
  ~AudioBatchSource() override;
  AudioBatchSource(const AudioBatchSource&) = delete;
  AudioBatchSource& operator=(const AudioBatchSource&) = delete;

  void batch(float* in,      // (B, T, 1)
             float* target,  // (B, T, 1)
             int B, int T, uint64_t seed, int64_t step) override;

  // Seconds batch() spent waiting for a batch that was not ready yet.
  double wait_seconds() const { return wait_seconds_; }

 private:
  struct Ready {
    std::vector<float> noisy, clean;  // (B, T)
  };
  void fill(Ready& r, int B, int T, uint64_t seed, int64_t step) const;
  void work();

  std::shared_ptr<const ExampleSource> examples_;
  int queue_;
  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  bool planned_ = false, stop_ = false;
  uint64_t generation_ = 0;  // bumped on every restart; stale results are dropped
  int B_ = 0, T_ = 0;
  uint64_t seed_ = 0;
  int64_t want_ = 0;  // the next step batch() expects
  int64_t next_ = 0;  // the next step a worker takes up
  std::map<int64_t, Ready> ready_;
  std::exception_ptr error_;
  double wait_seconds_ = 0;
  std::vector<std::thread> workers_;
};

// ---------------------------------------------------------------- validation

// The fixed held-out set: `mixtures` mixtures of `seconds` made by a Mixer
// over the held-out speech and the validation noise with validation.seed,
// then every held-out pair (cut to `seconds`). The same config and files
// give the same set.
struct ValidationItem {
  std::string name;
  std::vector<float> noisy, clean;  // (n)
};
std::vector<ValidationItem> make_validation_set(const AudioSet& held_out, const TrainConfig& cfg);

// Means over the held-out set. SI-SDR (ssm/losses.hpp) in dB; STOI
// (ssm/stoi.hpp) over the items long and loud enough for it.
struct ValidationMetrics {
  size_t items = 0;
  double si_sdr_noisy = 0, si_sdr_denoised = 0, si_sdr_improvement = 0;
  size_t stoi_items = 0;  // 0: STOI off or no item qualified
  double stoi_noisy = 0, stoi_denoised = 0;
};

// Runs `model` over every item (one at a time, so memory stays that of one
// item) and scores it. With lookahead d the output at t estimates clean at
// t - d, so denoised[d..n) is scored against clean[0..n-d), and noisy over
// the same span. Items of d samples or fewer are left out.
ValidationMetrics validate_denoiser(const Model& model, const std::vector<ValidationItem>& items, bool with_stoi);

}  // namespace ssm
