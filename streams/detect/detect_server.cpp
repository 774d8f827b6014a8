// The detection server: accept loops, per-connection parsing, the hand-over
// of values to the scoring partitions and of their lines to the output
// sinks with their slow policies, state restore and snapshots, the periodic
// chores (idle inputs, slow outputs, stats) and the graceful shutdown. The
// partitions (partition.hpp: series table, scoring, their parts of the
// state), the state file's format (state_file.hpp) and the output lines
// (output_lines.hpp) live apart. Serving runs on run()'s thread, scoring on
// one thread per partition; the state file is read and written by threads
// of their own that hand their results back through the io_context.
#include "ssm/streams/detect_server.hpp"

#include <utility>  // before Asio: see DESIGN.md §6
#include <boost/asio.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <optional>
#include <ostream>
#include <thread>
#include <vector>

#include "output_lines.hpp"
#include "partition.hpp"
#include "ssm/safetensors.hpp"  // atomic_write_file
#include "ssm/streams/graphite.hpp"
#include "state_file.hpp"

namespace ssm {

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace fs = std::filesystem;

using detect::Batch;
using detect::Partition;
using Clock = std::chrono::steady_clock;

constexpr int kMaxThreads = 64;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Keepalive: a peer that vanished (no FIN, no RST) is found in about 2 min.
void keep_alive(asio::ip::tcp::socket& s) {
  boost::system::error_code ec;
  s.set_option(asio::socket_base::keep_alive(true), ec);
  const int fd = s.native_handle();
  const int idle = 60, interval = 10, count = 6;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

}  // namespace

void detect_log(std::ostream& log, std::string_view text) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[40];
  const size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(ms));
  std::string line;
  line.reserve(text.size() + 64);
  line.append(stamp).append(" ssm detect: ").append(text).push_back('\n');
  log << line << std::flush;
}

HostPort parse_host_port(const std::string& text, const std::string& what) {
  const std::string expected = " (expected host:port, e.g. 127.0.0.1:2003 or [::1]:2003)";
  const size_t colon = text.rfind(':');
  require(colon != std::string::npos && colon > 0 && colon + 1 < text.size(),
          what + ": '" + text + "' is not host:port" + expected);
  HostPort hp;
  hp.host = text.substr(0, colon);
  if (hp.host.front() == '[') {
    require(hp.host.size() > 2 && hp.host.back() == ']', what + ": '" + text + "' has a bad [address]" + expected);
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  const std::string port = text.substr(colon + 1);
  unsigned v = 0;
  auto r = std::from_chars(port.data(), port.data() + port.size(), v);
  require(r.ec == std::errc() && r.ptr == port.data() + port.size() && v <= 65535,
          what + ": '" + text + "' has a bad port '" + port + "'" + expected);
  hp.port = static_cast<uint16_t>(v);
  return hp;
}


void DetectServerConfig::validate() const {
  // Messages name the `ssm detect` flag that sets the field.
  auto check = [](bool ok, const std::string& flag, const std::string& expected) {
    require(ok, "detect server: " + flag + " " + expected);
  };
  parse_host_port(listen, "detect server: --listen");
  if (!scores_listen.empty()) parse_host_port(scores_listen, "detect server: --scores");
  if (!events_listen.empty()) parse_host_port(events_listen, "detect server: --events-listen");
  if (!downstream.empty()) {
    const HostPort d = parse_host_port(downstream, "detect server: --downstream");
    check(d.port != 0, "--downstream", "needs a port other than 0");
  }
  check(std::isfinite(event_threshold) && event_threshold >= 0, "--event-threshold", "must be >= 0");
  check(max_series >= 1, "--max-series", "must be >= 1");
  check(max_connections >= 1, "--max-connections", "must be >= 1");
  check(max_line >= 16 && max_line <= (size_t{16} << 20), "--max-line", "must be in 16 .. 16 MiB");
  check(read_chunk >= 512 && read_chunk <= (size_t{16} << 20), "read_chunk", "must be in 512 .. 16 MiB");
  check(max_pending >= 4096, "--max-pending", "must be >= 4096");
  check(std::isfinite(slow_seconds) && slow_seconds > 0, "--slow-seconds", "must be > 0");
  check(std::isfinite(idle_seconds) && idle_seconds >= 0, "--idle-timeout", "must be >= 0");
  check(std::isfinite(stats_seconds) && stats_seconds >= 0, "--stats-every", "must be >= 0");
  check(std::isfinite(snapshot_seconds) && snapshot_seconds >= 0, "--snapshot-every", "must be >= 0");
  check(std::isfinite(drain_seconds) && drain_seconds >= 0, "drain_seconds", "must be >= 0");
  check(log_errors_per_connection >= 0, "log_errors_per_connection", "must be >= 0");
  check(device == "cpu" || device == "cuda", "--device", "must be \"cpu\" or \"cuda\", got \"" + device + "\"");
  check(threads >= 0 && threads <= kMaxThreads, "--threads", "must be in 0 .. " + std::to_string(kMaxThreads));
  check(device != "cuda" || threads <= 1, "--threads", "must be 1 (or 0) with --device cuda: one thread drives the GPU");
  auto graphite_name = [&](const std::string& text, const char* flag) {
    for (char c : text)
      check(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == ':', flag,
            "may hold only [A-Za-z0-9._:-]");
  };
  graphite_name(score_prefix, "--prefix");
  graphite_name(stats_prefix, "--stats-prefix");
}

size_t DetectServerConfig::partitions() const {
  if (device == "cuda") return 1;
  if (threads > 0) return static_cast<size_t>(threads);
  return std::clamp<size_t>(std::thread::hardware_concurrency(), 1, kMaxThreads);
}

struct DetectServer::Impl {
  // An input connection.
  struct Conn {
    explicit Conn(asio::io_context& io, size_t chunk, size_t max_line)
        : sock(io), buf(new char[chunk]), parser(GraphiteLimits{max_line}) {}
    tcp::socket sock;
    std::unique_ptr<char[]> buf;  // (read_chunk)
    GraphiteParser parser;
    uint64_t id = 0;
    std::string peer;
    bool reading = false, parked = false, done = false;
    int logged = 0;
    uint64_t nan_seen = 0;  // of parser.stats().nan_values, already added to the server's count
    Clock::time_point last_read = Clock::now();
  };
  enum class SinkKind { scores, events, downstream };
  // An output: a subscriber or the downstream.
  struct Sink {
    explicit Sink(asio::io_context& io) : sock(io) {}
    tcp::socket sock;
    std::string pending, writing;  // appended to / being written
    size_t written = 0;            // bytes of `writing` already taken
    bool busy = false, closed = false, dropping = false;
    SinkKind kind = SinkKind::scores;
    SlowPolicy policy = SlowPolicy::block;
    std::string peer;
    Clock::time_point last_progress = Clock::now();  // a write completed, or it caught up
    uint64_t dropped = 0;
    char discard[512];
    size_t held() const { return pending.size() + writing.size() - written; }
    bool full(size_t max) const { return held() >= max; }
  };
  using ConnPtr = std::shared_ptr<Conn>;
  using SinkPtr = std::shared_ptr<Sink>;

  // A snapshot under way: each partition saves its series and hands its
  // part back; the parts are merged and written by the writer thread.
  struct SnapshotRun {
    size_t waiting = 0;  // partitions still saving; 0: none under way
    bool given_up = false;  // a partition gave its part up (a stop)
    std::vector<std::unique_ptr<detect::StateFileSegment>> parts;  // (partitions)
  };

  DetectServerConfig cfg;
  std::shared_ptr<const Detector> det;
  std::ostream* events_out;
  std::ostream* log;
  PointForwarder* forward;  // null: the values are scored here
  asio::io_context io{1};
  tcp::acceptor in_acc{io}, scores_acc{io}, events_acc{io};
  asio::steady_timer snap_timer{io}, redial_timer{io}, drain_timer{io}, accept_retry{io}, chores_timer{io};
  asio::signal_set signals{io};
  // Scoring: series partitioned by name, one thread each.
  std::atomic<bool> quit{false};        // the partitions' threads end at their next step
  std::atomic<size_t> series_total{0};  // series held by all partitions (at most max_series)
  std::vector<std::unique_ptr<Partition>> parts;
  std::vector<Batch*> filling;          // (partitions) the current read's values for each, or null
  std::vector<detect::PartitionCounts> part_counts;   // (partitions) as of each one's last batch back
  std::unique_ptr<std::atomic<bool>[]> drain_posted;  // (partitions) a drain of its batches is queued
  uint64_t next_seq = 1;                // of the next value parsed: arrival order across partitions
  size_t restore_waiting = 0;           // partitions still loading (or clearing) the state file
  std::string restore_error;            // why a partition could not load it
  size_t stop_waiting = 0;              // partitions that have not yet handed their stop back
  bool stop_sent = false;
  std::vector<ConnPtr> conns;
  std::vector<ConnPtr> parked;
  std::vector<SinkPtr> sinks;  // subscribers of scores and events
  SinkPtr downstream;          // connected, or null
  bool downstream_dialing = false, downstream_failed_logged = false;
  std::string events_text;     // for the events stream, written once per batch
  bool events_lost = false;    // the events stream failed (a closed stdout): no more writes
  std::string line;            // scratch for the metrics' lines
  bool stopping = false, finished = false, paused = false, final_ok = true;
  bool restoring = false;  // the state file is being read or loaded
  bool serving = false;    // the listeners listen (the restore is over)
  Clock::time_point paused_at;
  uint64_t next_conn_id = 1;
  Clock::time_point last_stats = Clock::now();
  DetectServerStats st;
  mutable std::mutex stats_mu;
  DetectServerStats shared_stats;
  std::thread reader, writer;  // the state file's reader (start) and a snapshot's writer
  int reader_cancel[2] = {-1, -1};  // a pipe: a byte written ends the reader's wait
  // Keeps run() running until finish(), also while only the reader or the
  // partitions have work.
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> running;
  std::atomic<bool> writer_done{true};
  SnapshotRun snap;

  Impl(DetectServerConfig c, std::shared_ptr<const Detector> d, std::ostream* ev, std::ostream* lg,
       PointForwarder* fw)
      : cfg(std::move(c)), det(std::move(d)), events_out(ev), log(lg), forward(fw) {
    require(det != nullptr, "detect server: no detector");
    cfg.validate();
    require(!forward || cfg.state_dir.empty(),
            "detect server: --state-dir keeps the state of scored series; a server that forwards its values scores none");
    const size_t n = cfg.partitions();
    for (size_t i = 0; i < n; ++i) parts.push_back(std::make_unique<Partition>(i, n, cfg, *det, series_total, quit));
    filling.assign(n, nullptr);
    part_counts.assign(n, {});
    drain_posted = std::make_unique<std::atomic<bool>[]>(n);
    bind(in_acc, cfg.listen, "--listen");
    if (!cfg.scores_listen.empty()) bind(scores_acc, cfg.scores_listen, "--scores");
    if (!cfg.events_listen.empty()) bind(events_acc, cfg.events_listen, "--events-listen");
    if (!cfg.state_dir.empty()) {
      std::error_code ec;
      fs::create_directories(cfg.state_dir, ec);
      require(!ec && fs::is_directory(cfg.state_dir),
              "detect server: --state-dir '" + cfg.state_dir + "' cannot be created: " + ec.message());
      for (const auto& [file, bytes] : detect::remove_stale_state_temps(cfg.state_dir))
        say("removed " + file + " (" + std::to_string(bytes) +
            " bytes): the temp file of a snapshot whose process was killed");
    }
    publish();
  }

  ~Impl() {
    unblock_reader();
    quit.store(true, std::memory_order_release);
    for (auto& p : parts) p->join();
    if (reader.joinable()) reader.join();
    if (writer.joinable()) writer.join();
    for (int fd : reader_cancel)
      if (fd >= 0) ::close(fd);
  }

  void say(const std::string& text) {
    if (log) detect_log(*log, text);
  }

  // Binds; listen() waits for the restore.
  void bind(tcp::acceptor& acc, const std::string& where, const char* flag) {
    const HostPort hp = parse_host_port(where, std::string("detect server: ") + flag);
    boost::system::error_code ec;
    tcp::resolver resolver(io);
    auto results = resolver.resolve(hp.host, std::to_string(hp.port), tcp::resolver::passive, ec);
    require(!ec && !results.empty(), std::string("detect server: ") + flag + " " + where +
                                         ": cannot resolve: " + ec.message());
    const tcp::endpoint ep = results.begin()->endpoint();
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acc.bind(ep, ec);
    require(!ec, std::string("detect server: ") + flag + " " + where + ": " + ec.message());
  }

  uint16_t port_of(const tcp::acceptor& a) const {
    boost::system::error_code ec;
    return a.is_open() ? a.local_endpoint(ec).port() : 0;
  }

  // The partitions' counts, summed into st.
  void sum_counts() {
    detect::PartitionCounts sum;
    for (const auto& c : part_counts) {
      sum.points += c.points;
      sum.repeats += c.repeats;
      sum.out_of_order += c.out_of_order;
      sum.events += c.events;
      sum.evicted += c.evicted;
      sum.refused += c.refused;
    }
    st.points = sum.points;
    st.repeats = sum.repeats;
    st.out_of_order = sum.out_of_order;
    st.events = sum.events;
    st.evicted = sum.evicted;
    st.refused = sum.refused;
    st.series = series_total.load(std::memory_order_relaxed);
  }

  void publish() {
    sum_counts();
    st.open_connections = conns.size();
    st.subscribers = sinks.size();
    st.snapshot_busy = snap.waiting > 0 || !writer_done.load(std::memory_order_acquire);
    std::lock_guard<std::mutex> g(stats_mu);
    shared_stats = st;
  }

  size_t open_total() const { return conns.size() + sinks.size(); }

  static const char* kind_name(SinkKind k) {
    return k == SinkKind::scores ? "scores subscriber" : k == SinkKind::events ? "events subscriber" : "downstream";
  }
  static const char* policy_flag(SinkKind k) {
    return k == SinkKind::scores ? "--slow-scores" : k == SinkKind::events ? "--slow-events" : "--slow-downstream";
  }
  SlowPolicy policy_of(SinkKind k) const {
    return k == SinkKind::scores ? cfg.slow_scores : k == SinkKind::events ? cfg.slow_events : cfg.slow_downstream;
  }

  // ------------------------------------------------------------ start

  void start(bool handle_signals) {
    if (stopping) return;  // stop() came before run()
    running.emplace(io.get_executor());
    if (handle_signals) {
      std::signal(SIGPIPE, SIG_IGN);  // a closed stdout or peer is an error of that write, not the end
      signals.add(SIGTERM);
      signals.add(SIGINT);
      signals.add(SIGHUP);
      signals.async_wait([this](boost::system::error_code ec, int sig) {
        if (!ec) {
          say(std::string("got ") + (sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGHUP"));
          begin_shutdown();
        }
      });
    }
    for (size_t i = 0; i < parts.size(); ++i)
      parts[i]->start([this, i] {
        // On the partition's thread: one drain queued on the loop at a time.
        if (!drain_posted[i].exchange(true, std::memory_order_acq_rel))
          asio::post(io, [this, i] {
            drain_posted[i].exchange(false, std::memory_order_acq_rel);
            drain(i);
            after_drain();
          });
      });
    const fs::path path = fs::path(cfg.state_dir) / detect::kStateFile;
    std::error_code fec;
    if (cfg.state_dir.empty() || !fs::exists(fs::symlink_status(path, fec))) {
      open_listeners();
      return;
    }
    restoring = true;
    say("restoring series from " + path.string() + "; connections are taken once it is done");
    auto rr = std::make_shared<detect::StateRead>();
    const size_t max_name = cfg.max_line;
    require(::pipe2(reader_cancel, O_CLOEXEC) == 0,
            std::string("detect server: cannot create a pipe: ") + std::strerror(errno));
    reader = std::thread([this, rr, path, max_name] {
      try {
        rr->bytes = detect::read_whole_file(path, reader_cancel[0]);
        rr->entries = detect::parse_state_file(rr->bytes, max_name);
      } catch (const Error& e) {
        rr->error = e.what();
      }
      asio::post(io, [this, rr] { restore_read(rr); });
    });
  }

  // A stop during the read of a FIFO (or a file that never ends): the
  // reader polls the cancel pipe too, so that it can be joined at once,
  // whether it is already waiting or not yet started.
  void unblock_reader() {
    if (!reader.joinable() || reader_cancel[1] < 0) return;
    const char byte = 1;
    while (::write(reader_cancel[1], &byte, 1) < 0 && errno == EINTR) {
    }
  }

  // The file is read: each partition loads its series of it.
  void restore_read(const std::shared_ptr<detect::StateRead>& rr) {
    if (reader.joinable()) reader.join();
    if (!restoring) return;  // stopped meanwhile
    const std::string path = (fs::path(cfg.state_dir) / detect::kStateFile).string();
    if (!rr->error.empty()) {
      say("state file " + path + " not used: " + rr->error + "; starting with no series");
      return restore_done();
    }
    // Oldest first: keep the newest max_series.
    const size_t skip = rr->entries.size() > cfg.max_series ? rr->entries.size() - cfg.max_series : 0;
    if (skip > 0)
      say("state file " + path + " holds " + std::to_string(rr->entries.size()) + " series, more than --max-series " +
          std::to_string(cfg.max_series) + ": the newest " + std::to_string(cfg.max_series) + " are kept");
    next_seq = rr->entries.size() + 1;  // a restored series' last value is its place in the file
    restore_error.clear();
    restore_waiting = parts.size();
    for (size_t i = 0; i < parts.size(); ++i) {
      Batch* b = free_batch(i);
      b->reset(Batch::Kind::restore);
      b->restore = rr;
      b->restore_from = skip;
      parts[i]->submit(b);
    }
  }

  // A partition's restore (or clear) came back.
  void restore_returned(Batch& b) {
    if (!b.error.empty() && restore_error.empty()) restore_error = b.error;
    if (--restore_waiting > 0 || !restoring) return;
    const std::string path = (fs::path(cfg.state_dir) / detect::kStateFile).string();
    if (!restore_error.empty() && series_total.load(std::memory_order_relaxed) > 0) {
      // Nothing of a file that is not this detector's is kept.
      restore_waiting = parts.size();
      for (size_t i = 0; i < parts.size(); ++i) submit_command(i, Batch::Kind::clear);
      return;
    }
    if (!restore_error.empty()) {
      say("state file " + path + " not used: " + restore_error + "; starting with no series");
    } else {
      st.restored = series_total.load(std::memory_order_relaxed);
      say("restored " + std::to_string(st.restored) + " series from " + path);
    }
    restore_done();
  }

  void restore_done() {
    restoring = false;
    open_listeners();
  }

  void open_listeners() {
    if (stopping) return;
    auto listen = [this](tcp::acceptor& acc, const std::string& where, const char* flag) {
      boost::system::error_code ec;
      acc.listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        say(std::string(flag) + " " + where + ": " + ec.message());
        final_ok = false;
        begin_shutdown();
        return false;
      }
      return true;
    };
    if (!listen(in_acc, cfg.listen, "--listen")) return;
    if (scores_acc.is_open() && !listen(scores_acc, cfg.scores_listen, "--scores")) return;
    if (events_acc.is_open() && !listen(events_acc, cfg.events_listen, "--events-listen")) return;
    accept_inputs();
    if (scores_acc.is_open()) accept_subscribers(scores_acc, SinkKind::scores);
    if (events_acc.is_open()) accept_subscribers(events_acc, SinkKind::events);
    if (!cfg.downstream.empty()) dial();
    schedule_snapshot();
    schedule_chores();
    std::string where = "listening on " + parse_host_port(cfg.listen, "--listen").host + ":" +
                        std::to_string(port_of(in_acc));
    if (scores_acc.is_open()) where += ", scores on port " + std::to_string(port_of(scores_acc));
    if (events_acc.is_open()) where += ", events on port " + std::to_string(port_of(events_acc));
    if (!cfg.downstream.empty()) where += ", scores to " + cfg.downstream;
    say(where);
    serving = true;
    st.listening = true;
    publish();
  }

  // ------------------------------------------------------------ inputs

  void accept_inputs() {
    in_acc.async_accept([this](boost::system::error_code ec, tcp::socket sock) {
      if (stopping) return;
      if (ec) {
        // e.g. out of file descriptors: try again shortly rather than spin.
        say("accept failed: " + ec.message());
        accept_retry.expires_after(std::chrono::milliseconds(100));
        accept_retry.async_wait([this](boost::system::error_code e) {
          if (!e && !stopping) accept_inputs();
        });
        return;
      }
      if (open_total() >= cfg.max_connections) {
        say("refused a connection: --max-connections (" + std::to_string(cfg.max_connections) + ") reached");
      } else {
        auto c = std::make_shared<Conn>(io, cfg.read_chunk, cfg.max_line);
        c->sock = std::move(sock);
        keep_alive(c->sock);
        c->id = next_conn_id++;
        boost::system::error_code e2;
        const auto rep = c->sock.remote_endpoint(e2);
        c->peer = e2 ? "?" : rep.address().to_string() + ":" + std::to_string(rep.port());
        ++st.connections;
        conns.push_back(c);
        read(c);
        publish();
      }
      accept_inputs();
    });
  }

  // The first block-policy output over max_pending, or null.
  const Sink* blocking() const {
    for (const auto& s : sinks)
      if (s->policy == SlowPolicy::block && s->full(cfg.max_pending)) return s.get();
    if (downstream && downstream->policy == SlowPolicy::block && downstream->full(cfg.max_pending))
      return downstream.get();
    return nullptr;
  }

  void read(const ConnPtr& c) {
    if (c->done) return;
    if (!stopping) {
      if (const Sink* k = blocking()) {
        if (!paused) {
          ++st.pauses;
          paused_at = Clock::now();
          say(std::string("inputs paused: ") + kind_name(k->kind) + " " + k->peer + " holds " +
              std::to_string(k->held()) + " bytes (--max-pending " + std::to_string(cfg.max_pending) + ", " +
              policy_flag(k->kind) + " block); the senders wait");
        }
        paused = true;
        c->parked = true;
        parked.push_back(c);
        return;
      }
    }
    c->reading = true;
    c->sock.async_read_some(asio::buffer(c->buf.get(), cfg.read_chunk),
                            [this, c](boost::system::error_code ec, size_t n) {
                              c->reading = false;
                              if (c->done) return;
                              if (n > 0) ingest(*c, n);
                              if (stopping) {
                                drain_and_close(c);
                              } else if (ec) {
                                close_input(c);
                              } else {
                                read(c);
                              }
                              flush_outputs();
                            });
  }

  void ingest(Conn& c, size_t n) {
    c.last_read = Clock::now();
    c.parser.feed(
        std::span<const char>(c.buf.get(), n),
        [this](std::string_view path, double value, int64_t epoch) { hand_over(path, value, epoch); },
        [this, &c](GraphiteError kind, std::string_view detail) { malformed(c, kind, detail); });
    submit_filling();
    const uint64_t nans = c.parser.stats().nan_values;
    if (nans != c.nan_seen) {
      if (st.nan_values == 0)
        say("connection #" + std::to_string(c.id) + " (" + c.peer +
            ") sent a \"nan\" value (collectd does for a rate it has no two samples of yet): nan values are "
            "counted, not scored (logged once)");
      st.nan_values += nans - c.nan_seen;
      c.nan_seen = nans;
    }
  }

  void malformed(Conn& c, GraphiteError kind, std::string_view detail) {
    ++st.errors;
    if (c.logged < cfg.log_errors_per_connection) {
      ++c.logged;
      say("connection #" + std::to_string(c.id) + " (" + c.peer + "): " + std::string(graphite_error_name(kind)) +
          ": " + std::string(detail));
    }
  }

  // At shutdown: what the peer already sent is read and scored.
  void drain_and_close(const ConnPtr& c) {
    boost::system::error_code ec;
    for (;;) {
      const size_t avail = c->sock.available(ec);
      if (ec || avail == 0) break;
      const size_t n = c->sock.read_some(asio::buffer(c->buf.get(), std::min(avail, cfg.read_chunk)), ec);
      if (n > 0) ingest(*c, n);
      if (ec) break;
    }
    close_input(c);
  }

  void close_input(const ConnPtr& c, const char* why = "closed") {
    if (c->done) return;
    c->done = true;
    c->parser.finish([this, &c](GraphiteError kind, std::string_view detail) { malformed(*c, kind, detail); });
    boost::system::error_code ec;
    c->sock.close(ec);
    const GraphiteStats gs = c->parser.stats();
    std::string text = "connection #" + std::to_string(c->id) + " (" + c->peer + ") " + why + ": " +
                       std::to_string(gs.points) + " points, ";
    if (gs.nan_values > 0) text += std::to_string(gs.nan_values) + " nan values, ";
    text += std::to_string(gs.errors) + " malformed lines";
    if (gs.errors > 0) {
      text += " (";
      bool first = true;
      for (size_t k = 0; k < kGraphiteErrorKinds; ++k)
        if (gs.by_kind[k] > 0) {
          text += (first ? "" : ", ") + std::string(graphite_error_name(static_cast<GraphiteError>(k))) + " " +
                  std::to_string(gs.by_kind[k]);
          first = false;
        }
      text += ")";
    }
    say(text);
    std::erase(conns, c);
    std::erase(parked, c);
    publish();
    if (stopping) maybe_finish();
  }

  // ------------------------------------------------------------ scoring

  // A value to the batch of its series' partition; the batches of one read
  // go out together at its end.
  void hand_over(std::string_view path, double value, int64_t epoch) {
    if (forward) {
      forward->point(path, value, epoch);
      ++st.forwarded;
      return;
    }
    const size_t i = detect::partition_of(path, parts.size());
    Batch*& b = filling[i];
    if (!b) {
      b = free_batch(i);
      b->reset(Batch::Kind::values);
    }
    b->add_value(path, value, epoch, next_seq++);
  }

  void submit_filling() {
    if (forward) forward->flush();
    for (size_t i = 0; i < parts.size(); ++i)
      if (Batch* b = std::exchange(filling[i], nullptr)) parts[i]->submit(b);
  }

  // A free batch of partition i: when all are in flight, the loop waits
  // for one to come back (the inputs wait meanwhile: TCP pushes back).
  Batch* free_batch(size_t i) {
    Partition& p = *parts[i];
    for (;;) {
      if (Batch* b = p.free_batch()) return b;
      const uint32_t seen = p.returned_count();
      drain(i);
      if (Batch* b = p.free_batch()) return b;
      p.wait_returned(seen);
    }
  }

  void submit_command(size_t i, Batch::Kind kind) {
    Batch* b = free_batch(i);
    b->reset(kind);
    parts[i]->submit(b);
  }

  // The batches partition i handed back: their lines to the outputs, their
  // log lines to the log, their counts and state parts to the server.
  void drain(size_t i) {
    Partition& p = *parts[i];
    while (Batch* b = p.take()) {
      part_counts[i] = b->counts;
      for (const std::string& text : b->log) say(text);
      switch (b->kind) {
        case Batch::Kind::values:
          deliver(*b);
          break;
        case Batch::Kind::snapshot:
          snapshot_returned(i, std::move(b->snapshot));
          break;
        case Batch::Kind::restore:
        case Batch::Kind::clear:
          restore_returned(*b);
          break;
        case Batch::Kind::stop:
          --stop_waiting;
          break;
      }
      p.recycle(b);
    }
  }

  // After a drain on the loop: the outputs write, paused inputs may read.
  void after_drain() {
    flush_outputs();
    resume_if_clear();
    if (stopping) maybe_finish();
  }

  void deliver(const Batch& b) {
    if (b.score_lines > 0) {
      for (const auto& k : sinks)
        if (k->kind == SinkKind::scores) append(*k, b.scores);
      if (downstream)
        append(*downstream, b.scores);
      else if (!cfg.downstream.empty())
        st.dropped_lines += b.score_lines;
    }
    if (!b.events.empty()) {
      if (events_out && !events_lost) events_text.append(b.events);
      for (const auto& k : sinks)
        if (k->kind == SinkKind::events) append(*k, b.events);
    }
  }

  // Whole lines of `text` to an output; a "drop" output over max_pending
  // takes the lines that fit and loses the rest (counted).
  void append(Sink& k, std::string_view text) {
    size_t take = text.size();
    if (k.policy == SlowPolicy::drop && k.held() + text.size() > cfg.max_pending) {
      const size_t room = cfg.max_pending > k.held() ? cfg.max_pending - k.held() : 0;
      const size_t cut = room == 0 ? std::string_view::npos : text.rfind('\n', room - 1);
      take = cut == std::string_view::npos ? 0 : cut + 1;
      const uint64_t lost = static_cast<uint64_t>(std::count(text.begin() + take, text.end(), '\n'));
      if (!k.dropping)
        say(std::string(kind_name(k.kind)) + " " + k.peer + " is " + std::to_string(k.held()) +
            " bytes behind (--max-pending): its lines are dropped until it catches up (" + policy_flag(k.kind) +
            " drop)");
      k.dropping = true;
      k.dropped += lost;
      st.dropped_lines += lost;
    }
    k.pending.append(text.substr(0, take));
    st.max_held = std::max<uint64_t>(st.max_held, k.held());
  }

  // ------------------------------------------------------------ outputs

  void write_events_stream() {
    if (!events_out || events_lost || events_text.empty()) return;
    events_out->write(events_text.data(), static_cast<std::streamsize>(events_text.size()));
    events_out->flush();
    events_text.clear();
    if (!*events_out) {
      events_lost = true;
      say("the events stream (stdout) failed (its reader is gone?): events go on only to --events-listen "
          "subscribers; serving goes on");
    }
  }

  void flush_outputs() {
    write_events_stream();
    for (size_t i = 0; i < sinks.size(); ++i) kick(sinks[i]);
    if (downstream) kick(downstream);
    publish();
  }

  void kick(const SinkPtr& k) {
    if (k->busy || k->closed || k->pending.empty()) return;
    std::swap(k->pending, k->writing);
    k->written = 0;
    k->busy = true;
    write_more(k);
  }

  // One write at a time, so that every byte taken counts as progress.
  void write_more(const SinkPtr& k) {
    k->sock.async_write_some(asio::buffer(k->writing.data() + k->written, k->writing.size() - k->written),
                             [this, k](boost::system::error_code ec, size_t n) {
      k->written += n;
      if (n > 0) k->last_progress = Clock::now();
      if (!ec && !k->closed && k->written < k->writing.size()) {
        write_more(k);
        resume_if_clear();
        return;
      }
      k->busy = false;
      k->writing.clear();  // keeps its capacity for the next swap
      k->written = 0;
      if (ec) {
        close_sink(k);
      } else {
        if (k->dropping && k->held() < cfg.max_pending / 2) {
          say(std::string(kind_name(k->kind)) + " " + k->peer + " caught up; " + std::to_string(k->dropped) +
              " of its lines dropped so far");
          k->dropping = false;
        }
        kick(k);
      }
      resume_if_clear();
      if (stopping) maybe_finish();
    });
  }

  void resume_if_clear() {
    if (parked.empty() || blocking()) return;
    if (paused) say("inputs resumed after " + std::to_string(seconds_since(paused_at)) + " s");
    paused = false;
    auto p = std::move(parked);
    parked.clear();
    for (auto& c : p) {
      c->parked = false;
      read(c);
    }
  }

  // Subscribers send nothing; a read that completes means they left.
  void watch(const SinkPtr& k) {
    k->sock.async_read_some(asio::buffer(k->discard), [this, k](boost::system::error_code ec, size_t) {
      if (k->closed) return;
      if (ec) {
        close_sink(k);
        resume_if_clear();
        if (stopping) maybe_finish();
      } else {
        watch(k);
      }
    });
  }

  void close_sink(const SinkPtr& k, const std::string& why = "left") {
    if (k->closed) return;
    k->closed = true;
    boost::system::error_code ec;
    k->sock.close(ec);
    if (k->kind == SinkKind::downstream) {
      st.dropped_lines += std::count(k->pending.begin(), k->pending.end(), '\n');
      downstream.reset();
      say("downstream " + cfg.downstream + " " + (why == "left" ? "disconnected" : why) + "; redialling");
      if (!stopping) redial(std::chrono::seconds(1));
    } else {
      say(std::string(kind_name(k->kind)) + " " + k->peer + " " + why);
      std::erase(sinks, k);
    }
    publish();
  }

  void accept_subscribers(tcp::acceptor& acc, SinkKind kind) {
    acc.async_accept([this, &acc, kind](boost::system::error_code ec, tcp::socket sock) {
      if (stopping) return;
      if (!ec) {
        if (open_total() >= cfg.max_connections) {
          say("refused a subscriber: --max-connections (" + std::to_string(cfg.max_connections) + ") reached");
        } else {
          auto k = std::make_shared<Sink>(io);
          k->sock = std::move(sock);
          k->kind = kind;
          k->policy = policy_of(kind);
          boost::system::error_code e2;
          const auto rep = k->sock.remote_endpoint(e2);
          k->peer = e2 ? "?" : rep.address().to_string() + ":" + std::to_string(rep.port());
          k->sock.set_option(tcp::no_delay(true), e2);
          keep_alive(k->sock);
          sinks.push_back(k);
          say(std::string(kind_name(kind)) + " " + k->peer + " joined");
          watch(k);
          publish();
        }
        accept_subscribers(acc, kind);
      } else {
        accept_retry.expires_after(std::chrono::milliseconds(100));
        accept_retry.async_wait([this, &acc, kind](boost::system::error_code e) {
          if (!e && !stopping) accept_subscribers(acc, kind);
        });
      }
    });
  }

  void redial(std::chrono::milliseconds after) {
    redial_timer.expires_after(after);
    redial_timer.async_wait([this](boost::system::error_code ec) {
      if (!ec && !stopping) dial();
    });
  }

  void dial() {
    if (downstream_dialing || downstream) return;
    downstream_dialing = true;
    const HostPort hp = parse_host_port(cfg.downstream, "--downstream");
    auto resolver = std::make_shared<tcp::resolver>(io);
    resolver->async_resolve(hp.host, std::to_string(hp.port), [this, resolver](boost::system::error_code ec,
                                                                               tcp::resolver::results_type res) {
      if (ec || stopping) {
        dial_failed(ec);
        return;
      }
      auto k = std::make_shared<Sink>(io);
      k->kind = SinkKind::downstream;
      k->policy = cfg.slow_downstream;
      k->peer = cfg.downstream;
      asio::async_connect(k->sock, res, [this, k](boost::system::error_code e, const tcp::endpoint&) {
        if (e || stopping) {
          dial_failed(e);
          return;
        }
        downstream_dialing = false;
        downstream_failed_logged = false;
        boost::system::error_code e2;
        k->sock.set_option(tcp::no_delay(true), e2);
        keep_alive(k->sock);
        k->last_progress = Clock::now();
        downstream = k;
        say("downstream " + cfg.downstream + " connected");
        watch(k);
      });
    });
  }

  void dial_failed(const boost::system::error_code& ec) {
    downstream_dialing = false;
    if (stopping) return;
    if (!downstream_failed_logged) say("downstream " + cfg.downstream + " unreachable (" + ec.message() +
                                       "); its score lines are dropped until it answers");
    downstream_failed_logged = true;
    redial(std::chrono::seconds(1));
  }

  // ------------------------------------------------------------ chores

  // Idle inputs, outputs stuck over max_pending, the stats line.
  void schedule_chores() {
    double every = 1;
    if (cfg.idle_seconds > 0) every = std::min(every, cfg.idle_seconds / 4);
    every = std::min(every, cfg.slow_seconds / 4);
    if (cfg.stats_seconds > 0) every = std::min(every, cfg.stats_seconds);
    chores_timer.expires_after(seconds(std::max(every, 0.01)));
    chores_timer.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping) return;
      chores();
      schedule_chores();
    });
  }

  void chores() {
    if (cfg.idle_seconds > 0) {
      for (const auto& c : std::vector<ConnPtr>(conns))
        if (!c->parked && seconds_since(c->last_read) > cfg.idle_seconds) {
          ++st.idle_closed;
          close_input(c, ("closed: nothing sent for " + std::to_string(cfg.idle_seconds) + " s (--idle-timeout)").c_str());
        }
    }
    auto stuck = [this](const Sink& k) {
      return k.policy == SlowPolicy::drop && k.dropping && seconds_since(k.last_progress) > cfg.slow_seconds;
    };
    for (const auto& k : std::vector<SinkPtr>(sinks))
      if (stuck(*k)) {
        ++st.slow_dropped;
        close_sink(k, "disconnected: " + std::to_string(k->held()) + " bytes behind, nothing taken for " +
                          std::to_string(cfg.slow_seconds) + " s (" + policy_flag(k->kind) + " drop)");
      }
    if (downstream && stuck(*downstream)) {
      ++st.slow_dropped;
      close_sink(downstream, "took nothing for " + std::to_string(cfg.slow_seconds) + " s (--slow-downstream drop)");
    }
    resume_if_clear();
    if (cfg.stats_seconds > 0 && seconds_since(last_stats) >= cfg.stats_seconds) {
      last_stats = Clock::now();
      say("stats: " + summary());
      send_metrics();
    }
    flush_outputs();
  }

  std::string summary() {
    sum_counts();
    const DetectServerStats& s = st;
    if (forward)
      return std::to_string(s.forwarded) + " points forwarded, not forwarded: " + std::to_string(s.errors) +
             " malformed lines, " + std::to_string(s.nan_values) + " nan values; " + forward->summary();
    return std::to_string(s.points) + " points (" + std::to_string(s.repeats) + " repeats, " +
           std::to_string(s.out_of_order) + " out of order), not scored: " + std::to_string(s.errors) +
           " malformed lines, " + std::to_string(s.nan_values) + " nan values, " + std::to_string(s.refused) +
           " refused; " + std::to_string(s.series) + " series, " + std::to_string(s.evicted) + " evicted, " +
           std::to_string(s.events) + " events, " + std::to_string(s.dropped_lines) + " output lines dropped";
  }

  // The counts as Graphite metrics, to the scores outputs.
  void send_metrics() {
    sum_counts();
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    const std::pair<const char*, uint64_t> m[] = {
        {"points", st.points},         {"repeats", st.repeats},       {"out_of_order", st.out_of_order},
        {"malformed", st.errors},      {"nan_values", st.nan_values}, {"refused", st.refused},
        {"series", st.series},      {"evicted", st.evicted},       {"events", st.events},
        {"dropped_lines", st.dropped_lines}, {"connections", conns.size()}, {"subscribers", sinks.size()},
        {"pauses", st.pauses},         {"snapshots", st.snapshots},   {"snapshot_failures", st.snapshot_failures},
    };
    line.clear();
    for (const auto& [name, v] : m) detect::append_metric_line(line, cfg.stats_prefix, name, v, now);
    for (const auto& k : sinks)
      if (k->kind == SinkKind::scores) append(*k, line);
    if (downstream) append(*downstream, line);
  }

  // ------------------------------------------------------------ state

  void schedule_snapshot() {
    if (cfg.state_dir.empty() || cfg.snapshot_seconds <= 0) return;
    snap_timer.expires_after(seconds(cfg.snapshot_seconds));
    snap_timer.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping) return;
      begin_snapshot();
      schedule_snapshot();
    });
  }

  void begin_snapshot() {
    if (snap.waiting > 0 || !writer_done.load(std::memory_order_acquire)) {
      say("state snapshot skipped: the one before is still being written");
      return;
    }
    if (writer.joinable()) writer.join();
    snap = SnapshotRun{};
    snap.parts.resize(parts.size());
    snap.waiting = parts.size();
    for (size_t i = 0; i < parts.size(); ++i) submit_command(i, Batch::Kind::snapshot);
    publish();
  }

  // Partition i's part (null: given up at a stop); with the last one the
  // writer thread merges and writes them.
  void snapshot_returned(size_t i, std::unique_ptr<detect::StateFileSegment> part) {
    if (!part) snap.given_up = true;
    snap.parts[i] = std::move(part);
    if (--snap.waiting > 0 || snap.given_up) return;
    auto pieces = std::make_shared<std::vector<std::unique_ptr<detect::StateFileSegment>>>(std::move(snap.parts));
    snap.parts.clear();
    writer_done.store(false, std::memory_order_release);
    const fs::path path = fs::path(cfg.state_dir) / detect::kStateFile;
    writer = std::thread([this, pieces, path] {
      std::string error;
      try {
        write_state(path, *pieces);
      } catch (const Error& e) {
        error = e.what();
      }
      writer_done.store(true, std::memory_order_release);
      asio::post(io, [this, error] { snapshot_written(error); });
    });
  }

  static void write_state(const fs::path& path, const std::vector<std::unique_ptr<detect::StateFileSegment>>& pieces) {
    std::vector<const detect::StateFileSegment*> ptrs;
    for (const auto& p : pieces) ptrs.push_back(p.get());
    atomic_write_file(path, detect::merge_state_file(ptrs));
  }

  void snapshot_written(const std::string& error) {
    if (error.empty()) {
      ++st.snapshots;
    } else {
      ++st.snapshot_failures;
      say("state snapshot failed: " + error);
    }
    publish();
  }

  // At shutdown, once the partitions' threads have ended: a snapshot being
  // written is waited for, and all series are written here.
  bool final_snapshot() {
    if (cfg.state_dir.empty()) return true;
    if (writer.joinable()) writer.join();
    std::vector<std::unique_ptr<detect::StateFileSegment>> pieces;
    size_t n = 0;
    for (auto& p : parts) {
      pieces.push_back(std::make_unique<detect::StateFileSegment>(p->save_all()));
      n += pieces.back()->count();
    }
    try {
      write_state(fs::path(cfg.state_dir) / detect::kStateFile, pieces);
      ++st.snapshots;
      say("state written: " + std::to_string(n) + " series");
      return true;
    } catch (const Error& e) {
      ++st.snapshot_failures;
      say(std::string("final state snapshot FAILED: ") + e.what());
      return false;
    }
  }

  // ------------------------------------------------------------ lifecycle

  void begin_shutdown() {
    if (stopping) return;
    stopping = true;
    say("shutting down");
    boost::system::error_code ec;
    in_acc.close(ec);
    scores_acc.close(ec);
    events_acc.close(ec);
    signals.cancel(ec);
    snap_timer.cancel();
    redial_timer.cancel();
    accept_retry.cancel();
    chores_timer.cancel();
    if (!serving) {
      // Nothing was served: the state file stays exactly as it was.
      restoring = false;
      unblock_reader();
      quit.store(true, std::memory_order_release);  // a restore under way ends at once
      for (auto& p : parts) p->wake();
      say(std::string("stopped ") + (cfg.state_dir.empty() ? "before serving" : "during the restore: the state file is left as it was"));
      state_written = true;
      finish();
      return;
    }
    // Reading connections finish in their handlers; parked ones here.
    const auto all = conns;
    for (const auto& c : all) {
      if (c->reading)
        c->sock.cancel(ec);
      else
        drain_and_close(c);
    }
    flush_outputs();
    maybe_finish();
  }

  bool outputs_idle() const {
    for (const auto& k : sinks)
      if (k->busy || !k->pending.empty()) return false;
    return !downstream || (!downstream->busy && downstream->pending.empty());
  }

  bool state_written = false;
  void maybe_finish() {
    if (finished || !conns.empty()) return;
    // The partitions score what they hold, then their threads end.
    if (!stop_sent) {
      stop_sent = true;
      submit_filling();
      stop_waiting = parts.size();
      for (size_t i = 0; i < parts.size(); ++i) submit_command(i, Batch::Kind::stop);
    }
    if (stop_waiting > 0) return;
    if (!state_written) {
      for (auto& p : parts) p->join();
      state_written = true;
      if (!final_snapshot()) final_ok = false;
      if (forward && !forward->finish(cfg.drain_seconds)) final_ok = false;
      flush_outputs();
      say("stopped: " + summary());
      drain_timer.expires_after(seconds(cfg.drain_seconds));
      drain_timer.async_wait([this](boost::system::error_code ec) {
        if (!ec) finish();
      });
    }
    if (outputs_idle()) finish();
  }

  void finish() {
    if (finished) return;
    finished = true;
    drain_timer.cancel();
    boost::system::error_code ec;
    for (const auto& k : std::vector<SinkPtr>(sinks)) k->sock.close(ec);
    if (downstream) downstream->sock.close(ec);
    publish();
    running.reset();
    io.stop();
  }
};

DetectServer::DetectServer(DetectServerConfig cfg, std::shared_ptr<const Detector> detector, std::ostream* events,
                           std::ostream* log, PointForwarder* forward)
    : impl_(std::make_unique<Impl>(std::move(cfg), std::move(detector), events, log, forward)) {}

DetectServer::~DetectServer() = default;

uint16_t DetectServer::port() const { return impl_->port_of(impl_->in_acc); }
uint16_t DetectServer::scores_port() const { return impl_->port_of(impl_->scores_acc); }
uint16_t DetectServer::events_port() const { return impl_->port_of(impl_->events_acc); }

bool DetectServer::run(bool handle_signals) {
  Impl& m = *impl_;
  asio::post(m.io, [&m, handle_signals] { m.start(handle_signals); });
  m.io.run();
  return m.final_ok;
}

void DetectServer::stop() {
  asio::post(impl_->io, [m = impl_.get()] { m->begin_shutdown(); });
}

DetectServerStats DetectServer::stats() const {
  std::lock_guard<std::mutex> g(impl_->stats_mu);
  return impl_->shared_stats;
}

size_t DetectServer::series_bytes(size_t name_bytes) const {
  // The Series with its detector state, the model state buffer, a long
  // name's heap, and the hash slots (at most 4 per series, 16 bytes each).
  const size_t name_heap = name_bytes > 15 ? name_bytes + 1 : 0;
  return sizeof(detect::Series) + impl_->det->forecaster().state_size() * sizeof(float) + name_heap + 4 * 16;
}

}  // namespace ssm
