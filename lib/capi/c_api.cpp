// The C API over Model + Stream. Every entry point catches everything: a C
// caller (or a plugin host) must never see a C++ exception unwind into it.
#include "ssm/c_api.h"

#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "ssm/default_model.hpp"
#include "ssm/model.hpp"

namespace {

constexpr int kFrameSize = 256;

thread_local std::string t_last_error;

void set_error(const char* what) {
  try {
    t_last_error = what;
  } catch (...) {
    // Out of memory while reporting: keep the old message rather than throw.
  }
}

}  // namespace

struct ssm_denoiser {
  ssm::Model model;
  ssm::Stream stream;
  std::vector<float> scratch;  // (kFrameSize) inputs with non-finite values zeroed

  explicit ssm_denoiser(ssm::Model m) : model(std::move(m)), stream(model, kFrameSize), scratch(kFrameSize) {}
};

extern "C" {

ssm_denoiser* ssm_denoiser_create(const char* model_path_or_null) {
  try {
    const std::string path = model_path_or_null ? model_path_or_null : "";
    std::string description;
    ssm::Model m = ssm::load_denoiser(path, path.empty() ? nullptr : &description);
    // BLAS threading is the process's to choose (OPENBLAS_NUM_THREADS): a
    // library does not change it behind its caller's back.
    t_last_error.clear();
    return new ssm_denoiser(std::move(m));
  } catch (const std::bad_alloc&) {
    set_error("ssm_denoiser_create: out of memory");
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("ssm_denoiser_create: unknown error");
  }
  return nullptr;
}

int ssm_denoiser_frame_size(const ssm_denoiser* st) { return st ? kFrameSize : -1; }

int ssm_denoiser_sample_rate(const ssm_denoiser* st) { return st ? st->model.config().sample_rate : -1; }

int ssm_denoiser_latency(const ssm_denoiser* st) { return st ? st->model.config().latency() : -1; }

int ssm_denoiser_process(ssm_denoiser* st, float* out, const float* in, int n) {
  if (!st || n < 0 || (n > 0 && (!out || !in))) {
    set_error("ssm_denoiser_process: null handle or buffer, or negative count");
    return -1;
  }
  // Chunks of the model's block: each chunk's input is read before its output
  // is written, which makes in == out safe.
  for (int done = 0; done < n;) {
    const int m = std::min(kFrameSize, n - done);
    const float* x = in + done;
    bool finite = true;
    for (int i = 0; i < m; ++i) finite &= std::isfinite(x[i]);
    if (!finite) {
      for (int i = 0; i < m; ++i) st->scratch[i] = std::isfinite(x[i]) ? x[i] : 0.0f;
      x = st->scratch.data();
    }
    st->stream.process(x, out + done, static_cast<size_t>(m));
    done += m;
  }
  return n;
}

void ssm_denoiser_reset(ssm_denoiser* st) {
  if (st) st->stream.reset();
}

void ssm_denoiser_destroy(ssm_denoiser* st) { delete st; }

const char* ssm_last_error(void) { return t_last_error.c_str(); }

const char* ssm_version(void) { return SSM_VERSION_STRING; }

}  // extern "C"
