// Internal to lib/detect: strict reading of one JSON object of a config.
// Unknown keys and values of the wrong type are errors that name `source`
// and the dotted key ("t.json: unknown key 'level.windw' ...").
#pragma once
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>

#include "ssm/common.hpp"

namespace ssm::detail {

class JsonFields {
 public:
  // `section` is the dotted name of this object ("" for the top level).
  JsonFields(const nlohmann::json& j, const std::string& source, std::string section,
             std::initializer_list<const char*> known)
      : j_(j), source_(source), section_(std::move(section)) {
    require(j.is_object(), source + ": '" + (section_.empty() ? "(top level)" : section_) + "' must be an object");
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool ok = false;
      for (const char* k : known) ok = ok || it.key() == k;
      if (!ok) {
        std::string list;
        for (const char* k : known) list += std::string(list.empty() ? "" : ", ") + k;
        fail(source + ": unknown key '" + key(it.key()) + "' (expected one of: " + list + ")");
      }
    }
  }

  std::string key(const std::string& k) const { return section_.empty() ? k : section_ + "." + k; }
  const nlohmann::json* find(const char* k) const {
    auto it = j_.find(k);
    return it == j_.end() ? nullptr : &*it;
  }

  // Each leaves `out` as it is when the key is absent.
  void get(const char* k, double& out) const {
    if (const auto* v = find(k)) out = checked(*v, v->is_number(), k, "a number").get<double>();
  }
  void get(const char* k, int& out) const {
    if (const auto* v = find(k))
      out = static_cast<int>(checked(*v,
                                     v->is_number_integer() && v->get<int64_t>() >= INT32_MIN &&
                                         v->get<int64_t>() <= INT32_MAX,
                                     k, "an integer")
                                 .get<int64_t>());
  }
  void get(const char* k, int64_t& out) const {
    if (const auto* v = find(k))
      out = checked(*v, v->is_number_integer() && !(v->is_number_unsigned() && v->get<uint64_t>() > INT64_MAX), k,
                    "an integer")
                .get<int64_t>();
  }
  void get(const char* k, uint64_t& out) const {
    if (const auto* v = find(k)) out = checked(*v, v->is_number_unsigned(), k, "a non-negative integer").get<uint64_t>();
  }
  void get(const char* k, bool& out) const {
    if (const auto* v = find(k)) out = checked(*v, v->is_boolean(), k, "true or false").get<bool>();
  }

 private:
  const nlohmann::json& checked(const nlohmann::json& v, bool ok, const char* k, const char* expected) const {
    require(ok, source_ + ": '" + key(k) + "' must be " + expected + ", got " + v.dump());
    return v;
  }

  const nlohmann::json& j_;
  const std::string& source_;
  std::string section_;
};

}  // namespace ssm::detail
