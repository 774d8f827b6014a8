// libFuzzer target for sound-file loading through our wrappers around
// libsndfile: read_audio (and mix_to_mono) as training and `ssm denoise`
// use it, and the chunked sound-file Source of the streaming tools. The
// input is the file; its last two bytes also choose the chunk size of the
// Source's reads (a file's tail is rarely part of its header).
//
// The bytes are handed over as an in-memory file (memfd) opened by path, so
// the wrappers run unchanged. Any file must either load or throw ssm::Error;
// a loaded file must have a positive rate and channel count, whole frames
// and finite samples, and the Source must never return more frames than
// asked for.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "fuzz_common.hpp"
#include "ssm/audio_file.hpp"
#include "ssm/common.hpp"
#include "ssm/streams/io.hpp"

using ssm_fuzz::broken;
using ssm_fuzz::check;

namespace {

// An in-memory file holding the input, reachable by a path.
struct MemFile {
  int fd = -1;
  std::string path;
  MemFile(const uint8_t* data, size_t size) {
    fd = memfd_create("fuzz_audio_file", 0);
    if (fd < 0) broken("memfd_create failed");
    for (size_t done = 0; done < size;) {
      const ssize_t w = write(fd, data + done, size - done);
      if (w <= 0) broken("write to the memfd failed");
      done += static_cast<size_t>(w);
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  ~MemFile() { close(fd); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider tail(data, size);
  const size_t chunk = size >= 2 ? tail.ConsumeIntegralInRange<size_t>(1, 4096) : 64;
  const MemFile file(data, size);

  try {
    const ssm::Audio a = ssm::read_audio(file.path);
    check(a.rate > 0 && a.channels > 0, "loaded with a rate or channel count <= 0");
    check(!a.samples.empty() && a.samples.size() % a.channels == 0, "loaded no or partial frames");
    for (float v : a.samples) check(std::isfinite(v), "loaded a non-finite sample");
    const std::vector<float> mono = ssm::mix_to_mono(a);
    check(mono.size() == a.frames(), "mono mix of the wrong length");
  } catch (const ssm::Error&) {
    // Rejected: the expected outcome for most inputs.
  }

  try {
    auto src = ssm::open_sound_file_source(file.path);
    check(src->rate() > 0 && src->channels() > 0, "source with a rate or channel count <= 0");
    const size_t channels = static_cast<size_t>(src->channels());
    // Bounded: a header may promise far more frames than the bytes hold, and
    // some decoders then produce them (a 25-byte SDS file gives 2 million).
    for (size_t total = 0; total < (size_t{1} << 16);) {
      const auto out = std::make_unique<float[]>(chunk * channels);  // (chunk, channels)
      const size_t n = src->read(out.get(), chunk);
      check(n <= chunk, "source returned more frames than asked for");
      if (n == 0) break;
      total += n;
    }
  } catch (const ssm::Error&) {
  }
  return 0;
}
