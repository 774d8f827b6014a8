// The detection server on loopback: scores equal the detector's own, a
// restart (SIGTERM of the real `ssm detect`, then a new process on the same
// state dir) continues exactly like an uninterrupted run, malformed input on
// one connection never touches another's series, partial lines at
// disconnect are counted, eviction / refusal at max_series, back-pressure
// from a subscriber that does not read, events, and the state file checks.
#include "ssm/streams/detect_server.hpp"
#include "ssm/cuda.hpp"

#include <utility>  // before Asio: see DESIGN.md §6
#include <boost/asio.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int64_t kT0 = 1700000000;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("ssm_test_detect_server_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::shared_ptr<const ssm::Detector> detector() {
  static const auto d = std::make_shared<const ssm::Detector>(ssm::Forecaster::builtin(), ssm::DetectorConfig{});
  return d;
}

// A server running on its own thread; stop() joins it.
struct Running {
  std::ostringstream log, events;
  std::unique_ptr<ssm::DetectServer> server;
  std::thread th;
  bool run_ok = true;
  // wait: until the server listens (after its restore).
  explicit Running(ssm::DetectServerConfig cfg, bool wait = true) {
    cfg.listen = "127.0.0.1:0";
    if (cfg.scores_listen.empty()) cfg.scores_listen = "127.0.0.1:0";
    server = std::make_unique<ssm::DetectServer>(cfg, detector(), &events, &log);
    th = std::thread([this] { run_ok = server->run(); });
    if (wait) EXPECT_TRUE(wait_for([](const auto& s) { return s.listening; }));
  }
  ~Running() { stop(); }
  void stop() {
    if (th.joinable()) {
      server->stop();
      th.join();
    }
  }
  template <typename P>
  bool wait_for(P pred, std::chrono::milliseconds limit = 10s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (pred(server->stats())) return true;
      std::this_thread::sleep_for(2ms);
    }
    return pred(server->stats());
  }
};

// A blocking loopback client.
struct Client {
  asio::io_context io;
  tcp::socket sock{io};
  std::string buf;  // bytes read and not yet returned as lines
  // rcvbuf > 0: a small fixed receive buffer (set before connecting, so the
  // kernel does not grow it).
  explicit Client(uint16_t port, int rcvbuf = 0) {
    sock.open(tcp::v4());
    if (rcvbuf > 0) sock.set_option(asio::socket_base::receive_buffer_size(rcvbuf));
    sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }
  void send(const std::string& s) { asio::write(sock, asio::buffer(s)); }
  // The next n lines (without "\n"); fails the test after `limit`.
  std::vector<std::string> lines(size_t n, std::chrono::milliseconds limit = 20s) {
    std::vector<std::string> out;
    const auto end = std::chrono::steady_clock::now() + limit;
    sock.non_blocking(true);
    char tmp[65536];
    while (out.size() < n) {
      size_t nl;
      while (out.size() < n && (nl = buf.find('\n')) != std::string::npos) {
        out.push_back(buf.substr(0, nl));
        buf.erase(0, nl + 1);
      }
      if (out.size() == n) break;
      boost::system::error_code ec;
      const size_t got = sock.read_some(asio::buffer(tmp), ec);
      if (ec == asio::error::would_block) {
        if (std::chrono::steady_clock::now() > end) break;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      if (ec) break;
      buf.append(tmp, got);
    }
    sock.non_blocking(false);
    return out;
  }
};

std::string point(const std::string& path, double v, int64_t t) {
  std::ostringstream s;
  s.precision(17);
  s << path << ' ' << v << ' ' << t << '\n';
  return s.str();
}

std::vector<double> series_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0, 1);
  std::vector<double> x(n);
  for (size_t t = 0; t < n; ++t)
    x[t] = 100 + 10 * std::sin(2 * M_PI * t / 288.0) + g(rng) + (t % 997 == 500 ? 40 : 0);
  return x;
}

// The score lines the server must send for these values: the detector's
// own scores in the server's format.
std::vector<std::string> expected_lines(const std::string& path, const std::vector<double>& x, size_t from = 0,
                                        size_t to = SIZE_MAX) {
  ssm::SeriesState s = detector()->new_series();
  std::vector<std::string> out;
  for (size_t t = 0; t < std::min(to, x.size()); ++t) {
    const double score = detector()->update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]).score;
    if (t < from) continue;
    char num[64];
    std::snprintf(num, sizeof(num), "%.6g", score);
    out.push_back("anomaly." + path + ".score " + num + " " + std::to_string(kT0 + 300 * static_cast<int64_t>(t)));
  }
  return out;
}

TEST(DetectServer, ScoresAreTheDetectorsAndMalformedLinesAreCounted) {
  Running r({});
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  const auto a = series_values(700, 1), b = series_values(700, 2);
  std::string text;
  for (size_t t = 0; t < a.size(); ++t) {
    text += point("srv.a", a[t], kT0 + 300 * int64_t(t));
    text += point("srv.b", b[t], kT0 + 300 * int64_t(t));
    if (t == 100) text += "srv.a nan 5\nsrv.b 1 2 3\n\x01\x02 1 2\nsrv.a 1 -7\n";  // a nan value, 3 errors
  }
  Client in(r.server->port());
  in.send(text);
  const auto got = sub.lines(1400);
  ASSERT_EQ(got.size(), 1400u);
  std::vector<std::string> ga, gb;
  for (const auto& l : got) (l.rfind("anomaly.srv.a.", 0) == 0 ? ga : gb).push_back(l);
  EXPECT_EQ(ga, expected_lines("srv.a", a));
  EXPECT_EQ(gb, expected_lines("srv.b", b));
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.errors == 3 && s.nan_values == 1; }));
  in.sock.close();
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.open_connections == 0; }));
  r.stop();
  const std::string log = r.log.str();
  EXPECT_NE(log.find("1400 points, 1 nan values, 3 malformed lines (extra_fields 1, epoch_range 1, binary 1)"),
            std::string::npos)
      << log;
  EXPECT_EQ(r.server->stats().series, 2u);
}

TEST(DetectServer, MalformedInputOnOneConnectionNeverTouchesAnotherSeries) {
  Running r({});
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  const auto x = series_values(600, 3);
  Client good(r.server->port()), bad(r.server->port());
  const std::string garbage[] = {
      "good.x nan " + std::to_string(kT0) + "\n",  // the good series' name with bad values
      "good.x inf 1\n",
      "good.x 1e999 1\n",
      "good.x 5 -2\n",
      "good.x 5 99999999999999999\n",
      "good.x 5\n",
      "good.x 5 6 7\n",
      "good..x 5 6\n",
      std::string("good.x \0\xff 6\n", 12),
      std::string(9000, 'g') + " 1 2\n",  // longer than max_line
      "good.x 5 0x10\n",
  };
  for (size_t t = 0; t < x.size(); ++t) {
    good.send(point("good.x", x[t], kT0 + 300 * int64_t(t)));
    bad.send(garbage[t % std::size(garbage)]);
  }
  bad.send("good.x 1");  // a partial line left at disconnect
  bad.sock.close();
  const auto got = sub.lines(x.size());
  EXPECT_EQ(got, expected_lines("good.x", x));
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.open_connections == 1; }));
  const size_t nans = (x.size() + std::size(garbage) - 1) / std::size(garbage);  // the first garbage line's
  EXPECT_EQ(r.server->stats().errors, x.size() - nans + 1);
  EXPECT_EQ(r.server->stats().nan_values, nans);
  EXPECT_EQ(r.server->stats().series, 1u);
  r.stop();
  EXPECT_NE(r.log.str().find("0 points, " + std::to_string(nans) + " nan values, " +
                             std::to_string(x.size() - nans + 1) + " malformed lines"),
            std::string::npos)
      << r.log.str();
  EXPECT_NE(r.log.str().find("partial_line 1"), std::string::npos) << r.log.str();
}

TEST(DetectServer, PartialLineAtDisconnectIsCountedAndNeverScored) {
  Running r({});
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  {
    Client in(r.server->port());
    in.send("p.q 1 " + std::to_string(kT0) + "\np.q 2 " + std::to_string(kT0 + 60));
  }
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.connections == 1 && s.open_connections == 0; }));
  EXPECT_EQ(sub.lines(1).size(), 1u);
  EXPECT_EQ(r.server->stats().points, 1u);
  EXPECT_EQ(r.server->stats().errors, 1u);
  r.stop();
  EXPECT_NE(r.log.str().find("1 points, 1 malformed lines (partial_line 1)"), std::string::npos) << r.log.str();
}

TEST(DetectServer, EvictsTheLeastRecentlySeenOrRefuses) {
  ssm::DetectServerConfig c;
  c.max_series = 2;
  // One partition: with several, the series of each scoring thread come
  // into the table in an order of their own, and the LRU is per partition.
  c.threads = 1;
  {
    Running r(c);
    Client sub(r.server->scores_port());
    ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
    Client in(r.server->port());
    in.send("s.one 1 100\ns.two 1 100\ns.one 2 200\ns.three 1 100\ns.one 3 300\n");
    EXPECT_EQ(sub.lines(5).size(), 5u);
    EXPECT_EQ(r.server->stats().evicted, 1u);
    r.stop();
    EXPECT_NE(r.log.str().find("evicted series 's.two' (least recently seen"), std::string::npos) << r.log.str();
  }
  c.overflow = ssm::SeriesOverflow::refuse;
  Running r(c);
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  Client in(r.server->port());
  in.send("s.one 1 100\ns.two 1 100\ns.three 1 100\ns.one 2 200\n");
  const auto got = sub.lines(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].rfind("anomaly.s.one.score", 0), 0u);
  EXPECT_EQ(r.server->stats().refused, 1u);
  r.stop();
  EXPECT_NE(r.log.str().find("refused new series 's.three'"), std::string::npos) << r.log.str();
}

TEST(DetectServer, SlowSubscriberPushesBackWithoutLosingLines) {
  ssm::DetectServerConfig c;
  c.max_pending = 4096;
  c.read_chunk = 4096;
  Running r(c);
  Client sub(r.server->scores_port(), 4096);
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  const size_t n = 400000;  // ~14 MB of score lines: more than the socket buffers hold
  std::thread sender([&] {
    Client in(r.server->port());
    std::string text;
    for (size_t t = 0; t < n; ++t) text += point("bp.s" + std::to_string(t % 10), 1.0 + t % 7, kT0 + int64_t(t));
    in.send(text);
  });
  // Not reading: ingest must come to a stop well short of everything (once
  // the kernel's buffers, which it grows for a while, are full).
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.pauses >= 1; }));
  uint64_t stalled = 0;
  for (int i = 0; i < 100; ++i) {
    const uint64_t before = r.server->stats().points;
    std::this_thread::sleep_for(300ms);
    stalled = r.server->stats().points;
    if (stalled == before) break;
  }
  EXPECT_EQ(r.server->stats().points, stalled);
  EXPECT_LT(stalled, n / 2);
  // Reading resumes the flow; every line arrives, in order per series.
  const auto got = sub.lines(n, 120s);
  sender.join();
  ASSERT_EQ(got.size(), n);
  std::map<std::string, int64_t> last;
  for (const auto& l : got) {
    const auto sp = l.rfind(' ');
    const std::string name = l.substr(0, l.find(' '));
    const int64_t t = std::stoll(l.substr(sp + 1));
    ASSERT_GT(t, last[name]) << l;
    last[name] = t;
  }
  r.stop();
  EXPECT_NE(r.log.str().find("inputs paused: scores subscriber"), std::string::npos) << r.log.str();
  EXPECT_NE(r.log.str().find("inputs resumed after"), std::string::npos) << r.log.str();
}

TEST(DetectServer, EventsAreJsonLines) {
  ssm::DetectServerConfig c;
  c.event_threshold = 0.0;  // every scored value is an event
  c.events_listen = "127.0.0.1:0";
  Running r(c);
  Client evs(r.server->events_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  Client in(r.server->port());
  in.send("e.v 1.5 100\ne.v 2.5 160\ne.v 2.5 160\n");  // the repeat is no event
  const auto got = evs.lines(2);
  ASSERT_EQ(got.size(), 2u);
  const auto j = nlohmann::json::parse(got[1]);
  EXPECT_EQ(j.at("series"), "e.v");
  EXPECT_EQ(j.at("time"), 160);
  EXPECT_EQ(j.at("value"), 2.5);
  EXPECT_NEAR(j.at("prediction").get<double>(), 1.5, 0.01);
  EXPECT_TRUE(j.at("score").is_number() && j.at("likelihood").is_number());
  EXPECT_EQ(j.at("kind"), "scored");
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.points == 3; }));
  r.stop();
  const std::string events = r.events.str();
  EXPECT_EQ(std::count(events.begin(), events.end(), '\n'), 2);
  EXPECT_EQ(r.server->stats().repeats, 1u);
}

TEST(DetectServer, DamagedStateFileStartsEmpty) {
  TempDir dir;
  ssm::DetectServerConfig c;
  c.state_dir = dir.path.string();
  {
    Running r(c);
    Client sub(r.server->scores_port());
    ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
    Client in(r.server->port());
    in.send("d.a 1 100\nd.b 2 100\n");
    EXPECT_EQ(sub.lines(2).size(), 2u);
  }
  const fs::path file = dir.path / "series.state";
  ASSERT_TRUE(fs::exists(file));
  {
    Running r(c);
    EXPECT_EQ(r.server->stats().restored, 2u);
  }
  std::string bytes;
  {
    std::ifstream f(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  bytes[bytes.size() / 2] ^= 1;
  std::ofstream(file, std::ios::binary) << bytes;
  Running r(c);
  EXPECT_EQ(r.server->stats().restored, 0u);
  r.stop();
  EXPECT_NE(r.log.str().find("checksum mismatch"), std::string::npos) << r.log.str();
}

TEST(DetectServer, ConfigErrorsNameTheField) {
  auto error_of = [](ssm::DetectServerConfig c) {
    try {
      ssm::DetectServer s(c, detector(), nullptr, nullptr);
    } catch (const ssm::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ssm::DetectServerConfig c;
  c.listen = "127.0.0.1";
  EXPECT_NE(error_of(c).find("--listen"), std::string::npos) << error_of(c);
  c.listen = "127.0.0.1:70000";
  EXPECT_NE(error_of(c).find("bad port"), std::string::npos);
  c = {};
  c.listen = "127.0.0.1:0";
  c.max_series = 0;
  EXPECT_NE(error_of(c).find("--max-series"), std::string::npos) << error_of(c);
  c = {};
  c.listen = "127.0.0.1:0";
  c.score_prefix = "a b";
  EXPECT_NE(error_of(c).find("--prefix"), std::string::npos) << error_of(c);
  EXPECT_EQ(ssm::parse_host_port("[::1]:2003", "x").host, "::1");
  c = {};
  c.listen = "127.0.0.1:0";
  c.device = "gpu";
  EXPECT_NE(error_of(c).find("--device must be \"cpu\" or \"cuda\""), std::string::npos) << error_of(c);
  if (!ssm::cuda_available()) {
    c.device = "cuda";
    const std::string e = error_of(c);
    EXPECT_TRUE(e.find("GPU") != std::string::npos || e.find("CUDA") != std::string::npos) << e;
  }
}

// The lines of each series, in the order they came.
std::map<std::string, std::vector<std::string>> lines_by_series(const std::vector<std::string>& lines) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& l : lines) out[l.substr(0, l.find(' '))].push_back(l);
  return out;
}

// The score of each line, by series, parsed.
std::map<std::string, std::vector<double>> scores_by_series(const std::vector<std::string>& lines) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& l : lines) {
    const size_t a = l.find(' '), b = l.rfind(' ');
    out[l.substr(0, a)].push_back(std::stod(l.substr(a + 1, b - a - 1)));
  }
  return out;
}

// The forecaster on the GPU: the scores are the CPU detector's (to fp32
// summation order), one series leaves and comes back through eviction, and
// the state written at shutdown (model states read back from the GPU) lets a
// CPU server continue as if nothing had happened.
TEST(DetectServerGpu, ScoresMatchTheCpuDetectorAndTheStateCarriesOver) {
  if (!ssm::cuda_available()) GTEST_SKIP() << "no usable GPU: " << ssm::cuda_device_description();
  TempDir dir;
  ssm::DetectServerConfig c;
  c.device = "cuda";
  c.state_dir = dir.path.string();
  c.max_series = 3;
  const size_t n = 800, first = 600;
  const auto a = series_values(n, 1), b = series_values(n, 2), e = series_values(n, 3);
  // The CPU detector's scores, with what eviction does to series e: it
  // starts again from a fresh state at value 300.
  auto cpu_scores = [](const std::vector<double>& x, size_t from, size_t to, size_t restart) {
    ssm::SeriesState s = detector()->new_series();
    std::vector<double> out;
    for (size_t t = 0; t < to; ++t) {
      if (t == restart) s = detector()->new_series();
      const double v = detector()->update(s, kT0 + 300 * static_cast<int64_t>(t), x[t]).score;
      if (t >= from) out.push_back(v);
    }
    return out;
  };
  auto expect_close = [](const std::vector<double>& got, const std::vector<double>& want, const char* what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    EXPECT_LE(worst, 1e-4) << what;  // the lines carry 6 significant digits
    std::printf("  %s: %zu scores, largest difference %.1e\n", what, got.size(), worst);
  };
  {
    Running r(c);
    Client sub(r.server->scores_port());
    ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
    Client in(r.server->port());
    std::string text;
    size_t lines = 0;
    for (size_t t = 0; t < first; ++t) {
      text += point("g.a", a[t], kT0 + 300 * int64_t(t));
      text += point("g.b", b[t], kT0 + 300 * int64_t(t));
      lines += 2;
      if (t < 300 || t >= 310) {
        text += point("g.e", e[t], kT0 + 300 * int64_t(t));
        ++lines;
      } else {  // g.e is away; g.x takes its place and is evicted when g.e returns
        text += point("g.x", 1.0 * t, kT0 + 300 * int64_t(t));
        ++lines;
      }
      if (t % 50 == 0) {  // several reads, several launches
        in.send(text);
        text.clear();
      }
    }
    in.send(text);
    const auto got = scores_by_series(sub.lines(lines));
    expect_close(got.at("anomaly.g.a.score"), cpu_scores(a, 0, first, SIZE_MAX), "g.a on the GPU");
    expect_close(got.at("anomaly.g.b.score"), cpu_scores(b, 0, first, SIZE_MAX), "g.b on the GPU");
    std::vector<double> e_want = cpu_scores(e, 0, 300, SIZE_MAX), e_after = cpu_scores(e, 310, first, 310);
    e_want.insert(e_want.end(), e_after.begin(), e_after.end());
    expect_close(got.at("anomaly.g.e.score"), e_want, "g.e on the GPU, evicted and back");
    EXPECT_GE(r.server->stats().evicted, 2u);
  }
  // A CPU server continues from the state the GPU server wrote.
  c.device = "cpu";
  Running r(c);
  EXPECT_EQ(r.server->stats().restored, 3u);
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  Client in(r.server->port());
  std::string text;
  for (size_t t = first; t < n; ++t) text += point("g.a", a[t], kT0 + 300 * int64_t(t));
  in.send(text);
  const auto got = scores_by_series(sub.lines(n - first));
  expect_close(got.at("anomaly.g.a.score"), cpu_scores(a, first, n, SIZE_MAX), "g.a on the CPU after the restart");
}

// ---------------------------------------------------------------- the real process

// `ssm detect` as a child process; its stderr goes to a file.
struct Process {
  pid_t pid = -1;
  fs::path err;
  uint16_t port = 0, scores = 0;
  // stdout_fd >= 0: the child's stdout (with --events stdout), else --events none.
  Process(const std::vector<std::string>& args, const fs::path& err_file, bool wait_ready = true,
          int stdout_fd = -1, int close_fd = -1)
      : err(err_file) {
    std::vector<std::string> all = {SSM_BINARY_DIR "/apps/ssm", "detect", "--listen", "127.0.0.1:0", "--scores",
                                    "127.0.0.1:0", "--events", stdout_fd >= 0 ? "stdout" : "none"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
    if (close_fd >= 0) posix_spawn_file_actions_addclose(&fa, close_fd);
    if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    if (!wait_ready) return;
    // Ports come from the ready line.
    if (wait_log("scores on port ")) {
      const std::string text = log();
      const size_t a = text.find("listening on 127.0.0.1:"), b = text.find("scores on port ");
      if (a != std::string::npos) port = static_cast<uint16_t>(std::stoi(text.substr(a + 23)));
      scores = static_cast<uint16_t>(std::stoi(text.substr(b + 15)));
    }
  }
  // Until the log holds `text` (10 s at most).
  bool wait_log(const std::string& text) {
    for (int i = 0; i < 2000 && pid > 0; ++i) {
      if (log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  void signal(int sig) { kill(pid, sig); }
  // The exit status after `sig`: the code, or 128 + the signal that ended it.
  int exit_code(int sig) {
    const int status = stop_with(sig);
    return status < 0 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // SIGTERM and the exit status.
  int terminate() { return stop_with(SIGTERM); }
  // Sends `sig` and reaps the process; one that has not exited 60 s later
  // hangs: it is killed, and the wait status of SIGKILL says so.
  int stop_with(int sig) {
    if (pid <= 0) return -1;
    kill(pid, sig);
    int status = 0;
    const auto end = std::chrono::steady_clock::now() + 60s;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        ADD_FAILURE() << "the server did not exit within 60 s of signal " << sig;
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(2ms);
    }
    pid = -1;
    return status;
  }
  ~Process() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  std::string log() const {
    std::ifstream f(err);
    return std::string((std::istreambuf_iterator<char>(f)), {});
  }
  // Waits (at most 30 s) until the server logs that a scores subscriber joined.
  bool subscriber_joined() const {
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (log().find("scores subscriber") == std::string::npos || log().find(" joined") == std::string::npos) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }
};

TEST(DetectServerProcess, RestartMidStreamEqualsAnUninterruptedRun) {
  TempDir dir;
  const size_t n = 1500, cut = 800;
  const std::vector<std::string> names = {"host1.cpu", "host2.cpu", "host3.mem"};
  std::vector<std::vector<double>> xs;
  for (size_t i = 0; i < names.size(); ++i) xs.push_back(series_values(n, 10 + i));
  auto send_range = [&](Client& in, size_t from, size_t to) {
    std::string text;
    for (size_t t = from; t < to; ++t)
      for (size_t i = 0; i < names.size(); ++i) text += point(names[i], xs[i][t], kT0 + 300 * int64_t(t));
    in.send(text);
  };
  // Uninterrupted, one scoring thread.
  std::vector<std::string> whole;
  {
    Process p({"--threads", "1"}, dir.path / "whole.log");
    ASSERT_GT(p.port, 0) << p.log();
    Client sub(p.scores);
    ASSERT_TRUE(p.subscriber_joined()) << p.log();  // before values flow
    Client in(p.port);
    send_range(in, 0, n);
    whole = sub.lines(n * names.size());
    ASSERT_EQ(whole.size(), n * names.size());
    EXPECT_EQ(p.terminate(), 0);
  }
  // Stopped with SIGTERM after `cut` values, restarted on the same state dir
  // (two scoring threads, then three).
  const std::string state = (dir.path / "state").string();
  std::vector<std::string> first, second;
  {
    Process p({"--state-dir", state, "--threads", "2"}, dir.path / "first.log");
    ASSERT_GT(p.port, 0) << p.log();
    Client sub(p.scores);
    ASSERT_TRUE(p.subscriber_joined()) << p.log();
    Client in(p.port);
    send_range(in, 0, cut);
    first = sub.lines(cut * names.size());
    EXPECT_EQ(p.terminate(), 0);
    EXPECT_NE(p.log().find("stopped: " + std::to_string(cut * names.size()) + " points"), std::string::npos)
        << p.log();
  }
  {
    Process p({"--state-dir", state, "--threads", "3"}, dir.path / "second.log");
    ASSERT_GT(p.port, 0) << p.log();
    EXPECT_NE(p.log().find("restored 3 series"), std::string::npos) << p.log();
    Client sub(p.scores);
    ASSERT_TRUE(p.subscriber_joined()) << p.log();
    Client in(p.port);
    send_range(in, cut, n);
    second = sub.lines((n - cut) * names.size());
    EXPECT_EQ(p.terminate(), 0);
  }
  std::vector<std::string> resumed = first;
  resumed.insert(resumed.end(), second.begin(), second.end());
  ASSERT_EQ(resumed.size(), whole.size());
  // The lines of different scoring threads interleave; a series' own keep
  // their order.
  EXPECT_EQ(lines_by_series(resumed), lines_by_series(whole));
}


// ---------------------------------------------------------------- faults (issue: load and faults)

// 1. A closed stdout (`ssm detect | shipper` after the shipper exits): the
// next event must not kill the server (SIGPIPE); it logs the lost stream and
// serves on.
TEST(DetectServerProcess, ClosedStdoutIsLoggedAndServingGoesOn) {
  TempDir dir;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  Process p({"--event-threshold", "0"}, dir.path / "err.log", true, fds[1], fds[0]);
  close(fds[0]);  // no reader left
  close(fds[1]);
  ASSERT_GT(p.port, 0) << p.log();
  Client sub(p.scores);
  Client in(p.port);
  // Values on a probe series until one's score reaches the subscriber: then
  // it is joined. Every value is an event here, written to the closed stdout.
  int sent = 0;
  while (sent < 100) {
    in.send(point("c.probe", 1.0, 100 + sent++));
    if (!sub.lines(1, 200ms).empty()) break;
  }
  ASSERT_LT(sent, 100) << "no score reached the subscriber\n" << p.log();
  ASSERT_TRUE(p.wait_log("events stream (stdout) failed")) << p.log();
  in.send("c.a 2 200\nc.a 3 300\n");
  int scored = 0;  // c.a's scores (a late probe's may come first)
  for (std::vector<std::string> l; scored < 2 && !(l = sub.lines(1)).empty();)
    scored += l[0].find("c.a.score") != std::string::npos;
  EXPECT_EQ(scored, 2) << p.log();
  EXPECT_EQ(p.exit_code(SIGTERM), 0) << p.log();
  EXPECT_NE(p.log().find("stopped: " + std::to_string(sent + 2) + " points"), std::string::npos) << p.log();
}

// 7. SIGHUP shuts down like SIGTERM (state written, exit 0); a final
// snapshot that fails gives exit status 1.
TEST(DetectServerProcess, SighupWritesTheStateAndAFailedSnapshotFailsTheExit) {
  TempDir dir;
  const std::string state = (dir.path / "state").string();
  {
    Process p({"--state-dir", state}, dir.path / "hup.log");
    ASSERT_GT(p.port, 0) << p.log();
    Client sub(p.scores);
    ASSERT_TRUE(p.subscriber_joined()) << p.log();  // before values flow
    Client in(p.port);
    in.send("h.a 1 100\nh.b 2 100\n");
    ASSERT_EQ(sub.lines(2).size(), 2u);
    EXPECT_EQ(p.exit_code(SIGHUP), 0) << p.log();
    EXPECT_NE(p.log().find("got SIGHUP"), std::string::npos) << p.log();
  }
  ASSERT_TRUE(fs::exists(fs::path(state) / "series.state"));
  {
    Process p({"--state-dir", state}, dir.path / "again.log");
    EXPECT_NE(p.log().find("restored 2 series"), std::string::npos) << p.log();
    EXPECT_EQ(p.exit_code(SIGTERM), 0) << p.log();
  }
  // series.state as a non-empty folder: the final rename fails.
  const std::string bad = (dir.path / "bad").string();
  fs::create_directories(fs::path(bad) / "series.state" / "x");
  Process p({"--state-dir", bad}, dir.path / "bad.log");
  ASSERT_GT(p.port, 0) << p.log();
  EXPECT_EQ(p.exit_code(SIGTERM), 1) << p.log();
  EXPECT_NE(p.log().find("final state snapshot FAILED"), std::string::npos) << p.log();
}

// 2. SIGTERM while the state is being restored: a clean exit 0 with the
// state file left as it was. The state "file" is a FIFO that nobody writes,
// so the restore is certain to be under way when the signal comes.
TEST(DetectServerProcess, SigtermDuringTheRestoreExitsCleanly) {
  TempDir dir;
  const fs::path state = dir.path / "state";
  fs::create_directories(state);
  ASSERT_EQ(mkfifo((state / "series.state").c_str(), 0644), 0);
  Process p({"--state-dir", state.string()}, dir.path / "err.log", false);
  ASSERT_TRUE(p.wait_log("restoring series from")) << p.log();
  EXPECT_EQ(p.log().find("listening on"), std::string::npos) << p.log();
  EXPECT_EQ(p.exit_code(SIGTERM), 0) << p.log();
  EXPECT_NE(p.log().find("stopped during the restore: the state file is left as it was"), std::string::npos)
      << p.log();
  EXPECT_TRUE(fs::is_fifo(state / "series.state"));
}

// 2. The port takes no connection before the restore is done.
TEST(DetectServer, ListensOnlyAfterTheRestore) {
  TempDir dir;
  ssm::DetectServerConfig c;
  c.state_dir = dir.path.string();
  {
    Running r(c);
    Client sub(r.server->scores_port());
    ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
    Client in(r.server->port());
    in.send("l.a 1 100\nl.b 1 100\nl.c 1 100\n");
    ASSERT_EQ(sub.lines(3).size(), 3u);
  }
  const fs::path file = dir.path / "series.state";
  std::string bytes;
  {
    std::ifstream f(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  fs::remove(file);
  ASSERT_EQ(mkfifo(file.c_str(), 0644), 0);
  Running r(c, false);
  {
    asio::io_context io;
    tcp::socket s(io);
    boost::system::error_code ec;
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), r.server->port()), ec);
    EXPECT_EQ(ec, asio::error::connection_refused) << ec.message();
  }
  EXPECT_FALSE(r.server->stats().listening);
  std::ofstream(file, std::ios::binary) << bytes;  // the restore reads it now
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.listening; }));
  EXPECT_EQ(r.server->stats().restored, 3u);
  Client in(r.server->port());
  r.stop();
  EXPECT_TRUE(r.run_ok);
}

// 2. A snapshot is taken while values go on being scored.
TEST(DetectServer, IngestionGoesOnDuringASnapshot) {
  TempDir dir;
  ssm::DetectServerConfig c;
  c.state_dir = dir.path.string();
  c.snapshot_seconds = 0.05;
  Running r(c);
  std::atomic<bool> done{false};
  std::thread sender([&] {
    Client in(r.server->port());
    for (int64_t round = 0; !done; ++round) {
      std::string text;
      for (int i = 0; i < 3000; ++i) text += "snap.s" + std::to_string(i) + " 1 " + std::to_string(100 + round) + "\n";
      in.send(text);
    }
  });
  bool seen = false;
  uint64_t p0 = 0, n0 = 0;
  const bool ok = r.wait_for([&](const ssm::DetectServerStats& s) {
    if (!s.snapshot_busy || s.series < 3000) {
      seen = false;
      return false;
    }
    if (!seen || s.snapshots != n0) {
      seen = true;
      p0 = s.points;
      n0 = s.snapshots;
      return false;
    }
    return s.points > p0;  // scored while the same snapshot was under way
  }, 30s);
  done = true;
  sender.join();
  EXPECT_TRUE(ok);
  r.stop();
  EXPECT_TRUE(r.run_ok);
  EXPECT_GE(r.server->stats().snapshots, 1u);
}

// 3. A temp file left by a snapshot whose process was killed is removed at
// start; one of a running process is not.
TEST(DetectServer, StaleSnapshotTempFilesAreRemovedAtStart) {
  TempDir dir;
  const fs::path stale = dir.path / "series.state.tmp.2147483646.0";
  const fs::path live = dir.path / ("series.state.tmp.1.0");  // pid 1 runs
  std::ofstream(stale, std::ios::binary) << std::string(1000, 'x');
  std::ofstream(live, std::ios::binary) << "y";
  ssm::DetectServerConfig c;
  c.state_dir = dir.path.string();
  Running r(c);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  r.stop();
  EXPECT_NE(r.log.str().find("series.state.tmp.2147483646.0 (1000 bytes)"), std::string::npos) << r.log.str();
}

// 6. Restarting with a lower max_series keeps the newest series of the file.
TEST(DetectServer, LowerMaxSeriesKeepsTheNewest) {
  TempDir dir;
  ssm::DetectServerConfig c;
  c.state_dir = dir.path.string();
  c.max_series = 10;
  {
    Running r(c);
    Client sub(r.server->scores_port());
    ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
    Client in(r.server->port());
    std::string text;
    for (int i = 0; i < 10; ++i) text += "m.s" + std::to_string(i) + " 1 100\n";  // m.s9 the newest
    in.send(text);
    ASSERT_EQ(sub.lines(10).size(), 10u);
  }
  c.max_series = 3;
  c.overflow = ssm::SeriesOverflow::refuse;
  Running r(c);
  EXPECT_EQ(r.server->stats().restored, 3u);
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  Client in(r.server->port());
  std::string text;
  for (int i = 0; i < 10; ++i) text += "m.s" + std::to_string(i) + " 2 200\n";
  in.send(text);
  const auto got = sub.lines(3);
  EXPECT_EQ(got, (std::vector<std::string>{"anomaly.m.s7.score 0 200", "anomaly.m.s8.score 0 200",
                                           "anomaly.m.s9.score 0 200"}));
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.refused == 7; }));
  r.stop();
  EXPECT_NE(r.log.str().find("the newest 3 are kept"), std::string::npos) << r.log.str();
}

// 8. An input that sends nothing for idle_seconds is closed.
TEST(DetectServer, IdleInputsAreClosed) {
  ssm::DetectServerConfig c;
  c.idle_seconds = 0.2;
  Running r(c);
  Client idle(r.server->port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.connections == 1; }));
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.idle_closed == 1 && s.open_connections == 0; }));
  r.stop();
  EXPECT_NE(r.log.str().find("(--idle-timeout)"), std::string::npos) << r.log.str();
}

// 5. Repeats and nan values are counted, logged and published as metrics.
TEST(DetectServer, ValuesWithoutAScoreOfTheirOwnAreCountedAndPublished) {
  ssm::DetectServerConfig c;
  c.stats_seconds = 0.05;
  Running r(c);
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  Client in(r.server->port());
  in.send("r.a 1 100\nr.a 2 100\nr.a 3 100\nr.a nan 150\nr.a 4 200\n");
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.points == 4 && s.nan_values == 1; }));
  bool repeats = false, nans = false;
  for (int i = 0; i < 2000 && !(repeats && nans); ++i) {
    const auto l = sub.lines(1);
    ASSERT_EQ(l.size(), 1u);
    repeats = repeats || l[0].rfind("ssm.detect.repeats 2 ", 0) == 0;
    nans = nans || l[0].rfind("ssm.detect.nan_values 1 ", 0) == 0;
  }
  EXPECT_TRUE(repeats && nans);
  r.stop();
  const std::string log = r.log.str();
  EXPECT_NE(log.find("epoch 100 again: scored as a repeat"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped: 4 points (2 repeats, 0 out of order), not scored: 0 malformed lines, 1 nan values"),
            std::string::npos) << log;
  EXPECT_NE(log.find("stats: "), std::string::npos) << log;
}

// 4. The policy is per output: a stuck events subscriber with "drop" halts
// nothing (every score line arrives) and is disconnected.
TEST(DetectServer, StuckDroppingOutputHaltsNothingAndIsDisconnected) {
  ssm::DetectServerConfig c;
  c.event_threshold = 0;  // every value is an event
  c.events_listen = "127.0.0.1:0";
  c.slow_events = ssm::SlowPolicy::drop;
  c.slow_seconds = 0.3;
  c.max_pending = 65536;
  Running r(c);
  Client stuck(r.server->events_port(), 4096);
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 2; }));
  // ~25 MB of events: more than the kernel's socket buffers take.
  const size_t n = 200000;
  std::thread sender([&] {
    Client in(r.server->port());
    std::string text;
    for (size_t t = 0; t < n; ++t) text += point("st.s" + std::to_string(t % 10), 1.0 + t % 7, kT0 + int64_t(t));
    in.send(text);
  });
  EXPECT_EQ(sub.lines(n, 120s).size(), n);
  sender.join();
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.slow_dropped == 1 && s.subscribers == 1; }))
      << r.server->stats().dropped_lines << " dropped, " << r.server->stats().subscribers << " subscribers";
  EXPECT_GT(r.server->stats().dropped_lines, 0u);
  r.stop();
  EXPECT_NE(r.log.str().find("(--slow-events drop)"), std::string::npos) << r.log.str();
}

// 4. "drop" never disconnects a subscriber that keeps reading, however
// bursty the input: 300k short lines.
TEST(DetectServer, DropKeepsAFastSubscriberThroughABurst) {
  ssm::DetectServerConfig c;
  c.slow_scores = ssm::SlowPolicy::drop;
  c.slow_seconds = 2;
  Running r(c);
  Client sub(r.server->scores_port());
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  const size_t n = 300000;
  std::thread sender([&] {
    Client in(r.server->port());
    std::string text;
    for (size_t t = 0; t < n; ++t) text += "b" + std::to_string(t % 100) + " 1 " + std::to_string(t + 1) + "\n";
    in.send(text);
  });
  // The subscriber reads as the lines come (the whole burst is n lines at
  // most); the lines the server dropped for it never come.
  std::atomic<size_t> got{0};
  std::thread reader([&] { got = sub.lines(n, 120s).size(); });
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.points == 300000; }, 120s));
  sender.join();
  const uint64_t dropped = r.server->stats().dropped_lines;
  EXPECT_EQ(r.server->stats().slow_dropped, 0u);
  EXPECT_EQ(r.server->stats().subscribers, 1u);
  if (dropped == 0) {
    reader.join();
  } else {
    // Fewer than n come: the reader ends when the server closes at stop().
    ASSERT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
    r.stop();
    reader.join();
  }
  EXPECT_EQ(got.load(), n - dropped);
}

// 4. A downstream that accepts and never reads, with "drop": the memory it
// holds stays within max_pending; its lost lines are counted.
TEST(DetectServer, StuckDownstreamWithDropStaysBounded) {
  asio::io_context io;
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  acc.set_option(asio::socket_base::receive_buffer_size(4096));
  ssm::DetectServerConfig c;
  c.downstream = "127.0.0.1:" + std::to_string(acc.local_endpoint().port());
  c.slow_downstream = ssm::SlowPolicy::drop;
  c.slow_seconds = 1000;  // stays connected: the bound must hold anyway
  c.max_pending = 65536;
  Running r(c);
  tcp::socket peer(io);
  acc.accept(peer);  // never read
  const size_t n = 200000;
  std::thread sender([&] {
    Client in(r.server->port());
    std::string text;
    for (size_t t = 0; t < n; ++t) text += "d" + std::to_string(t % 100) + " 1 " + std::to_string(t + 1) + "\n";
    in.send(text);
  });
  ASSERT_TRUE(r.wait_for([](const auto& s) { return s.points == 200000; }, 120s));
  sender.join();
  const auto st = r.server->stats();
  EXPECT_LE(st.max_held, c.max_pending);
  EXPECT_GT(st.dropped_lines, 0u);
}

// ---------------------------------------------------------------- scoring threads

// Values of `series` series, `per` each, interleaved round-robin (series i's
// values are series_values(.., 100 + i)) from value `from` on.
std::string interleaved(size_t series, size_t from, size_t to) {
  std::vector<std::vector<double>> xs;
  for (size_t i = 0; i < series; ++i) xs.push_back(series_values(to, 100 + i));
  std::string text;
  for (size_t t = from; t < to; ++t)
    for (size_t i = 0; i < series; ++i) text += point("mt.s" + std::to_string(i), xs[i][t], kT0 + 300 * int64_t(t));
  return text;
}

// Every score line of a server with `threads` scoring threads for `text`
// (sent over one connection), by series.
std::map<std::string, std::vector<std::string>> served(int threads, const std::string& text, size_t lines,
                                                       const std::string& state_dir = "") {
  ssm::DetectServerConfig c;
  c.threads = threads;
  c.state_dir = state_dir;
  Running r(c);
  Client sub(r.server->scores_port());
  EXPECT_TRUE(r.wait_for([](const auto& s) { return s.subscribers == 1; }));
  Client in(r.server->port());
  in.send(text);
  const auto got = sub.lines(lines, 60s);
  EXPECT_EQ(got.size(), lines);
  return lines_by_series(got);
}

// Scores of a series depend on its own values only: any number of scoring
// threads gives every series the scores of one thread, in its order.
TEST(DetectServerThreads, ManyThreadsScoreAsOne) {
  const size_t series = 2000, per = 12;
  const std::string text = interleaved(series, 0, per);
  const auto one = served(1, text, series * per);
  ASSERT_EQ(one.size(), series);
  EXPECT_EQ(one.at("anomaly.mt.s7.score").size(), per);
  for (int threads : {2, 3}) {
    const auto many = served(threads, text, series * per);
    EXPECT_TRUE(many == one) << threads << " threads";
  }
}

// A state dir written by a server with some number of scoring threads is
// restored by one with another number; the state file does not depend on it.
TEST(DetectServerThreads, RestartWithOtherThreadsRestoresTheSameState) {
  TempDir dir;
  const size_t series = 300, cut = 20, n = 40;
  const fs::path one = dir.path / "one", two = dir.path / "two";
  served(1, interleaved(series, 0, cut), series * cut, one.string());
  served(2, interleaved(series, 0, cut), series * cut, two.string());
  auto bytes = [](const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string file = bytes(one / "series.state");
  EXPECT_GT(file.size(), series * 100);
  EXPECT_TRUE(file == bytes(two / "series.state")) << "the state files of 1 and 2 threads differ";
  // Go on from the two-thread state with three threads, and from the
  // one-thread state with one: the same scores as an uninterrupted run.
  const auto whole = served(1, interleaved(series, 0, n), series * n);
  const auto after3 = served(3, interleaved(series, cut, n), series * (n - cut), two.string());
  const auto after1 = served(1, interleaved(series, cut, n), series * (n - cut), one.string());
  ASSERT_EQ(after3.size(), series);
  EXPECT_TRUE(after3 == after1);
  for (const auto& [name, lines] : whole) {
    const std::vector<std::string> tail(lines.begin() + cut, lines.end());
    ASSERT_EQ(after3.at(name), tail) << name;
  }
}

}  // namespace
