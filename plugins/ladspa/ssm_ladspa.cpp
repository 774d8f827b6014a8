// LADSPA plugin "ssm_denoise": the default denoiser (or $SSM_DENOISER_MODEL)
// on a mono stream, through the C API.
//
// Rates: the model runs at its own rate (16 kHz). At any other host rate the
// plugin converts inside: host -> model rate -> denoiser -> host rate with
// streaming libsamplerate converters made in instantiate(). The converters
// hold samples back, so the output is primed with that much silence; the
// total delay (priming + the model's lookahead) is reported on the "latency"
// control output port, in host frames, for hosts that compensate.
// run() allocates nothing and takes no lock; instantiate() does the allocating.
#include <ladspa.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "ssm/c_api.h"
#include "ssm/streams/resampler.hpp"

namespace {

enum Port : unsigned long { kInput = 0, kOutput = 1, kLatency = 2, kPortCount = 3 };
constexpr unsigned long kChunk = 256;  // host frames converted per step: bounds the scratch buffers

struct Instance {
  ssm_denoiser* st = nullptr;
  unsigned long host_rate = 0;
  int model_rate = 0;
  std::unique_ptr<ssm::Resampler> down, up;  // null when the host runs at the model rate
  size_t prime = 0;                           // host frames of silence the output starts with
  float latency = 0;                          // host frames, reported on the port
  std::vector<float> m_in, m_out;             // (down->max_output(kChunk)) at the model rate
  std::vector<float> fifo;                    // (capacity) host-rate output waiting to be played
  size_t head = 0, count = 0;                 // fifo read position and fill
  std::vector<float> conv;                    // (up->max_output(m_in.size())) one step's output
  LADSPA_Data* ports[kPortCount] = {nullptr, nullptr, nullptr};

  ~Instance() { ssm_denoiser_destroy(st); }

  void fifo_push(const float* x, size_t n) {
    // Sized in instantiate() for the most that can be waiting; never grows.
    n = std::min(n, fifo.size() - count);
    for (size_t i = 0; i < n; ++i) fifo[(head + count + i) % fifo.size()] = x[i];
    count += n;
  }
  size_t fifo_pop(float* y, size_t n) {
    n = std::min(n, count);
    for (size_t i = 0; i < n; ++i) y[i] = fifo[(head + i) % fifo.size()];
    head = (head + n) % fifo.size();
    count -= n;
    return n;
  }
  void reset() {
    ssm_denoiser_reset(st);
    if (down) {
      down->reset();
      up->reset();
    }
    head = 0;
    count = 0;
    std::fill(conv.begin(), conv.end(), 0.0f);
    for (size_t left = prime; left > 0;) {
      const size_t k = std::min(left, conv.size());
      fifo_push(conv.data(), k);
      left -= k;
    }
  }
};

LADSPA_Handle instantiate(const LADSPA_Descriptor*, unsigned long rate) {
  try {
    auto p = std::make_unique<Instance>();
    p->st = ssm_denoiser_create(nullptr);
    if (!p->st) {
      std::fprintf(stderr, "ssm_denoise (LADSPA): %s\n", ssm_last_error());
      return nullptr;
    }
    p->host_rate = rate;
    p->model_rate = ssm_denoiser_sample_rate(p->st);
    const double lookahead = ssm_denoiser_latency(p->st) * static_cast<double>(rate) / p->model_rate;
    if (static_cast<int>(rate) != p->model_rate) {
      const auto q = ssm::ResampleQuality::Medium;
      p->down = std::make_unique<ssm::Resampler>(static_cast<int>(rate), p->model_rate, q);
      p->up = std::make_unique<ssm::Resampler>(p->model_rate, static_cast<int>(rate), q);
      p->prime = ssm::resampler_pair_holdback(static_cast<int>(rate), p->model_rate, q);
      p->m_in.resize(p->down->max_output(kChunk));
      p->m_out.resize(p->m_in.size());
      p->conv.resize(p->up->max_output(p->m_in.size()));
      p->fifo.resize(p->prime + p->conv.size() + kChunk);
    }
    p->latency = static_cast<float>(p->prime + std::lround(lookahead));
    p->reset();
    return p.release();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ssm_denoise (LADSPA): cannot instantiate at %lu Hz: %s\n", rate, e.what());
  } catch (...) {
  }
  return nullptr;
}

void connect_port(LADSPA_Handle h, unsigned long port, LADSPA_Data* where) {
  if (port < kPortCount) static_cast<Instance*>(h)->ports[port] = where;
}

void activate(LADSPA_Handle h) {
  try {
    static_cast<Instance*>(h)->reset();
  } catch (...) {
  }
}

void run(LADSPA_Handle h, unsigned long n) {
  Instance& p = *static_cast<Instance*>(h);
  if (p.ports[kLatency]) *p.ports[kLatency] = p.latency;
  const LADSPA_Data* in = p.ports[kInput];
  LADSPA_Data* out = p.ports[kOutput];
  if (!in || !out) return;
  try {
    // Step by step: each step reads its input before writing its output, so
    // hosts may pass the same buffer for both.
    for (unsigned long done = 0; done < n;) {
      const unsigned long c = std::min(kChunk, n - done);
      if (!p.down) {
        ssm_denoiser_process(p.st, out + done, in + done, static_cast<int>(c));
      } else {
        // Non-finite samples are silence (c_api.h), before the converter too.
        float x[kChunk];
        for (unsigned long i = 0; i < c; ++i) x[i] = std::isfinite(in[done + i]) ? in[done + i] : 0.0f;
        const size_t k = p.down->process(x, c, p.m_in.data(), p.m_in.size());
        ssm_denoiser_process(p.st, p.m_out.data(), p.m_in.data(), static_cast<int>(k));
        p.fifo_push(p.conv.data(), p.up->process(p.m_out.data(), k, p.conv.data(), p.conv.size()));
        const size_t got = p.fifo_pop(out + done, c);
        std::fill(out + done + got, out + done + c, 0.0f);  // cannot happen with the priming
      }
      done += c;
    }
  } catch (...) {
    // Nothing may unwind into the host: play silence rather than crash.
    std::fill(out, out + n, 0.0f);
  }
}

void cleanup(LADSPA_Handle h) { delete static_cast<Instance*>(h); }

const char* const kPortNames[kPortCount] = {"Input", "Output", "latency"};
const LADSPA_PortDescriptor kPortKinds[kPortCount] = {
    LADSPA_PORT_INPUT | LADSPA_PORT_AUDIO, LADSPA_PORT_OUTPUT | LADSPA_PORT_AUDIO,
    LADSPA_PORT_OUTPUT | LADSPA_PORT_CONTROL};
// Every control port has a default: hosts that fill controls from their
// command line (sox's ladspa effect) need none given.
const LADSPA_PortRangeHint kPortHints[kPortCount] = {
    {0, 0, 0}, {0, 0, 0}, {LADSPA_HINT_BOUNDED_BELOW | LADSPA_HINT_INTEGER | LADSPA_HINT_DEFAULT_0, 0, 0}};

const LADSPA_Descriptor kDescriptor = {
    /*UniqueID=*/4871,
    /*Label=*/"ssm_denoise",
    /*Properties=*/0,
    /*Name=*/"ssm denoiser (selective state-space model, mono)",
    /*Maker=*/"ssm",
    /*Copyright=*/"see the ssm project",
    /*PortCount=*/kPortCount,
    /*PortDescriptors=*/kPortKinds,
    /*PortNames=*/kPortNames,
    /*PortRangeHints=*/kPortHints,
    /*ImplementationData=*/nullptr,
    instantiate,
    connect_port,
    activate,
    run,
    /*run_adding=*/nullptr,
    /*set_run_adding_gain=*/nullptr,
    /*deactivate=*/nullptr,
    cleanup,
};

}  // namespace

extern "C" const LADSPA_Descriptor* ladspa_descriptor(unsigned long index) {
  return index == 0 ? &kDescriptor : nullptr;
}
