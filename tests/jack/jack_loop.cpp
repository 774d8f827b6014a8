#include "jack/jack_loop.hpp"

#include <jack/jack.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace ssm::testing {

namespace {
void quiet(const char*) {}
}  // namespace

JackLoop::JackLoop(const std::string& client_name, double timeout_s) {
  // While the server starts, every failed attempt would print its complaint.
  jack_set_error_function(quiet);
  jack_set_info_function(quiet);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  jack_status_t status{};
  while (!(client_ = jack_client_open(client_name.c_str(), JackNoStartServer, &status))) {
    if (std::chrono::steady_clock::now() > end)
      throw std::runtime_error("no JACK server answered within the timeout (status " + std::to_string(status) + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  mic_ = jack_port_register(client_, "mic", JACK_DEFAULT_AUDIO_TYPE, JackPortIsOutput, 0);
  speaker_ = jack_port_register(client_, "speaker", JACK_DEFAULT_AUDIO_TYPE, JackPortIsInput, 0);
  if (!mic_ || !speaker_) throw std::runtime_error("cannot register the JACK ports");
  jack_set_process_callback(client_, &JackLoop::process, this);
  if (jack_activate(client_) != 0) throw std::runtime_error("cannot activate the JACK client");
}

JackLoop::~JackLoop() {
  if (client_) {
    jack_deactivate(client_);
    jack_client_close(client_);
  }
}

int JackLoop::rate() const { return static_cast<int>(jack_get_sample_rate(client_)); }

bool JackLoop::connected(bool speaker_too) const {
  return jack_port_connected(mic_) > 0 && (!speaker_too || jack_port_connected(speaker_) > 0);
}

void JackLoop::play_and_record(const std::vector<float>& signal, size_t extra) {
  armed_.store(false);
  done_.store(false);
  signal_ = signal;
  recorded_.assign(signal.size() + extra, 0.0f);
  pos_ = 0;
  armed_.store(true, std::memory_order_release);
}

int JackLoop::process(unsigned frames, void* self) {
  auto& s = *static_cast<JackLoop*>(self);
  auto* out = static_cast<float*>(jack_port_get_buffer(s.mic_, frames));
  const auto* in = static_cast<const float*>(jack_port_get_buffer(s.speaker_, frames));
  std::memset(out, 0, frames * sizeof(float));
  if (!s.armed_.load(std::memory_order_acquire) || s.done_.load(std::memory_order_relaxed)) return 0;
  for (unsigned i = 0; i < frames && s.pos_ < s.recorded_.size(); ++i, ++s.pos_) {
    if (s.pos_ < s.signal_.size()) out[i] = s.signal_[s.pos_];
    s.recorded_[s.pos_] = in[i];
  }
  if (s.pos_ == s.recorded_.size()) s.done_.store(true, std::memory_order_release);
  return 0;
}

}  // namespace ssm::testing
