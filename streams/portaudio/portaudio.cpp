#include "ssm/streams/portaudio.hpp"

#include <fcntl.h>
#include <pa_jack.h>
#include <portaudio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "ssm/common.hpp"

// Only a PortAudio built with JACK has it: weak, so that one without links too.
#pragma weak PaJack_SetClientName

namespace ssm {

namespace {

// Set when a stream had to be left to a host API that no longer answers (a
// JACK server killed under it): PortAudio is then not terminated either,
// since Pa_Terminate would wait on that stream too.
std::atomic<bool> g_abandoned{false};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

void check(PaError e, const std::string& what) {
  if (e != paNoError) fail(what + ": " + Pa_GetErrorText(e));
}

// Runs f with stderr pointed at /dev/null: ALSA's probing of absent cards
// prints pages of diagnostics that are not errors of ours.
template <typename F>
auto quietly(bool verbose, F&& f) {
  if (verbose) return f();
  fflush(stderr);
  const int saved = dup(2), null = open("/dev/null", O_WRONLY);
  if (saved >= 0 && null >= 0) dup2(null, 2);
  struct Restore {
    int saved, null;
    ~Restore() {
      if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
      }
      if (null >= 0) close(null);
    }
  } restore{saved, null};
  return f();
}

AudioDevice describe(int i) {
  const PaDeviceInfo* d = Pa_GetDeviceInfo(i);
  AudioDevice a;
  a.index = i;
  a.name = d->name;
  const PaHostApiInfo* h = Pa_GetHostApiInfo(d->hostApi);
  a.host_api = h ? h->name : "?";
  a.max_input_channels = d->maxInputChannels;
  a.max_output_channels = d->maxOutputChannels;
  a.default_rate = d->defaultSampleRate;
  a.default_low_input_latency = d->defaultLowInputLatency;
  a.default_low_output_latency = d->defaultLowOutputLatency;
  a.default_input = h && h->defaultInputDevice == i;
  a.default_output = h && h->defaultOutputDevice == i;
  return a;
}

}  // namespace

PortAudioSystem::PortAudioSystem(bool verbose) : verbose_(verbose) {
  // The name other JACK clients see (and patchbays show) instead of "PortAudio".
  if (&PaJack_SetClientName != nullptr) PaJack_SetClientName("ssm");
  const PaError e = quietly(verbose_, [] { return Pa_Initialize(); });
  check(e, "cannot initialise PortAudio");
}

PortAudioSystem::~PortAudioSystem() {
  if (g_abandoned.load()) return;
  quietly(verbose_, [] { return Pa_Terminate(); });
}

std::vector<std::string> PortAudioSystem::host_apis() const {
  std::vector<std::string> names;
  for (int i = 0; i < Pa_GetHostApiCount(); ++i) names.push_back(Pa_GetHostApiInfo(i)->name);
  return names;
}

std::string PortAudioSystem::host_api(const std::string& name) const {
  std::vector<std::string> hits;
  for (const auto& n : host_apis())
    if (lower(n) == lower(name)) return n;
  for (const auto& n : host_apis())
    if (lower(n).find(lower(name)) != std::string::npos) hits.push_back(n);
  if (hits.size() == 1) return hits[0];
  std::string all;
  for (const auto& n : host_apis()) all += (all.empty() ? "" : ", ") + n;
  fail("host API '" + name + "' " + (hits.empty() ? "not found" : "is ambiguous") + " (available: " + all + ")");
}

std::vector<AudioDevice> PortAudioSystem::devices() const {
  std::vector<AudioDevice> all;
  for (int i = 0; i < Pa_GetDeviceCount(); ++i) all.push_back(describe(i));
  return all;
}

AudioDevice PortAudioSystem::find(const std::string& spec, const std::string& host_api, bool input) const {
  const char* kind = input ? "input" : "output";
  const std::string api = host_api.empty() ? std::string() : this->host_api(host_api);  // "" = any
  auto usable = [&](const AudioDevice& d) {
    return (api.empty() || d.host_api == api) && (input ? d.max_input_channels : d.max_output_channels) > 0;
  };
  const std::vector<AudioDevice> all = devices();
  std::vector<AudioDevice> hits;
  if (spec.empty()) {
    int idx = -1;
    if (api.empty()) {
      idx = input ? Pa_GetDefaultInputDevice() : Pa_GetDefaultOutputDevice();
    } else {
      for (int i = 0; i < Pa_GetHostApiCount(); ++i)
        if (api == Pa_GetHostApiInfo(i)->name)
          idx = input ? Pa_GetHostApiInfo(i)->defaultInputDevice : Pa_GetHostApiInfo(i)->defaultOutputDevice;
    }
    if (idx < 0 || idx >= static_cast<int>(all.size()) || !usable(all[idx]))
      fail(std::string("no default ") + kind + " device" + (api.empty() ? "" : " for host API " + api) +
           " (see `ssm devices`)");
    return all[idx];
  }
  if (std::all_of(spec.begin(), spec.end(), ::isdigit)) {
    const int idx = std::stoi(spec);
    require(idx >= 0 && idx < static_cast<int>(all.size()),
            std::string(kind) + " device index " + spec + " out of range (0.." + std::to_string(all.size()) + ")");
    require(usable(all[idx]), std::string(kind) + " device " + spec + " ('" + all[idx].name + "', " +
                                  all[idx].host_api + ") has no " + kind + " channels" +
                                  (api.empty() ? "" : " or is not in host API " + api));
    return all[idx];
  }
  for (const auto& d : all)
    if (usable(d) && d.name == spec) hits.push_back(d);
  if (hits.empty())
    for (const auto& d : all)
      if (usable(d) && lower(d.name).find(lower(spec)) != std::string::npos) hits.push_back(d);
  if (hits.size() == 1) return hits[0];
  std::string names;
  for (const auto& d : (hits.empty() ? all : hits))
    if (hits.size() > 1 || usable(d)) names += (names.empty() ? "" : ", ") + std::to_string(d.index) + " '" + d.name + "'";
  fail(std::string(kind) + " device '" + spec + "'" + (api.empty() ? "" : " in host API " + api) +
       (hits.empty() ? " not found" : " is ambiguous") + " (" + (hits.empty() ? "available: " : "matches: ") +
       (names.empty() ? "none" : names) + ")");
}

bool PortAudioSystem::supports(const AudioDevice* in, const AudioDevice* out, int out_channels, double rate) const {
  PaStreamParameters ip{}, op{};
  if (in) ip = {in->index, 1, paFloat32, in->default_low_input_latency, nullptr};
  if (out) op = {out->index, out_channels, paFloat32, out->default_low_output_latency, nullptr};
  return Pa_IsFormatSupported(in ? &ip : nullptr, out ? &op : nullptr, rate) == paFormatIsSupported;
}

struct PortAudioStream::Impl {
  Pipeline& pipeline;
  PaStream* stream = nullptr;
  int out_channels = 0;
  bool abandoned = false;
  std::vector<float> mono;  // (kMaxFrames) the pipeline's output before it is spread over the channels
  static constexpr unsigned long kMaxFrames = 8192;

  explicit Impl(Pipeline& p) : pipeline(p), mono(kMaxFrames) {}

  // The device's real-time thread: only the pipeline's non-blocking callback.
  static int callback(const void* input, void* output, unsigned long frames, const PaStreamCallbackTimeInfo* time,
                      PaStreamCallbackFlags flags, void* user) {
    Impl& s = *static_cast<Impl*>(user);
    if (flags & (paInputOverflow | paInputUnderflow | paOutputOverflow | paOutputUnderflow))
      s.pipeline.note_device_xrun();
    if (time && input && output && time->outputBufferDacTime > 0 && time->inputBufferAdcTime > 0)
      s.pipeline.note_device_latency(time->outputBufferDacTime - time->inputBufferAdcTime);
    const float* in = static_cast<const float*>(input);
    float* out = static_cast<float*>(output);
    for (unsigned long done = 0; done < frames;) {
      const unsigned long n = std::min(kMaxFrames, frames - done);
      if (out && s.out_channels == 1) {
        s.pipeline.audio_callback(in ? in + done : nullptr, out + done, n);
      } else if (out) {
        s.pipeline.audio_callback(in ? in + done : nullptr, s.mono.data(), n);
        for (unsigned long t = 0; t < n; ++t)
          for (int c = 0; c < s.out_channels; ++c) out[(done + t) * s.out_channels + c] = s.mono[t];
      } else {
        s.pipeline.audio_callback(in + done, nullptr, n);
      }
      done += n;
    }
    return paContinue;
  }
};

PortAudioStream::PortAudioStream(Pipeline& pipeline, const AudioDevice* in, const AudioDevice* out, int rate,
                                 unsigned long frames_per_buffer)
    : impl_(std::make_unique<Impl>(pipeline)) {
  require(in || out, "audio stream: neither an input nor an output device");
  PaStreamParameters ip{}, op{};
  if (in) ip = {in->index, 1, paFloat32, in->default_low_input_latency, nullptr};
  if (out) {
    impl_->out_channels = std::min(2, out->max_output_channels);
    op = {out->index, impl_->out_channels, paFloat32, out->default_low_output_latency, nullptr};
  }
  const std::string what = std::string("cannot open the audio stream (") +
                           (in ? "input '" + in->name + "'" : std::string()) + (in && out ? ", " : "") +
                           (out ? "output '" + out->name + "'" : std::string()) + " at " + std::to_string(rate) +
                           " Hz, " + std::to_string(frames_per_buffer) + " frames per buffer)";
  check(Pa_OpenStream(&impl_->stream, in ? &ip : nullptr, out ? &op : nullptr, rate, frames_per_buffer, paClipOff,
                      &Impl::callback, impl_.get()),
        what);
}

PortAudioStream::~PortAudioStream() {
  if (!impl_->stream) return;
  stop();
  if (impl_->abandoned) {
    // The host API may still hold the callback's pointer: the state stays,
    // reachable from here (so leak checkers see it kept, not lost).
    static auto* kept = new std::vector<Impl*>;
    kept->push_back(impl_.release());
    return;
  }
  Pa_CloseStream(impl_->stream);
}

void PortAudioStream::start() { check(Pa_StartStream(impl_->stream), "cannot start the audio stream"); }

bool PortAudioStream::stop(double timeout_s) {
  Impl& s = *impl_;
  if (s.abandoned) return false;
  if (Pa_IsStreamStopped(s.stream) != 0) return true;
  // Pa_StopStream waits for the host API to confirm the last callback; a
  // server that has gone away never does. It runs on a helper thread, and
  // after the timeout the stream is left to it.
  auto stopped = std::make_shared<std::promise<void>>();
  std::future<void> done = stopped->get_future();
  std::thread helper([stream = s.stream, stopped] {
    Pa_StopStream(stream);
    stopped->set_value();
  });
  if (done.wait_for(std::chrono::duration<double>(timeout_s)) == std::future_status::ready) {
    helper.join();
    return true;
  }
  helper.detach();
  s.abandoned = true;
  g_abandoned.store(true);
  return false;
}

bool PortAudioStream::active() const { return Pa_IsStreamActive(impl_->stream) == 1; }

double PortAudioStream::input_latency() const {
  const PaStreamInfo* i = Pa_GetStreamInfo(impl_->stream);
  return i ? i->inputLatency : 0;
}

double PortAudioStream::output_latency() const {
  const PaStreamInfo* i = Pa_GetStreamInfo(impl_->stream);
  return i ? i->outputLatency : 0;
}

int PortAudioStream::output_channels() const { return impl_->out_channels; }

}  // namespace ssm
