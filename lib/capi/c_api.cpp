// The C API over the library's DenoiseChain (Fixed timing). Every entry point
// catches everything: a C caller (or a plugin host) must never see a C++
// exception unwind into it.
#include "ssm/c_api.h"

#include <algorithm>
#include <exception>
#include <new>
#include <string>

#include "ssm/default_model.hpp"
#include "ssm/denoise_chain.hpp"

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

ssm::DenoiseChainOptions chain_options(const ssm::Model& m, int rate, int channels) {
  ssm::DenoiseChainOptions o;
  o.rate = rate > 0 ? rate : m.config().sample_rate;
  o.channels = channels;
  o.max_block = kFrameSize;
  o.quality = ssm::ResampleQuality::Medium;
  o.timing = ssm::ChainTiming::Fixed;
  return o;
}

}  // namespace

struct ssm_denoiser {
  ssm::Model model;
  ssm::DenoiseChain chain;

  ssm_denoiser(ssm::Model m, int rate, int channels)
      : model(std::move(m)), chain(model, chain_options(model, rate, channels)) {}
};

namespace {

// rate 0: the model's own.
ssm_denoiser* create(const char* model_path_or_null, int rate, int channels) {
  try {
    const std::string path = model_path_or_null ? model_path_or_null : "";
    ssm::Model m = ssm::load_denoiser(path);
    // BLAS threading is the process's to choose (OPENBLAS_NUM_THREADS): a
    // library does not change it behind its caller's back.
    t_last_error.clear();
    return new ssm_denoiser(std::move(m), rate, channels);
  } catch (const std::bad_alloc&) {
    set_error("ssm_denoiser_create: out of memory");
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("ssm_denoiser_create: unknown error");
  }
  return nullptr;
}

}  // namespace

extern "C" {

ssm_denoiser* ssm_denoiser_create(const char* model_path_or_null) { return create(model_path_or_null, 0, 1); }

ssm_denoiser* ssm_denoiser_create_at(const char* model_path_or_null, int rate, int channels) {
  if (rate <= 0 || channels < 1 || channels > 64) {
    set_error("ssm_denoiser_create_at: the rate must be positive and channels in 1..64");
    return nullptr;
  }
  return create(model_path_or_null, rate, channels);
}

int ssm_denoiser_frame_size(const ssm_denoiser* st) { return st ? kFrameSize : -1; }

int ssm_denoiser_sample_rate(const ssm_denoiser* st) { return st ? st->chain.rate() : -1; }

int ssm_denoiser_channels(const ssm_denoiser* st) { return st ? st->chain.in_channels() : -1; }

int ssm_denoiser_latency(const ssm_denoiser* st) { return st ? static_cast<int>(st->chain.total_latency()) : -1; }

int ssm_denoiser_process(ssm_denoiser* st, float* out, const float* in, int n) {
  if (!st || n < 0 || (n > 0 && (!out || !in))) {
    set_error("ssm_denoiser_process: null handle or buffer, or negative count");
    return -1;
  }
  try {
    // Pieces of the frame size: the chain reads a piece before it writes
    // its output, which makes in == out safe.
    const int C = st->chain.in_channels();
    for (int done = 0; done < n;) {
      const int m = std::min(kFrameSize, n - done);
      st->chain.process(in + static_cast<size_t>(done) * C, static_cast<size_t>(m), out + static_cast<size_t>(done) * C);
      done += m;
    }
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  }
  return n;
}

int ssm_denoiser_set_attenuation_limit(ssm_denoiser* st, float db) {
  if (!st || !(db >= 0)) {
    set_error("ssm_denoiser_set_attenuation_limit: null handle, or a limit that is not >= 0 dB");
    return -1;
  }
  st->chain.set_attenuation_limit_db(db);
  return 0;
}

int ssm_denoiser_set_mix(ssm_denoiser* st, float wet) {
  if (!st || !(wet >= 0 && wet <= 1)) {
    set_error("ssm_denoiser_set_mix: null handle, or a share outside 0..1");
    return -1;
  }
  st->chain.set_wet(wet);
  return 0;
}

void ssm_denoiser_reset(ssm_denoiser* st) {
  if (st) st->chain.reset();
}

void ssm_denoiser_destroy(ssm_denoiser* st) { delete st; }

const char* ssm_last_error(void) { return t_last_error.c_str(); }

const char* ssm_version(void) { return SSM_VERSION_STRING; }

}  // extern "C"
