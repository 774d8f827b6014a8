// The config of `ssm train`: one JSON file with five sections,
//
//   {
//     "model":      { ...a model config (ssm/model_config.hpp)... },
//     "training":   { ...TrainerConfig fields (ssm/trainer.hpp)... },
//     "data":       { folders of speech, noise and (noisy, clean) pairs; the mixer },
//     "validation": { the held-out split and how often it is scored },
//     "output":     { where checkpoints, logs and the plot go, and how often }
//   }
//
// Parsing is strict: an unknown key, a value of the wrong type or out of
// range is an error naming the file and the key ("data.snr_db"). Paths are
// used as written: relative ones are relative to the working directory.
// docs/TRAINING.md is the reference for every key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "ssm/mixer.hpp"
#include "ssm/model_config.hpp"
#include "ssm/trainer.hpp"

namespace ssm {

// A folder of noisy recordings and a folder of their clean references;
// files are matched by their path below the folder, extension aside.
struct PairFolders {
  std::string noisy;
  std::string clean;
};

struct DataConfig {
  std::vector<std::string> speech;   // folders of clean speech, scanned recursively
  std::vector<std::string> noise;    // folders of noise recordings
  std::vector<PairFolders> pairs;    // ready (noisy, clean) pairs
  double pair_fraction = 0.25;       // share of training examples cut from pairs (when both kinds exist)
  MixerConfig mixer;                 // SNR range, levels, noise-kind weights, colouring
  int loader_threads = 2;            // background threads making batches (0 = on the training thread)
  int queue = 8;                     // batches made ahead at most
};

struct ValidationConfig {
  // Utterances held out of training, by a hash of the file name: the same
  // file always lands on the same side, wherever it lies and whatever else
  // the folders hold.
  double fraction = 0.05;
  int64_t every = 500;       // steps between validations (0 = only at the end)
  int mixtures = 16;         // fixed held-out mixtures
  double seconds = 4;        // length of each mixture; longer pairs are cut to it
  uint64_t seed = 1;         // of the held-out mixtures
  bool stoi = true;          // also score STOI (costs a little time)
  // SNR range of the held-out mixtures; not given: the training range (data.snr_db).
  double snr_min_db = -5, snr_max_db = 20;
  std::vector<std::string> speech;  // extra validation-only folders
  std::vector<std::string> noise;   // validation noise; empty: the training noise
  std::vector<PairFolders> pairs;
};

struct OutputConfig {
  std::string dir;               // checkpoints/, metrics.jsonl, model.safetensors, ...; "" = not set
  int64_t log_every = 10;        // steps between progress lines
  int64_t checkpoint_every = 500;
  int keep_checkpoints = 3;      // the newest ones kept (0 = all)
  bool plot = true;              // metrics.png through gnuplot
};

struct TrainConfig {
  ModelConfig model;
  TrainerConfig training;
  DataConfig data;
  ValidationConfig validation;
  OutputConfig output;

  // Throws ssm::Error naming the key unless every value is in range and the
  // sections agree (a mono model, some speech or pairs, noise folders when
  // their weight is > 0). An empty output.dir passes: the command line may
  // still set it.
  void validate() const;

  // Throws ssm::Error listing every configured folder that is missing or is
  // not a folder (all of them in one message).
  void check_folders() const;

  // Strict, see above; `source` (the file name) starts every message.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source);
  static TrainConfig from_json_text(const std::string& text, const std::string& source);
  static TrainConfig from_file(const std::string& path);
  // Every key with its value; from_json(to_json()) gives the same config.
  nlohmann::json to_json() const;
  std::string to_json_text() const;
};

}  // namespace ssm
