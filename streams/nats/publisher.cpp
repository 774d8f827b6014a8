// The Graphite front door's publisher: values batched per partition into
// messages of Graphite lines, published asynchronously with message ids;
// the acknowledgements count them, failures come back for a retry.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <mutex>
#include <ostream>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../detect/output_lines.hpp"
#include "../detect/partition.hpp"  // partition_of
#include "client.hpp"
#include "layout.hpp"
#include "ssm/streams/nats.hpp"

namespace ssm {

using namespace nats;

namespace {

constexpr size_t kMessageBytes = size_t{64} << 10;  // a partition's batch goes out at this size
constexpr int64_t kAckWaitMs = 5000;                // then a publish counts as failed and is retried

uint64_t lines_in(natsMsg* m) {
  const char* d = natsMsg_GetData(m);
  return static_cast<uint64_t>(std::count(d, d + natsMsg_GetDataLength(m), '\n'));
}

// The counter at the end of a message id "<prefix><n>".
uint64_t id_number(natsMsg* m) {
  const char* id = nullptr;
  if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK || !id) return 0;
  const char* dash = std::strrchr(id, '-');
  uint64_t n = 0;
  if (dash) std::from_chars(dash + 1, dash + std::strlen(dash), n);
  return n;
}

}  // namespace

struct NatsPublisher::Impl {
  NatsConfig cfg;
  std::ostream* log;
  std::mutex log_mu;
  std::unique_ptr<Connection> conn;
  JetStream js;
  std::vector<std::string> batches;   // (partitions) Graphite lines not yet sent
  std::vector<std::string> subjects;  // (partitions) "metrics.<p>.lines"
  std::string id_prefix;
  uint64_t next_id = 0;
  std::atomic<uint64_t> published{0}, lost{0}, retried{0};

  // Publishes that failed, for the serving thread to send again (in id
  // order, so that their values keep their order among themselves), and
  // when each first failed.
  struct Failed {
    uint64_t id;
    natsMsg* msg;
  };
  std::mutex failed_mu;
  std::vector<Failed> failed;
  std::unordered_map<uint64_t, int64_t> first_failure;
  std::atomic<bool> any_failure{false};

  void say(const std::string& text) {
    if (!log) return;
    std::lock_guard<std::mutex> g(log_mu);
    detect_log(*log, text);
  }

  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck*, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<Impl*>(closure);
    if (!pae) {
      self->published.fetch_add(lines_in(msg), std::memory_order_relaxed);
      if (self->any_failure.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> g(self->failed_mu);
        self->first_failure.erase(id_number(msg));
        self->any_failure.store(!self->first_failure.empty(), std::memory_order_release);
      }
      natsMsg_Destroy(msg);
      return;
    }
    const uint64_t id = id_number(msg);
    std::lock_guard<std::mutex> g(self->failed_mu);
    self->failed.push_back({id, msg});
    self->first_failure.emplace(id, steady_ns());
    self->any_failure.store(true, std::memory_order_release);
  }

  void publish(natsMsg* m) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = kAckWaitMs;
    for (;;) {
      const natsStatus s = js.publish_async(&m, &po);
      if (s == NATS_OK) return;
      // Stalled: max_pending unacknowledged. Waiting here is the
      // back-pressure on the senders; retries go out meanwhile.
      if (s == NATS_TIMEOUT && conn->down_seconds() < cfg.give_up_seconds) {
        retry_failed();
        continue;
      }
      say("publish to " + std::string(natsMsg_GetSubject(m)) + " failed: " + describe(s) + "; " +
          std::to_string(lines_in(m)) + " values lost");
      lost.fetch_add(lines_in(m), std::memory_order_relaxed);
      natsMsg_Destroy(m);
      return;
    }
  }

  void send(size_t p) {
    std::string& b = batches[p];
    if (b.empty()) return;
    natsMsg* m = nullptr;
    check(natsMsg_Create(&m, subjects[p].c_str(), nullptr, b.data(), static_cast<int>(b.size())),
          "cannot make a message");
    const std::string id = id_prefix + std::to_string(next_id++);
    natsMsgHeader_Set(m, "Nats-Msg-Id", id.c_str());
    b.clear();
    publish(m);
  }

  // Failed publishes go out again with their ids (the stream drops any it
  // had stored after all); one failing for give_up_seconds is lost.
  void retry_failed() {
    std::vector<Failed> again;
    {
      std::lock_guard<std::mutex> g(failed_mu);
      again.swap(failed);
    }
    if (again.empty()) return;
    std::sort(again.begin(), again.end(), [](const Failed& a, const Failed& b) { return a.id < b.id; });
    for (Failed& f : again) {
      int64_t first = 0;
      {
        std::lock_guard<std::mutex> g(failed_mu);
        first = first_failure.count(f.id) ? first_failure[f.id] : steady_ns();
      }
      if (seconds_between(first, steady_ns()) > cfg.give_up_seconds) {
        lost.fetch_add(lines_in(f.msg), std::memory_order_relaxed);
        say("gave up on a message of " + std::to_string(lines_in(f.msg)) + " values to " + natsMsg_GetSubject(f.msg) +
            " after " + std::to_string(static_cast<int>(cfg.give_up_seconds)) +
            " s of failed publishes (--nats-give-up)");
        natsMsg_Destroy(f.msg);
        std::lock_guard<std::mutex> g(failed_mu);
        first_failure.erase(f.id);
        continue;
      }
      retried.fetch_add(1, std::memory_order_relaxed);
      publish(f.msg);
    }
  }
};

NatsPublisher::NatsPublisher(const NatsConfig& cfg, std::ostream* log, size_t max_pending)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.cfg = cfg;
  m.log = log;
  m.cfg.validate();
  require(max_pending >= 1, "detect --publish-nats: max_pending must be >= 1");
  m.conn = std::make_unique<Connection>(cfg.url, "ssm detect front door", cfg.give_up_seconds,
                                        [&m](const std::string& t) { m.say(t); });
  JetStream plain(m.conn->get(), 5000);
  const int64_t end = steady_ns() + static_cast<int64_t>(cfg.give_up_seconds * 1e9);
  for (;;) {
    try {
      ensure_metrics_stream(plain.get(), m.cfg);
      break;
    } catch (const NatsError& e) {
      if (!transient(e) || steady_ns() > end) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = 5000;
  o.PublishAsync.MaxPending = static_cast<int64_t>(max_pending);
  o.PublishAsync.StallWait = 200;
  o.PublishAsync.AckHandler = Impl::on_ack;
  o.PublishAsync.AckHandlerClosure = &m;
  m.js = JetStream(m.conn->get(), o);
  m.batches.resize(cfg.partitions);
  for (size_t p = 0; p < cfg.partitions; ++p) m.subjects.push_back(cfg.subject + "." + std::to_string(p) + ".lines");
  char host[128] = {};
  ::gethostname(host, sizeof host - 1);
  m.id_prefix = std::string("fd-") + host + "-" + std::to_string(::getpid()) + "-" + std::to_string(steady_ns()) + "-";
  m.say("publishing the values to stream " + cfg.stream + " on " + cfg.url + " (" + std::to_string(cfg.partitions) +
        " partitions, subjects " + cfg.subject + ".<p>.lines)");
}

NatsPublisher::~NatsPublisher() {
  Impl& m = *impl_;
  m.js.discard();
  std::lock_guard<std::mutex> g(m.failed_mu);
  for (auto& f : m.failed) natsMsg_Destroy(f.msg);
}

void NatsPublisher::point(std::string_view path, double value, int64_t epoch) {
  Impl& m = *impl_;
  const size_t p = detect::partition_of(path, m.cfg.partitions);
  std::string& b = m.batches[p];
  b.append(path).push_back(' ');
  detect::put_double(b, value, 0);
  b.push_back(' ');
  detect::put_int(b, epoch);
  b.push_back('\n');
  if (b.size() >= kMessageBytes) m.send(p);
}

void NatsPublisher::flush() {
  Impl& m = *impl_;
  for (size_t p = 0; p < m.batches.size(); ++p) m.send(p);
  m.retry_failed();
}

bool NatsPublisher::finish(double seconds) {
  Impl& m = *impl_;
  flush();
  const int64_t end = steady_ns() + static_cast<int64_t>(std::max(seconds, 0.0) * 1e9);
  for (;;) {
    const natsStatus s = m.js.complete(100);
    m.retry_failed();
    bool none_failed;
    {
      std::lock_guard<std::mutex> g(m.failed_mu);
      none_failed = m.failed.empty();
    }
    if (s == NATS_OK && none_failed) break;
    if (steady_ns() > end) {
      natsMsgList pending{};
      uint64_t n = 0;
      if (m.js.take_pending(&pending)) {
        for (int i = 0; i < pending.Count; ++i) n += lines_in(pending.Msgs[i]);
        natsMsgList_Destroy(&pending);
      }
      std::lock_guard<std::mutex> g(m.failed_mu);
      for (auto& f : m.failed) {
        n += lines_in(f.msg);
        natsMsg_Destroy(f.msg);
      }
      m.failed.clear();
      m.lost.fetch_add(n, std::memory_order_relaxed);
      m.say("stopping: " + std::to_string(n) + " values not acknowledged by stream " + m.cfg.stream + " within " +
            std::to_string(seconds) + " s: they may be lost");
      break;
    }
  }
  return m.lost.load() == 0;
}

std::string NatsPublisher::summary() const {
  const Impl& m = *impl_;
  return std::to_string(m.published.load()) + " values stored in stream " + m.cfg.stream + ", " +
         std::to_string(m.retried.load()) + " publishes retried, " + std::to_string(m.lost.load()) + " values lost";
}

uint64_t NatsPublisher::published() const { return impl_->published.load(); }
uint64_t NatsPublisher::lost() const { return impl_->lost.load(); }

}  // namespace ssm
