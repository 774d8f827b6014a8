// `ssm detect --nats` against a real `nats-server -js` that each test starts
// on a free loopback port with a store of its own and kills at the end:
// 3 instances with 1000 series and one of them killed -9 mid-stream; the
// server and the whole cluster restarted; malformed messages and a backlog
// larger than the in-flight bound; the Graphite front door; bad servers,
// streams and buckets. Every score is compared with the in-process Detector
// over the same values (an uninterrupted single-process run), exactly.
#include <gtest/gtest.h>

#if SSM_WITH_NATS
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "layout.hpp"  // streams/nats: the assignment, subjects and chunks
#include "process.hpp"
#include "ssm/streams/nats.hpp"
#include "testing.hpp"
#endif

namespace {

#if !SSM_WITH_NATS

TEST(Nats, Skipped) {
  GTEST_SKIP() << "this build has no NATS support: libnats (Debian: libnats-dev) was not found when it was configured";
}

#else

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ssm::testing::Child;
using ssm::testing::TempDir;

const std::string kSsm = SSM_BINARY_DIR "/apps/ssm";
constexpr int64_t kT0 = 1700000000;
// Sanitized builds run several times slower: their waits are longer, and
// so is the instances' lease TTL (one that cannot be renewed in time on
// starved cores makes the partitions change hands again and again).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr double kSlow = 4, kTtl = 3;
#else
constexpr double kSlow = 1, kTtl = 1;
#endif
std::string ttl_text() {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%g", kTtl);
  return buf;
}

std::string nats_server_path() { return ssm::testing::find_program("nats-server"); }

// The client library's threads and memory released once all tests are done.
class NatsLibrary : public ::testing::Environment {
 public:
  void TearDown() override { ssm::nats_shutdown(5); }
};
const auto* const g_nats_library = ::testing::AddGlobalTestEnvironment(new NatsLibrary);

#define REQUIRE_NATS_SERVER()                                              \
  if (nats_server_path().empty())                                          \
  GTEST_SKIP() << "nats-server is not installed (Debian: apt-get install " \
                  "nats-server); the NATS tests need a real server"

// Polls `done` every 10 ms for up to `seconds`.
template <class F>
bool wait_until(F done, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds * kSlow);
  while (!done()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// ---------------------------------------------------------------- a client of the test's own

// A connection that reconnects on its own, with the few JetStream calls the
// tests need; each retries while the server is not (yet) there.
class Client {
 public:
  explicit Client(const std::string& url) {
    natsOptions* o = nullptr;
    natsOptions_Create(&o);
    natsOptions_SetURL(o, url.c_str());
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 20);
    natsOptions_SetFailRequestsOnDisconnect(o, true);
    const bool ok = wait_until([&] { return natsConnection_Connect(&nc_, o) == NATS_OK; }, 10);
    natsOptions_Destroy(o);
    if (!ok) throw ssm::Error("the test cannot connect to " + url);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    natsConnection_JetStream(&js_, nc_, &jo);
  }
  ~Client() {
    natsSubscription_Destroy(watch_);
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
  }
  jsCtx* js() const { return js_; }

  // Publishes one round of messages (different partitions, so their order
  // among themselves does not matter) and waits until each is stored,
  // sending again what failed with the same message id.
  void publish_round(const std::vector<std::pair<std::string, std::string> >& msgs, const std::string& id_prefix) {
    std::vector<size_t> todo(msgs.size());
    for (size_t i = 0; i < msgs.size(); ++i) todo[i] = i;
    ASSERT_TRUE(wait_until(
        [&] {
          std::vector<size_t> failed;
          for (size_t i : todo) {
            jsPubOptions po;
            jsPubOptions_Init(&po);
            const std::string id = id_prefix + "-" + std::to_string(i);
            po.MsgId = id.c_str();
            po.MaxWait = 2000;
            const auto& [subject, payload] = msgs[i];
            if (js_Publish(nullptr, js_, subject.c_str(), payload.data(), static_cast<int>(payload.size()), &po,
                           nullptr) != NATS_OK)
              failed.push_back(i);
          }
          todo.swap(failed);
          return todo.empty();
        },
        20))
        << "the test could not publish round " << id_prefix;
  }

  // Messages stored in `stream` on subjects matching `filter` (0 when the
  // server does not answer).
  uint64_t count(const std::string& stream, const std::string& filter) {
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = filter.c_str();
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, js_, stream.c_str(), &o, nullptr) != NATS_OK) return 0;
    uint64_t n = 0;
    if (si->State.Subjects)
      for (int i = 0; i < si->State.Subjects->Count; ++i) n += si->State.Subjects->List[i].Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  }

  // Every message of `stream` on `filter`, in order: (subject, payload).
  std::vector<std::pair<std::string, std::string> > read_all(const std::string& stream, const std::string& filter) {
    std::vector<std::pair<std::string, std::string> > out;
    const uint64_t n = count(stream, filter);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Config.AckPolicy = js_AckNone;
    so.Config.DeliverPolicy = js_DeliverAll;
    natsSubscription* sub = nullptr;
    if (js_PullSubscribe(&sub, js_, filter.c_str(), nullptr, nullptr, &so, nullptr) != NATS_OK) return out;
    wait_until(
        [&] {
          natsMsgList list{};
          natsSubscription_Fetch(&list, sub, 1000, 500, nullptr);
          for (int i = 0; i < list.Count; ++i)
            out.emplace_back(natsMsg_GetSubject(list.Msgs[i]),
                             std::string(natsMsg_GetData(list.Msgs[i]), natsMsg_GetDataLength(list.Msgs[i])));
          natsMsgList_Destroy(&list);
          return out.size() >= n;
        },
        20);
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return out;
  }

  // Every message published on `subject` from now on, as plain NATS sees
  // it (a duplicate the stream drops is still seen here): message id ->
  // the payloads that came with it.
  void watch(const std::string& subject) {
    natsConnection_Subscribe(&watch_, nc_, subject.c_str(), &Client::on_watched, this);
    natsSubscription_SetPendingLimits(watch_, -1, -1);
    natsConnection_Flush(nc_);
  }
  std::map<std::string, std::vector<std::string> > watched() {
    std::lock_guard<std::mutex> g(mu_);
    return seen_;
  }

  // Who holds each of n partitions' leases ("" for none).
  std::vector<std::string> leases(const std::string& bucket, size_t n) {
    std::vector<std::string> out(n);
    kvStore* kv = nullptr;
    if (js_KeyValue(&kv, js_, bucket.c_str()) != NATS_OK) return out;
    for (size_t p = 0; p < n; ++p) {
      kvEntry* e = nullptr;
      if (kvStore_Get(&e, kv, ("lease." + std::to_string(p)).c_str()) == NATS_OK) out[p] = kvEntry_ValueString(e);
      kvEntry_Destroy(e);
    }
    kvStore_Destroy(kv);
    return out;
  }

 private:
  static void on_watched(natsConnection*, natsSubscription*, natsMsg* m, void* closure) {
    auto* self = static_cast<Client*>(closure);
    const char* id = nullptr;
    natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
    std::lock_guard<std::mutex> g(self->mu_);
    self->seen_[id ? id : ""].emplace_back(natsMsg_GetData(m), natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
  }
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  natsSubscription* watch_ = nullptr;
  std::mutex mu_;
  std::map<std::string, std::vector<std::string> > seen_;
};

// ---------------------------------------------------------------- the server

// `nats-server -js` on a free loopback port with its store in `dir`;
// killed when the guard goes. restart() keeps the port and the store.
class Server {
 public:
  explicit Server(const std::string& dir) : dir_(dir), port_(free_port()) { start(); }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  uint16_t port() const { return port_; }

  void start() {
    child_ = std::make_unique<Child>(std::vector<std::string>{nats_server_path(), "-js", "-a", "127.0.0.1", "-p",
                                                              std::to_string(port_), "-sd", dir_ + "/store"},
                                     dir_ + "/server-" + std::to_string(++starts_) + ".log");
    // Ready: a client connects and JetStream answers, with the streams of
    // an earlier run recovered.
    ASSERT_TRUE(wait_until(
        [&] {
          if (!child_->alive()) return false;
          natsConnection* nc = nullptr;
          if (natsConnection_ConnectTo(&nc, url().c_str()) != NATS_OK) return false;
          jsCtx* js = nullptr;
          natsConnection_JetStream(&js, nc, nullptr);
          jsAccountInfo* ai = nullptr;
          bool ok = js_GetAccountInfo(&ai, js, nullptr, nullptr) == NATS_OK && ai->Streams >= streams_;
          if (ok) streams_ = ai->Streams;
          jsAccountInfo_Destroy(ai);
          jsCtx_Destroy(js);
          natsConnection_Destroy(nc);
          return ok;
        },
        15))
        << "nats-server did not come up on port " << port_ << ": " << ssm::testing::read_text(child_->log());
  }
  void kill9() {
    remember_streams();
    child_->signal(SIGKILL);
    child_->wait(10);
  }
  void restart() {
    kill9();
    start();
  }

 private:
  // A restarted server must be seen to have recovered as many streams.
  void remember_streams() {
    natsConnection* nc = nullptr;
    if (natsConnection_ConnectTo(&nc, url().c_str()) != NATS_OK) return;
    jsCtx* js = nullptr;
    natsConnection_JetStream(&js, nc, nullptr);
    jsAccountInfo* ai = nullptr;
    if (js_GetAccountInfo(&ai, js, nullptr, nullptr) == NATS_OK) streams_ = ai->Streams;
    jsAccountInfo_Destroy(ai);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }

  std::string dir_;
  uint16_t port_;
  int starts_ = 0;
  int64_t streams_ = 0;
  std::unique_ptr<Child> child_;
};

// ---------------------------------------------------------------- the values and their reference scores

struct Workload {
  size_t partitions;
  std::vector<std::string> names;

  Workload(size_t series, size_t parts) : partitions(parts) {
    for (size_t i = 0; i < series; ++i) {
      // Dotted names, carbon tags and UTF-8: all become subject tokens.
      if (i % 50 == 7)
        names.push_back("web-" + std::to_string(i) + ".load;host=h" + std::to_string(i % 7));
      else if (i % 97 == 3)
        names.push_back("sensor.t\xc3\xbcr" + std::to_string(i) + ".temp");
      else
        names.push_back("dc" + std::to_string(i % 3) + ".host" + std::to_string(i) + ".cpu");
    }
  }
  static double value(size_t i, size_t t) {
    uint64_t h = (i * 0x9E3779B97F4A7C15ull) ^ (t * 0xC2B2AE3D27D4EB4Full);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    const double noise = static_cast<double>(h % 1000) / 1000.0 - 0.5;
    const double spike = (t == 30 && i % 37 == 0) ? 60 : 0;
    return std::round((50 + 10 * std::sin(0.3 * static_cast<double>(t) + static_cast<double>(i)) + noise + spike) *
                      1000) /
           1000;
  }
  static int64_t epoch(size_t t) { return kT0 + 60 * static_cast<int64_t>(t); }

  // Round t: one message of Graphite lines per partition ("metrics.<p>.lines").
  std::vector<std::pair<std::string, std::string> > round(size_t t) const {
    std::vector<std::string> body(partitions);
    for (size_t i = 0; i < names.size(); ++i) {
      const size_t p = ssm::nats_partition_of(names[i], partitions);
      char buf[64];
      std::snprintf(buf, sizeof buf, " %.17g %lld\n", value(i, t), static_cast<long long>(epoch(t)));
      body[p] += names[i] + buf;
    }
    std::vector<std::pair<std::string, std::string> > out;
    for (size_t p = 0; p < partitions; ++p)
      if (!body[p].empty()) out.emplace_back("metrics." + std::to_string(p) + ".lines", body[p]);
    return out;
  }
  size_t messages_per_round() const { return round(0).size(); }

  // What an uninterrupted single-process run scores: series -> epoch -> score.
  std::map<std::string, std::map<int64_t, double> > reference(size_t rounds) const {
    ssm::Detector det(ssm::Forecaster::builtin(), ssm::DetectorConfig{});
    std::map<std::string, std::map<int64_t, double> > out;
    for (size_t i = 0; i < names.size(); ++i) {
      ssm::SeriesState s = det.new_series();
      auto& m = out["anomaly." + names[i]];
      for (size_t t = 0; t < rounds; ++t) m[epoch(t)] = det.update(s, epoch(t), value(i, t)).score;
    }
    return out;
  }
};

// The score lines of ANOMALY's score messages: (score path without
// ".score" and tags folded back, epoch) -> every score given to it.
std::map<std::string, std::map<int64_t, std::vector<double> > > scores_of(
    const std::vector<std::pair<std::string, std::string> >& msgs) {
  std::map<std::string, std::map<int64_t, std::vector<double> > > out;
  for (const auto& [subject, payload] : msgs) {
    std::istringstream in(payload);
    std::string path, score, epoch;
    while (in >> path >> score >> epoch) {
      // "anomaly.<name>.score[;tags]" back to "anomaly.<name>[;tags]".
      const size_t at = path.find(".score");
      const std::string series = path.substr(0, at) + path.substr(at + 6);
      double v = 0;
      std::from_chars(score.data(), score.data() + score.size(), v);
      out[series][std::stoll(epoch)].push_back(v);
    }
  }
  return out;
}

// Every value of `rounds` rounds scored exactly once, equal to the reference.
void expect_exactly_once(const Workload& w, size_t rounds,
                         const std::vector<std::pair<std::string, std::string> >& msgs) {
  const auto want = w.reference(rounds);
  const auto got = scores_of(msgs);
  EXPECT_EQ(msgs.size(), rounds * w.messages_per_round()) << "score messages: one per input message";
  size_t missing = 0, twice = 0, differ = 0, shown = 0;
  for (const auto& [series, by_epoch] : want) {
    const auto g = got.find(series);
    for (const auto& [epoch, score] : by_epoch) {
      const std::vector<double>* have = nullptr;
      if (g != got.end()) {
        const auto e = g->second.find(epoch);
        if (e != g->second.end()) have = &e->second;
      }
      if (!have || have->empty()) {
        ++missing;
      } else if (have->size() > 1) {
        ++twice;
      } else if ((*have)[0] != score) {
        if (shown++ < 5)
          ADD_FAILURE() << series << " at " << epoch << ": " << (*have)[0] << " through NATS, " << score
                        << " in one process";
        ++differ;
      }
    }
  }
  EXPECT_EQ(got.size(), want.size()) << "series with scores";
  EXPECT_EQ(missing, 0u) << "values never scored";
  EXPECT_EQ(twice, 0u) << "values scored more than once";
  EXPECT_EQ(differ, 0u) << "values whose score differs from the single-process run's";
}

// ---------------------------------------------------------------- instances as processes

struct Instance {
  std::string id;
  std::unique_ptr<Child> child;
  std::string log;
  // checkpoint: "--nats-checkpoint-every" seconds; inflight: "--nats-max-inflight".
  Instance(const std::string& url, const std::string& id_, const TempDir& dir, size_t partitions,
           const std::string& checkpoint = "0.5", const std::string& inflight = "20000")
      : id(id_), log(dir / ("instance-" + id_ + ".log")) {
    // clang-format off
    const std::vector<std::string> argv = {
        kSsm, "detect", "--nats", url, "--nats-partitions", std::to_string(partitions), "--nats-instance", id,
        "--nats-lease-ttl", ttl_text(), "--nats-checkpoint-every", checkpoint, "--nats-max-inflight", inflight,
        "--nats-batch", "8", "--events", "none", "--stats-every", "0"};
    // clang-format on
    child = std::make_unique<Child>(argv, log);
  }
  std::string text() const { return ssm::testing::read_text(log); }
};

// The series counts of the checkpoints an instance loaded when it took a
// partition from `from`, from its log lines "partition 3 taken (previous
// owner a): 125 series from its checkpoint ..." after the first `skip` bytes.
std::vector<long> loaded_from(const Instance& i, const std::string& from, size_t skip = 0) {
  std::vector<long> out;
  const std::string all = i.text(), text = all.substr(std::min(skip, all.size())), key = "(previous owner ";
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    const size_t close = text.find("): ", at);
    if (close == std::string::npos) break;
    if (text.compare(at + key.size(), close - at - key.size(), from) != 0) continue;
    out.push_back(std::atol(text.c_str() + close + 3));
  }
  return out;
}

// Until every partition has a lease and each instance holds one.
bool settled(Client& c, size_t partitions, const std::vector<Instance*>& live) {
  return wait_until(
      [&] {
        const auto l = c.leases("ssm_leases", partitions);
        std::set<std::string> holders(l.begin(), l.end());
        if (holders.count("")) return false;
        for (const Instance* i : live)
          if (!holders.count(i->id)) return false;
        return holders.size() == live.size();
      },
      20);
}

// ---------------------------------------------------------------- unit tests of the layout

TEST(NatsLayout, AssignmentIsBalancedDeterministicAndMovesLittle) {
  const std::vector<std::string> three = {"a", "b", "c"}, four = {"a", "b", "c", "d"};
  const auto x = ssm::nats::assign_partitions(three, 16), y = ssm::nats::assign_partitions(three, 16);
  EXPECT_EQ(x, y);
  std::vector<int> load(3, 0);
  for (size_t o : x) ++load[o];
  for (int l : load) EXPECT_TRUE(l == 5 || l == 6) << l;
  // A fourth member takes about a quarter; of the rest, few move.
  const auto z = ssm::nats::assign_partitions(four, 16);
  int moved_between_old = 0, to_new = 0;
  for (size_t p = 0; p < 16; ++p) {
    if (z[p] == 3)
      ++to_new;
    else if (z[p] != x[p])
      ++moved_between_old;
  }
  EXPECT_EQ(to_new, 4);
  EXPECT_LE(moved_between_old, 3);
  EXPECT_EQ(ssm::nats::assign_partitions(std::vector<std::string>{"solo"}, 5), std::vector<size_t>(5, 0));
}

TEST(NatsLayout, ValueSubjects) {
  size_t p = 99;
  std::string_view suffix;
  EXPECT_TRUE(ssm::nats::parse_value_subject("metrics.3.web-1.cpu", "metrics", 16, &p, &suffix));
  EXPECT_EQ(p, 3u);
  EXPECT_EQ(suffix, "web-1.cpu");
  for (const char* bad : {"metrics.16.x", "metrics.03.x", "metrics.3", "metrics.3.", "metric.3.x", "metrics..x",
                          "metrics.x.y", "metrics.-1.x"})
    EXPECT_FALSE(ssm::nats::parse_value_subject(bad, "metrics", 16, &p, &suffix)) << bad;
  const std::string s = ssm::nats_value_subject("metrics", "a.b;host=x", 16);
  EXPECT_EQ(s, "metrics." + std::to_string(ssm::nats_partition_of("a.b;host=x", 16)) + ".a.b;host=x");
}

TEST(NatsLayout, ChunksRoundTripAndDamageIsNamed) {
  ssm::nats::ChunkWriter w(5);
  const std::vector<uint8_t> st1 = {1, 2, 3}, st2(1000, 7);
  w.add({42, 3}, "a.b", st1);
  w.add({43, 0}, "c;t=1", st2);
  const auto bytes = w.take();
  const auto recs = ssm::nats::parse_chunk(bytes, 5);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].name, "a.b");
  EXPECT_EQ(recs[0].pos.seq, 42u);
  EXPECT_EQ(recs[0].pos.point, 3u);
  EXPECT_EQ(std::vector<uint8_t>(recs[1].state.begin(), recs[1].state.end()), st2);
  EXPECT_NE(ssm::testing::error_of([&] { ssm::nats::parse_chunk(bytes, 4); }).find("partition 5"), std::string::npos);
  auto damaged = bytes;
  damaged[30] ^= 1;
  EXPECT_NE(ssm::testing::error_of([&] { ssm::nats::parse_chunk(damaged, 5); }).find("damaged"), std::string::npos);
  EXPECT_NE(ssm::testing::error_of([&] {
              ssm::nats::parse_chunk(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 20), 5);
            }).find("not a checkpoint chunk"),
            std::string::npos);
}

TEST(NatsLayout, ConfigErrorsNameTheFlag) {
  ssm::NatsConfig c;
  c.url = "nats://127.0.0.1:4222";
  EXPECT_EQ(ssm::testing::error_of([&] { c.validate(); }), "");
  auto bad = [&](auto change, const char* flag) {
    ssm::NatsConfig d = c;
    change(d);
    EXPECT_NE(ssm::testing::error_of([&] { d.validate(); }).find(flag), std::string::npos) << flag;
  };
  bad([](ssm::NatsConfig& d) { d.partitions = 0; }, "--nats-partitions");
  bad([](ssm::NatsConfig& d) { d.stream = "a.b"; }, "--nats-stream");
  bad([](ssm::NatsConfig& d) { d.lease_seconds = 0.1; }, "--nats-lease-ttl");
  bad([](ssm::NatsConfig& d) { d.max_inflight = 10; }, "--nats-max-inflight");
  bad([](ssm::NatsConfig& d) { d.url.clear(); }, "--nats");
  bad([](ssm::NatsConfig& d) { d.instance = "has space"; }, "--nats-instance");
}

// ---------------------------------------------------------------- the cluster

// 3 instances, 1000 series; the owner of partition 0 is killed -9 while
// values flow. Its partitions move to the two others, which replay from its
// last checkpoints: every value has exactly one score in ANOMALY, equal to a
// single-process run's, and the replayed score messages (seen on plain
// NATS, dropped by the stream as duplicates) equal the first ones.
//
// Checkpoints come only from the in-flight bound (--nats-max-inflight 16:
// at 8 unacked messages), so after 12 rounds each partition has 0 to 4
// messages unacked, and after a 13th at least one: the victim certainly
// dies with scored values that are not checkpointed.
TEST(NatsCluster, KillNineMidStreamScoresEveryValueOnceAndExactly) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  Server server(dir / "");
  const size_t P = 12, rounds = 40;
  const Workload w(1000, P);
  Client c(server.url());
  c.watch("anomaly.score.>");
  Instance a(server.url(), "a", dir, P, "30", "16"), b(server.url(), "b", dir, P, "30", "16"),
      d(server.url(), "d", dir, P, "30", "16");
  std::vector<Instance*> all = {&a, &b, &d};
  ASSERT_TRUE(settled(c, P, all)) << a.text() << b.text() << d.text();

  const size_t per_round = w.messages_per_round();
  auto scored = [&] { return c.count("ANOMALY", "anomaly.score.>"); };
  for (size_t t = 0; t < 12; ++t) c.publish_round(w.round(t), "r" + std::to_string(t));
  ASSERT_TRUE(wait_until([&] { return scored() >= 12 * per_round; }, 20));
  c.publish_round(w.round(12), "r12");
  ASSERT_TRUE(wait_until([&] { return scored() >= 13 * per_round; }, 20));
  const auto owners = c.leases("ssm_leases", P);
  const std::string victim = owners[0];
  const size_t victim_partitions = static_cast<size_t>(std::count(owners.begin(), owners.end(), victim));
  Instance* v = victim == "a" ? &a : victim == "b" ? &b : &d;
  std::map<const Instance*, size_t> log_at_kill;  // (the settling handed partitions around before)
  for (const Instance* i : all) log_at_kill[i] = i->text().size();
  v->child->signal(SIGKILL);
  EXPECT_EQ(v->child->wait(5), 128 + SIGKILL);
  for (size_t t = 13; t < rounds; ++t) c.publish_round(w.round(t), "r" + std::to_string(t));

  std::vector<Instance*> live;
  for (Instance* i : all)
    if (i != v) live.push_back(i);
  ASSERT_TRUE(wait_until([&] { return scored() >= rounds * per_round; }, 30))
      << scored() << " of " << rounds * per_round << " score messages\n"
      << live[0]->text() << live[1]->text();
  ASSERT_TRUE(settled(c, P, live));
  // The survivors took the victim's partitions from its checkpoints (it had
  // made one at 8 messages in each).
  size_t taken = 0;
  for (Instance* i : live)
    for (long series : loaded_from(*i, victim, log_at_kill[i])) {
      EXPECT_GT(series, 0) << i->id << " took a partition of " << victim << " without its series\n" << i->text();
      ++taken;
    }
  EXPECT_EQ(taken, victim_partitions);
  for (Instance* i : live) i->child->signal(SIGTERM);
  for (Instance* i : live) EXPECT_EQ(i->child->wait(15), 0) << i->text();
  expect_exactly_once(w, rounds, c.read_all("ANOMALY", "anomaly.score.>"));

  // What the takeover scored again: the same bytes, dropped by the stream.
  size_t again = 0;
  for (const auto& [id, payloads] : c.watched()) {
    EXPECT_FALSE(id.empty()) << "a score message without a message id";
    for (const std::string& p : payloads) EXPECT_EQ(p, payloads[0]) << id << " scored twice, differently";
    again += payloads.size() - 1;
  }
  EXPECT_GE(again, victim_partitions) << "each of the victim's " << victim_partitions
                                      << " partitions had scored values that were not checkpointed";
}

// The server killed -9 and restarted under a running cluster, then the
// whole cluster killed -9 mid-stream and a new one started on a restarted
// server: no value lost, none scored twice, all equal to one process's.
TEST(NatsCluster, ServerAndClusterRestartsLoseNothingAndScoreNothingTwice) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  Server server(dir / "");
  const size_t P = 8, rounds = 36;
  const Workload w(1000, P);
  const size_t per_round = w.messages_per_round();
  auto scored = [&](Client& c) { return c.count("ANOMALY", "anomaly.score.>"); };
  {
    auto c = std::make_unique<Client>(server.url());
    // Checkpoints every 8 messages of a partition (and every 0.5 s).
    Instance a(server.url(), "a", dir, P, "0.5", "16"), b(server.url(), "b", dir, P, "0.5", "16"),
        d(server.url(), "d", dir, P, "0.5", "16");
    ASSERT_TRUE(settled(*c, P, {&a, &b, &d}));
    for (size_t t = 0; t < 12; ++t) c->publish_round(w.round(t), "r" + std::to_string(t));
    ASSERT_TRUE(wait_until([&] { return scored(*c) >= per_round * 2; }, 20));
    c.reset();
    server.restart();  // under the running cluster, values in flight
    c = std::make_unique<Client>(server.url());
    for (size_t t = 12; t < 24; ++t) c->publish_round(w.round(t), "r" + std::to_string(t));
    ASSERT_TRUE(wait_until([&] { return scored(*c) >= per_round * 24; }, 30))
        << scored(*c) << " of " << per_round * 24 << "\n"
        << a.text() << b.text() << d.text();
    for (Instance* i : {&a, &b, &d}) EXPECT_EQ(i->text().find("stopping"), std::string::npos) << i->text();
    for (size_t t = 24; t < 30; ++t) c->publish_round(w.round(t), "r" + std::to_string(t));
    ASSERT_TRUE(wait_until([&] { return scored(*c) > per_round * 24; }, 20));
    for (Instance* i : {&a, &b, &d}) i->child->signal(SIGKILL);  // the whole cluster, mid-stream
    for (Instance* i : {&a, &b, &d}) EXPECT_EQ(i->child->wait(5), 128 + SIGKILL);
  }
  server.restart();
  Client c(server.url());
  Instance e(server.url(), "e", dir, P), f(server.url(), "f", dir, P), g(server.url(), "g", dir, P);
  for (size_t t = 30; t < rounds; ++t) c.publish_round(w.round(t), "r" + std::to_string(t));
  ASSERT_TRUE(wait_until([&] { return scored(c) >= per_round * rounds; }, 30))
      << scored(c) << " of " << per_round * rounds << "\n"
      << e.text() << f.text() << g.text();
  for (Instance* i : {&e, &f, &g}) i->child->signal(SIGTERM);
  for (Instance* i : {&e, &f, &g}) EXPECT_EQ(i->child->wait(15), 0) << i->text();
  // The new cluster started from the old one's checkpoints, which the
  // restarted server kept.
  size_t from_old = 0;
  for (Instance* i : {&e, &f, &g})
    for (const std::string& old : {"a", "b", "d"})
      for (long series : loaded_from(*i, old)) {
        EXPECT_GT(series, 0) << i->text();
        ++from_old;
      }
  EXPECT_EQ(from_old, P);
  expect_exactly_once(w, rounds, c.read_all("ANOMALY", "anomaly.score.>"));
}

// ---------------------------------------------------------------- in-process instances

// A NatsDetector on a thread of the test, its log kept.
struct InProcess {
  std::ostringstream log, events;
  std::unique_ptr<ssm::NatsDetector> det;
  std::thread thread;
  std::atomic<int> result{-1};
  std::mutex mu;  // the streams are written by the instance's threads a line at a time
  explicit InProcess(ssm::NatsConfig cfg) {
    det = std::make_unique<ssm::NatsDetector>(
        std::move(cfg), std::make_shared<const ssm::Detector>(ssm::Forecaster::builtin(), ssm::DetectorConfig{}),
        &events, &log);
    thread = std::thread([this] { result = det->run() ? 1 : 0; });
  }
  ~InProcess() { finish(); }
  int finish() {
    if (thread.joinable()) {
      det->stop();
      thread.join();
    }
    return result;
  }
};

ssm::NatsConfig config_for(const Server& s, size_t partitions) {
  ssm::NatsConfig c;
  c.url = s.url();
  c.partitions = partitions;
  c.instance = "solo";
  c.lease_seconds = kTtl;
  c.checkpoint_seconds = 0.5;
  c.give_up_seconds = 5;
  c.stats_seconds = 0;
  return c;
}

// Malformed messages are counted and skipped; the values after them in the
// same partition are scored as if the bad ones had never come.
TEST(NatsInstance, MalformedMessagesAreCountedAndSkippedWithoutBlockingThePartition) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  Server server(dir / "");
  Client c(server.url());
  const size_t P = 4;
  const std::string x = "app.latency", other = "zz.other";
  const size_t px = ssm::nats_partition_of(x, P);
  std::string wrong = other;  // a series of another partition, to be sent on x's subject
  for (int i = 0; ssm::nats_partition_of(wrong, P) == px; ++i) wrong = other + std::to_string(i);
  const std::string sx = "metrics." + std::to_string(px) + "." + x;
  std::vector<std::pair<std::string, std::string> > msgs;
  std::vector<double> good;
  // Past the detector's learning phase (233 values) a jump at value 280 is an event.
  auto value = [&](size_t t) { return 10 + std::sin(0.5 * static_cast<double>(t)) + (t == 280 ? 20 : 0); };
  size_t t = 0;
  auto add_good = [&] {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g %lld", value(t), static_cast<long long>(Workload::epoch(t)));
    msgs.emplace_back(sx, buf);
    good.push_back(value(t));
    ++t;
  };
  std::string history;  // 260 values in one message of Graphite lines
  for (; t < 260; ++t) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %.17g %lld\n", value(t), static_cast<long long>(Workload::epoch(t)));
    history += x + buf;
    good.push_back(value(t));
  }
  msgs.emplace_back("metrics." + std::to_string(px) + ".lines", history);
  const std::vector<std::string> bad = {"abc 1700000000",            // bad_value
                                        "1.5",                       // missing_fields
                                        "",                          // missing_fields (blank after the name)
                                        "inf 1700000000",            // non_finite_value
                                        "1 2 3 4",                   // extra_fields
                                        std::string("\x01\x02", 2),  // binary
                                        wrong + " 5 1700000000\n"};  // of another partition
  for (const std::string& b : bad) msgs.emplace_back(sx, b);
  msgs.emplace_back(sx, "nan 1700009999");  // counted as nan, not malformed
  for (int i = 0; i < 30; ++i) add_good();
  ssm::nats::ensure_metrics_stream(c.js(), config_for(server, P));
  for (size_t i = 0; i < msgs.size(); ++i) c.publish_round({msgs[i]}, "m" + std::to_string(i));

  InProcess inst(config_for(server, P));
  ASSERT_TRUE(wait_until([&] { return inst.det->stats().points >= good.size(); }, 20)) << inst.log.str();
  ASSERT_TRUE(wait_until([&] { return inst.det->stats().messages >= msgs.size(); }, 5));
  const ssm::NatsStats s = inst.det->stats();
  EXPECT_EQ(s.points, good.size());
  EXPECT_EQ(s.malformed, bad.size());
  EXPECT_EQ(s.wrong_partition, 1u);
  EXPECT_EQ(s.nan_values, 1u);
  EXPECT_EQ(inst.finish(), 1) << inst.log.str();
  EXPECT_NE(inst.log.str().find("bad_value"), std::string::npos) << inst.log.str();
  EXPECT_NE(inst.log.str().find("belongs to partition"), std::string::npos) << inst.log.str();

  ssm::Detector det(ssm::Forecaster::builtin(), ssm::DetectorConfig{});
  ssm::SeriesState st = det.new_series();
  std::vector<double> want;
  for (size_t i = 0; i < good.size(); ++i) want.push_back(det.update(st, Workload::epoch(i), good[i]).score);
  const auto got = scores_of(c.read_all("ANOMALY", "anomaly.score.>"));
  ASSERT_EQ(got.size(), 1u);
  const auto& by_epoch = got.at("anomaly." + x);
  ASSERT_EQ(by_epoch.size(), good.size());
  for (size_t i = 0; i < good.size(); ++i) {
    ASSERT_EQ(by_epoch.at(Workload::epoch(i)).size(), 1u);
    EXPECT_EQ(by_epoch.at(Workload::epoch(i))[0], want[i]) << "value " << i;
  }
  const auto events = c.read_all("ANOMALY", "anomaly.event.>");
  ASSERT_GE(events.size(), 1u) << "the jump at value 280 is an event";
  EXPECT_EQ(events[0].first, "anomaly.event." + x);
  EXPECT_NE(inst.events.str().find("\"series\":\"" + x + "\""), std::string::npos);
}

// A backlog far larger than the in-flight bound stays in the server: the
// instance fetches at most a batch at a time and has at most max_inflight
// messages unacked, while the consumer still holds the rest.
TEST(NatsInstance, ASlowConsumerGetsBackpressureNotUnboundedMemory) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  Server server(dir / "");
  Client c(server.url());
  const size_t P = 1, n = 3000;
  std::vector<std::pair<std::string, std::string> > msgs;
  for (size_t t = 0; t < n; ++t)
    msgs.emplace_back("metrics.0.s" + std::to_string(t % 50),
                      std::to_string(Workload::value(t % 50, t / 50)) + " " + std::to_string(Workload::epoch(t / 50)));
  ssm::nats::ensure_metrics_stream(c.js(), config_for(server, P));
  for (size_t i = 0; i < n; i += 500)
    c.publish_round(
        std::vector<std::pair<std::string, std::string> >(msgs.begin() + i, msgs.begin() + std::min(n, i + 500)),
        "b" + std::to_string(i));
  ssm::NatsConfig cfg = config_for(server, P);
  cfg.batch = 16;
  cfg.max_inflight = 64;
  cfg.checkpoint_seconds = 60;  // only the in-flight bound checkpoints (at half of it)
  InProcess inst(cfg);
  // While it works through the backlog the server holds what it has not delivered.
  uint64_t most_waiting = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        jsConsumerInfo* ci = nullptr;
        if (js_GetConsumerInfo(&ci, c.js(), "METRICS", "SSM_STATE_p0", nullptr, nullptr) == NATS_OK) {
          most_waiting = std::max(most_waiting, ci->NumPending);
          EXPECT_LE(ci->NumAckPending, static_cast<int64_t>(cfg.max_inflight));
          jsConsumerInfo_Destroy(ci);
        }
        return inst.det->stats().points >= n;
      },
      30))
      << inst.log.str();
  const ssm::NatsStats s = inst.det->stats();
  EXPECT_LE(s.max_fetched, cfg.batch);
  EXPECT_LE(s.max_inflight, cfg.max_inflight);
  EXPECT_GE(s.checkpoints, n / cfg.max_inflight) << "acks came in windows of at most half the in-flight bound";
  EXPECT_GT(most_waiting, n / 2) << "the backlog waited in the server";
  EXPECT_EQ(inst.finish(), 1);
}

// Graphite over TCP into the front door, through the stream, scored by an
// instance: the same scores as one process.
TEST(NatsInstance, GraphiteFrontDoorPublishesIntoTheStream) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  Server server(dir / "");
  const size_t P = 4;
  const Workload w(40, P);
  ssm::NatsConfig cfg = config_for(server, P);
  ssm::NatsPublisher publisher(cfg, nullptr);
  ssm::DetectServerConfig sc;
  sc.listen = "127.0.0.1:0";
  sc.stats_seconds = 0;
  sc.threads = 1;
  auto det = std::make_shared<const ssm::Detector>(ssm::Forecaster::builtin(), ssm::DetectorConfig{});
  std::ostringstream fd_log;
  ssm::DetectServer front(sc, det, nullptr, &fd_log, &publisher);
  std::thread serving([&] { front.run(); });
  ASSERT_TRUE(wait_until([&] { return front.stats().listening; }, 10));
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(front.port());
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    std::string text;
    const size_t rounds = 30;
    for (size_t t = 0; t < rounds; ++t)
      for (size_t i = 0; i < w.names.size(); ++i) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " %.17g %lld\n", Workload::value(i, t),
                      static_cast<long long>(Workload::epoch(t)));
        text += w.names[i] + buf;
      }
    text += "bad line here and more\n";
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::close(fd);
  }
  ASSERT_TRUE(wait_until([&] { return publisher.published() >= 30 * w.names.size(); }, 20)) << fd_log.str();
  front.stop();
  serving.join();
  EXPECT_EQ(front.stats().forwarded, 30 * w.names.size());
  EXPECT_EQ(front.stats().errors, 1u);
  EXPECT_EQ(publisher.lost(), 0u);
  EXPECT_NE(fd_log.str().find("values stored in stream METRICS"), std::string::npos) << fd_log.str();

  InProcess inst(cfg);
  Client c(server.url());
  ASSERT_TRUE(wait_until([&] { return inst.det->stats().points >= 30 * w.names.size(); }, 20)) << inst.log.str();
  EXPECT_EQ(inst.finish(), 1);
  const auto want = w.reference(30);
  const auto got = scores_of(c.read_all("ANOMALY", "anomaly.score.>"));
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [series, by_epoch] : want)
    for (const auto& [epoch, score] : by_epoch) {
      ASSERT_EQ(got.at(series).at(epoch).size(), 1u) << series << " " << epoch;
      EXPECT_EQ(got.at(series).at(epoch)[0], score) << series << " " << epoch;
    }
}

// ---------------------------------------------------------------- bad servers, streams and buckets

TEST(NatsErrors, NoServerFailsWithAClearMessageInBoundedTime) {
  const uint16_t port = free_port();  // nothing listens there
  ssm::NatsConfig cfg;
  cfg.url = "nats://127.0.0.1:" + std::to_string(port);
  cfg.give_up_seconds = 0.5;
  const auto t0 = Clock::now();
  const auto r = ssm::testing::run({kSsm, "detect", "--nats", cfg.url, "--nats-give-up", "0.5"});
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 10 * kSlow);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("cannot connect to the NATS server at " + cfg.url), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--nats-give-up"), std::string::npos) << r.output;
}

TEST(NatsErrors, AServerThatGoesAwayEndsTheInstanceAfterTheGiveUpTime) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  auto server = std::make_unique<Server>(dir / "");
  ssm::NatsConfig cfg = config_for(*server, 2);
  cfg.give_up_seconds = 1;
  InProcess inst(cfg);
  ASSERT_TRUE(wait_until([&] { return inst.det->stats().owned == 2; }, 10)) << inst.log.str();
  const auto t0 = Clock::now();
  server.reset();  // killed
  ASSERT_TRUE(wait_until([&] { return inst.result != -1; }, 10)) << inst.log.str();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 6 * kSlow);
  EXPECT_EQ(inst.finish(), 0);
  EXPECT_NE(inst.log.str().find("has been unreachable for"), std::string::npos) << inst.log.str();
}

// Two processes under one id would each take the other's leases for their
// own: the second is refused once the first has kept the id alive for
// three lease TTLs.
TEST(NatsErrors, AnInstanceIdInUseIsRefused) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  Server server(dir / "");
  InProcess first(config_for(server, 2));
  ASSERT_TRUE(wait_until([&] { return first.det->stats().owned == 2; }, 10)) << first.log.str();
  InProcess second(config_for(server, 2));
  ASSERT_TRUE(wait_until([&] { return second.result != -1; }, 10)) << second.log.str();
  EXPECT_EQ(second.finish(), 0);
  EXPECT_NE(second.log.str().find("instance id solo is in use by a running instance"), std::string::npos)
      << second.log.str();
  EXPECT_EQ(first.det->stats().owned, 2u) << "the first kept its partitions";
  EXPECT_EQ(first.finish(), 1) << first.log.str();
}

// Runs an instance against streams and buckets made beforehand; its log.
std::string run_against(const Server& server, ssm::NatsConfig cfg) {
  InProcess inst(std::move(cfg));
  wait_until([&] { return inst.result != -1; }, 10);
  EXPECT_EQ(inst.finish(), 0) << inst.log.str();
  return inst.log.str();
}

TEST(NatsErrors, StreamsAndBucketsOfTheWrongShapeAreNamed) {
  REQUIRE_NATS_SERVER();
  TempDir dir;
  Server server(dir / "");
  Client c(server.url());
  auto add_stream = [&](const char* name, const char* subject, jsRetentionPolicy r, int64_t max_age) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char* subjects[] = {subject};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = r;
    sc.MaxAge = max_age;
    jsStreamInfo* si = nullptr;
    ASSERT_EQ(js_AddStream(&si, c.js(), &sc, nullptr, nullptr), NATS_OK);
    jsStreamInfo_Destroy(si);
  };
  ssm::NatsConfig cfg = config_for(server, 4);
  add_stream("WQ", "wq.>", js_WorkQueuePolicy, 0);
  cfg.stream = "WQ";
  cfg.subject = "wq";
  EXPECT_NE(run_against(server, cfg).find("work queue retention"), std::string::npos);

  cfg = config_for(server, 4);
  add_stream("EXPIRING", "EXPIRING.>", js_LimitsPolicy, 3600 * int64_t{1000000000});
  cfg.state_stream = "EXPIRING";
  EXPECT_NE(run_against(server, cfg).find("checkpoints must not expire"), std::string::npos);

  cfg = config_for(server, 4);
  kvConfig kc;
  kvConfig_Init(&kc);
  kc.Bucket = "slow_leases";
  kc.TTL = 10 * int64_t{1000000000};
  kvStore* kv = nullptr;
  ASSERT_EQ(js_CreateKeyValue(&kv, c.js(), &kc), NATS_OK);
  kvStore_Destroy(kv);
  cfg.bucket = "slow_leases";
  EXPECT_NE(run_against(server, cfg).find("--nats-lease-ttl is " + ttl_text() + " s"), std::string::npos);

  // A cluster made for 4 partitions refuses an instance with 8.
  cfg = config_for(server, 4);
  {
    InProcess first(cfg);
    ASSERT_TRUE(wait_until([&] { return first.det->stats().ready; }, 10)) << first.log.str();
  }
  cfg.partitions = 8;
  const std::string log = run_against(server, cfg);
  EXPECT_NE(log.find("partitions 4, this instance has 8 (--nats-partitions)"), std::string::npos) << log;
}

#endif  // SSM_WITH_NATS

}  // namespace
