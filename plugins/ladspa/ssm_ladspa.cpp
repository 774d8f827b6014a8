// LADSPA plugins "ssm_denoise" (mono) and "ssm_denoise_stereo" (two channels,
// each denoised with its own stream state): the default denoiser (or
// $SSM_DENOISER_MODEL) through the library's DenoiseChain, Fixed timing.
//
// Rates: the model runs at its own rate (16 kHz); at any other host rate the
// chain converts inside (libsamplerate's medium converter) and primes its
// output with the frames the converters hold back. The total delay (priming
// plus the model's lookahead and frame wait) is reported on the "latency"
// control output port, in host frames, for hosts that compensate.
// Controls: "attenuation limit (dB)" (0 = none) and "dry/wet" (1 = denoised
// only); every control port has a default, so hosts that fill controls from
// a command line (sox's ladspa effect) need none given.
// run() allocates nothing and takes no lock; instantiate() does the allocating.
#include <ladspa.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "ssm/default_model.hpp"
#include "ssm/denoise_chain.hpp"

namespace {

constexpr unsigned long kChunk = 256;  // host frames per pass through the chain: bounds the scratch buffers
constexpr unsigned long kMaxPorts = 7;

// Where each port is, per variant.
struct Layout {
  int channels;
  unsigned long in[2], out[2], latency, limit, wet, count;
};
constexpr Layout kMono{1, {0, 0}, {1, 1}, 2, 3, 4, 5};
constexpr Layout kStereo{2, {0, 1}, {2, 3}, 4, 5, 6, 7};

struct Instance {
  const Layout* layout = nullptr;
  std::unique_ptr<ssm::Model> model;
  std::unique_ptr<ssm::DenoiseChain> chain;
  float latency = 0;  // host frames, reported on the port
  LADSPA_Data* ports[kMaxPorts] = {};
  float in[kChunk * 2] = {}, out[kChunk * 2] = {};  // (kChunk, channels) interleaved
};

LADSPA_Handle instantiate(const LADSPA_Descriptor* d, unsigned long rate) {
  try {
    auto p = std::make_unique<Instance>();
    p->layout = static_cast<const Layout*>(d->ImplementationData);
    p->model = std::make_unique<ssm::Model>(ssm::load_denoiser(""));
    ssm::DenoiseChainOptions o;
    o.rate = static_cast<int>(rate);
    o.channels = p->layout->channels;
    o.max_block = kChunk;
    o.quality = ssm::ResampleQuality::Medium;
    o.timing = ssm::ChainTiming::Fixed;
    p->chain = std::make_unique<ssm::DenoiseChain>(*p->model, o);
    p->latency = static_cast<float>(p->chain->total_latency());
    return p.release();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s (LADSPA): cannot instantiate at %lu Hz: %s\n", d->Label, rate, e.what());
  } catch (...) {
  }
  return nullptr;
}

void connect_port(LADSPA_Handle h, unsigned long port, LADSPA_Data* where) {
  auto& p = *static_cast<Instance*>(h);
  if (port < p.layout->count) p.ports[port] = where;
}

void activate(LADSPA_Handle h) { static_cast<Instance*>(h)->chain->reset(); }

void run(LADSPA_Handle h, unsigned long n) {
  Instance& p = *static_cast<Instance*>(h);
  const Layout& L = *p.layout;
  const int C = L.channels;
  if (p.ports[L.latency]) *p.ports[L.latency] = p.latency;
  if (p.ports[L.limit]) p.chain->set_attenuation_limit_db(*p.ports[L.limit]);
  if (p.ports[L.wet]) p.chain->set_wet(*p.ports[L.wet]);
  for (int c = 0; c < C; ++c)
    if (!p.ports[L.in[c]] || !p.ports[L.out[c]]) return;
  try {
    // Step by step: each step reads its input before writing its output, so
    // hosts may pass the same buffer for both.
    for (unsigned long done = 0; done < n;) {
      const unsigned long k = std::min(kChunk, n - done);
      for (unsigned long t = 0; t < k; ++t)
        for (int c = 0; c < C; ++c) p.in[t * C + c] = p.ports[L.in[c]][done + t];
      p.chain->process(p.in, k, p.out);
      for (unsigned long t = 0; t < k; ++t)
        for (int c = 0; c < C; ++c) p.ports[L.out[c]][done + t] = p.out[t * C + c];
      done += k;
    }
  } catch (...) {
    // Nothing may unwind into the host: play silence rather than crash.
    for (int c = 0; c < C; ++c) std::fill(p.ports[L.out[c]], p.ports[L.out[c]] + n, 0.0f);
  }
}

void cleanup(LADSPA_Handle h) { delete static_cast<Instance*>(h); }

constexpr LADSPA_PortDescriptor kAudioIn = LADSPA_PORT_INPUT | LADSPA_PORT_AUDIO;
constexpr LADSPA_PortDescriptor kAudioOut = LADSPA_PORT_OUTPUT | LADSPA_PORT_AUDIO;
constexpr LADSPA_PortDescriptor kControlIn = LADSPA_PORT_INPUT | LADSPA_PORT_CONTROL;
constexpr LADSPA_PortDescriptor kControlOut = LADSPA_PORT_OUTPUT | LADSPA_PORT_CONTROL;
constexpr LADSPA_PortRangeHint kAudio{0, 0, 0};
constexpr LADSPA_PortRangeHint kLatencyHint{LADSPA_HINT_BOUNDED_BELOW | LADSPA_HINT_INTEGER | LADSPA_HINT_DEFAULT_0, 0, 0};
constexpr LADSPA_PortRangeHint kLimitHint{
    LADSPA_HINT_BOUNDED_BELOW | LADSPA_HINT_BOUNDED_ABOVE | LADSPA_HINT_DEFAULT_MINIMUM, 0, 100};
constexpr LADSPA_PortRangeHint kWetHint{
    LADSPA_HINT_BOUNDED_BELOW | LADSPA_HINT_BOUNDED_ABOVE | LADSPA_HINT_DEFAULT_MAXIMUM, 0, 1};

const char* const kMonoNames[] = {"Input", "Output", "latency", "attenuation limit (dB, 0 = none)", "dry/wet"};
const LADSPA_PortDescriptor kMonoKinds[] = {kAudioIn, kAudioOut, kControlOut, kControlIn, kControlIn};
const LADSPA_PortRangeHint kMonoHints[] = {kAudio, kAudio, kLatencyHint, kLimitHint, kWetHint};

const char* const kStereoNames[] = {"Input L", "Input R", "Output L", "Output R", "latency",
                                    "attenuation limit (dB, 0 = none)", "dry/wet"};
const LADSPA_PortDescriptor kStereoKinds[] = {kAudioIn, kAudioIn, kAudioOut, kAudioOut, kControlOut, kControlIn, kControlIn};
const LADSPA_PortRangeHint kStereoHints[] = {kAudio, kAudio, kAudio, kAudio, kLatencyHint, kLimitHint, kWetHint};

const LADSPA_Descriptor kDescriptors[] = {
    {4871, "ssm_denoise", 0, "ssm denoiser (selective state-space model, mono)", "ssm", "MIT", kMono.count,
     kMonoKinds, kMonoNames, kMonoHints, const_cast<Layout*>(&kMono), instantiate, connect_port, activate, run,
     nullptr, nullptr, nullptr, cleanup},
    {4872, "ssm_denoise_stereo", 0, "ssm denoiser (selective state-space model, stereo)", "ssm", "MIT",
     kStereo.count, kStereoKinds, kStereoNames, kStereoHints, const_cast<Layout*>(&kStereo), instantiate,
     connect_port, activate, run, nullptr, nullptr, nullptr, cleanup},
};

}  // namespace

extern "C" const LADSPA_Descriptor* ladspa_descriptor(unsigned long index) {
  return index < 2 ? &kDescriptors[index] : nullptr;
}
