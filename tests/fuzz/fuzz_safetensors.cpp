// libFuzzer target for the safetensors reader. Any input must either parse or
// throw ssm::Error; an accepted file must survive a write / read round trip
// unchanged (names, dtypes, shapes, bytes, metadata).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ssm/safetensors.hpp"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

void check_round_trip(const ssm::SafeTensors& st) {
  ssm::SafeTensorsWriter w;
  for (const auto& name : st.names()) {
    const ssm::TensorInfo& ti = st.info(name);
    w.add_raw(name, ti.dtype, ti.shape, st.raw(name));
  }
  for (const auto& [k, v] : st.metadata()) w.set_metadata(k, v);
  const ssm::SafeTensors back = ssm::SafeTensors::parse(w.to_bytes(), "round trip");
  if (back.names() != st.names() || back.metadata() != st.metadata()) broken("names or metadata changed");
  for (const auto& name : st.names()) {
    const ssm::TensorInfo &a = st.info(name), &b = back.info(name);
    const auto ra = st.raw(name), rb = back.raw(name);  // (numel * dtype size)
    if (a.dtype != b.dtype || a.shape != b.shape || ra.size() != rb.size()) broken("tensor header changed");
    if (!ra.empty() && std::memcmp(ra.data(), rb.data(), ra.size()) != 0) broken("tensor bytes changed");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);  // (size)
  try {
    const ssm::SafeTensors st = ssm::SafeTensors::parse(std::move(bytes), "fuzz input");
    for (const auto& name : st.names()) {
      const ssm::TensorInfo& ti = st.info(name);
      if (st.raw(name).size() != ti.numel() * ssm::safetensors_dtype_size(ti.dtype)) broken("raw size");
      if (ti.dtype == "F32" || ti.dtype == "F64" || ti.dtype == "F16" || ti.dtype == "BF16") {
        std::vector<float> out(ti.numel());  // (numel)
        st.read_float(name, out.data(), ti.shape);
      }
    }
    try {
      check_round_trip(st);
    } catch (const ssm::Error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      broken("an accepted file could not be written back");
    }
  } catch (const ssm::Error&) {
    // Rejected input: the expected outcome for most of it.
  }
  return 0;
}
