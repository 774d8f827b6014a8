// What the NATS code needs of the C client (libnats): errors that name what
// failed with the client's own detail, owners for its objects, and a
// connection that reconnects on its own and says when it is down
// (streams/nats only).
#pragma once
#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "ssm/common.hpp"

namespace ssm::nats {

// A failed call: what was tried, the client's status and, for a JetStream
// API call, the server's error code.
class NatsError : public Error {
 public:
  NatsError(const std::string& what, natsStatus status, jsErrCode code) : Error(what), status_(status), code_(code) {}
  natsStatus status() const { return status_; }
  jsErrCode code() const { return code_; }

 private:
  natsStatus status_;
  jsErrCode code_;
};

// "<status text>: <the client's last error detail>" for the calling thread.
std::string describe(natsStatus s);
[[noreturn]] void fail_nats(const std::string& what, natsStatus s, jsErrCode code = static_cast<jsErrCode>(0));
inline void check(natsStatus s, const std::string& what, jsErrCode code = static_cast<jsErrCode>(0)) {
  if (s != NATS_OK) fail_nats(what, s, code);
}

template <class T, void (*Destroy)(T*)>
struct Destroyer {
  void operator()(T* p) const { Destroy(p); }
};
using MsgPtr = std::unique_ptr<natsMsg, Destroyer<natsMsg, natsMsg_Destroy>>;
using SubPtr = std::unique_ptr<natsSubscription, Destroyer<natsSubscription, natsSubscription_Destroy>>;
using KvPtr = std::unique_ptr<kvStore, Destroyer<kvStore, kvStore_Destroy>>;
using KvEntryPtr = std::unique_ptr<kvEntry, Destroyer<kvEntry, kvEntry_Destroy>>;
using StreamInfoPtr = std::unique_ptr<jsStreamInfo, Destroyer<jsStreamInfo, jsStreamInfo_Destroy>>;
using PubAckPtr = std::unique_ptr<jsPubAck, Destroyer<jsPubAck, jsPubAck_Destroy>>;

// A JetStream context. Its asynchronous publishes are its own: discard()
// forgets those still unacknowledged, so that a partition going back to
// its checkpoint starts clean.
class JetStream {
 public:
  JetStream() = default;
  JetStream(natsConnection* nc, int64_t wait_ms, int64_t max_pending = 0, jsPubAckErrHandler on_error = nullptr,
            void* closure = nullptr);
  JetStream(natsConnection* nc, jsOptions& opts);
  ~JetStream();
  JetStream(JetStream&& o) noexcept : js_(std::exchange(o.js_, nullptr)), used_(std::exchange(o.used_, false)) {}
  JetStream& operator=(JetStream&& o) noexcept;
  jsCtx* get() const { return js_; }
  explicit operator bool() const { return js_ != nullptr; }
  natsStatus publish_async(const char* subject, const void* data, int len, jsPubOptions* opts) {
    used_ = true;
    return js_PublishAsync(js_, subject, data, len, opts);
  }
  natsStatus publish_async(natsMsg** m, jsPubOptions* opts) {
    used_ = true;
    return js_PublishMsgAsync(js_, m, opts);
  }
  // The publishes still unacknowledged, handed back (natsMsgList_Destroy them).
  bool take_pending(natsMsgList* out) { return used_ && js_PublishAsyncGetPendingList(out, js_) == NATS_OK; }
  // Waits up to ms for every asynchronous publish's acknowledgement.
  natsStatus complete(int64_t ms) const;
  void discard();

 private:
  jsCtx* js_ = nullptr;
  bool used_ = false;  // an asynchronous publish was made (the client has no pending list before)
};

// A connection to one server URL that reconnects for ever on its own; the
// owner decides when the server has been gone too long (down_seconds()).
class Connection {
 public:
  using Log = std::function<void(const std::string&)>;
  // Connects, retrying every 250 ms for up to give_up_seconds or until
  // `cancel` is set; throws NatsError naming the URL and the last error.
  Connection(const std::string& url, const std::string& name, double give_up_seconds, Log log,
             const std::atomic<bool>* cancel = nullptr);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  natsConnection* get() const { return nc_; }
  const std::string& url() const { return url_; }
  bool connected() const;
  // Seconds since the connection was lost; 0 while it is up.
  double down_seconds() const;
  uint64_t reconnects() const { return state_->reconnects.load(std::memory_order_relaxed); }

 private:
  // What the client's callbacks see; it outlives their last call (the
  // destructor waits for the closed callback).
  struct State {
    Log log;
    std::string url;
    std::atomic<int64_t> down_since_ns{0};  // steady clock; 0: connected
    std::atomic<uint64_t> reconnects{0};
    std::atomic<bool> closing{false};  // our own close: nothing to log
    std::mutex mu;
    std::condition_variable cv;
    bool closed = false;
  };
  static void on_disconnected(natsConnection* nc, void* closure);
  static void on_reconnected(natsConnection* nc, void* closure);
  static void on_closed(natsConnection* nc, void* closure);
  static void on_error(natsConnection* nc, natsSubscription* sub, natsStatus err, void* closure);

  std::string url_;
  std::unique_ptr<State> state_;
  natsConnection* nc_ = nullptr;
};

int64_t steady_ns();
// "5 s", "0.25 s": seconds for a message.
std::string seconds_text(double s);
inline double seconds_between(int64_t from_ns, int64_t to_ns) { return static_cast<double>(to_ns - from_ns) * 1e-9; }

// Sleeps up to `seconds`, returning early (true) once `flag` is set.
bool sleep_unless(const std::atomic<bool>& flag, double seconds);

}  // namespace ssm::nats
