// Writes the seed corpus of fuzz_detector_state into the folder given: the
// saved states of one series at several points of its life (new, learning,
// scoring, after an outlier, with seasonal profiles filled), made by the
// detector itself so that their layout is the current one.
//
//   seed_detector_state tests/fuzz/corpus/detector_state
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "ssm/common.hpp"
#include "ssm/detector.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: seed_detector_state FOLDER\n");
    return 2;
  }
  const ssm::Detector d(ssm::Forecaster::builtin(), ssm::DetectorConfig{});
  auto save = [&](const ssm::SeriesState& s, const std::string& name) {
    const std::vector<uint8_t> bytes = d.save(s);
    std::ofstream(std::string(argv[1]) + "/" + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  };
  ssm::SeriesState s = d.new_series();
  save(s, "new");
  int64_t epoch = 1396310400;  // 2014-04-01, five-minute steps as in NAB
  auto feed = [&](int n) {
    for (int i = 0; i < n; ++i, epoch += 300)
      d.update(s, epoch, 20 + 5 * std::sin(2 * M_PI * static_cast<double>(epoch % 86400) / 86400) + 0.1 * (i % 7));
  };
  feed(10);
  save(s, "learning");
  feed(300);
  save(s, "scoring");
  d.update(s, epoch, 500);
  epoch += 300;
  save(s, "after_outlier");
  feed(2 * 288);
  save(s, "two_days_later");
  return 0;
}
