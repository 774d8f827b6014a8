// `ssm bench nats`: detection through NATS JetStream, end to end, against a
// running `nats-server -js` (--url). It starts `ssm detect --nats`
// instances as child processes of this binary, publishes the values as the
// Graphite front door does (NatsPublisher: one message of Graphite lines
// per partition and chunk) and reads every score message back on plain
// NATS (anomaly.score.>):
//   1. warm-up: one value per series (creates them); the instance's
//      resident set before and after;
//   2. throughput: rounds of one value per series published as fast as the
//      stream takes them, timed from the first publish to the last score;
//   3. latency: values at a fixed rate in chunks; a value's latency is the
//      time from its chunk's publish to its score's arrival;
//   4. takeover: a second instance joins (the partitions are split), one
//      round goes through, the second instance is killed -9 and one more
//      round is published at once: the time from the kill to the last score
//      of that round, i.e. the lease TTL, the checkpoint load and the replay.
// A value's epoch is its chunk's number (plus a base), so every score line
// names the chunk it belongs to.
#include "commands.hpp"

#if SSM_WITH_NATS
#include <nats/nats.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "ssm/streams/nats.hpp"

namespace ssm::cli {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kBase = 1700000000;  // epoch of chunk 0

struct BenchNatsArgs {
  std::string url;
  int series = 100000;
  int rounds = 10;
  double rate = 50000;  // values per second in the latency phase
  double seconds = 5;
  int chunk_ms = 10;
  size_t partitions = 16;
  double lease_ttl = 5, checkpoint = 5;
  bool takeover = true;
  std::string logs;  // the instances' logs kept here ("" = a temp folder, removed)
};

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// Every score line that comes back: counts per chunk, and the latency of
// the chunks being timed.
class Scores {
 public:
  explicit Scores(size_t chunks) : per_chunk_(chunks), sent_(chunks) {}
  void sent(int64_t chunk, double t) { sent_[static_cast<size_t>(chunk)].store(t, std::memory_order_release); }
  void start_timing(int64_t from_chunk) { timed_from_.store(from_chunk, std::memory_order_release); }
  uint64_t count(int64_t chunk) const { return per_chunk_[static_cast<size_t>(chunk)].load(std::memory_order_acquire); }
  double last_arrival() const { return last_.load(std::memory_order_acquire); }
  std::vector<double> latencies() {
    std::lock_guard<std::mutex> g(mu_);
    return lat_;
  }
  static void on_msg(natsConnection*, natsSubscription*, natsMsg* m, void* closure) {
    static_cast<Scores*>(closure)->take(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
    natsMsg_Destroy(m);
  }

 private:
  void take(const char* d, size_t n) {
    const double t = now_s();
    const int64_t timed = timed_from_.load(std::memory_order_acquire);
    std::lock_guard<std::mutex> g(mu_);
    for (size_t at = 0; at < n;) {
      const char* nl = static_cast<const char*>(std::memchr(d + at, '\n', n - at));
      const size_t end = nl ? static_cast<size_t>(nl - d) : n;
      const std::string_view line(d + at, end - at);
      const size_t sp = line.rfind(' ');
      int64_t epoch = 0;
      if (sp != std::string_view::npos) std::from_chars(line.data() + sp + 1, line.data() + line.size(), epoch);
      const int64_t chunk = epoch - kBase;
      if (chunk >= 0 && static_cast<size_t>(chunk) < per_chunk_.size()) {
        per_chunk_[static_cast<size_t>(chunk)].fetch_add(1, std::memory_order_release);
        if (timed >= 0 && chunk >= timed) lat_.push_back(t - sent_[static_cast<size_t>(chunk)].load());
      }
      at = end + 1;
    }
    last_.store(t, std::memory_order_release);
  }

  std::vector<std::atomic<uint64_t>> per_chunk_;
  std::vector<std::atomic<double>> sent_;
  std::atomic<int64_t> timed_from_{-1};
  std::atomic<double> last_{0};
  std::mutex mu_;
  std::vector<double> lat_;
};

// `ssm detect --nats` as a child process of this binary; stderr to a file.
struct Instance {
  pid_t pid = -1;
  std::string id, log;
  Instance(const BenchNatsArgs& a, const std::string& id_, const std::string& log_) : id(id_), log(log_) {
    std::vector<std::string> argv = {"/proc/self/exe",
                                     "detect",
                                     "--nats",
                                     a.url,
                                     "--nats-partitions",
                                     std::to_string(a.partitions),
                                     "--nats-instance",
                                     id,
                                     "--nats-lease-ttl",
                                     std::to_string(a.lease_ttl),
                                     "--nats-checkpoint-every",
                                     std::to_string(a.checkpoint),
                                     "--events",
                                     "none",
                                     "--stats-every",
                                     "0",
                                     "--max-series",
                                     std::to_string(2 * a.series)};
    pid = fork();
    if (pid == 0) {
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      (void)f;
      std::vector<char*> args;
      for (auto& s : argv) args.push_back(s.data());
      args.push_back(nullptr);
      execv("/proc/self/exe", args.data());
      _exit(127);
    }
  }
  ~Instance() { stop(SIGTERM); }
  void stop(int sig) {
    if (pid <= 0) return;
    ::kill(pid, sig);
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
  }
  double rss_mb() const {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string k;
    double kb = 0;
    while (f >> k)
      if (k == "VmRSS:") {
        f >> kb;
        break;
      }
    return kb / 1024;
  }
  std::string text() const {
    std::ifstream f(log);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
};

template <class F>
bool wait_for(F done, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// The lease holder of every partition.
std::vector<std::string> holders(jsCtx* js, size_t partitions) {
  std::vector<std::string> out(partitions);
  kvStore* kv = nullptr;
  if (js_KeyValue(&kv, js, "ssm_leases") != NATS_OK) return out;
  for (size_t p = 0; p < partitions; ++p) {
    kvEntry* e = nullptr;
    if (kvStore_Get(&e, kv, ("lease." + std::to_string(p)).c_str()) == NATS_OK) out[p] = kvEntry_ValueString(e);
    kvEntry_Destroy(e);
  }
  kvStore_Destroy(kv);
  return out;
}

double quantile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

void run_bench_nats(const BenchNatsArgs& a) {
  require_usage(!a.url.empty(), "bench nats: --url of a running nats-server -js is required");
  require_usage(a.series >= 1 && a.rounds >= 1 && a.rate > 0 && a.seconds > 0 && a.chunk_ms >= 1,
                "bench nats: --series, --rounds, --rate, --seconds and --chunk-ms must be positive");
  const int S = a.series;
  const auto chunks_latency = static_cast<int64_t>(std::ceil(a.seconds * 1000 / a.chunk_ms));
  // Chunks: 0 warm-up, 1..rounds throughput, then the latency phase, then
  // two rounds of the takeover.
  const int64_t first_latency = 1 + a.rounds, first_takeover = first_latency + chunks_latency;
  Scores scores(static_cast<size_t>(first_takeover + 2));

  char tmp[] = "/tmp/ssm-bench-nats-XXXXXX";
  if (a.logs.empty())
    require(mkdtemp(tmp) != nullptr, "bench nats: cannot make a temp folder");
  else
    std::filesystem::create_directories(a.logs);
  const std::string dir = a.logs.empty() ? std::string(tmp) : a.logs;
  struct RemoveTemp {  // also when the bench fails
    std::string dir;
    ~RemoveTemp() {
      std::error_code ec;
      if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
  } remove_temp{a.logs.empty() ? dir : std::string()};
  NatsConfig cfg;
  cfg.url = a.url;
  cfg.partitions = a.partitions;
  cfg.lease_seconds = a.lease_ttl;
  NatsPublisher pub(cfg, nullptr, 1024);
  natsConnection* nc = nullptr;
  require(natsConnection_ConnectTo(&nc, a.url.c_str()) == NATS_OK, "bench nats: cannot connect to " + a.url);
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, nc, nullptr);
  natsSubscription* sub = nullptr;
  natsConnection_Subscribe(&sub, nc, "anomaly.score.>", Scores::on_msg, &scores);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  natsConnection_Flush(nc);

  auto instance_a = std::make_unique<Instance>(a, "bench-a", std::string(dir) + "/a.log");
  require(wait_for(
              [&] {
                const auto h = holders(js, a.partitions);
                return std::all_of(h.begin(), h.end(), [](const std::string& s) { return s == "bench-a"; });
              },
              30),
          "bench nats: the instance did not take the partitions:\n" + instance_a->text());
  auto round = [&](int64_t chunk) {
    scores.sent(chunk, now_s());
    for (int s = 0; s < S; ++s)
      pub.point("bench.s" + std::to_string(s), 50 + 10 * std::sin(0.1 * s + chunk), kBase + chunk);
    pub.flush();
  };
  auto wait_chunk = [&](int64_t chunk, double seconds) {
    return wait_for([&] { return scores.count(chunk) >= static_cast<uint64_t>(S); }, seconds);
  };

  // 1. Warm-up.
  const double rss0 = instance_a->rss_mb();
  round(0);
  require(wait_chunk(0, 120), "bench nats: the warm-up's scores did not all come back:\n" + instance_a->text());
  const double rss1 = instance_a->rss_mb();

  // 2. Throughput.
  const double t0 = now_s();
  for (int r = 1; r <= a.rounds; ++r) round(r);
  require(wait_for(
              [&] {
                for (int r = 1; r <= a.rounds; ++r)
                  if (scores.count(r) < static_cast<uint64_t>(S)) return false;
                return true;
              },
              600),
          "bench nats: the throughput phase's scores did not all come back:\n" + instance_a->text());
  const double t1 = scores.last_arrival();
  const double values = static_cast<double>(S) * a.rounds;

  // 3. Latency: `rate` values per second in chunks, series round-robin.
  scores.start_timing(first_latency);
  const auto per_chunk = static_cast<int64_t>(std::llround(a.rate * a.chunk_ms / 1000));
  int64_t g = 0;
  const auto start = Clock::now();
  for (int64_t k = 0; k < chunks_latency; ++k) {
    std::this_thread::sleep_until(start + std::chrono::milliseconds(k * a.chunk_ms));
    const int64_t chunk = first_latency + k;
    scores.sent(chunk, now_s());
    for (int64_t i = 0; i < per_chunk; ++i, ++g)
      pub.point("bench.s" + std::to_string(g % S), 50 + 10 * std::sin(0.001 * static_cast<double>(g)), kBase + chunk);
    pub.flush();
  }
  const double offered_s = std::chrono::duration<double>(Clock::now() - start).count();
  const uint64_t offered = static_cast<uint64_t>(per_chunk * chunks_latency);
  wait_for(
      [&] {
        uint64_t n = 0;
        for (int64_t k = 0; k < chunks_latency; ++k) n += scores.count(first_latency + k);
        return n >= offered;
      },
      120);
  scores.start_timing(-1);
  std::vector<double> lat = scores.latencies();
  const size_t got = lat.size();
  const double p50 = quantile(lat, 0.5), p99 = quantile(lat, 0.99), p999 = quantile(lat, 0.999),
               mx = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());

  std::printf(
      "ssm bench nats: %d series, %zu partitions, 1 instance, nats-server at %s, lease TTL %g s, checkpoints every %g "
      "s\n",
      S, a.partitions, a.url.c_str(), a.lease_ttl, a.checkpoint);
  std::printf(
      "  warm-up      %d values (one per series) scored; instance resident set %.0f -> %.0f MB (%.0f bytes per "
      "series)\n",
      S, rss0, rss1, (rss1 - rss0) * 1048576 / S);
  std::printf(
      "  throughput   %.0f values in %.3f s = %.0f values/s (published as fast as the stream took them, every score "
      "read back)\n",
      values, t1 - t0, values / (t1 - t0));
  std::printf("  latency      %.0f values/s offered for %.1f s in %d ms chunks: %zu of %llu scores back\n", a.rate,
              offered_s, a.chunk_ms, got, static_cast<unsigned long long>(offered));
  std::printf("               publish-to-score p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms\n", p50 * 1e3,
              p99 * 1e3, p999 * 1e3, mx * 1e3);

  // 4. Takeover after kill -9.
  if (a.takeover) {
    auto instance_b = std::make_unique<Instance>(a, "bench-b", std::string(dir) + "/b.log");
    require(wait_for(
                [&] {
                  const auto h = holders(js, a.partitions);
                  const auto nb = std::count(h.begin(), h.end(), "bench-b");
                  return nb == static_cast<long>(a.partitions / 2) &&
                         std::count(h.begin(), h.end(), "bench-a") == static_cast<long>(a.partitions - nb);
                },
                60),
            "bench nats: the second instance did not get half the partitions:\n" + instance_b->text());
    round(first_takeover);
    require(wait_chunk(first_takeover, 120), "bench nats: the round before the kill did not come back");
    const double kill_t = now_s();
    instance_b->stop(SIGKILL);
    round(first_takeover + 1);
    const bool back = wait_chunk(first_takeover + 1, 120);
    const double done_t = scores.last_arrival();
    // The survivor's own account of each takeover: "... in N ms".
    const std::string text = instance_a->text();
    std::vector<double> load_ms;
    for (size_t at = text.find("(previous owner bench-b)"); at != std::string::npos;
         at = text.find("(previous owner bench-b)", at + 1)) {
      const size_t in = text.find(" bytes, in ", at), nl = text.find('\n', at);
      if (in != std::string::npos && in < nl) load_ms.push_back(std::atof(text.c_str() + in + 11));
    }
    const double max_load = load_ms.empty() ? 0 : *std::max_element(load_ms.begin(), load_ms.end());
    std::printf(
        "  takeover     kill -9 of the instance owning %zu of %zu partitions (%d series): %s %.2f s from the "
        "kill to the last score of a round published right after it (lease TTL %g s; the survivor loaded "
        "each checkpoint and placed its consumer in at most %.0f ms, %zu partitions)\n",
        a.partitions / 2, a.partitions, S, back ? "all scored" : "NOT all scored", done_t - kill_t, a.lease_ttl,
        max_load, load_ms.size());
  }
  instance_a->stop(SIGTERM);
  natsSubscription_Destroy(sub);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
}

void run_bench_nats_and_close(const BenchNatsArgs& a) {
  run_bench_nats(a);
  nats_shutdown(2);
}

}  // namespace

void add_bench_nats(CLI::App& bench) {
  auto* cmd = bench.add_subcommand("nats", "Detection through NATS JetStream: throughput, latency, takeover");
  auto args = std::make_shared<BenchNatsArgs>();
  cmd->add_option("--url", args->url,
                  "a running nats-server -js (e.g. nats://127.0.0.1:4222), fresh: the bench "
                  "makes its streams")
      ->required();
  cmd->add_option("--series", args->series, "series, one value each per round");
  cmd->add_option("--rounds", args->rounds, "throughput phase: values per series");
  cmd->add_option("--rate", args->rate, "values per second offered in the latency phase");
  cmd->add_option("--seconds", args->seconds, "length of the latency phase");
  cmd->add_option("--chunk-ms", args->chunk_ms, "latency phase: one publish every this many milliseconds");
  cmd->add_option("--partitions", args->partitions, "--nats-partitions of the instances");
  cmd->add_option("--lease-ttl", args->lease_ttl, "--nats-lease-ttl of the instances");
  cmd->add_option("--checkpoint-every", args->checkpoint, "--nats-checkpoint-every of the instances");
  cmd->add_flag("!--no-takeover", args->takeover, "skip the takeover phase");
  cmd->add_option("--logs", args->logs, "keep the instances' logs in this folder");
  cmd->callback([args] { run_bench_nats_and_close(*args); });
}

}  // namespace ssm::cli

#else

namespace ssm::cli {
void add_bench_nats(CLI::App& bench) {
  auto* cmd = bench.add_subcommand("nats", "Detection through NATS JetStream (not in this build)");
  cmd->allow_extras();
  cmd->callback([] {
    not_available("bench nats",
                  "this ssm was built without NATS support: libnats (Debian: libnats-dev) was not "
                  "found when it was configured");
  });
}
}  // namespace ssm::cli

#endif
