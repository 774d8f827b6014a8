// Online anomaly detection on scalar time series: every value of a series is
// scored in [0, 1] from the values before it and itself, never later ones.
//
// Per value x_t of a series:
//   1. normalise: z_t = (x_t - m_{t-1}) / s_{t-1} from exponentially weighted
//      mean and variance (plain running moments during a warm-up), then update
//      them with x_t; the weighting lets the statistics follow drift;
//   2. forecast: a small SSM run in recurrent mode reads z_t (and the time
//      inputs) and gives a Laplace(mu, b) distribution of z_{t+1}; the
//      surprise of z_t under the one made a step earlier is
//      e_t = |z_t - mu_{t-1}| / b_{t-1} (|z_t - p_{t-1}| for a point forecaster);
//   3. evidence: each channel (forecast error, level against a faster
//      normaliser, daily and weekly profiles) averages its error over a short
//      window and judges the average against its long-run distribution, as
//      Numenta's anomaly likelihood does: -log10 of the Gaussian upper tail;
//   4. score: the weighted sum of the channels' evidence over `decades`,
//      clipped to [0, 1], raised by a value outside the range held so far
//      (robust to one glitch, optionally forgetting, of the detrended value),
//      and held low right after a peak so that one event gives one
//      detection (refractory decay).
//
// Values beyond ±1e150 are taken as ±1e150 (their squares must stay finite).
//
// Timestamps: a value whose epoch equals the last accepted one (a repeat) or
// lies before it (out of order) changes no state; a repeat gets the result of
// the value it repeats, an out-of-order value is scored against the current
// state (error, likelihood, score) without updating it.
//
// A series' state (SeriesState) is plain data: the model's recurrent state,
// the normaliser, the error window and the likelihood moments. It serialises
// to bytes and back; a restored series continues exactly as if never stopped.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "ssm/model.hpp"
#include "ssm/trainer.hpp"

namespace ssm {

// ---------------------------------------------------------------- forecaster

struct LayerOffsets;  // lib/model's table of a layer's tensors

// A Mamba-2 model stepped one value at a time for many independent series.
// Inputs: 1 channel (z_t) or kForecastInputs (forecaster_inputs()). Outputs:
// 1 channel (a point forecast of z_{t+1}) or 2 (mu, log b of a Laplace
// distribution of z_{t+1}, trained by its negative log-likelihood). The step is fused into plain loops
// over a private copy of the parameters: at forecaster sizes (D <= 64) the
// per-op calls of Stream cost far more than the arithmetic. It computes what
// Stream computes (the tests compare them) with the same state layout.
// Thread-safe: step() only reads the forecaster.
class Forecaster {
 public:
  // Size limits of the fused step (its scratch lives on the stack).
  static constexpr int kMaxWidth = 64;    // D
  static constexpr int kMaxInner = 256;   // E
  static constexpr int kMaxGroupState = 128;  // G * N

  // Throws ssm::Error naming the field unless the model is Mamba-2 with
  // in_channels 1 or kForecastInputs, out_channels 1 or 2, and within the
  // limits above.
  // `horizon` h: the model's output at t is the distribution of z_{t+h}
  // (1 to kMaxHorizon; from the weights' __metadata__ "ssm.horizon").
  explicit Forecaster(const Model& model, int horizon = 1);
  ~Forecaster();
  Forecaster(const Forecaster&) = delete;
  Forecaster& operator=(const Forecaster&) = delete;
  // The model shipped in models/forecaster/ (compiled into the library).
  static std::shared_ptr<const Forecaster> builtin();
  // A model file, or the built-in one for "" / "builtin"; the horizon from
  // its metadata.
  static std::shared_ptr<const Forecaster> load(const std::string& path);
  static constexpr int kMaxHorizon = 64;

  const ModelConfig& config() const { return cfg_; }
  size_t state_size() const { return state_size_; }  // floats per series
  uint64_t fingerprint() const { return fingerprint_; }  // of the config, horizon and weights
  int horizon() const { return horizon_; }
  Model model() const;  // the model it was made from (for the GPU's batched step)

  // Reads in (in_channels), advances `state` (state_size floats, zeros at
  // the start) and writes the forecast of the next z to out (out_channels).
  void step(float* state, const float* in, float* out) const;
  // The same for a one-input model: reads z, returns out[0].
  float step(float* state, float z) const;

 private:
  template <class Dims>
  void step_with(float* state, const float* in, float* out, const Dims& dims) const;

  ModelConfig cfg_;
  std::vector<float> p_;  // the model's parameter block
  size_t enc_w_, enc_b_, norm_f_, head_w_, head_b_;
  std::vector<LayerOffsets> layers_;  // where each layer's tensors sit in p_
  std::vector<float> A_;       // (L, H) -exp(A_log), computed once
  std::vector<float> t_;       // per layer in_proj (D, F), conv (K, Cc), out_proj (E, D); head (D, 1)
  size_t head_t_ = 0;          // where the head (D, out_channels) starts in t_
  size_t enc_t_ = 0;           // where the encoder (in_channels, D) starts in t_
  size_t state_size_ = 0, tail_size_ = 0, layer_state_ = 0;
  int horizon_ = 1;
  uint64_t fingerprint_ = 0;
};

// The input channels of a forecaster that reads more than z: z_t, the
// phases of the day and of the week (sin, cos; UTC) and the gap since the
// previous value, log10(seconds) - 2.5 clipped to [-3, 3] (0 at the first).
// One definition for the detector and the training data.
inline constexpr int kForecastInputs = 6;
void forecaster_inputs(float* in,  // (kForecastInputs)
                       double z, int64_t epoch, int64_t gap_seconds);

// The bytes of models/forecaster/forecaster.safetensors as compiled in.
std::span<const uint8_t> builtin_forecaster_bytes();
// A model from safetensors bytes (config in __metadata__ "ssm.config");
// errors name `source`. With `horizon`, also the forecast horizon of
// __metadata__ "ssm.horizon" (1 when absent).
Model model_from_safetensors_bytes(std::vector<uint8_t> bytes, const std::string& source, int* horizon = nullptr);

// ---------------------------------------------------------------- normaliser

struct NormaliserConfig {
  int warmup = 50;             // values normalised with plain running moments
  double half_life = 2000;     // values; weight of the moments after warm-up
  double clip_sigma = 4;       // deviations beyond this many s move the variance no further
  double min_std_rel = 1e-3;   // s >= min_std_rel * |m| + min_std_abs
  double min_std_abs = 1e-6;
  double z_clip = 10;          // |z| limit fed to the model

  void validate() const;  // throws ssm::Error naming the field
};

// Online moments of one series (DESIGN.md §4: plain data).
struct Normaliser {
  double mean = 0, var = 0;
  int64_t count = 0;

  // z of x against the moments so far (0 for the first value), then the
  // moments take x in. The returned z is clipped to ±z_clip.
  double push(double x, const NormaliserConfig& c);
  // The same with the weight 1 - 2^(-1/half_life) computed by the caller.
  double push(double x, const NormaliserConfig& c, double alpha);
  // z of x against the moments so far, without updating them.
  double peek(double x, const NormaliserConfig& c) const;
  double stddev(const NormaliserConfig& c) const;
};

// ---------------------------------------------------------------- detector

// One source of evidence: a per-value error e_t, averaged over the last
// `window` values; the average is judged against its own long-run moments
// (weight of `half_life` values, deviation at least `min_sigma`) and gives
// -log10 of the Gaussian upper tail, times `weight`.
struct ChannelConfig {
  double weight = 1;
  int window = 8;          // 1 .. kMaxShortWindow
  double half_life = 1000;
  double min_sigma = 0.1;
  bool log = false;        // average log(e + 0.1) instead of e (tames heavy tails)
};

inline constexpr int kMaxShortWindow = 64;
inline constexpr int kDayBins = 48;    // half hours
inline constexpr int kWeekBins = 168;  // hours

struct DetectorConfig {
  NormaliserConfig norm;   // the forecaster's input (as trained) and the seasonal scale
  // Channels. forecast: |z - prediction|. level: |z| against a faster
  // normaliser (level_half_life), i.e. how far the value is from where it has
  // recently been. daily / weekly: |x - profile[bin]| / s, the profile being
  // the smoothed value of the same half hour of the day / hour of the week
  // (UTC), counted only as far as the profile explains the series (below).
  ChannelConfig forecast{0.02, 32, 1000, 0.1, true};
  ChannelConfig level{1, 32, 110, 0.227, true};
  ChannelConfig daily{1, 17, 234, 0.161, false};
  ChannelConfig weekly{0.5, 8, 1672, 0.246, false};
  // learned: the anomaly likelihood p_t in [0, 1] of a learned detector (an
  // SSM trained on series with injected anomalies, `data.target` "anomaly";
  // Detector's `scorer`), judged as the other channels' errors are. Counts
  // only when the detector has a scorer (off by default: weight 0).
  ChannelConfig learned{0, 1, 1000, 0.05, false};
  // With a scorer, more uses of its likelihood p: a value scores at least
  // learned_gain * p (0 = off); a new extreme raises the range rule's floor
  // only where p >= learned_veto (0 = always); with learned_range > 0 a
  // second range, of the raw value (as spatial_detrend false has it),
  // raises the floor too where p >= learned_range: a record that the
  // scorer finds anomalous counts even on a trend, the records of a trend
  // alone do not.
  double learned_gain = 0;
  double learned_veto = 0;
  double learned_range = 0;
  double level_half_life = 175;      // values
  double season_half_life = 14;      // visits of a bin (days for daily, weeks for weekly)
  double season_fit_half_life = 500; // values; weight of the fit measure
  // fit = 1 - E[(x - profile)^2] / E[(x - m)^2]; a seasonal channel counts
  // with the factor clamp((fit - season_min_fit) / (1 - season_min_fit), 0, 1).
  double season_min_fit = 0.5;
  int learning = 233;              // values before any score above 0
  double decades = 20.7;           // summed weighted -log10 tails that map to score 1
  // The range: the highest and lowest value seen, drawn back towards the
  // fast mean with a half-life of range_half_life values (it forgets; 0 =
  // never). An extreme that stands apart from the second one by more than
  // the width between the second highest and lowest is a glitch: then the
  // second one bounds, so one glitch does not widen the range. A value
  // beyond the range by spatial_tolerance of its width...
  double spatial_tolerance = 0.007;
  // With spatial_detrend the range is that of x - (the fast mean before x),
  // not of x: the new highs of a slow trend are then no news.
  bool spatial_detrend = true;
  double range_half_life = 0;
  double spatial_score = 0.71;       // ...scores at least this (0 = off)
  double peak_decay = 0.99591;     // per value: the remembered recent peak score decays by this
  double refractory = 0.032;       // a score not above the decayed peak is multiplied by this

  void validate() const;  // throws ssm::Error naming the field
  // Strict: unknown keys and wrong types are errors naming the key and `source`.
  static DetectorConfig from_json(const nlohmann::json& j, const std::string& source);
  static DetectorConfig from_file(const std::string& path);
  nlohmann::json to_json() const;
};

// The running state of one channel.
struct ChannelState {
  int pos = 0;
  int filled = 0;
  double sum = 0;                    // of the ring
  double mean = 0, var = 0;          // long-run moments of the window average
  int64_t count = 0;
  float ring[kMaxShortWindow] = {};  // the last `window` errors
};

// Everything one series carries between values (plain data but the model
// state's buffer).
struct SeriesState {
  std::vector<float> model_state;  // (Forecaster::state_size()); first, so that a lookup finds its buffer early
  int64_t count = 0;        // values accepted (repeats and out-of-order ones excluded)
  int64_t last_epoch = 0;   // of the last accepted value
  Normaliser norm, fast;    // slow (forecaster, seasons) and fast (level channel) moments
  float prediction = 0;     // the forecaster's latest output: mu of z h values ahead
  float log_scale = 0;      // its log b (two-output forecasters; 0 otherwise)
  double hi[2] = {}, lo[2] = {};  // highest two / lowest two values, drawn towards the mean (the range)
  double hi_raw[2] = {}, lo_raw[2] = {};  // the same of the raw values (learned_range; kept with a scorer)
  ChannelState forecast, level, daily, weekly, learned;
  std::vector<float> scorer_state;  // (scorer's state_size()); empty without a scorer
  float day[kDayBins] = {}, week[kWeekBins] = {};               // seasonal profiles
  uint16_t day_n[kDayBins] = {}, week_n[kWeekBins] = {};        // visits (saturating)
  double fit_day = 0, fit_week = 0, fit_var = 0;                // EW squared residuals
  double peak = 0;          // decayed recent peak of the raw score
  // The result of the last accepted value, given again to a repeat.
  double last_score = 0, last_likelihood = 0, last_prediction = 0;
  // A forecaster of horizon h > 1: its last h outputs (mu, log b), the one
  // made after value k in slot k % h, read when value k + h comes; (2 h),
  // empty for h = 1.
  std::vector<float> ahead;
};

enum class PointKind : uint8_t {
  scored,        // accepted and scored; the state moved on
  repeat,        // same epoch as the last accepted value: its result again
  out_of_order,  // earlier epoch: scored as if it came next, the state unchanged
};

struct DetectorResult {
  double score = 0;       // [0, 1]
  double likelihood = 0;  // [0, 1]: 1 - 10^-(weighted evidence of all channels)
  double prediction = 0;  // this value as forecast one step earlier, in the series' units
  double error = 0;       // |z - prediction| in normalised units
  double z = 0;           // the value against the slow moments before it (clipped to ±z_clip; 0 for a repeat)
  double raw = 0;         // the score before the refractory lowering (0 for a repeat)
  double learned = 0;     // the scorer's anomaly likelihood of this value (0 without a scorer)
  PointKind kind = PointKind::scored;
};

class Detector {
 public:
  // `scorer` (optional): a learned detector, a Mamba-2 of the forecaster's
  // inputs (1 or kForecastInputs) and one output, the anomaly likelihood of
  // the value it has just read (clamped to [0, 1]), scored by the `learned`
  // channel. It steps with every accepted value, on the CPU.
  Detector(std::shared_ptr<const Forecaster> forecaster, DetectorConfig cfg,
           std::shared_ptr<const Forecaster> scorer = nullptr);

  const DetectorConfig& config() const { return cfg_; }
  const Forecaster& forecaster() const { return *forecaster_; }
  const Forecaster* scorer() const { return scorer_.get(); }

  SeriesState new_series() const;
  // Scores one value. Throws ssm::Error for a non-finite value or a state
  // that does not belong to this detector's forecaster.
  DetectorResult update(SeriesState& s, int64_t epoch, double value) const;

  // update() with the forecaster's step left to the caller, so that the
  // steps of many series can run as one batch (ForecastBatch). `result` is
  // final at return. When the value was accepted (not a repeat, not out of
  // order) and step_input is not null, it returns true and leaves in
  // step_input (the forecaster's in_channels) what the forecaster must read:
  // the caller steps the series' model state with it and hands the output to
  // set_forecast() before the series' next value. With step_input null it
  // steps here, as update() does.
  bool update_deferred(SeriesState& s, int64_t epoch, double value, DetectorResult& result,
                       float* step_input) const;
  // Stores a forecaster output (out_channels) as the series' forecast.
  void set_forecast(SeriesState& s, const float* out) const;

  // Asks the processor to bring in the parts of `s` that update(s, epoch, ·)
  // will touch; a server calls it a value ahead so that the misses overlap.
  void prefetch(const SeriesState& s, int64_t epoch) const;

  // Bytes of a series' state: a header (magic, fingerprint of the forecaster
  // and the config) and the fields, little-endian. load() checks all of it
  // and names what is wrong.
  std::vector<uint8_t> save(const SeriesState& s) const;
  SeriesState load(std::span<const uint8_t> bytes) const;

  // Bytes one series' state holds (inline and its model state buffer).
  size_t state_bytes() const;
  // Of the forecaster and the config: what a saved state must match.
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  // step_input null: the forecaster steps here; otherwise z is left there.
  DetectorResult advance(SeriesState& s, int64_t epoch, double value, float* step_input) const;

  std::shared_ptr<const Forecaster> forecaster_;
  std::shared_ptr<const Forecaster> scorer_;
  DetectorConfig cfg_;
  NormaliserConfig fast_;
  // Weights per value of every half-life, computed once.
  double a_norm_ = 0, a_fast_ = 0, a_forecast_ = 0, a_level_ = 0, a_daily_ = 0, a_weekly_ = 0, a_fit_ = 0,
         a_season_ = 0, a_learned_ = 0;
  bool two_outputs_ = false;  // the forecaster gives (mu, log b)
  double range_keep_ = 1;  // per value: how much of its distance from the mean the range keeps
  uint64_t fingerprint_ = 0;
};

// ---------------------------------------------------------------- groups
//
// Several series of one entity (a host's cpu, memory and network), scored
// jointly, row by row: every field is a series of the Detector above, and a
// joint channel judges the row as a whole. Its error is the squared
// Mahalanobis distance of the fields' z (DetectorResult::z) from their
// exponentially weighted mean, under their correlation (plus a ridge),
// per field:
//   w_i = clamp((z_i - mean_i) / sd_i, ±z_clip),  e = w' (R + ridge I)^-1 w / K,
// R the correlation matrix of the z, factorised every `refresh` rows. A
// value each field holds alone may be ordinary while the row is not, as
// when two fields that moved together part. e is judged as a channel's error
// is (ChannelConfig). The row's raw score is the highest of its fields' raw
// scores and the joint channel's evidence over the detector's `decades`;
// the refractory lowering (one event, one detection) is then the group's.
struct GroupConfig {
  ChannelConfig joint{1, 8, 1000, 0.1, false};
  double half_life = 2000;  // values; of the mean and the covariance
  double ridge = 0.05;      // added to the correlation matrix's diagonal
  int refresh = 32;         // rows between factorisations
  int warmup = 100;         // rows before the joint channel's first error
  bool fields = true;       // the fields' own scores count (false: the joint channel alone)

  void validate() const;  // throws ssm::Error naming the field
  static GroupConfig from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
};

inline constexpr int kMaxGroupFields = 64;

// Plain data but the vectors, sized by the group's fields K at creation.
struct GroupState {
  std::vector<SeriesState> fields;  // (K)
  int64_t count = 0;                // rows accepted
  int64_t last_epoch = 0;
  std::vector<double> mean;         // (K) EW mean of z
  std::vector<double> cov;          // (K (K + 1) / 2) EW covariance of z, packed lower rows
  std::vector<double> factor;       // (K (K + 1) / 2) Cholesky factor of R + ridge I, packed lower rows
  std::vector<double> sd;           // (K) the deviations R was made with
  bool factored = false;
  ChannelState joint;
  double peak = 0;
  double last_score = 0;
};

struct GroupResult {
  double score = 0;         // [0, 1]
  double raw = 0;           // before the refractory lowering
  double joint = 0;         // the joint channel's evidence over decades, clipped to [0, 1]
  double fields = 0;        // the highest field raw score
  int top_field = -1;       // the field of `fields` (-1 when all are 0)
  double distance = 0;      // e, the joint error of this row
  PointKind kind = PointKind::scored;
};

class GroupDetector {
 public:
  GroupDetector(std::shared_ptr<const Forecaster> forecaster, DetectorConfig cfg, GroupConfig group,
                std::shared_ptr<const Forecaster> scorer = nullptr);

  const Detector& detector() const { return det_; }
  const GroupConfig& config() const { return cfg_; }

  // A group of `fields` series (1 .. kMaxGroupFields).
  GroupState new_group(int fields) const;
  // One row: values (K), one per field, all of one epoch. Repeats and
  // out-of-order rows are treated as the Detector treats values. Throws
  // ssm::Error for a row of the wrong length or a non-finite value.
  // field_results (K or empty) receives each field's result.
  GroupResult update(GroupState& g, int64_t epoch, std::span<const double> values,
                     std::span<DetectorResult> field_results = {}) const;

  // Bytes of a group's state (magic, fingerprint, K, every field's
  // Detector::save bytes, the joint parts); load() checks all of it.
  std::vector<uint8_t> save(const GroupState& g) const;
  GroupState load(std::span<const uint8_t> bytes) const;
  size_t state_bytes(int fields) const;  // held in memory

 private:
  GroupResult advance(GroupState& g, int64_t epoch, std::span<const double> values,
                      std::span<DetectorResult> field_results) const;
  Detector det_;
  GroupConfig cfg_;
  double a_cov_ = 0, a_joint_ = 0;
  uint64_t fingerprint_ = 0;
};

// ---------------------------------------------------------------- training

// The series the forecaster trains on. Items are windows of T values of a
// series normalised online exactly as the detector does; the input at t is
// z_t, the target z_{t+1}. Synthetic series (sines with noise, trends, level
// shifts, spikes, random walks, square waves) are generated from (seed,
// index); real ones are NAB-format CSV files found under `folders`.
struct SeriesDataConfig {
  std::vector<std::string> folders;  // CSV files (timestamp,value), scanned recursively
  double synthetic_fraction = 0.5;   // share of items drawn from synthetic series
  int warmup_skip = 64;              // values normalised before an item's window starts
  NormaliserConfig norm;             // as the detector's (kept equal by the caller)
  int in_channels = 1;               // the model's: 1 (z_t) or kForecastInputs (forecaster_inputs)
  int out_channels = 1;              // the model's: 1 (target z_{t+h}) or 2 (z_{t+h}, 0)
  int horizon = 1;                   // h: the target of step t is z_{t+h} (1 .. Forecaster::kMaxHorizon)
  // "target": "anomaly" (a detector, docs/DETECT.md): anomalies are injected
  // into the series and the target at t is exp(-(t - onset) / anomaly_window)
  // from each one's onset while it lasts, 0 elsewhere (out_channels 1).
  bool anomaly_target = false;
  int anomaly_window = 16;
};

// Strict JSON: {"kind": "series", "folders": [...], "synthetic_fraction": 0.5,
// "warmup_skip": 64, "horizon": 1, "target": "next", "anomaly_window": 16, "normaliser": {...}};
// errors name `source` and the key.
SeriesDataConfig series_data_config_from_json(const nlohmann::json& j, const std::string& source);

// Batches for the Trainer over `data`; item b of step s is a pure function
// of (seed, s, b). in (B, T, in_channels), target (B, T, out_channels). Throws ssm::Error when a folder has no usable series and
// synthetic_fraction < 1, or a CSV is unreadable (naming the file).
// in (B, T, in_channels), target (B, T, out_channels): z_t in, z_{t+1} out.
std::unique_ptr<BatchSource> make_series_source(const SeriesDataConfig& data);
// The same from the "data" section of a training config.
std::unique_ptr<BatchSource> make_series_source(const nlohmann::json& data_section, const std::string& source);

// A forecaster's training config, run by `ssm train`: its sections with a
// series data section (docs/DETECT.md, "Training the forecaster"),
//   {"model": {...}, "training": {...}, "data": {"kind": "series", ...},
//    "output": {"dir": "runs/forecaster", "model": "f.safetensors", ...}}
struct SeriesTrainConfig {
  struct Output {
    std::string dir;                 // config.json, checkpoints/, metrics.jsonl; "" = not set
    std::string model;               // the final weights; "" = dir/model.safetensors
    int64_t log_every = 50;          // steps between progress lines
    int64_t checkpoint_every = 500;  // 0 = only when stopped early and at the end
    int keep_checkpoints = 3;        // the newest ones kept (0 = all)
    bool plot = true;                // metrics.png through gnuplot
  };

  ModelConfig model;
  TrainerConfig training;     // stft_weight 0: a forecast is judged value by value
  SeriesDataConfig data;
  Output output;
  std::string training_json;  // the training section as written (the model's metadata keeps it)

  // Strict: an unknown key, a value of the wrong type or out of range is an
  // error naming `source` and the key. An empty output.dir passes: the
  // command line may still set it.
  static SeriesTrainConfig from_json(const nlohmann::json& j, const std::string& source);

  // Metadata of the trained model: the normaliser it was trained with
  // ("ssm.normaliser") and training_json ("ssm.training").
  std::map<std::string, std::string> model_metadata() const;
};

// Whether a training config is a forecaster's: its "data" section is an
// object with "kind": "series".
bool is_series_train_config(const nlohmann::json& j);

}  // namespace ssm
