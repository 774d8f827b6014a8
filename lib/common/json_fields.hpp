// Internal to lib: the one strict reader of a JSON object of a config (model,
// training, detector, series sources). Unknown keys and values of the wrong
// type are errors that name `source` and the dotted key:
//   "train.json: unknown key 'data.snr' (expected one of: ...)"
//   "train.json: 'training.steps' must be an integer, got \"20\""
// Each get() leaves `out` as it is when the key is absent.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ssm/common.hpp"

namespace ssm::detail {

class JsonFields {
 public:
  // `section` is the dotted name of this object ("" for the top level).
  JsonFields(const nlohmann::json& j, std::string source, std::string section, std::vector<std::string> known)
      : j_(j), source_(std::move(source)), section_(std::move(section)) {
    if (!j_.is_object())
      fail(source_ + ": '" + (section_.empty() ? "(top level)" : section_) + "' must be a JSON object, got " +
           j_.dump());
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      bool ok = false;
      for (const auto& k : known) ok = ok || it.key() == k;
      if (!ok) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        fail(source_ + ": unknown key '" + key(it.key()) + "' (expected one of: " + list + ")");
      }
    }
  }

  const std::string& source() const { return source_; }
  std::string key(const std::string& k) const { return section_.empty() ? k : section_ + "." + k; }
  const nlohmann::json* find(const std::string& k) const {
    auto it = j_.find(k);
    return it == j_.end() ? nullptr : &*it;
  }
  [[noreturn]] void bad(const std::string& k, const std::string& expected) const {
    fail(source_ + ": '" + key(k) + "' must be " + expected + ", got " + j_.at(k).dump());
  }

  // The integer rules, one each: a JSON integer (never 2.0) that fits the type.
  static bool is_int64(const nlohmann::json& v) {
    return v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX);
  }
  static bool is_uint64(const nlohmann::json& v) {
    return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  }
  static bool is_int(const nlohmann::json& v) {
    return is_int64(v) && v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
  }

  void get(const std::string& k, double& out) const {
    if (const auto* v = find(k)) out = checked(k, v->is_number(), "a number").get<double>();
  }
  void get(const std::string& k, int& out) const {
    if (const auto* v = find(k)) out = static_cast<int>(checked(k, is_int(*v), "an integer").get<int64_t>());
  }
  void get(const std::string& k, int64_t& out) const {
    if (const auto* v = find(k)) out = checked(k, is_int64(*v), "an integer").get<int64_t>();
  }
  void get(const std::string& k, uint64_t& out) const {
    if (const auto* v = find(k)) out = checked(k, is_uint64(*v), "a non-negative integer").get<uint64_t>();
  }
  void get(const std::string& k, bool& out) const {
    if (const auto* v = find(k)) out = checked(k, v->is_boolean(), "true or false").get<bool>();
  }
  void get(const std::string& k, std::string& out) const {
    if (const auto* v = find(k)) out = checked(k, v->is_string(), "a string").get<std::string>();
  }

  // The object under key k (which must be present), read with its own keys.
  JsonFields sub(const std::string& k, std::vector<std::string> known) const {
    return JsonFields(j_.at(k), source_, key(k), std::move(known));
  }

 private:
  const nlohmann::json& checked(const std::string& k, bool ok, const char* expected) const {
    if (!ok) bad(k, expected);
    return j_.at(k);
  }

  const nlohmann::json& j_;
  std::string source_, section_;
};

// `text` parsed as a config's JSON, errors naming `source` (and `what`, as
// "model config", when given): "<source>: not valid JSON: ...", "<source>:
// model config is not valid JSON: ..." (a number
// beyond a double's range too), and nesting deeper than 64 levels refused
// while parsing: messages quote a wrong value with dump(), which recurses
// once per level, so a value nested deep enough would overflow the stack.
inline nlohmann::json parse_config_json(const std::string& text, const std::string& source,
                                        std::string_view what = {}) {
  using json = nlohmann::json;
  constexpr int kMaxDepth = 64;
  const std::string prefix = source + ": " + (what.empty() ? "" : std::string(what) + " ");
  auto bounded = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth > kMaxDepth)
      fail(prefix + "nests JSON deeper than " + std::to_string(kMaxDepth) + " levels");
    return true;
  };
  try {
    return json::parse(text, bounded);
  } catch (const json::exception& e) {
    fail(prefix + (what.empty() ? "" : "is ") + "not valid JSON: " + e.what());
  }
}

// c.validate(), its error prefixed with `source`.
template <typename Config>
void validate_config(const Config& c, const std::string& source) {
  try {
    c.validate();
  } catch (const Error& e) {
    fail(source + ": " + e.what());
  }
}

}  // namespace ssm::detail
