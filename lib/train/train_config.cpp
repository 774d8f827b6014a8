#include "ssm/train_config.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../common/json_fields.hpp"
#include "ssm/common.hpp"
#include "ssm/dataset.hpp"

namespace ssm {

namespace {

using nlohmann::json;

// One section of the config: the strict reader plus the training config's
// own kinds of value (folders, [low, high] ranges, noisy/clean pairs).
class Section : public detail::JsonFields {
 public:
  using JsonFields::get;
  using JsonFields::JsonFields;
  explicit Section(JsonFields f) : JsonFields(std::move(f)) {}

  // A folder or a list of folders.
  void get(const std::string& k, std::vector<std::string>& out) const {
    auto* v = find(k);
    if (!v) return;
    if (v->is_string()) {
      out = {v->get<std::string>()};
      return;
    }
    if (!v->is_array()) bad(k, "a folder name or a list of folder names");
    out.clear();
    for (const auto& e : *v) {
      if (!e.is_string() || e.get<std::string>().empty()) bad(k, "a list of non-empty folder names");
      out.push_back(e.get<std::string>());
    }
  }
  // [lo, hi] with lo <= hi.
  void get_range(const std::string& k, double& lo, double& hi) const {
    auto* v = find(k);
    if (!v) return;
    if (!v->is_array() || v->size() != 2 || !(*v)[0].is_number() || !(*v)[1].is_number())
      bad(k, "a list of two numbers [low, high]");
    lo = (*v)[0].get<double>();
    hi = (*v)[1].get<double>();
    if (!(lo <= hi)) bad(k, "[low, high] with low <= high");
  }
  void get(const std::string& k, std::vector<PairFolders>& out) const {
    auto* v = find(k);
    if (!v) return;
    const char* expected = "a list of {\"noisy\": folder, \"clean\": folder} objects";
    if (!v->is_array()) bad(k, expected);
    out.clear();
    for (size_t i = 0; i < v->size(); ++i) {
      const Section p((*v)[i], source(), key(k) + "[" + std::to_string(i) + "]", {"noisy", "clean"});
      PairFolders f;
      p.get("noisy", f.noisy);
      p.get("clean", f.clean);
      if (f.noisy.empty() || f.clean.empty())
        fail(source() + ": '" + p.key(f.noisy.empty() ? "noisy" : "clean") + "' is missing (" + expected + ")");
      out.push_back(f);
    }
  }
  Section sub(const std::string& k, std::vector<std::string> known) const {
    return Section(JsonFields::sub(k, std::move(known)));
  }
};

void check(bool ok, const std::string& key, const std::string& expected) {
  require(ok, "training config: '" + key + "' " + expected);
}

json folders_json(const std::vector<PairFolders>& pairs) {
  json a = json::array();
  for (const auto& p : pairs) a.push_back({{"noisy", p.noisy}, {"clean", p.clean}});
  return a;
}

}  // namespace

void TrainConfig::validate() const {
  model.validate();
  check(model.in_channels == 1 && model.out_channels == 1, "model",
        "must have in_channels = out_channels = 1 to train on sound (got " + std::to_string(model.in_channels) +
            " and " + std::to_string(model.out_channels) + ")");
  training.validate();
  check(training.segment % model.frame == 0, "training.segment",
        "must be a multiple of the model's frame (" + std::to_string(model.frame) + " samples), got " +
            std::to_string(training.segment));
  const auto& d = data;
  const auto& m = d.mixer;
  check(!d.speech.empty() || !d.pairs.empty(), "data", "needs 'speech' folders or 'pairs' (got neither)");
  check(d.pair_fraction >= 0 && d.pair_fraction <= 1, "data.pair_fraction", "must be in [0, 1]");
  check(std::isfinite(m.snr_min_db) && std::isfinite(m.snr_max_db) && m.snr_min_db <= m.snr_max_db, "data.snr_db",
        "must be finite [low, high]");
  check(std::isfinite(m.level_min_dbfs) && m.level_min_dbfs <= m.level_max_dbfs && m.level_max_dbfs <= 0,
        "data.level_dbfs", "must be [low, high] with low <= high <= 0");
  check(m.max_peak > 0 && m.max_peak <= 1, "data.max_peak", "must be in (0, 1]");
  check(m.speed_min >= 0.5 && m.speed_min <= m.speed_max && m.speed_max <= 2, "data.speed",
        "must be [low, high] with 0.5 <= low <= high <= 2");
  check(m.join_pause_min_s >= 0 && m.join_pause_min_s <= m.join_pause_max_s && m.join_pause_max_s <= 10,
        "data.join_pause_s", "must be [low, high] with 0 <= low <= high <= 10 (seconds)");
  const double weights[] = {m.weight_clip, m.weight_white, m.weight_pink,  m.weight_brown,
                            m.weight_hum,  m.weight_fan,   m.weight_babble};
  double total = 0;
  for (double w : weights) {
    check(std::isfinite(w) && w >= 0, "data.noise_kinds", "weights must be >= 0");
    total += w;
  }
  check(total > 0, "data.noise_kinds", "has every weight 0 (expected at least one > 0)");
  if (!d.speech.empty())
    check(m.weight_clip == 0 || !d.noise.empty(), "data.noise",
          "is empty but data.noise_kinds.clip is > 0 (give noise folders or set its weight to 0)");
  const std::pair<double, const char*> probs[] = {{m.noise_lowpass_prob, "data.noise_lowpass_prob"},
                                                  {m.noise_highpass_prob, "data.noise_highpass_prob"},
                                                  {m.channel_lowpass_prob, "data.channel_lowpass_prob"},
                                                  {m.channel_highpass_prob, "data.channel_highpass_prob"},
                                                  {m.silence_prob, "data.silence_prob"},
                                                  {m.noise_only_prob, "data.noise_only_prob"},
                                                  {m.reverb_prob, "data.reverb_prob"},
                                                  {m.eq_prob, "data.eq_prob"},
                                                  {m.clipping_prob, "data.clipping_prob"},
                                                  {m.codec_prob, "data.codec_prob"}};
  for (const auto& [p, key] : probs) check(p >= 0 && p <= 1, key, "must be in [0, 1]");
  check(m.lowpass_min_hz > 0 && m.lowpass_min_hz <= m.lowpass_max_hz, "data.lowpass_hz",
        "must be [low, high] with 0 < low <= high");
  check(m.highpass_min_hz > 0 && m.highpass_min_hz <= m.highpass_max_hz &&
            m.highpass_max_hz < model.sample_rate / 2.0,
        "data.highpass_hz", "must be [low, high] with 0 < low <= high < sample_rate / 2");
  check(m.rt60_min_s > 0 && m.rt60_min_s <= m.rt60_max_s && m.rt60_max_s <= 5, "data.rt60_s",
        "must be [low, high] seconds with 0 < low <= high <= 5");
  check(std::isfinite(m.drr_min_db) && std::isfinite(m.drr_max_db) && m.drr_min_db <= m.drr_max_db, "data.drr_db",
        "must be finite [low, high]");
  check(m.early_ms >= 0 && m.early_ms <= 1000, "data.early_ms", "must be in [0, 1000]");
  check(m.eq_max_db >= 0 && m.eq_max_db <= 24, "data.eq_max_db", "must be in [0, 24]");
  check(d.loader_threads >= 0 && d.loader_threads <= 256, "data.loader_threads", "must be in [0, 256]");
  check(d.queue >= 1 && d.queue <= 1024, "data.queue", "must be in [1, 1024]");
  const auto& v = validation;
  check(v.fraction >= 0 && v.fraction < 1, "validation.fraction", "must be in [0, 1)");
  check(v.every >= 0, "validation.every", "must be >= 0 (0 = only at the end)");
  check(v.mixtures >= 0, "validation.mixtures", "must be >= 0");
  check(std::isfinite(v.seconds) && v.seconds * model.sample_rate >= 1 && v.seconds <= 600, "validation.seconds",
        "must be at least one sample and at most 600");
  const auto& o = output;
  check(o.log_every >= 1, "output.log_every", "must be >= 1");
  check(o.checkpoint_every >= 0, "output.checkpoint_every", "must be >= 0 (0 = only at the end)");
  check(o.keep_checkpoints >= 0, "output.keep_checkpoints", "must be >= 0 (0 = keep all)");
}

void TrainConfig::check_folders() const {
  std::vector<std::pair<std::string, std::string>> all;  // (key, folder)
  auto add = [&](const std::string& key, const std::vector<std::string>& folders) {
    for (const auto& f : folders) all.emplace_back(key, f);
  };
  auto add_pairs = [&](const std::string& key, const std::vector<PairFolders>& pairs) {
    for (size_t i = 0; i < pairs.size(); ++i) {
      all.emplace_back(key + "[" + std::to_string(i) + "].noisy", pairs[i].noisy);
      all.emplace_back(key + "[" + std::to_string(i) + "].clean", pairs[i].clean);
    }
  };
  add("data.speech", data.speech);
  add("data.noise", data.noise);
  add_pairs("data.pairs", data.pairs);
  add("validation.speech", validation.speech);
  add("validation.noise", validation.noise);
  add_pairs("validation.pairs", validation.pairs);
  std::string missing;
  for (const auto& [key, folder] : all) {
    std::error_code ec;
    const bool pair = key.find(".pairs[") != std::string::npos;  // pairs are folders; the others may name a file
    if (!pair && std::filesystem::is_regular_file(folder, ec) && is_sound_file_name(folder)) continue;
    if (!std::filesystem::is_directory(folder, ec))
      missing += "\n  " + key + ": '" + folder + "' " +
                 (std::filesystem::exists(folder, ec) ? "is not a folder" : "does not exist");
  }
  if (!missing.empty())
    fail("training config: missing data folders (relative paths are relative to the working directory '" +
         std::filesystem::current_path().string() + "'):" + missing);
}

TrainConfig TrainConfig::from_json(const json& j, const std::string& source) {
  const Section top(j, source, "", {"model", "training", "data", "validation", "output"});
  TrainConfig c;
  const json* model = top.find("model");
  if (!model) fail(source + ": 'model' is missing (a model config object, or the name of a model config file)");
  if (model->is_string())
    c.model = ModelConfig::from_file(model->get<std::string>());
  else if (model->is_object())
    c.model = ModelConfig::from_json(*model, source + ": model");
  else
    top.bad("model", "a model config object or the name of a model config file");

  if (top.find("training")) {
    const Section s = top.sub("training", {"steps", "batch", "segment", "lr", "min_lr", "warmup", "weight_decay",
                                           "clip", "l1_weight", "l2_weight", "stft_weight", "sisdr_weight", "seed",
                                           "threads", "device", "gpus", "init"});
    auto& t = c.training;
    s.get("steps", t.steps);
    s.get("batch", t.batch);
    s.get("segment", t.segment);
    s.get("lr", t.lr);
    s.get("min_lr", t.min_lr);
    s.get("warmup", t.warmup);
    s.get("weight_decay", t.weight_decay);
    s.get("clip", t.clip);
    s.get("l1_weight", t.l1_weight);
    s.get("l2_weight", t.l2_weight);
    s.get("stft_weight", t.stft_weight);
    s.get("sisdr_weight", t.sisdr_weight);
    s.get("seed", t.seed);
    s.get("threads", t.threads);
    s.get("device", t.device);
    s.get("gpus", t.gpus);
    s.get("init", t.init);
  }

  if (!top.find("data")) fail(source + ": 'data' is missing (folders of speech and noise)");
  {
    const Section s = top.sub(
        "data", {"speech", "noise", "pairs", "pair_fraction", "snr_db", "level_dbfs", "max_peak", "noise_kinds",
                 "noise_lowpass_prob", "noise_highpass_prob", "channel_lowpass_prob", "channel_highpass_prob",
                 "lowpass_hz", "highpass_hz", "speed", "join_clips", "join_pause_s", "silence_prob", "noise_only_prob", "reverb_prob", "rt60_s",
                 "drr_db", "early_ms", "eq_prob", "eq_max_db", "clipping_prob", "codec_prob", "loader_threads",
                 "queue"});
    auto& d = c.data;
    auto& m = d.mixer;
    s.get("speech", d.speech);
    s.get("noise", d.noise);
    s.get("pairs", d.pairs);
    s.get("pair_fraction", d.pair_fraction);
    s.get_range("snr_db", m.snr_min_db, m.snr_max_db);
    s.get_range("level_dbfs", m.level_min_dbfs, m.level_max_dbfs);
    s.get_range("speed", m.speed_min, m.speed_max);
    s.get("join_clips", m.join_clips);
    s.get_range("join_pause_s", m.join_pause_min_s, m.join_pause_max_s);
    s.get("max_peak", m.max_peak);
    if (s.find("noise_kinds")) {
      const Section k = s.sub("noise_kinds", {"clip", "white", "pink", "brown", "hum", "fan", "babble"});
      k.get("clip", m.weight_clip);
      k.get("white", m.weight_white);
      k.get("pink", m.weight_pink);
      k.get("brown", m.weight_brown);
      k.get("hum", m.weight_hum);
      k.get("fan", m.weight_fan);
      k.get("babble", m.weight_babble);
    }
    s.get("noise_lowpass_prob", m.noise_lowpass_prob);
    s.get("noise_highpass_prob", m.noise_highpass_prob);
    s.get("channel_lowpass_prob", m.channel_lowpass_prob);
    s.get("channel_highpass_prob", m.channel_highpass_prob);
    s.get_range("lowpass_hz", m.lowpass_min_hz, m.lowpass_max_hz);
    s.get_range("highpass_hz", m.highpass_min_hz, m.highpass_max_hz);
    s.get("silence_prob", m.silence_prob);
    s.get("noise_only_prob", m.noise_only_prob);
    s.get("reverb_prob", m.reverb_prob);
    s.get_range("rt60_s", m.rt60_min_s, m.rt60_max_s);
    s.get_range("drr_db", m.drr_min_db, m.drr_max_db);
    s.get("early_ms", m.early_ms);
    s.get("eq_prob", m.eq_prob);
    s.get("eq_max_db", m.eq_max_db);
    s.get("clipping_prob", m.clipping_prob);
    s.get("codec_prob", m.codec_prob);
    s.get("loader_threads", d.loader_threads);
    s.get("queue", d.queue);
  }

  c.validation.snr_min_db = c.data.mixer.snr_min_db;  // unless the section says otherwise
  c.validation.snr_max_db = c.data.mixer.snr_max_db;
  if (top.find("validation")) {
    const Section s = top.sub("validation", {"fraction", "every", "mixtures", "seconds", "seed", "stoi", "speech",
                                             "noise", "pairs", "snr_db"});
    auto& v = c.validation;
    s.get_range("snr_db", v.snr_min_db, v.snr_max_db);
    s.get("fraction", v.fraction);
    s.get("every", v.every);
    s.get("mixtures", v.mixtures);
    s.get("seconds", v.seconds);
    s.get("seed", v.seed);
    s.get("stoi", v.stoi);
    s.get("speech", v.speech);
    s.get("noise", v.noise);
    s.get("pairs", v.pairs);
  }

  if (top.find("output")) {
    const Section s = top.sub("output", {"dir", "log_every", "checkpoint_every", "keep_checkpoints", "plot"});
    auto& o = c.output;
    s.get("dir", o.dir);
    s.get("log_every", o.log_every);
    s.get("checkpoint_every", o.checkpoint_every);
    s.get("keep_checkpoints", o.keep_checkpoints);
    s.get("plot", o.plot);
  }

  detail::validate_config(c, source);
  return c;
}

TrainConfig TrainConfig::from_json_text(const std::string& text, const std::string& source) {
  return from_json(detail::parse_config_json(text, source), source);
}

TrainConfig TrainConfig::from_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("cannot open training config '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json_text(ss.str(), path);
}

json TrainConfig::to_json() const {
  const auto& t = training;
  const auto& d = data;
  const auto& m = d.mixer;
  const auto& v = validation;
  const auto& o = output;
  json j{
      {"model", model.to_json()},
      {"training",
       {{"steps", t.steps},
        {"batch", t.batch},
        {"segment", t.segment},
        {"lr", t.lr},
        {"min_lr", t.min_lr},
        {"warmup", t.warmup},
        {"weight_decay", t.weight_decay},
        {"clip", t.clip},
        {"l1_weight", t.l1_weight},
        {"l2_weight", t.l2_weight},
        {"stft_weight", t.stft_weight},
        {"sisdr_weight", t.sisdr_weight},
        {"seed", t.seed},
        {"threads", t.threads},
        {"device", t.device}}},
      {"data",
       {{"speech", d.speech},
        {"noise", d.noise},
        {"pairs", folders_json(d.pairs)},
        {"pair_fraction", d.pair_fraction},
        {"snr_db", {m.snr_min_db, m.snr_max_db}},
        {"level_dbfs", {m.level_min_dbfs, m.level_max_dbfs}},
        {"max_peak", m.max_peak},
        {"noise_kinds",
         {{"clip", m.weight_clip},
          {"white", m.weight_white},
          {"pink", m.weight_pink},
          {"brown", m.weight_brown},
          {"hum", m.weight_hum},
          {"fan", m.weight_fan},
          {"babble", m.weight_babble}}},
        {"noise_lowpass_prob", m.noise_lowpass_prob},
        {"noise_highpass_prob", m.noise_highpass_prob},
        {"channel_lowpass_prob", m.channel_lowpass_prob},
        {"channel_highpass_prob", m.channel_highpass_prob},
        {"lowpass_hz", {m.lowpass_min_hz, m.lowpass_max_hz}},
        {"highpass_hz", {m.highpass_min_hz, m.highpass_max_hz}},
        {"speed", {m.speed_min, m.speed_max}},
        {"silence_prob", m.silence_prob},
        {"noise_only_prob", m.noise_only_prob},
        {"reverb_prob", m.reverb_prob},
        {"rt60_s", {m.rt60_min_s, m.rt60_max_s}},
        {"drr_db", {m.drr_min_db, m.drr_max_db}},
        {"early_ms", m.early_ms},
        {"eq_prob", m.eq_prob},
        {"eq_max_db", m.eq_max_db},
        {"clipping_prob", m.clipping_prob},
        {"codec_prob", m.codec_prob},
        {"loader_threads", d.loader_threads},
        {"queue", d.queue}}},
      {"validation",
       {{"fraction", v.fraction},
        {"every", v.every},
        {"mixtures", v.mixtures},
        {"seconds", v.seconds},
        {"seed", v.seed},
        {"stoi", v.stoi},
        {"snr_db", {v.snr_min_db, v.snr_max_db}},
        {"speech", v.speech},
        {"noise", v.noise},
        {"pairs", folders_json(v.pairs)}}},
      {"output",
       {{"dir", o.dir},
        {"log_every", o.log_every},
        {"checkpoint_every", o.checkpoint_every},
        {"keep_checkpoints", o.keep_checkpoints},
        {"plot", o.plot}}},
  };
  if (!t.init.empty()) j["training"]["init"] = t.init;  // written only when used
  if (t.gpus != 1) j["training"]["gpus"] = t.gpus;
  if (d.mixer.join_clips) {  // written only when used, as configs were before it existed
    j["data"]["join_clips"] = true;
    j["data"]["join_pause_s"] = {d.mixer.join_pause_min_s, d.mixer.join_pause_max_s};
  }
  return j;
}

std::string TrainConfig::to_json_text() const { return to_json().dump(2); }

}  // namespace ssm
