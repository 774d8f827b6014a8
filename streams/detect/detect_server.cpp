// The detection server: accept loops, per-connection parsing and scoring,
// output sinks with back-pressure, the series table with LRU eviction, state
// snapshots and the graceful shutdown. Everything runs on run()'s thread.
#include "ssm/streams/detect_server.hpp"

#include <utility>  // before Asio: see DESIGN.md §6
#include <boost/asio.hpp>

#include <bit>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <ostream>
#include <vector>

#include "ssm/forecast_batch.hpp"
#include "ssm/safetensors.hpp"  // atomic_write_file
#include "ssm/streams/graphite.hpp"
#include "ssm/timeseries_csv.hpp"  // read_text_file

namespace ssm {

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace fs = std::filesystem;

constexpr char kSnapshotMagic[8] = {'S', 'S', 'M', 'D', 'S', 'T', 'S', '1'};
constexpr const char* kSnapshotFile = "series.state";

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Appends a number without locale or allocation.
void put_int(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}
void put_double(std::string& out, double v, int precision) {
  char buf[40];
  auto r = precision > 0 ? std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general, precision)
                         : std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

// One series: its name, detector state and place in the recency list.
struct Series {
  std::string name;
  uint64_t hash = 0;  // of the name
  Series* newer = nullptr;
  Series* older = nullptr;
  SeriesState state;
  int slot = -1;  // its model state's slot in the ForecastBatch (GPU), -1 without one
};

// Series by name (open addressing over (hash, pointer) slots, so a lookup
// touches one slot and the series itself), with a recency list (newest
// first) for LRU eviction. Owns the series.
class SeriesTable {
 public:
  SeriesTable() = default;
  SeriesTable(const SeriesTable&) = delete;
  SeriesTable& operator=(const SeriesTable&) = delete;
  ~SeriesTable() {
    for (Series* s = oldest_; s;) {
      Series* next = s->newer;
      delete s;
      s = next;
    }
  }

  size_t size() const { return live_; }
  size_t slot_bytes() const { return slots_.size() * sizeof(Slot); }

  Series* find(std::string_view name) {
    if (slots_.empty()) return nullptr;
    const uint64_t h = hash_of(name);
    for (size_t i = h & mask(); slots_[i].s; i = (i + 1) & mask()) {
      Series* s = slots_[i].s;
      if (s != tomb() && slots_[i].hash == h && s->name == name) {
        unlink(s);
        push_newest(s);
        return s;
      }
    }
    return nullptr;
  }
  // `name` must not be in the table.
  Series* add(std::string name, SeriesState state) {
    if ((used_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, std::bit_ceil((live_ + 1) * 4)));
    auto* s = new Series;
    s->name = std::move(name);
    s->hash = hash_of(s->name);
    s->state = std::move(state);
    size_t i = s->hash & mask();
    while (slots_[i].s && slots_[i].s != tomb()) i = (i + 1) & mask();
    if (!slots_[i].s) ++used_;
    slots_[i] = {s->hash, s};
    ++live_;
    push_newest(s);
    return s;
  }
  std::unique_ptr<Series> pop_oldest() {
    Series* s = oldest_;
    if (!s) return nullptr;
    unlink(s);
    size_t i = s->hash & mask();
    while (slots_[i].s != s) i = (i + 1) & mask();
    slots_[i].s = tomb();  // keeps later probes going past this slot
    --live_;
    return std::unique_ptr<Series>(s);
  }
  template <typename F>
  void for_each_oldest_first(F&& f) const {
    for (const Series* s = oldest_; s; s = s->newer) f(*s);
  }
  template <typename F>
  void for_each_oldest_first(F&& f) {
    for (Series* s = oldest_; s; s = s->newer) f(*s);
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    Series* s = nullptr;  // null: never used; tomb(): emptied by an eviction
  };
  static uint64_t hash_of(std::string_view name) { return std::hash<std::string_view>{}(name); }
  static Series* tomb() { return reinterpret_cast<Series*>(alignof(Series)); }
  size_t mask() const { return slots_.size() - 1; }
  void rehash(size_t n) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(n, Slot{});
    used_ = 0;
    for (const Slot& o : old)
      if (o.s && o.s != tomb()) {
        size_t i = o.hash & mask();
        while (slots_[i].s) i = (i + 1) & mask();
        slots_[i] = o;
        ++used_;
      }
  }
  void unlink(Series* s) {
    (s->newer ? s->newer->older : newest_) = s->older;
    (s->older ? s->older->newer : oldest_) = s->newer;
    s->newer = s->older = nullptr;
  }
  void push_newest(Series* s) {
    s->older = newest_;
    s->newer = nullptr;
    if (newest_) newest_->newer = s;
    newest_ = s;
    if (!oldest_) oldest_ = s;
  }
  std::vector<Slot> slots_;  // a power of two, at most half used (live + tombstones)
  size_t live_ = 0, used_ = 0;
  Series* newest_ = nullptr;
  Series* oldest_ = nullptr;
};

}  // namespace

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
  auto check = [](bool ok, const std::string& field, const std::string& expected) {
    require(ok, "detect server: '" + field + "' " + expected);
  };
  parse_host_port(listen, "detect server: 'listen'");
  if (!scores_listen.empty()) parse_host_port(scores_listen, "detect server: 'scores_listen'");
  if (!events_listen.empty()) parse_host_port(events_listen, "detect server: 'events_listen'");
  if (!downstream.empty()) {
    const HostPort d = parse_host_port(downstream, "detect server: 'downstream'");
    check(d.port != 0, "downstream", "needs a port other than 0");
  }
  check(std::isfinite(event_threshold) && event_threshold >= 0, "event_threshold", "must be >= 0");
  check(max_series >= 1, "max_series", "must be >= 1");
  check(max_connections >= 1, "max_connections", "must be >= 1");
  check(max_line >= 16 && max_line <= (size_t{16} << 20), "max_line", "must be in 16 .. 16 MiB");
  check(read_chunk >= 512 && read_chunk <= (size_t{16} << 20), "read_chunk", "must be in 512 .. 16 MiB");
  check(max_pending >= 4096, "max_pending", "must be >= 4096");
  check(std::isfinite(snapshot_seconds) && snapshot_seconds >= 0, "snapshot_seconds", "must be >= 0");
  check(std::isfinite(drain_seconds) && drain_seconds >= 0, "drain_seconds", "must be >= 0");
  check(log_errors_per_connection >= 0, "log_errors_per_connection", "must be >= 0");
  check(device == "cpu" || device == "cuda", "device", "must be \"cpu\" or \"cuda\", got \"" + device + "\"");
  for (char c : score_prefix)
    check(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == ':',
          "score_prefix", "may hold only [A-Za-z0-9._:-]");
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
  };
  // An output: a subscriber or the downstream.
  struct Sink {
    explicit Sink(asio::io_context& io) : sock(io) {}
    tcp::socket sock;
    std::string pending, writing;  // appended to / being written
    bool busy = false, closed = false, downstream = false, events = false;
    std::string peer;
    char discard[512];
    size_t held() const { return pending.size() + writing.size(); }
  };
  using ConnPtr = std::shared_ptr<Conn>;
  using SinkPtr = std::shared_ptr<Sink>;

  DetectServerConfig cfg;
  std::shared_ptr<const Detector> det;
  std::ostream* events_out;
  std::ostream* log;
  asio::io_context io{1};
  tcp::acceptor in_acc{io}, scores_acc{io}, events_acc{io};
  asio::steady_timer snap_timer{io}, redial_timer{io}, drain_timer{io}, accept_retry{io};
  asio::signal_set signals{io};
  SeriesTable table;
  std::unique_ptr<ForecastBatch> batch;  // device "cuda": the series' model states and their queued steps
  std::vector<ConnPtr> conns;
  std::vector<ConnPtr> parked;
  std::vector<SinkPtr> sinks;  // subscribers of scores and events
  SinkPtr downstream;          // connected, or null
  bool downstream_dialing = false, downstream_failed_logged = false;
  std::string events_text;     // for the events stream, written once per batch
  std::string line;            // scratch for one output line
  bool stopping = false, finished = false, paused = false;
  uint64_t next_conn_id = 1;
  DetectServerStats st;
  mutable std::mutex stats_mu;
  DetectServerStats shared_stats;

  Impl(DetectServerConfig c, std::shared_ptr<const Detector> d, std::ostream* ev, std::ostream* lg)
      : cfg(std::move(c)), det(std::move(d)), events_out(ev), log(lg) {
    require(det != nullptr, "detect server: no detector");
    cfg.validate();
    if (cfg.device == "cuda") batch = std::make_unique<ForecastBatch>(*det, static_cast<int>(cfg.max_series), "cuda");
    listen(in_acc, cfg.listen, "listen");
    if (!cfg.scores_listen.empty()) listen(scores_acc, cfg.scores_listen, "scores_listen");
    if (!cfg.events_listen.empty()) listen(events_acc, cfg.events_listen, "events_listen");
    if (!cfg.state_dir.empty()) {
      std::error_code ec;
      fs::create_directories(cfg.state_dir, ec);
      require(!ec && fs::is_directory(cfg.state_dir),
              "detect server: state dir '" + cfg.state_dir + "' cannot be created: " + ec.message());
      restore();
    }
    publish();
  }

  void say(const std::string& text) {
    if (log) *log << "ssm detect: " << text << std::endl;
  }

  void listen(tcp::acceptor& acc, const std::string& where, const char* field) {
    const HostPort hp = parse_host_port(where, std::string("detect server: '") + field + "'");
    boost::system::error_code ec;
    tcp::resolver resolver(io);
    auto results = resolver.resolve(hp.host, std::to_string(hp.port), tcp::resolver::passive, ec);
    require(!ec && !results.empty(), std::string("detect server: ") + field + " " + where +
                                         ": cannot resolve: " + ec.message());
    const tcp::endpoint ep = results.begin()->endpoint();
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
    require(!ec, std::string("detect server: ") + field + " " + where + ": " + ec.message());
  }

  uint16_t port_of(const tcp::acceptor& a) const {
    boost::system::error_code ec;
    return a.is_open() ? a.local_endpoint(ec).port() : 0;
  }

  void publish() {
    st.series = table.size();
    st.open_connections = conns.size();
    st.subscribers = sinks.size();
    std::lock_guard<std::mutex> g(stats_mu);
    shared_stats = st;
  }

  size_t open_total() const { return conns.size() + sinks.size(); }

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
        say("refused a connection: max_connections (" + std::to_string(cfg.max_connections) + ") reached");
      } else {
        auto c = std::make_shared<Conn>(io, cfg.read_chunk, cfg.max_line);
        c->sock = std::move(sock);
        c->id = next_conn_id++;
        boost::system::error_code e2;
        const auto rep = c->sock.remote_endpoint(e2);
        c->peer = e2 ? "?" : rep.address().to_string() + ":" + std::to_string(rep.port());
        ++st.connections;
        conns.push_back(c);
        read(c);
      }
      accept_inputs();
    });
  }

  bool blocked() const {
    if (cfg.drop_slow) return false;
    for (const auto& s : sinks)
      if (s->held() >= cfg.max_pending) return true;
    return downstream && downstream->held() >= cfg.max_pending;
  }

  void read(const ConnPtr& c) {
    if (c->done) return;
    if (!stopping && blocked()) {
      if (!paused) ++st.pauses;
      paused = true;
      c->parked = true;
      parked.push_back(c);
      return;
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
    c.parser.feed(
        std::span<const char>(c.buf.get(), n),
        [this](std::string_view path, double value, int64_t epoch) { score(path, value, epoch); },
        [this, &c](GraphiteError kind, std::string_view detail) { malformed(c, kind, detail); });
    flush_pending();
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

  void close_input(const ConnPtr& c) {
    if (c->done) return;
    c->done = true;
    c->parser.finish([this, &c](GraphiteError kind, std::string_view detail) { malformed(*c, kind, detail); });
    boost::system::error_code ec;
    c->sock.close(ec);
    const GraphiteStats gs = c->parser.stats();
    std::string text = "connection #" + std::to_string(c->id) + " (" + c->peer + ") closed: " +
                       std::to_string(gs.points) + " points, " + std::to_string(gs.errors) + " malformed lines";
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

  Series* series_for(std::string_view path) {
    if (Series* s = table.find(path)) return s;
    if (table.size() >= cfg.max_series) {
      if (cfg.overflow == SeriesOverflow::refuse) {
        ++st.refused;
        if (st.refused <= 10 || st.refused % 10000 == 0)
          say("refused new series '" + std::string(path) + "': max_series (" + std::to_string(cfg.max_series) +
              ") reached (" + std::to_string(st.refused) + " refused values so far)");
        return nullptr;
      }
      const auto old = table.pop_oldest();
      if (batch) batch->detach(old->slot);
      ++st.evicted;
      if (st.evicted <= 10 || st.evicted % 10000 == 0)
        say("evicted series '" + old->name + "' (least recently seen; max_series " +
            std::to_string(cfg.max_series) + ", " + std::to_string(st.evicted) + " evicted so far)");
    }
    return add_series(std::string(path), det->new_series());
  }

  Series* add_series(std::string name, SeriesState state) {
    Series* s = table.add(std::move(name), std::move(state));
    if (batch) s->slot = batch->attach(s->state);
    return s;
  }

  // Values are scored one behind the parser: the series of the newest is
  // looked up and its state prefetched while the one before is scored, so
  // that the cache misses of a state overlap work instead of stalling it.
  struct Pending {
    Series* s = nullptr;
    double value = 0;
    int64_t epoch = 0;
  } pending;

  void score(std::string_view path, double value, int64_t epoch) {
    Series* s = table.find(path);
    if (!s) {
      flush_pending();  // a new series may evict the pending one
      s = series_for(path);
      if (!s) return;
    }
    det->prefetch(s->state, epoch);
    flush_pending();
    pending = {s, value, epoch};
  }

  void flush_pending() {
    if (!pending.s) return;
    Series* s = pending.s;
    pending.s = nullptr;
    process(*s, pending.value, pending.epoch);
  }

  void process(Series& series, double value, int64_t epoch) {
    const std::string_view path = series.name;
    const DetectorResult r =
        batch ? batch->update(series.slot, series.state, epoch, value) : det->update(series.state, epoch, value);
    ++st.points;
    if (r.kind == PointKind::repeat) ++st.repeats;
    if (r.kind == PointKind::out_of_order) ++st.out_of_order;
    line.clear();
    line.append(cfg.score_prefix).append(path).append(".score ");
    put_double(line, r.score, 6);
    line.push_back(' ');
    put_int(line, epoch);
    line.push_back('\n');
    for (const auto& k : sinks)
      if (!k->events) k->pending.append(line);
    if (downstream)
      downstream->pending.append(line);
    else if (!cfg.downstream.empty())
      ++st.dropped_lines;
    if (r.kind != PointKind::repeat && r.score >= cfg.event_threshold) {
      ++st.events;
      line.clear();
      line.append("{\"series\":\"").append(path).append("\",\"time\":");
      put_int(line, epoch);
      line.append(",\"value\":");
      put_double(line, value, 0);
      line.append(",\"prediction\":");
      put_double(line, r.prediction, 0);
      line.append(",\"score\":");
      put_double(line, r.score, 0);
      line.append(",\"likelihood\":");
      put_double(line, r.likelihood, 0);
      line.append(r.kind == PointKind::scored ? ",\"kind\":\"scored\"}\n" : ",\"kind\":\"out_of_order\"}\n");
      if (events_out) events_text.append(line);
      for (const auto& k : sinks)
        if (k->events) k->pending.append(line);
    }
  }

  // ------------------------------------------------------------ outputs

  void flush_outputs() {
    // The read's values are scored; their forecaster steps run now, in one launch.
    if (batch) batch->run();
    if (events_out && !events_text.empty()) {
      events_out->write(events_text.data(), static_cast<std::streamsize>(events_text.size()));
      events_out->flush();
      events_text.clear();
    }
    for (size_t i = 0; i < sinks.size();) {
      SinkPtr k = sinks[i];
      if (cfg.drop_slow && k->held() > cfg.max_pending) {
        say("dropped subscriber " + k->peer + ": " + std::to_string(k->held()) + " bytes behind");
        close_sink(k);
        continue;
      }
      kick(k);
      ++i;
    }
    if (downstream) kick(downstream);
    publish();
  }

  void kick(const SinkPtr& k) {
    if (k->busy || k->closed || k->pending.empty()) return;
    std::swap(k->pending, k->writing);
    k->busy = true;
    asio::async_write(k->sock, asio::buffer(k->writing), [this, k](boost::system::error_code ec, size_t) {
      k->busy = false;
      k->writing.clear();  // keeps its capacity for the next swap
      if (ec) {
        close_sink(k);
      } else {
        kick(k);
      }
      resume_if_clear();
      if (stopping) maybe_finish();
    });
  }

  void resume_if_clear() {
    if (parked.empty() || blocked()) return;
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

  void close_sink(const SinkPtr& k) {
    if (k->closed) return;
    k->closed = true;
    boost::system::error_code ec;
    k->sock.close(ec);
    if (k->downstream) {
      downstream.reset();
      say("downstream " + cfg.downstream + " disconnected; redialling");
      if (!stopping) redial(std::chrono::seconds(1));
    } else {
      say(std::string(k->events ? "events" : "scores") + " subscriber " + k->peer + " left");
      std::erase(sinks, k);
    }
    publish();
  }

  void accept_subscribers(tcp::acceptor& acc, bool events) {
    acc.async_accept([this, &acc, events](boost::system::error_code ec, tcp::socket sock) {
      if (stopping) return;
      if (!ec) {
        if (open_total() >= cfg.max_connections) {
          say("refused a subscriber: max_connections (" + std::to_string(cfg.max_connections) + ") reached");
        } else {
          auto k = std::make_shared<Sink>(io);
          k->sock = std::move(sock);
          k->events = events;
          boost::system::error_code e2;
          const auto rep = k->sock.remote_endpoint(e2);
          k->peer = e2 ? "?" : rep.address().to_string() + ":" + std::to_string(rep.port());
          k->sock.set_option(tcp::no_delay(true), e2);
          sinks.push_back(k);
          say(std::string(events ? "events" : "scores") + " subscriber " + k->peer + " joined");
          watch(k);
          publish();
        }
        accept_subscribers(acc, events);
      } else {
        accept_retry.expires_after(std::chrono::milliseconds(100));
        accept_retry.async_wait([this, &acc, events](boost::system::error_code e) {
          if (!e && !stopping) accept_subscribers(acc, events);
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
    const HostPort hp = parse_host_port(cfg.downstream, "downstream");
    auto resolver = std::make_shared<tcp::resolver>(io);
    resolver->async_resolve(hp.host, std::to_string(hp.port), [this, resolver](boost::system::error_code ec,
                                                                               tcp::resolver::results_type res) {
      if (ec || stopping) {
        dial_failed(ec);
        return;
      }
      auto k = std::make_shared<Sink>(io);
      k->downstream = true;
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

  // ------------------------------------------------------------ state

  void snapshot() {
    if (cfg.state_dir.empty()) return;
    std::vector<uint8_t> out(kSnapshotMagic, kSnapshotMagic + sizeof(kSnapshotMagic));
    auto put = [&out](const void* p, size_t n) {
      const auto* b = static_cast<const uint8_t*>(p);
      out.insert(out.end(), b, b + n);
    };
    if (batch) {  // the model states come back from the GPU first
      std::vector<int> slots;
      std::vector<SeriesState*> states;
      table.for_each_oldest_first([&](Series& s) {
        slots.push_back(s.slot);
        states.push_back(&s.state);
      });
      batch->fetch(slots, states);
    }
    const uint64_t count = table.size();
    put(&count, 8);
    table.for_each_oldest_first([&](const Series& s) {
      const std::vector<uint8_t> bytes = det->save(s.state);
      const uint32_t nl = static_cast<uint32_t>(s.name.size()), bl = static_cast<uint32_t>(bytes.size());
      put(&nl, 4);
      put(s.name.data(), nl);
      put(&bl, 4);
      put(bytes.data(), bl);
    });
    const uint64_t sum = fnv1a(out.data(), out.size());
    put(&sum, 8);
    try {
      atomic_write_file(fs::path(cfg.state_dir) / kSnapshotFile, out);
      ++st.snapshots;
    } catch (const Error& e) {
      say(std::string("state snapshot failed: ") + e.what());
    }
  }

  void restore() {
    const fs::path path = fs::path(cfg.state_dir) / kSnapshotFile;
    std::error_code fec;
    if (!fs::exists(path, fec)) return;
    // Never read more than max_series states could fill.
    const uintmax_t limit = 32 + static_cast<uintmax_t>(cfg.max_series) * (8 + cfg.max_line + 2 * det->state_bytes());
    const uintmax_t size = fs::file_size(path, fec);
    if (fec || size > limit) {
      say("state file " + path.string() + " not used: " + (fec ? fec.message() : "larger than max_series states") +
          "; starting with no series");
      return;
    }
    const std::string text = read_text_file(path.string());
    const auto* p = reinterpret_cast<const uint8_t*>(text.data());
    const size_t n = text.size();
    auto reject = [&](const std::string& why) {
      say("state file " + path.string() + " not used: " + why + "; starting with no series");
    };
    if (n < 24 || std::memcmp(p, kSnapshotMagic, 8) != 0) return reject("not a state file");
    uint64_t sum = 0, count = 0;
    std::memcpy(&sum, p + n - 8, 8);
    if (sum != fnv1a(p, n - 8)) return reject("checksum mismatch (damaged)");
    std::memcpy(&count, p + 8, 8);
    struct Entry {
      std::string_view name;
      std::span<const uint8_t> bytes;
    };
    std::vector<Entry> entries;
    size_t at = 16;
    for (uint64_t i = 0; i < count; ++i) {
      uint32_t nl = 0, bl = 0;
      if (at + 4 > n - 8) return reject("truncated");
      std::memcpy(&nl, p + at, 4);
      at += 4;
      if (nl == 0 || nl > cfg.max_line || at + nl + 4 > n - 8) return reject("a bad series name");
      const std::string_view name(text.data() + at, nl);
      at += nl;
      std::memcpy(&bl, p + at, 4);
      at += 4;
      if (at + bl > n - 8) return reject("truncated");
      entries.push_back({name, std::span<const uint8_t>(p + at, bl)});
      at += bl;
    }
    if (at != n - 8) return reject("bytes after the last series");
    // Oldest first: keep the newest max_series.
    const size_t skip = entries.size() > cfg.max_series ? entries.size() - cfg.max_series : 0;
    std::vector<std::pair<std::string, SeriesState>> loaded;
    try {
      for (size_t i = skip; i < entries.size(); ++i)
        loaded.emplace_back(std::string(entries[i].name), det->load(entries[i].bytes));
    } catch (const Error& e) {
      return reject(e.what());
    }
    for (auto& [name, state] : loaded)
      if (!table.find(name)) add_series(std::move(name), std::move(state));
    st.restored = table.size();
    say("restored " + std::to_string(table.size()) + " series from " + path.string());
  }

  // ------------------------------------------------------------ lifecycle

  void schedule_snapshot() {
    if (cfg.state_dir.empty() || cfg.snapshot_seconds <= 0) return;
    snap_timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(cfg.snapshot_seconds)));
    snap_timer.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping) return;
      snapshot();
      publish();
      schedule_snapshot();
    });
  }

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
    if (!state_written) {
      state_written = true;
      snapshot();
      flush_outputs();
      const DetectServerStats& s = st;
      say("stopped: " + std::to_string(s.points) + " points, " + std::to_string(s.errors) + " malformed lines, " +
          std::to_string(table.size()) + " series, " + std::to_string(s.events) + " events");
      drain_timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(cfg.drain_seconds)));
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
    io.stop();
  }
};

DetectServer::DetectServer(DetectServerConfig cfg, std::shared_ptr<const Detector> detector, std::ostream* events,
                           std::ostream* log)
    : impl_(std::make_unique<Impl>(std::move(cfg), std::move(detector), events, log)) {}

DetectServer::~DetectServer() = default;

uint16_t DetectServer::port() const { return impl_->port_of(impl_->in_acc); }
uint16_t DetectServer::scores_port() const { return impl_->port_of(impl_->scores_acc); }
uint16_t DetectServer::events_port() const { return impl_->port_of(impl_->events_acc); }

void DetectServer::run(bool handle_signals) {
  Impl& m = *impl_;
  if (handle_signals) {
    m.signals.add(SIGTERM);
    m.signals.add(SIGINT);
    m.signals.async_wait([&m](boost::system::error_code ec, int) {
      if (!ec) m.begin_shutdown();
    });
  }
  m.accept_inputs();
  if (m.scores_acc.is_open()) m.accept_subscribers(m.scores_acc, false);
  if (m.events_acc.is_open()) m.accept_subscribers(m.events_acc, true);
  if (!m.cfg.downstream.empty()) m.dial();
  m.schedule_snapshot();
  m.io.run();
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
  return sizeof(Series) + impl_->det->forecaster().state_size() * sizeof(float) + name_heap + 4 * 16;
}

}  // namespace ssm
