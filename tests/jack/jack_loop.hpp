// A small JACK client for the live end-to-end test: one output port plays a
// signal (the virtual microphone), one input port records (the virtual
// speaker), in the same process cycle, so the recording and the playback
// share one clock.
#pragma once
#include <atomic>
#include <string>
#include <vector>

typedef struct _jack_client jack_client_t;
typedef struct _jack_port jack_port_t;

namespace ssm::testing {

class JackLoop {
 public:
  // Connects to the server named by $JACK_DEFAULT_SERVER (never starts one);
  // waits up to `timeout_s` for it. Throws std::runtime_error if it is not there.
  JackLoop(const std::string& client_name, double timeout_s);
  ~JackLoop();
  JackLoop(const JackLoop&) = delete;
  JackLoop& operator=(const JackLoop&) = delete;

  int rate() const;
  // Both ports (or only the mic, with !speaker_too) connected to something:
  // the program under test?
  bool connected(bool speaker_too = true) const;
  // Plays `signal` from the next cycle on and records as many frames plus
  // `extra`; done() turns true when the recording is complete.
  void play_and_record(const std::vector<float>& signal, size_t extra);
  bool done() const { return done_.load(std::memory_order_acquire); }
  const std::vector<float>& recording() const { return recorded_; }

 private:
  static int process(unsigned frames, void* self);
  jack_client_t* client_ = nullptr;
  jack_port_t* mic_ = nullptr;      // output: what the program captures
  jack_port_t* speaker_ = nullptr;  // input: what the program plays
  std::vector<float> signal_, recorded_;
  size_t pos_ = 0;
  std::atomic<bool> armed_{false}, done_{false};
};

}  // namespace ssm::testing
