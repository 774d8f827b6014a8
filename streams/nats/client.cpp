// The C client's errors, JetStream contexts and the reconnecting connection.
#include "client.hpp"

#include <thread>

namespace ssm::nats {

std::string describe(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  const char* detail = nats_GetLastError(&last);
  if (detail && *detail && text != detail) text += std::string(": ") + detail;
  return text;
}

void fail_nats(const std::string& what, natsStatus s, jsErrCode code) {
  std::string text = what + ": " + describe(s);
  if (code != 0) text += " (JetStream error " + std::to_string(static_cast<int>(code)) + ")";
  throw NatsError(text, s, code);
}

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

bool sleep_unless(const std::atomic<bool>& flag, double seconds) {
  const int64_t end = steady_ns() + static_cast<int64_t>(seconds * 1e9);
  while (!flag.load(std::memory_order_acquire)) {
    const int64_t left = end - steady_ns();
    if (left <= 0) return false;
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<int64_t>(left, 20'000'000)));
  }
  return true;
}

// ------------------------------------------------------------ JetStream

JetStream::JetStream(natsConnection* nc, int64_t wait_ms, int64_t max_pending, jsPubAckErrHandler on_error,
                     void* closure) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = wait_ms;
  if (max_pending > 0) {
    o.PublishAsync.MaxPending = max_pending;
    o.PublishAsync.StallWait = wait_ms;
  }
  o.PublishAsync.ErrHandler = on_error;
  o.PublishAsync.ErrHandlerClosure = closure;
  check(natsConnection_JetStream(&js_, nc, &o), "cannot make a JetStream context");
}

JetStream::JetStream(natsConnection* nc, jsOptions& opts) {
  check(natsConnection_JetStream(&js_, nc, &opts), "cannot make a JetStream context");
}

JetStream::~JetStream() { discard(); }

JetStream& JetStream::operator=(JetStream&& o) noexcept {
  if (this != &o) {
    discard();
    js_ = std::exchange(o.js_, nullptr);
    used_ = std::exchange(o.used_, false);
  }
  return *this;
}

natsStatus JetStream::complete(int64_t ms) const {
  if (!used_) return NATS_OK;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = ms;
  return js_PublishAsyncComplete(js_, &po);
}

void JetStream::discard() {
  if (!js_) return;
  natsMsgList pending{};
  if (used_ && js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
  jsCtx_Destroy(js_);
  js_ = nullptr;
  used_ = false;
}

// ------------------------------------------------------------ Connection

Connection::Connection(const std::string& url, const std::string& name, double give_up_seconds, Log log,
                       const std::atomic<bool>* cancel)
    : url_(url), state_(std::make_unique<State>()) {
  state_->log = std::move(log);
  state_->url = url;
  natsOptions* opts = nullptr;
  check(natsOptions_Create(&opts), "cannot make NATS options");
  std::unique_ptr<natsOptions, Destroyer<natsOptions, natsOptions_Destroy>> owned(opts);
  natsStatus s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetName(opts, name.c_str());
  // Reconnect for ever, quickly: the owner gives up by down_seconds().
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 100);
  if (s == NATS_OK) s = natsOptions_SetReconnectJitter(opts, 50, 50);
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
  // A server that stops answering is found in about 3 s.
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, 1000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, 3);
  // Requests fail at once while disconnected instead of waiting out their timeout.
  if (s == NATS_OK) s = natsOptions_SetFailRequestsOnDisconnect(opts, true);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts, on_disconnected, state_.get());
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, on_reconnected, state_.get());
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts, on_closed, state_.get());
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts, on_error, state_.get());
  check(s, "NATS options for " + url);
  const int64_t end = steady_ns() + static_cast<int64_t>(give_up_seconds * 1e9);
  bool said = false;
  for (int attempt = 1;; ++attempt) {
    s = natsConnection_Connect(&nc_, opts);
    if (s == NATS_OK) break;
    const std::string why = describe(s);
    const bool cancelled = cancel && cancel->load(std::memory_order_acquire);
    const std::string over = seconds_text(give_up_seconds);
    if (cancelled || steady_ns() >= end)
      throw NatsError("cannot connect to the NATS server at " + url + ": " + why + " (" + std::to_string(attempt) +
                          (attempt == 1 ? " try" : " tries") + " in " + over + "; --nats-give-up sets how long)",
                      s, static_cast<jsErrCode>(0));
    if (!said && state_->log) {
      said = true;
      state_->log("cannot connect to the NATS server at " + url + ": " + why + "; retrying for up to " + over);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

Connection::~Connection() {
  if (!nc_) return;
  state_->closing.store(true, std::memory_order_release);
  natsConnection_Close(nc_);
  // The callbacks run on the client's own thread, after Close returns: the
  // state they use must wait for the last of them.
  std::unique_lock<std::mutex> g(state_->mu);
  state_->cv.wait_for(g, std::chrono::seconds(5), [this] { return state_->closed; });
  g.unlock();
  natsConnection_Destroy(nc_);
}

void Connection::on_closed(natsConnection*, void* closure) {
  auto* st = static_cast<State*>(closure);
  std::lock_guard<std::mutex> g(st->mu);
  st->closed = true;
  st->cv.notify_all();
}

bool Connection::connected() const { return natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED; }

double Connection::down_seconds() const {
  const int64_t since = state_->down_since_ns.load(std::memory_order_acquire);
  return since == 0 ? 0 : seconds_between(since, steady_ns());
}

void Connection::on_disconnected(natsConnection*, void* closure) {
  auto* st = static_cast<State*>(closure);
  int64_t expected = 0;
  st->down_since_ns.compare_exchange_strong(expected, steady_ns(), std::memory_order_acq_rel);
  if (st->log && !st->closing.load(std::memory_order_acquire))
    st->log("lost the connection to the NATS server at " + st->url + "; reconnecting");
}

void Connection::on_reconnected(natsConnection*, void* closure) {
  auto* st = static_cast<State*>(closure);
  const int64_t since = st->down_since_ns.exchange(0, std::memory_order_acq_rel);
  st->reconnects.fetch_add(1, std::memory_order_relaxed);
  if (st->log && !st->closing.load(std::memory_order_acquire))
    st->log("reconnected to the NATS server at " + st->url +
            (since ? " after " + std::to_string(static_cast<int>(seconds_between(since, steady_ns()) * 1000)) + " ms"
                   : std::string()));
}

void Connection::on_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
  auto* st = static_cast<State*>(closure);
  if (st->log && !st->closing.load(std::memory_order_acquire))
    st->log(std::string("NATS client: ") + natsStatus_GetText(err));
}

}  // namespace ssm::nats
