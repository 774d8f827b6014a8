// `ssm detect --nats`: the instance's start (connection, streams, cluster
// config), the lease manager that runs on run()'s thread (membership,
// which partitions this instance should own, their leases), and the stop.
//
// Every tick (a quarter of the lease TTL) the instance renews its member
// key and the leases it holds (compare-and-set on the lease's revision),
// lists the members, works out which partitions it should own
// (assign_partitions) and takes those whose lease is free, hands on those
// it should no longer own (a last checkpoint, then the lease deleted) and
// drops a partition at once when its lease is lost or could not be renewed
// for 80% of the TTL (its consumer writes nothing more; the next owner
// replays from the last commit).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "../detect/partition.hpp"  // partition_of
#include "client.hpp"
#include "layout.hpp"
#include "partition_consumer.hpp"
#include "ssm/hash.hpp"
#include "ssm/streams/nats.hpp"

namespace ssm {

using namespace nats;

namespace {

std::atomic<bool>* g_signal_stop = nullptr;
void on_stop_signal(int) {
  if (g_signal_stop) g_signal_stop->store(true, std::memory_order_release);
}

bool name_ok(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  return true;
}

std::string default_instance() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string id;
  for (char c : std::string(host)) id.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_');
  if (id.empty()) id = "ssm";
  return id.substr(0, 40) + "-" + std::to_string(::getpid());
}

std::string detector_id(const Detector& det) {
  const std::string text = std::to_string(det.forecaster().fingerprint()) + " " + det.config().to_json().dump();
  char hex[20];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(text)));
  return hex;
}

}  // namespace

void NatsConfig::validate() const {
  auto check = [](bool ok, const std::string& flag, const std::string& expected) {
    require(ok, "detect --nats: " + flag + " " + expected);
  };
  check(!url.empty(), "--nats", "needs a server URL, e.g. nats://127.0.0.1:4222");
  check(partitions >= 1 && partitions <= 4096, "--nats-partitions", "must be in 1 .. 4096");
  const std::pair<const std::string*, const char*> names[] = {{&stream, "--nats-stream"},
                                                              {&subject, "--nats-subject"},
                                                              {&state_stream, "--nats-state-stream"},
                                                              {&bucket, "--nats-bucket"},
                                                              {&out_subject, "--nats-out-subject"}};
  for (const auto& [v, flag] : names) check(name_ok(*v), flag, "must be 1 to 64 of [A-Za-z0-9_-], got '" + *v + "'");
  check(out_stream.empty() || name_ok(out_stream), "--nats-out-stream",
        "must be 1 to 64 of [A-Za-z0-9_-] (or empty: plain NATS subjects), got '" + out_stream + "'");
  check(instance.empty() || name_ok(instance), "--nats-instance",
        "must be 1 to 64 of [A-Za-z0-9_-], got '" + instance + "'");
  check(subject != state_stream && subject != out_subject && state_stream != out_subject, "--nats-subject",
        "--nats-state-stream and --nats-out-subject must differ (their subjects would overlap)");
  check(std::isfinite(lease_seconds) && lease_seconds >= 0.5 && lease_seconds <= 3600, "--nats-lease-ttl",
        "must be in 0.5 .. 3600 seconds");
  check(std::isfinite(checkpoint_seconds) && checkpoint_seconds > 0, "--nats-checkpoint-every", "must be > 0");
  check(batch >= 1 && batch <= 10000, "--nats-batch", "must be in 1 .. 10000");
  check(max_inflight >= 2 * batch, "--nats-max-inflight", "must be at least twice --nats-batch");
  check(std::isfinite(give_up_seconds) && give_up_seconds > 0, "--nats-give-up", "must be > 0");
  check(max_series >= 1, "--max-series", "must be >= 1");
  check(std::isfinite(event_threshold) && event_threshold >= 0, "--event-threshold", "must be >= 0");
  check(std::isfinite(stats_seconds) && stats_seconds >= 0, "--stats-every", "must be >= 0");
}

void nats_shutdown(double seconds) { nats_CloseAndWait(static_cast<int64_t>(seconds * 1000)); }

size_t nats_partition_of(std::string_view series, size_t partitions) {
  return detect::partition_of(series, partitions);
}

std::string nats_value_subject(std::string_view subject, std::string_view series, size_t partitions) {
  return std::string(subject) + "." + std::to_string(nats_partition_of(series, partitions)) + "." + std::string(series);
}

struct NatsDetector::Impl {
  NatsConfig cfg;
  std::shared_ptr<const Detector> det;
  std::ostream* events;
  std::ostream* log;
  std::mutex log_mu, events_mu, fatal_mu;
  std::atomic<bool> stop_flag{false}, fatal_flag{false}, ready{false};
  std::atomic<uint64_t> owned{0}, releases{0}, lost{0};
  std::string fatal_reason;

  std::unique_ptr<Connection> conn;
  JetStream js;        // setting up; the conditional deletes of leases
  JetStream lease_js;  // the lease operations: their wait is a quarter of the TTL
  KvPtr kv;
  std::unique_ptr<Shared> shared;
  std::string lease_prefix;  // "$KV.<bucket>."

  struct Held {
    std::unique_ptr<PartitionConsumer> worker;
    uint64_t rev = 0;        // of our lease
    int64_t renewed_ns = 0;  // when the last renewal that succeeded was sent
    bool releasing = false;
    bool dropped = false;  // aborted: the lease is no longer ours
  };
  std::map<size_t, Held> held;
  size_t next_claim = 0;  // where the next tick's claims begin
  int64_t last_stats_ns = 0;

  Impl(NatsConfig c, std::shared_ptr<const Detector> d, std::ostream* ev, std::ostream* lg)
      : cfg(std::move(c)), det(std::move(d)), events(ev), log(lg) {
    require(det != nullptr, "detect --nats: no detector");
    if (cfg.instance.empty()) cfg.instance = default_instance();
    cfg.validate();
    lease_prefix = "$KV." + cfg.bucket + ".";
  }

  ~Impl() {
    for (auto& [p, h] : held) h.worker->abort();
    held.clear();
  }

  void say(const std::string& text) {
    if (!log) return;
    std::lock_guard<std::mutex> g(log_mu);
    detect_log(*log, text);
  }

  void fatal(const std::string& why) {
    {
      std::lock_guard<std::mutex> g(fatal_mu);
      if (fatal_reason.empty()) fatal_reason = why;
    }
    fatal_flag.store(true, std::memory_order_release);
  }

  double tick_seconds() const { return std::max(0.05, cfg.lease_seconds / 4); }

  // ------------------------------------------------------------ start

  void start() {
    auto logger = [this](const std::string& t) { say(t); };
    conn = std::make_unique<Connection>(cfg.url, "ssm detect " + cfg.instance, cfg.give_up_seconds, logger, &stop_flag);
    js = JetStream(conn->get(), 5000);
    // Right after a server (re)start JetStream may not answer yet.
    const int64_t end = steady_ns() + static_cast<int64_t>(cfg.give_up_seconds * 1e9);
    for (;;) {
      try {
        ensure_metrics_stream(js.get(), cfg);
        ensure_state_stream(js.get(), cfg);
        ensure_out_stream(js.get(), cfg);
        ensure_lease_bucket(js.get(), cfg);
        ensure_cluster_config(js.get(), cfg, detector_id(*det));
        break;
      } catch (const NatsError& e) {
        if (!transient(e) || steady_ns() > end || stop_flag.load()) throw;
        sleep_unless(stop_flag, 0.25);
      }
    }
    // A lease operation that cannot finish within a quarter of the TTL has
    // failed: the next tick tries again, long before the lease runs out.
    lease_js = JetStream(conn->get(), std::clamp<int64_t>(std::llround(cfg.lease_seconds * 250), 100, 2000));
    kvStore* k = nullptr;
    check(js_KeyValue(&k, lease_js.get(), cfg.bucket.c_str()), "cannot open KV bucket " + cfg.bucket);
    kv.reset(k);
    shared = std::make_unique<Shared>(cfg, *det, *conn);
    shared->say = logger;
    if (events)
      shared->events_out = [this](std::string_view line) {
        std::lock_guard<std::mutex> g(events_mu);
        events->write(line.data(), static_cast<std::streamsize>(line.size()));
        events->flush();
      };
    shared->fatal = [this](const std::string& why) { fatal(why); };
    // A member key of this id: a predecessor that died (it expires within a
    // TTL) or another process with the same id (it does not).
    const int64_t wait_until = steady_ns() + static_cast<int64_t>(3 * cfg.lease_seconds * 1e9);
    for (bool said = false;; said = true) {
      kvEntry* e = nullptr;
      const natsStatus s = kvStore_Get(&e, kv.get(), Layout::member_key(cfg.instance).c_str());
      kvEntry_Destroy(e);
      if (s == NATS_NOT_FOUND) break;
      if (s == NATS_OK && steady_ns() > wait_until)
        fail("instance id " + cfg.instance + " is in use by a running instance (its member key in " + cfg.bucket +
             " is kept alive); give each instance its own --nats-instance");
      if (s == NATS_OK && !said)
        say("instance id " + cfg.instance + " was a member until less than a lease TTL ago; waiting for that to end");
      if (sleep_unless(stop_flag, tick_seconds())) return;
    }
    renew_member();
    ready.store(true, std::memory_order_release);
    say("instance " + cfg.instance + " joined: " + std::to_string(cfg.partitions) + " partitions of stream " +
        cfg.stream + " on " + cfg.url + ", state in " + cfg.state_stream + ", leases in " + cfg.bucket + " (TTL " +
        seconds_text(cfg.lease_seconds) + "), scores to " +
        (cfg.out_stream.empty() ? "subjects " + cfg.out_subject + ".>" : "stream " + cfg.out_stream));
    // Instances started together see each other before any claims.
    sleep_unless(stop_flag, cfg.lease_seconds / 2);
  }

  bool renew_member() {
    if (!kv) return false;
    const std::string key = Layout::member_key(cfg.instance);
    uint64_t rev = 0;
    return kvStore_PutString(&rev, kv.get(), key.c_str(), cfg.instance.c_str()) == NATS_OK;
  }

  // ------------------------------------------------------------ leases

  // The live members, sorted (this one among them); false when the server did not answer.
  bool members(std::vector<std::string>* out_members) {
    kvKeysList keys{};
    kvWatchOptions o;
    kvWatchOptions_Init(&o);
    o.Timeout = std::clamp<int64_t>(std::llround(cfg.lease_seconds * 500), 200, 2000);
    const natsStatus s = kvStore_Keys(&keys, kv.get(), &o);
    if (s != NATS_OK && s != NATS_NOT_FOUND) return false;
    std::vector<std::string>& out = *out_members;
    out.clear();
    for (int i = 0; i < keys.Count; ++i) {
      const std::string_view k = keys.Keys[i];
      if (k.substr(0, 7) == "member.") out.emplace_back(k.substr(7));
    }
    kvKeysList_Destroy(&keys);
    if (std::find(out.begin(), out.end(), cfg.instance) == out.end()) out.push_back(cfg.instance);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return true;
  }

  // The lease's value and revision (false: none, or the server did not answer).
  bool read_lease(size_t p, std::string* holder, uint64_t* rev, bool* answered) {
    kvEntry* e = nullptr;
    const natsStatus s = kvStore_Get(&e, kv.get(), Layout::lease_key(p).c_str());
    KvEntryPtr owned(e);
    *answered = s == NATS_OK || s == NATS_NOT_FOUND;
    if (s != NATS_OK) return false;
    *holder = kvEntry_ValueString(e);
    *rev = kvEntry_Revision(e);
    return true;
  }

  // Deletes our lease unless someone else's replaced it.
  void delete_lease(size_t p, uint64_t rev) {
    const std::string subject = lease_prefix + Layout::lease_key(p);
    natsMsg* m = nullptr;
    if (natsMsg_Create(&m, subject.c_str(), nullptr, nullptr, 0) != NATS_OK) return;
    MsgPtr owned(m);
    natsMsgHeader_Set(m, "KV-Operation", "DEL");
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.ExpectLastSubjectSeq = rev;
    js_PublishMsg(nullptr, js.get(), m, &po, nullptr);
  }

  void start_worker(size_t p, uint64_t rev, int64_t sent_ns) {
    Held h;
    h.worker = std::make_unique<PartitionConsumer>(p, *shared);
    h.rev = rev;
    h.renewed_ns = sent_ns;
    h.worker->start();
    held[p] = std::move(h);
  }

  void drop(size_t p, Held& h, const std::string& why) {
    if (h.dropped) return;
    h.dropped = true;
    h.worker->abort();
    say("partition " + std::to_string(p) + " dropped: " + why +
        "; its values since the last checkpoint are scored again by its next owner");
  }

  void renew_leases() {
    const double ttl = cfg.lease_seconds;
    for (auto& [p, h] : held) {
      if (h.dropped) continue;
      if (!conn->connected()) {
        if (seconds_between(h.renewed_ns, steady_ns()) > 0.8 * ttl)
          drop(p, h, "the connection to the server is down and its lease runs out");
        continue;
      }
      const int64_t sent = steady_ns();
      uint64_t rev = 0;
      const std::string key = Layout::lease_key(p);
      if (kvStore_UpdateString(&rev, kv.get(), key.c_str(), cfg.instance.c_str(), h.rev) == NATS_OK) {
        h.rev = rev;
        h.renewed_ns = sent;
        continue;
      }
      std::string holder;
      uint64_t their_rev = 0;
      bool answered = false;
      const bool found = read_lease(p, &holder, &their_rev, &answered);
      if (answered && (!found || holder != cfg.instance || their_rev != h.rev))
        drop(p, h, found ? "its lease is held by " + holder : "its lease expired before it was renewed");
      else if (seconds_between(h.renewed_ns, steady_ns()) > 0.8 * ttl)
        drop(p, h, "its lease could not be renewed for " + std::to_string(static_cast<int>(0.8 * ttl * 1000)) + " ms");
    }
  }

  // Partitions whose consumer has ended: a released one's lease goes, so
  // its next owner need not wait for it to expire.
  void reap() {
    for (auto it = held.begin(); it != held.end();) {
      Held& h = it->second;
      if (!h.worker->finished()) {
        ++it;
        continue;
      }
      if (h.worker->released()) {
        delete_lease(it->first, h.rev);
        releases.fetch_add(1, std::memory_order_relaxed);
        say("partition " + std::to_string(it->first) + " handed on after its last checkpoint");
      } else {
        if (!h.dropped) delete_lease(it->first, h.rev);  // it ended on its own
        lost.fetch_add(1, std::memory_order_relaxed);
      }
      it = held.erase(it);
    }
    owned.store(held.size(), std::memory_order_relaxed);
  }

  void tick() {
    const int64_t start = steady_ns();
    if (conn->connected()) renew_member();
    renew_leases();
    reap();
    std::vector<std::string> m;
    if (!conn->connected() || !members(&m)) return;
    const auto owner = assign_partitions(m, cfg.partitions);
    const size_t me = static_cast<size_t>(std::find(m.begin(), m.end(), cfg.instance) - m.begin());
    for (auto& [p, h] : held)
      if (owner[p] != me && !h.releasing && !h.dropped) {
        h.releasing = true;
        h.worker->release();
      }
    // Free leases of our partitions, for at most a quarter of the TTL: on a
    // slow server the renewals of the next tick come first, and the next
    // tick goes on where this one stopped.
    const auto budget = static_cast<int64_t>(cfg.lease_seconds * 0.25e9);
    for (size_t i = 0; i < cfg.partitions && !stop_flag.load(); ++i) {
      const size_t p = (next_claim + i) % cfg.partitions;
      if (owner[p] != me || held.count(p)) continue;
      if (steady_ns() - start > budget) {
        next_claim = p;
        break;
      }
      const int64_t sent = steady_ns();
      std::string holder;
      uint64_t rev = 0;
      bool answered = false;
      const std::string key = Layout::lease_key(p);
      if (read_lease(p, &holder, &rev, &answered)) {
        // Held; by us only when it is our own from before a restart under
        // the same id (its process is gone: start() made sure): take it back.
        if (holder == cfg.instance &&
            kvStore_UpdateString(&rev, kv.get(), key.c_str(), cfg.instance.c_str(), rev) == NATS_OK)
          start_worker(p, rev, sent);
        continue;
      }
      if (answered && kvStore_CreateString(&rev, kv.get(), key.c_str(), cfg.instance.c_str()) == NATS_OK)
        start_worker(p, rev, sent);
    }
    owned.store(held.size(), std::memory_order_relaxed);
  }

  // ------------------------------------------------------------ run and stop

  std::string summary() const {
    const Counters& c = shared->counts;
    auto n = [](const std::atomic<uint64_t>& a) { return std::to_string(a.load(std::memory_order_relaxed)); };
    return n(c.points) + " points (" + n(c.repeats) + " repeats, " + n(c.out_of_order) + " out of order, " +
           n(c.replayed) + " already in a checkpoint skipped), not scored: " + n(c.malformed) + " malformed (" +
           n(c.wrong_partition) + " of another partition), " + n(c.nan_values) + " nan values, " + n(c.refused) +
           " refused; " + std::to_string(c.series.load()) + " series, " + n(c.events) + " events, " +
           std::to_string(owned.load()) + " partitions owned, " + n(c.takeovers) + " taken, " +
           std::to_string(releases.load()) + " handed on, " + std::to_string(lost.load()) + " dropped, " +
           n(c.rewinds) + " rewinds, " + n(c.checkpoints) + " checkpoints (" + n(c.checkpoint_bytes) + " bytes)";
  }

  bool serve() {
    bool ok = true;
    last_stats_ns = steady_ns();
    while (!stop_flag.load(std::memory_order_acquire)) {
      tick();
      if (fatal_flag.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> g(fatal_mu);
        say("stopping: " + fatal_reason);
        ok = false;
        break;
      }
      if (conn->down_seconds() > cfg.give_up_seconds) {
        say("stopping: the NATS server at " + cfg.url + " has been unreachable for " +
            std::to_string(static_cast<int>(conn->down_seconds())) + " s (--nats-give-up " +
            std::to_string(static_cast<int>(cfg.give_up_seconds)) + ")");
        ok = false;
        break;
      }
      if (cfg.stats_seconds > 0 && seconds_between(last_stats_ns, steady_ns()) >= cfg.stats_seconds) {
        last_stats_ns = steady_ns();
        say("stats: " + summary());
      }
      sleep_unless(stop_flag, tick_seconds());
    }
    return ok;
  }

  // Every partition checkpointed a last time and handed on (while the
  // leases are renewed), the member key deleted.
  void shut_down(bool graceful) {
    const bool up = graceful && conn->connected();
    for (auto& [p, h] : held) {
      if (up)
        h.worker->release();
      else
        drop(p, h, "stopping without the server");
    }
    const int64_t end = steady_ns() + 30'000'000'000;
    while (!held.empty() && steady_ns() < end) {
      renew_leases();
      reap();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& [p, h] : held) drop(p, h, "its last checkpoint took more than 30 s");
    while (!held.empty()) {
      reap();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (up && ready.load()) kvStore_Delete(kv.get(), Layout::member_key(cfg.instance).c_str());
    say("stopped: " + summary());
  }

  bool run(bool handle_signals) {
    struct sigaction old[3] = {};
    const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    if (handle_signals) {
      std::signal(SIGPIPE, SIG_IGN);
      g_signal_stop = &stop_flag;
      struct sigaction sa = {};
      sa.sa_handler = on_stop_signal;
      sigemptyset(&sa.sa_mask);
      for (int i = 0; i < 3; ++i) sigaction(sigs[i], &sa, &old[i]);
    }
    bool ok = false;
    try {
      start();
      ok = serve();
      shut_down(ok);
    } catch (const Error& e) {
      say(std::string("stopping: ") + e.what());
      ok = false;
      for (auto& [p, h] : held) h.worker->abort();
      held.clear();
    }
    if (handle_signals) {
      for (int i = 0; i < 3; ++i) sigaction(sigs[i], &old[i], nullptr);
      g_signal_stop = nullptr;
    }
    return ok;
  }
};

NatsDetector::NatsDetector(NatsConfig cfg, std::shared_ptr<const Detector> detector, std::ostream* events,
                           std::ostream* log)
    : impl_(std::make_unique<Impl>(std::move(cfg), std::move(detector), events, log)) {}

NatsDetector::~NatsDetector() = default;

bool NatsDetector::run(bool handle_signals) { return impl_->run(handle_signals); }

void NatsDetector::stop() { impl_->stop_flag.store(true, std::memory_order_release); }

const std::string& NatsDetector::instance() const { return impl_->cfg.instance; }

NatsStats NatsDetector::stats() const {
  const Impl& m = *impl_;
  NatsStats s;
  s.ready = m.ready.load(std::memory_order_acquire);
  s.owned = m.owned.load(std::memory_order_relaxed);
  s.releases = m.releases.load(std::memory_order_relaxed);
  s.lost = m.lost.load(std::memory_order_relaxed);
  if (!s.ready) return s;
  const Counters& c = m.shared->counts;
  auto v = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  s.takeovers = v(c.takeovers);
  s.messages = v(c.messages);
  s.points = v(c.points);
  s.replayed = v(c.replayed);
  s.repeats = v(c.repeats);
  s.out_of_order = v(c.out_of_order);
  s.malformed = v(c.malformed);
  s.wrong_partition = v(c.wrong_partition);
  s.nan_values = v(c.nan_values);
  s.refused = v(c.refused);
  s.events = v(c.events);
  s.series = c.series.load(std::memory_order_relaxed);
  s.checkpoints = v(c.checkpoints);
  s.checkpoint_bytes = v(c.checkpoint_bytes);
  s.rewinds = v(c.rewinds);
  s.max_inflight = v(c.max_inflight);
  s.max_fetched = v(c.max_fetched);
  return s;
}

}  // namespace ssm
