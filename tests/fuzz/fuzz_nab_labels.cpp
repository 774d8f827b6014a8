// libFuzzer target for NAB's label file reader (parse_nab_labels). Any text
// must either parse or throw ssm::Error. Of parsed labels: every window lies
// within years 0001..9999 with start <= end, a file's windows are sorted and
// do not overlap, and writing the windows back with format_timestamp and
// reading them again gives the same windows.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "ssm/common.hpp"
#include "ssm/timeseries_csv.hpp"

using ssm_fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ssm::NabLabels labels;
  try {
    labels = ssm::parse_nab_labels(text, "fuzz input");
  } catch (const ssm::Error&) {
    return 0;  // rejected: the expected outcome for most inputs
  }
  nlohmann::json back = nlohmann::json::object();
  for (const auto& [key, windows] : labels) {
    nlohmann::json list = nlohmann::json::array();
    for (size_t k = 0; k < windows.size(); ++k) {
      const auto [a, b] = windows[k];
      check(a <= b, "a window with start after end");
      check(k == 0 || a >= windows[k - 1].second, "windows out of order or overlapping");
      list.push_back({ssm::format_timestamp(a), ssm::format_timestamp(b)});
    }
    back[key] = list;
  }
  const ssm::NabLabels again = ssm::parse_nab_labels(back.dump(), "round trip");
  check(again == labels, "labels changed in a write / read round trip");
  return 0;
}
