// `ssm bench detect`: a load generator for the detection server on
// loopback. It starts a server in this process (or targets one given with
// --server / --scores), feeds Graphite lines for many series over TCP and
// reads every score line back from the scores port:
//   1. warm-up: one value per series (creates them); memory per series from
//      the resident set before and after (in-process server only);
//   2. throughput: rounds of one value per series sent as fast as the
//      server takes them, timed from the first byte out to the last score in;
//   3. latency: values at a fixed rate in 1 ms chunks; each score line's
//      latency is the time from its chunk's write to the line's arrival;
//   4. parts (--parts): the cost per value of parsing (GraphiteParser over
//      the same lines) and of scoring (Detector::update on the series'
//      states, no table), each alone on this thread. With one scoring
//      thread the rest of the throughput phase's time per value is lookup,
//      format, the socket reads and writes, and the loop; a server scoring
//      on several threads overlaps the parts, so its value can cost less
//      than their sum.
// A value's epoch is its sequence number (plus a base), so every score line
// names the value it scores.
#include <utility>  // before Asio: see DESIGN.md §6
#include <boost/asio.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include "commands.hpp"
#include "ssm/detector.hpp"
#include "ssm/streams/detect_server.hpp"
#include "ssm/streams/graphite.hpp"

namespace ssm::cli {

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr int64_t kBase = 1700000000;  // epoch of value 0

struct BenchDetectArgs {
  int series = 10000;
  double rate = 500000;   // values per second in the latency phase
  double seconds = 5;     // length of the latency phase
  int rounds = 50;        // rounds of the throughput phase (values = rounds * series)
  int chunk_ms = 1;       // pacing interval
  std::string server, scores;  // an external server; empty = one in this process
  std::string device = "cpu";  // the in-process server's forecaster
  int threads = 0;             // the in-process server's scoring threads (0: one per core)
  bool parts = false;
  std::string scorer;          // a learned detector for the in-process server (none: without)
};

size_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

tcp::socket connect_to(asio::io_context& io, const std::string& where) {
  const HostPort hp = parse_host_port(where, "bench detect");
  tcp::resolver r(io);
  tcp::socket s(io);
  asio::connect(s, r.resolve(hp.host, std::to_string(hp.port)));
  s.set_option(tcp::no_delay(true));
  return s;
}

// Lines for values [from, to) of the global sequence: value g goes to
// series g % S with epoch kBase + g.
void make_lines(std::string& out, int64_t from, int64_t to, int S) {
  out.clear();
  char buf[64];
  for (int64_t g = from; g < to; ++g) {
    const int i = static_cast<int>(g % S);
    out.append("bench.s");
    auto r = std::to_chars(buf, buf + sizeof(buf), i);
    out.append(buf, r.ptr);
    // A daily-like shape per series with a little deterministic jitter.
    const double v = 100.0 + 10.0 * ((g / S + i) % 24) + static_cast<double>((g * 2654435761u) % 1000) / 1000.0;
    out.push_back(' ');
    r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, 3);
    out.append(buf, r.ptr);
    out.push_back(' ');
    r = std::to_chars(buf, buf + sizeof(buf), kBase + g);
    out.append(buf, r.ptr);
    out.push_back('\n');
  }
}

// Reads score lines until `count` arrived (or a timeout); calls on_line with
// the value's sequence number and the arrival time of the read.
class ScoreReader {
 public:
  explicit ScoreReader(tcp::socket& s) : s_(s), buf_(1 << 20) {}
  template <typename F>
  bool read(int64_t count, std::chrono::seconds limit, F&& on_line) {
    const auto end = Clock::now() + limit;
    s_.non_blocking(true);
    int64_t got = 0;
    while (got < count) {
      boost::system::error_code ec;
      const size_t n = s_.read_some(asio::buffer(buf_.data() + have_, buf_.size() - have_), ec);
      if (ec == asio::error::would_block) {
        if (Clock::now() > end) break;
        std::this_thread::sleep_for(std::chrono::microseconds(20));
        continue;
      }
      if (ec) break;
      const auto now = Clock::now();
      have_ += n;
      size_t start = 0;
      for (size_t i = 0; i < have_; ++i) {
        if (buf_[i] != '\n') continue;
        size_t sp = i;
        while (sp > start && buf_[sp - 1] != ' ') --sp;
        int64_t epoch = 0;
        std::from_chars(buf_.data() + sp, buf_.data() + i, epoch);
        on_line(epoch - kBase, now);
        ++got;
        start = i + 1;
      }
      std::memmove(buf_.data(), buf_.data() + start, have_ - start);
      have_ -= start;
    }
    s_.non_blocking(false);
    return got == count;
  }

 private:
  tcp::socket& s_;
  std::vector<char> buf_;
  size_t have_ = 0;
};

// Seconds per value of parsing and of scoring `rounds` rounds of S series,
// each alone.
std::pair<double, double> part_costs(int S, int rounds, const std::shared_ptr<const Forecaster>& scorer) {
  std::string text;
  const int64_t total = static_cast<int64_t>(S) * rounds;
  make_lines(text, 0, total, S);
  GraphiteParser parser;
  double sink = 0;
  auto t0 = Clock::now();
  parser.feed(text, [&](std::string_view, double v, int64_t) { sink += v; });
  const double parse_s = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(total);
  const Detector det(Forecaster::builtin(), DetectorConfig{}, scorer);
  std::vector<SeriesState> states(static_cast<size_t>(S), det.new_series());
  t0 = Clock::now();
  for (int64_t g = 0; g < total; ++g)
    sink += det.update(states[static_cast<size_t>(g % S)], kBase + g, 100.0 + static_cast<double>(g % 24)).score;
  const double score_s = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(total);
  if (sink == 12345.678) std::printf(" ");  // keeps the loops
  return {parse_s, score_s};
}

void run_bench_detect(const BenchDetectArgs& a) {
  require(a.series >= 1 && a.rate > 0 && a.seconds > 0 && a.rounds >= 1 && a.chunk_ms >= 1,
          "bench detect: --series, --rate, --seconds, --rounds and --chunk-ms must be positive");
  require(a.server.empty() == a.scores.empty(), "bench detect: give both --server and --scores, or neither");
  const int S = a.series;
  std::unique_ptr<DetectServer> server;
  std::thread server_thread;
  std::string in_addr = a.server, out_addr = a.scores;
  std::shared_ptr<const Detector> det;
  const std::shared_ptr<const Forecaster> scorer = a.scorer.empty() ? nullptr : Forecaster::load(a.scorer);
  if (a.server.empty()) {
    det = std::make_shared<const Detector>(Forecaster::builtin(), DetectorConfig{}, scorer);
    DetectServerConfig c;
    c.listen = "127.0.0.1:0";
    c.scores_listen = "127.0.0.1:0";
    c.max_series = static_cast<size_t>(S) + 16;
    c.event_threshold = 2;  // no events: the bench measures the score path
    c.device = a.device;
    c.threads = a.threads;
    server = std::make_unique<DetectServer>(c, det, nullptr, nullptr);
    in_addr = "127.0.0.1:" + std::to_string(server->port());
    out_addr = "127.0.0.1:" + std::to_string(server->scores_port());
    server_thread = std::thread([&] { server->run(); });
    while (!server->stats().listening) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  asio::io_context io;
  tcp::socket scores = connect_to(io, out_addr);
  tcp::socket input = connect_to(io, in_addr);
  if (server) {
    for (int i = 0; i < 1000 && server->stats().subscribers == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ScoreReader reader(scores);
  int64_t next = 0;  // sequence number of the next value to send
  std::string text;

  // 1. Warm-up: every series once.
  const size_t rss0 = resident_bytes();
  make_lines(text, next, next + S, S);
  asio::write(input, asio::buffer(text));
  require(reader.read(S, std::chrono::seconds(60), [](int64_t, Clock::time_point) {}),
          "bench detect: the warm-up scores did not all arrive");
  next += S;
  const size_t rss1 = resident_bytes();

  // 2. Throughput: as fast as the server takes them; the sender runs on its
  // own thread so that reading the scores overlaps it.
  const int64_t burst = static_cast<int64_t>(a.rounds) * S;
  const auto t0 = Clock::now();
  std::thread sender([&, from = next] {
    std::string t;
    const int64_t step = 8192;
    for (int64_t g = from; g < from + burst; g += step) {
      make_lines(t, g, std::min(from + burst, g + step), S);
      asio::write(input, asio::buffer(t));
    }
  });
  const bool burst_ok = reader.read(burst, std::chrono::seconds(300), [](int64_t, Clock::time_point) {});
  const double burst_s = std::chrono::duration<double>(Clock::now() - t0).count();
  sender.join();
  require(burst_ok, "bench detect: the throughput phase's scores did not all arrive");
  next += burst;

  // 3. Latency at a fixed rate: chunks of rate * chunk_ms values.
  const int64_t per_chunk = std::max<int64_t>(1, static_cast<int64_t>(a.rate * a.chunk_ms / 1000.0));
  const int64_t chunks = std::max<int64_t>(1, static_cast<int64_t>(a.seconds * 1000.0 / a.chunk_ms));
  const int64_t first = next, total = chunks * per_chunk;
  std::vector<Clock::time_point> sent(chunks);
  std::atomic<int64_t> chunks_sent{0};
  const auto start = Clock::now() + std::chrono::milliseconds(20);
  std::thread pacer([&] {
    std::string t;
    for (int64_t k = 0; k < chunks; ++k) {
      make_lines(t, first + k * per_chunk, first + (k + 1) * per_chunk, S);
      std::this_thread::sleep_until(start + std::chrono::milliseconds(a.chunk_ms) * k);
      sent[k] = Clock::now();
      chunks_sent.store(k + 1, std::memory_order_release);
      asio::write(input, asio::buffer(t));
    }
  });
  std::vector<double> lat;  // microseconds
  lat.reserve(total);
  const bool paced_ok = reader.read(total, std::chrono::seconds(120), [&](int64_t g, Clock::time_point at) {
    const int64_t k = (g - first) / per_chunk;
    if (k < 0 || k >= chunks_sent.load(std::memory_order_acquire)) return;
    lat.push_back(std::chrono::duration<double, std::micro>(at - sent[k]).count());
  });
  const double paced_s = std::chrono::duration<double>(Clock::now() - start).count();
  pacer.join();
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? NAN : lat[std::min(lat.size() - 1, size_t(p * lat.size()))]; };

  std::printf("ssm bench detect: %d series, one input connection, loopback, %s server%s\n", S,
              server ? "in-process" : "external", server && a.device == "cuda" ? ", forecaster on the GPU" : "");
  std::printf("  throughput   %lld values in %.3f s = %.0f values/s (sent as fast as accepted, every score read back)\n",
              static_cast<long long>(burst), burst_s, burst / burst_s);
  std::printf("  latency      %.0f values/s offered for %.1f s in %d ms chunks: %zu of %lld scores back%s\n",
              per_chunk * 1000.0 / a.chunk_ms, chunks * a.chunk_ms / 1000.0, a.chunk_ms, lat.size(),
              static_cast<long long>(total), paced_ok ? "" : " (TIMED OUT)");
  std::printf("               ingest-to-score p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us (%.2f s wall)\n",
              pct(0.5), pct(0.99), pct(0.999), lat.empty() ? NAN : lat.back(), paced_s);
  if (a.parts) {
    const auto [parse_s, score_s] = part_costs(S, std::min(a.rounds, 10), scorer);
    const double all = burst_s / static_cast<double>(burst);
    const double rest = all - parse_s - score_s;
    std::printf("  parts        per value: parse %.0f ns, score %.0f ns (each alone); the served value %.0f ns, "
                "so lookup + format + socket I/O + loop %s\n",
                parse_s * 1e9, score_s * 1e9, all * 1e9,
                rest > 0 ? (std::to_string(static_cast<long>(rest * 1e9)) + " ns").c_str()
                         : "unknown (less than the parts in a row: the server overlaps them on several threads, "
                           "or the load changed between the phases)");
  }
  if (server) {
    std::printf("  memory       %.0f bytes per series (resident set growth over the warm-up / series); "
                "detector state %zu bytes, table entry with a %zu-byte name %zu bytes\n",
                static_cast<double>(rss1 - rss0) / S, det->state_bytes(), std::string("bench.s00000").size(),
                server->series_bytes(12));
    server->stop();
    server_thread.join();
  }
}

}  // namespace

void add_bench_detect(CLI::App& bench) {
  auto args = std::make_shared<BenchDetectArgs>();
  auto* cmd = bench.add_subcommand("detect", "Load generator for ssm detect on loopback: values/s, latency, memory");
  cmd->add_option("--series", args->series, "series fed round-robin");
  cmd->add_option("--rate", args->rate, "values per second offered in the latency phase");
  cmd->add_option("--seconds", args->seconds, "length of the latency phase");
  cmd->add_option("--rounds", args->rounds, "throughput phase: values per series");
  cmd->add_option("--chunk-ms", args->chunk_ms, "latency phase: one write every this many milliseconds");
  cmd->add_option("--server", args->server, "host:port of a running ssm detect (default: start one here)");
  cmd->add_option("--scores", args->scores, "its scores host:port (with --server)");
  cmd->add_option("--device", args->device, "the in-process server's forecaster: cpu or cuda");
  cmd->add_option("--scorer", args->scorer, "the in-process server's learned detector (.safetensors; default: none)");
  cmd->add_option("--threads", args->threads, "the in-process server's scoring threads (0: one per core)");
  cmd->add_flag("--parts", args->parts, "also time parsing and scoring alone, per value");
  cmd->callback([args] { run_bench_detect(*args); });
}

}  // namespace ssm::cli
