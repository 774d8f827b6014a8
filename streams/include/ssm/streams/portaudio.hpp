// PortAudio devices as the real-time pipeline's capture source and playback
// sink: device chosen by index or by name, host API selectable (ALSA, JACK,
// PulseAudio, ...). Built when SSM_WITH_PORTAUDIO is defined.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ssm/streams/pipeline.hpp"

namespace ssm {

struct AudioDevice {
  int index = -1;
  std::string name, host_api;
  int max_input_channels = 0, max_output_channels = 0;
  double default_rate = 0;
  double default_low_input_latency = 0, default_low_output_latency = 0;  // seconds
  bool default_input = false, default_output = false;  // the default of its host API
};

// Pa_Initialize / Pa_Terminate; the JACK client is named "ssm". Host APIs that probe hardware may print
// diagnostics of their own (ALSA on a machine without a sound card): they
// are silenced unless `verbose`.
class PortAudioSystem {
 public:
  explicit PortAudioSystem(bool verbose = false);
  ~PortAudioSystem();
  PortAudioSystem(const PortAudioSystem&) = delete;
  PortAudioSystem& operator=(const PortAudioSystem&) = delete;

  std::vector<std::string> host_apis() const;
  // The full name of the host API `name` names (exactly, else as a unique
  // case-insensitive part); throws ssm::Error with the available ones.
  std::string host_api(const std::string& name) const;
  std::vector<AudioDevice> devices() const;
  // `spec`: a device index, or a name (exact, else a unique case-insensitive
  // substring); empty = the default device of the host API (or of the system
  // when `host_api` is empty). `host_api`: a name or unique substring ("jack",
  // "alsa"). Throws ssm::Error naming what did not match, with the candidates.
  AudioDevice find(const std::string& spec, const std::string& host_api, bool input) const;
  // Whether a mono (input) / `out_channels` (output) stream runs at `rate`.
  bool supports(const AudioDevice* in, const AudioDevice* out, int out_channels, double rate) const;

 private:
  bool verbose_;
};

// A stream between the devices (either may be null) that calls the
// pipeline's audio_callback. Input is mono (the device's first channel);
// output goes to the device's first two channels (or one).
class PortAudioStream {
 public:
  PortAudioStream(Pipeline& pipeline, const AudioDevice* in, const AudioDevice* out, int rate,
                  unsigned long frames_per_buffer);
  ~PortAudioStream();
  PortAudioStream(const PortAudioStream&) = delete;
  PortAudioStream& operator=(const PortAudioStream&) = delete;

  void start();
  // Waits up to `timeout_s` for the last callback; idempotent. False when
  // the host API did not confirm in time (its server gone): the stream is
  // then abandoned to it, and neither it nor PortAudio is closed.
  bool stop(double timeout_s = 3.0);
  bool active() const;
  double input_latency() const;   // seconds, as the host API reports them
  double output_latency() const;
  int output_channels() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
