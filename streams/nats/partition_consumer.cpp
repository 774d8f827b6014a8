// A partition's takeover, consumption, checkpoints and rewinds.
#include "partition_consumer.hpp"

#include <algorithm>
#include <cstring>

#include "../detect/output_lines.hpp"
#include "../detect/partition.hpp"  // partition_of

namespace ssm::nats {

namespace {

constexpr size_t kChunkBytes = size_t{512} << 10;  // a chunk message, well below the server's 1 MiB payload limit
constexpr int64_t kFetchMs = 250;                  // a fetch's wait: how soon a stop or an abort is seen
constexpr int64_t kPublishWaitMs = 10000;          // for the stored acknowledgements of a checkpoint's publishes
constexpr int64_t kRequestMs = 2000;               // a JetStream API call or a commit
constexpr int64_t kMaxPendingOutputs = 4096;       // score and event messages unacknowledged at a time
constexpr int64_t kMaxPendingChunks = 8;           // chunks in flight: 4 MiB
constexpr int kLogMalformed = 10;                  // malformed messages logged in full per takeover

// Epoch "-1" (now) in a message means the time the stream stored it, so
// that a replay gives the same epoch.
thread_local int64_t t_message_epoch = 0;
int64_t message_clock() { return t_message_epoch; }

// Whether a payload is one "value epoch" (two fields on one line): its
// series is then the subject's last part.
bool one_point(std::string_view data) {
  if (!data.empty() && data.back() == '\n') data.remove_suffix(1);
  if (!data.empty() && data.back() == '\r') data.remove_suffix(1);
  int fields = 0;
  bool in_field = false;
  for (char c : data) {
    if (c == '\n') return false;
    const bool blank = c == ' ' || c == '\t';
    if (!blank && !in_field) ++fields;
    in_field = !blank;
  }
  return fields == 2;
}

}  // namespace

PartitionConsumer::PartitionConsumer(size_t partition, Shared& shared)
    : p_(partition),
      sh_(shared),
      filter_(shared.names.filter(partition)),
      chunk_subject_(shared.names.chunk_subject(partition)),
      commit_subject_(shared.names.commit_subject(partition)),
      score_subject_(shared.names.score_subject(partition)),
      consumer_(shared.names.consumer(partition)),
      parser_(GraphiteLimits{size_t{1} << 20, message_clock}) {
  state_bytes_ = sh_.det.save(sh_.det.new_series()).size();
  sh_.consumers.fetch_add(1, std::memory_order_relaxed);
}

PartitionConsumer::~PartitionConsumer() {
  abort();
  if (thread_.joinable()) thread_.join();
  drop_series();
  sh_.consumers.fetch_sub(1, std::memory_order_relaxed);
}

void PartitionConsumer::start() {
  thread_ = std::thread([this] { run(); });
}

void PartitionConsumer::run() {
  double backoff = 0.1;
  const std::string me = "partition " + std::to_string(p_) + ": ";
  while (!stopping() && !release_.load(std::memory_order_acquire)) {
    // While the connection is down every request would wait out its
    // timeout: wait for the connection (the lease manager aborts when
    // that takes too long).
    if (!sh_.conn.connected()) {
      sleep_unless(abort_, 0.02);
      continue;
    }
    try {
      if (!loaded_) {
        take_over();
        backoff = 0.1;
      }
      // After a reconnect what was in flight is in doubt (deliveries,
      // publishes, acks): back to the checkpoint at once rather than wait
      // for the publishes to time out.
      if (sh_.conn.reconnects() != reconnects_)
        throw NatsError("reconnected to the server", NATS_CONNECTION_DISCONNECTED, static_cast<jsErrCode>(0));
      consume();
      if (ck_.active)
        checkpoint_step();
      else if (inflight_ > 0 && (inflight_ * 2 >= sh_.cfg.max_inflight ||
                                 seconds_between(last_checkpoint_ns_, steady_ns()) >= sh_.cfg.checkpoint_seconds))
        begin_checkpoint();
    } catch (const NatsError& e) {
      if (stopping()) break;
      sh_.say(me + e.what() + "; back to its last checkpoint");
      rewind();
      sleep_unless(abort_, backoff);
      backoff = std::min(backoff * 2, 2.0);
    } catch (const Lost& e) {
      sh_.say(me + e.what());
      rewind();
      break;
    } catch (const Error& e) {
      // A checkpoint this detector cannot read: nothing to retry.
      sh_.fatal(me + e.what());
      rewind();
      break;
    }
  }
  if (loaded_ && !stopping() && release_.load(std::memory_order_acquire)) {
    try {
      last_checkpoint();
      if (!stopping()) released_.store(true, std::memory_order_release);
    } catch (const Error& e) {
      sh_.say(me + "the last checkpoint failed: " + e.what() + "; the next owner replays from the one before");
    }
  }
  sub_.reset();
  js_.discard();
  chunk_js_.discard();
  drop_series();
  finished_.store(true, std::memory_order_release);
}

// ------------------------------------------------------------ takeover

void PartitionConsumer::take_over() {
  const int64_t t0 = steady_ns();
  natsConnection* nc = sh_.conn.get();
  reconnects_ = sh_.conn.reconnects();
  js_ = JetStream(nc, kRequestMs, kMaxPendingOutputs, on_publish_error, this);
  chunk_js_ = JetStream(nc, kRequestMs, kMaxPendingChunks, on_publish_error, this);
  publish_failed_.store(false, std::memory_order_release);

  // The last commit, then a claim: the same commit under this owner's name,
  // compare-and-set, so that a commit of the previous owner still on its
  // way fails from here on.
  Commit last;
  uint64_t last_seq = 0;
  {
    natsMsg* got = nullptr;
    jsDirectGetMsgOptions o;
    jsDirectGetMsgOptions_Init(&o);
    o.LastBySubject = commit_subject_.c_str();
    const natsStatus s = js_DirectGetMsg(&got, js_.get(), sh_.cfg.state_stream.c_str(), nullptr, &o);
    MsgPtr owned(got);
    if (s == NATS_OK) {
      last = parse_commit(std::string_view(natsMsg_GetData(got), natsMsg_GetDataLength(got)),
                          commit_subject_ + " in stream " + sh_.cfg.state_stream);
      last_seq = natsMsg_GetSequence(got);
    } else if (s != NATS_NOT_FOUND) {
      check(s, "cannot read " + commit_subject_);
    }
  }
  commit_seq_ = last_seq;
  Commit claim = last;
  claim.owner = sh_.instance;
  commit(claim);
  const std::string previous = last.owner.empty() ? "none" : last.owner;

  // Its series: the newest record of each, from the log's start on.
  if (last_seq > 0) load_chunks(std::max<uint64_t>(last.base, 1), commit_seq_);
  place_consumer();
  last_checkpoint_ns_ = steady_ns();
  loaded_ = true;
  logged_malformed_ = 0;
  sh_.counts.takeovers.fetch_add(1, std::memory_order_relaxed);
  sh_.say("partition " + std::to_string(p_) + " taken (previous owner " + previous +
          "): " + std::to_string(table_.size()) + " series from its checkpoint at " + sh_.cfg.stream + " sequence " +
          std::to_string(commit_.seq) + ", " + std::to_string(commit_.log_bytes) + " bytes, in " +
          std::to_string(static_cast<int>(seconds_between(t0, steady_ns()) * 1000)) + " ms");
}

// The chunks stream in through a consumer of their own (ephemeral, no
// acks), fetched many at a time.
void PartitionConsumer::load_chunks(uint64_t from, uint64_t until) {
  uint64_t bytes = 0, chunks = 0;
  const std::string source = chunk_subject_ + " in stream " + sh_.cfg.state_stream;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = sh_.cfg.state_stream.c_str();
  so.Config.DeliverPolicy = js_DeliverByStartSequence;
  so.Config.OptStartSeq = from;
  so.Config.AckPolicy = js_AckNone;
  natsSubscription* raw = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  check(js_PullSubscribe(&raw, js_.get(), chunk_subject_.c_str(), nullptr, nullptr, &so, &code),
        "cannot read the checkpoint of partition " + std::to_string(p_), code);
  struct Reader {
    natsSubscription* sub;
    ~Reader() {
      natsSubscription_Unsubscribe(sub);  // deletes the consumer
      natsSubscription_Destroy(sub);
    }
  } reader{raw};
  for (bool done = false; !done;) {
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = 64;
    req.MaxBytes = sh_.fetch_bytes();
    req.NoWait = true;
    req.Expires = kRequestMs * 1'000'000;
    natsMsgList list{};
    const natsStatus s = natsSubscription_FetchRequest(&list, raw, &req);
    struct ListOwner {
      natsMsgList* l;
      ~ListOwner() { natsMsgList_Destroy(l); }
    } owner{&list};
    if ((s == NATS_NOT_FOUND || s == NATS_TIMEOUT) && list.Count == 0) break;  // no more
    if (list.Count == 0) check(s, "cannot read the checkpoint of partition " + std::to_string(p_));
    for (int i = 0; i < list.Count && !done; ++i) {
      natsMsg* got = list.Msgs[i];
      jsMsgMetaData* meta = nullptr;
      check(natsMsg_GetMetaData(&meta, got), "a checkpoint chunk without its metadata");
      const uint64_t seq = meta->Sequence.Stream, pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
      if (seq >= until) {  // chunks after the claim are no checkpoint's
        done = true;
        break;
      }
      const auto* data = reinterpret_cast<const uint8_t*>(natsMsg_GetData(got));
      const std::span<const uint8_t> chunk(data, static_cast<size_t>(natsMsg_GetDataLength(got)));
      std::vector<ChunkRecord> records;
      try {
        records = parse_chunk(chunk, static_cast<uint32_t>(p_));
      } catch (const Error& e) {
        fail(source + " sequence " + std::to_string(seq) + ": " + e.what());
      }
      for (const ChunkRecord& r : records) {
        auto it = table_.find(r.name);
        if (it != table_.end() && r.pos <= it->second.pos) continue;
        SeriesState state;
        try {
          state = sh_.det.load(r.state);
        } catch (const Error& e) {
          fail(source + " sequence " + std::to_string(seq) + ", series '" + std::string(r.name) + "': " + e.what());
        }
        if (it == table_.end()) {
          it = table_.emplace(std::string(r.name), Rec{}).first;
          sh_.counts.series.fetch_add(1, std::memory_order_relaxed);
        }
        it->second.state = std::move(state);
        it->second.pos = r.pos;
      }
      bytes += chunk.size();
      ++chunks;
      if (pending == 0) done = true;
    }
  }
  commit_.log_bytes = bytes;
  commit_.chunks = chunks;
  if (table_.size() > 0 && sh_.counts.series.load(std::memory_order_relaxed) > sh_.cfg.max_series)
    sh_.say("partition " + std::to_string(p_) + ": this instance now holds " +
            std::to_string(sh_.counts.series.load()) + " series, more than --max-series " +
            std::to_string(sh_.cfg.max_series) + ": new series are refused");
}

// The durable consumer, placed after the commit: deleted and made again, so
// that what the previous owner had fetched and not acked comes again now,
// not after an ack wait.
void PartitionConsumer::place_consumer() {
  sub_.reset();
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus ds = js_DeleteConsumer(js_.get(), sh_.cfg.stream.c_str(), consumer_.c_str(), nullptr, &code);
  if (ds != NATS_OK && ds != NATS_NOT_FOUND && code != JSConsumerNotFoundErr)
    check(ds, "cannot delete consumer " + consumer_ + " of stream " + sh_.cfg.stream, code);
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = consumer_.c_str();
  cc.FilterSubject = filter_.c_str();
  cc.AckPolicy = js_AckAll;
  cc.DeliverPolicy = commit_.seq == 0 ? js_DeliverAll : js_DeliverByStartSequence;
  cc.OptStartSeq = commit_.seq == 0 ? 0 : commit_.seq + 1;
  // Values wait for the next checkpoint to be acked: the ack wait must not
  // run out before it (a redelivery would only be skipped, but costs).
  cc.AckWait = static_cast<int64_t>(std::max(60.0, 4 * sh_.cfg.checkpoint_seconds) * 1e9);
  cc.MaxAckPending = static_cast<int64_t>(sh_.cfg.max_inflight);
  cc.MaxDeliver = -1;
  jsConsumerInfo* ci = nullptr;
  code = static_cast<jsErrCode>(0);
  const natsStatus as = js_AddConsumer(&ci, js_.get(), sh_.cfg.stream.c_str(), &cc, nullptr, &code);
  jsConsumerInfo_Destroy(ci);
  check(as, "cannot create consumer " + consumer_ + " of stream " + sh_.cfg.stream, code);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = sh_.cfg.stream.c_str();
  so.Consumer = consumer_.c_str();
  natsSubscription* sub = nullptr;
  code = static_cast<jsErrCode>(0);
  check(js_PullSubscribe(&sub, js_.get(), filter_.c_str(), consumer_.c_str(), nullptr, &so, &code),
        "cannot bind to consumer " + consumer_, code);
  sub_.reset(sub);
  last_consumer_seq_ = 0;
  last_seq_ = commit_.seq;
  inflight_ = 0;
  last_reply_.clear();

  // Values the stream's limits discarded before this partition scored them.
  jsStreamInfo* si = nullptr;
  if (commit_.seq > 0 && js_GetStreamInfo(&si, js_.get(), sh_.cfg.stream.c_str(), nullptr, nullptr) == NATS_OK &&
      si->State.FirstSeq > commit_.seq + 1)
    sh_.say("partition " + std::to_string(p_) + ": stream " + sh_.cfg.stream + " starts at sequence " +
            std::to_string(si->State.FirstSeq) + ", after this partition's checkpoint at " +
            std::to_string(commit_.seq) +
            ": values of the partition in between were discarded by the stream's "
            "limits (max age, max bytes) before they were scored");
  jsStreamInfo_Destroy(si);
}

// ------------------------------------------------------------ consuming

// What is there, up to a batch, at once (no_wait); when nothing is, a wait
// of up to kFetchMs for the first message, so that a value waits for no
// batch to fill.
void PartitionConsumer::consume() {
  jsFetchRequest req;
  jsFetchRequest_Init(&req);
  const bool wait = idle_ && !ck_.active;  // a checkpoint under way goes on at once
  req.Batch = wait ? 1 : static_cast<int>(sh_.cfg.batch);
  req.NoWait = !wait;
  req.MaxBytes = sh_.fetch_bytes();
  req.Expires = kFetchMs * 1'000'000;
  natsMsgList list{};
  const natsStatus s = natsSubscription_FetchRequest(&list, sub_.get(), &req);
  struct ListOwner {
    natsMsgList* l;
    ~ListOwner() { natsMsgList_Destroy(l); }
  } owner{&list};
  idle_ = list.Count == 0;
  if ((s == NATS_TIMEOUT || s == NATS_NOT_FOUND) && list.Count == 0) return;
  if (s != NATS_OK && list.Count == 0) {
    // While the connection is down the client fails at once: wait for it
    // (the lease manager aborts if that takes too long). Deliveries lost
    // meanwhile show as a gap in the consumer sequence.
    if (!sh_.conn.connected()) {
      sleep_unless(abort_, 0.05);
      return;
    }
    check(s, "cannot fetch from consumer " + consumer_);
  }
  Counters::raise(sh_.counts.max_fetched, static_cast<uint64_t>(list.Count));
  for (int i = 0; i < list.Count && !stopping(); ++i) handle(list.Msgs[i]);
}

void PartitionConsumer::handle(natsMsg* m) {
  jsMsgMetaData* meta = nullptr;
  check(natsMsg_GetMetaData(&meta, m), "a message of consumer " + consumer_ + " without its metadata");
  const uint64_t seq = meta->Sequence.Stream, cseq = meta->Sequence.Consumer;
  const int64_t stored = meta->Timestamp;
  jsMsgMetaData_Destroy(meta);
  if (cseq != last_consumer_seq_ + 1)
    throw NatsError("consumer " + consumer_ + " delivered its message " + std::to_string(cseq) + " after " +
                        std::to_string(last_consumer_seq_) + ": deliveries were lost",
                    NATS_MISMATCH, static_cast<jsErrCode>(0));
  last_consumer_seq_ = cseq;
  ++inflight_;
  Counters::raise(sh_.counts.max_inflight, inflight_);
  sh_.counts.messages.fetch_add(1, std::memory_order_relaxed);
  if (seq <= last_seq_) return;  // a redelivery of a message handled already
  last_seq_ = seq;
  if (const char* reply = natsMsg_GetReply(m)) last_reply_ = reply;

  // "value epoch" for the series the subject names, or Graphite lines.
  const std::string_view subject = natsMsg_GetSubject(m);
  const std::string_view data(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
  size_t part = 0;
  std::string_view suffix;
  scratch_.clear();
  if (parse_value_subject(subject, sh_.cfg.subject, sh_.cfg.partitions, &part, &suffix) && one_point(data))
    scratch_.append(suffix).push_back(' ');
  scratch_.append(data);
  if (scratch_.empty() || scratch_.back() != '\n') scratch_.push_back('\n');

  t_message_epoch = stored / 1'000'000'000;
  at_ = Pos{seq, 0};
  scores_.clear();
  parser_.feed(
      std::span<const char>(scratch_.data(), scratch_.size()),
      [this](std::string_view path, double value, int64_t epoch) { score(path, value, epoch); },
      [this, seq, subject](GraphiteError kind, std::string_view detail) {
        if (logged_malformed_ < kLogMalformed && ++logged_malformed_)
          sh_.say("partition " + std::to_string(p_) + ": message " + std::to_string(seq) + " on " +
                  std::string(subject) + ": " + std::string(graphite_error_name(kind)) + ": " + std::string(detail));
      });
  const GraphiteStats gs = parser_.stats();
  // A message with no value, no error and no nan (blank) is malformed too.
  const bool empty = gs.points == points_seen_ && gs.errors == errors_seen_ && gs.nan_values == nans_seen_;
  if (empty && logged_malformed_ < kLogMalformed && ++logged_malformed_)
    sh_.say("partition " + std::to_string(p_) + ": message " + std::to_string(seq) + " on " + std::string(subject) +
            " holds no value");
  points_seen_ = gs.points;
  sh_.counts.malformed.fetch_add(gs.errors - errors_seen_ + local_.wrong_partition + (empty ? 1 : 0),
                                 std::memory_order_relaxed);
  sh_.counts.nan_values.fetch_add(gs.nan_values - nans_seen_, std::memory_order_relaxed);
  errors_seen_ = gs.errors;
  nans_seen_ = gs.nan_values;
  add_counts();
  if (!scores_.empty()) {
    char id[96];
    std::snprintf(id, sizeof id, "%s:%llu", sh_.cfg.stream.c_str(), static_cast<unsigned long long>(seq));
    publish_output(score_subject_, scores_, id);
  }
}

void PartitionConsumer::add_counts() {
  auto add = [](std::atomic<uint64_t>& to, uint64_t& n) {
    if (n) to.fetch_add(std::exchange(n, 0), std::memory_order_relaxed);
  };
  add(sh_.counts.points, local_.points);
  add(sh_.counts.replayed, local_.replayed);
  add(sh_.counts.repeats, local_.repeats);
  add(sh_.counts.out_of_order, local_.out_of_order);
  add(sh_.counts.events, local_.events);
  add(sh_.counts.wrong_partition, local_.wrong_partition);
}

void PartitionConsumer::score(std::string_view path, double value, int64_t epoch) {
  const Pos pos = at_;
  ++at_.point;
  if (detect::partition_of(path, sh_.cfg.partitions) != p_) {
    ++local_.wrong_partition;
    if (logged_malformed_ < kLogMalformed && ++logged_malformed_)
      sh_.say("partition " + std::to_string(p_) + ": message " + std::to_string(pos.seq) + ": series '" +
              std::string(path) + "' belongs to partition " +
              std::to_string(detect::partition_of(path, sh_.cfg.partitions)) +
              ": not scored (a publisher that "
              "partitions otherwise than ssm's FNV-1a of the name)");
    return;
  }
  auto it = table_.find(path);
  if (it == table_.end()) {
    size_t n = sh_.counts.series.load(std::memory_order_relaxed);
    do {
      if (n >= sh_.cfg.max_series) {
        const uint64_t refused = sh_.counts.refused.fetch_add(1, std::memory_order_relaxed) + 1;
        if (refused <= 10 || refused % 10000 == 0)
          sh_.say("refused new series '" + std::string(path) + "': --max-series (" +
                  std::to_string(sh_.cfg.max_series) + ") reached (" + std::to_string(refused) + " refused values)");
        return;
      }
    } while (!sh_.counts.series.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    it = table_.emplace(std::string(path), Rec{sh_.det.new_series(), Pos{}, false}).first;
  }
  Rec& r = it->second;
  if (pos <= r.pos) {  // the checkpoint holds this value already
    ++local_.replayed;
    return;
  }
  const DetectorResult res = sh_.det.update(r.state, epoch, value);
  r.pos = pos;
  if (!r.dirty) {
    r.dirty = true;
    dirty_.emplace_back(it->first, &r);
  }
  ++local_.points;
  if (res.kind == PointKind::repeat) ++local_.repeats;
  if (res.kind == PointKind::out_of_order) ++local_.out_of_order;
  detect::append_score_line(scores_, sh_.cfg.score_prefix, path, res.score, epoch, 0);
  if (res.kind != PointKind::repeat && res.score >= sh_.cfg.event_threshold) {
    ++local_.events;
    event_.clear();
    detect::append_event_line(event_, path, epoch, value, res);
    if (sh_.events_out) sh_.events_out(event_);
    char id[112];
    std::snprintf(id, sizeof id, "%s:%llu:%u", sh_.cfg.stream.c_str(), static_cast<unsigned long long>(pos.seq),
                  pos.point);
    publish_output(sh_.names.event_subject(path), event_, id);
  }
}

void PartitionConsumer::publish_output(const std::string& subject, std::string_view data, const char* id) {
  if (sh_.cfg.out_stream.empty()) {
    check(natsConnection_Publish(sh_.conn.get(), subject.c_str(), data.data(), static_cast<int>(data.size())),
          "cannot publish to " + subject);
    return;
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id;
  for (;;) {
    const natsStatus s = js_.publish_async(subject.c_str(), data.data(), static_cast<int>(data.size()), &po);
    if (s == NATS_OK) return;
    // Stalled at kMaxPendingOutputs: the stream is slow to acknowledge; wait.
    if (s != NATS_TIMEOUT || stopping() || !sh_.conn.connected()) check(s, "cannot publish to " + subject);
  }
}

void PartitionConsumer::on_publish_error(jsCtx*, jsPubAckErr* pae, void* closure) {
  auto* self = static_cast<PartitionConsumer*>(closure);
  std::lock_guard<std::mutex> g(self->failed_mu_);
  if (self->failed_.empty()) {
    const char* subject = pae->Msg ? natsMsg_GetSubject(pae->Msg) : nullptr;
    self->failed_ = std::string("a publish to ") + (subject ? subject : "?") +
                    " was not stored: " + (pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
  }
  self->publish_failed_.store(true, std::memory_order_release);
}

// ------------------------------------------------------------ checkpoints

// Waits for the acknowledgements in slices, so that a lost connection or an
// abort ends the wait at once.
void PartitionConsumer::wait_stored(const JetStream& js, const char* what) {
  const std::string failed =
      std::string("the ") + what + " of partition " + std::to_string(p_) + " were not all stored";
  natsStatus s = NATS_TIMEOUT;
  for (int64_t waited = 0; s == NATS_TIMEOUT && waited < kPublishWaitMs; waited += 100) {
    if (stopping() || !sh_.conn.connected()) fail_nats(failed, NATS_CONNECTION_DISCONNECTED);
    s = js.complete(100);
  }
  if (s != NATS_OK) fail_nats(failed, s);
  if (publish_failed_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> g(failed_mu_);
    throw NatsError(failed_, NATS_ERR, static_cast<jsErrCode>(0));
  }
}

// The series changed so far (all of them when the log has grown past twice
// the partition's state: the log then starts anew) are written a chunk at
// a time between fetches, so that scoring goes on; the commit then covers
// every value up to the last message handled now.
void PartitionConsumer::begin_checkpoint() {
  const uint64_t live = table_.size() * (state_bytes_ + 64);
  ck_ = CheckpointRun{};
  ck_.active = true;
  ck_.full = commit_.log_bytes > 2 * live + kChunkBytes;
  ck_.seq = last_seq_;
  ck_.reply = last_reply_;
  ck_.inflight = inflight_;
  if (ck_.full) {
    ck_.set.reserve(table_.size());
    for (auto& [name, r] : table_) ck_.set.emplace_back(name, &r);
  } else {
    ck_.set.swap(dirty_);
  }
  // Changed from here on: the next checkpoint's.
  for (auto& [name, r] : ck_.set) r->dirty = false;
  dirty_.clear();
}

// One chunk of the run under way; the commit after the last.
void PartitionConsumer::checkpoint_step() {
  // A record may hold a value only once that value's score is stored: if
  // this owner died, the next would skip the value and its score be lost.
  if (sh_.cfg.out_stream.empty())
    check(natsConnection_FlushTimeout(sh_.conn.get(), kPublishWaitMs), "cannot flush the scores");
  else
    wait_stored(js_, "scores and events");
  ChunkWriter w(static_cast<uint32_t>(p_));
  for (; ck_.at < ck_.set.size() && w.bytes() < kChunkBytes; ++ck_.at) {
    const auto& [name, r] = ck_.set[ck_.at];
    w.add(r->pos, name, sh_.det.save(r->state));
  }
  if (w.count() > 0) {
    std::vector<uint8_t> chunk = w.take();
    for (;;) {
      const natsStatus s =
          chunk_js_.publish_async(chunk_subject_.c_str(), chunk.data(), static_cast<int>(chunk.size()), nullptr);
      if (s == NATS_OK) break;
      if (s != NATS_TIMEOUT || stopping() || !sh_.conn.connected()) check(s, "cannot publish a checkpoint chunk");
    }
    ck_.bytes += chunk.size();
    ++ck_.chunks;
  }
  if (ck_.at < ck_.set.size()) return;
  wait_stored(chunk_js_, "checkpoint chunks");

  // The commit, then the ack of everything it covers.
  Commit c;
  c.seq = ck_.seq;
  c.base = ck_.full ? commit_seq_ + 1 : commit_.base;
  c.owner = sh_.instance;
  c.series = table_.size();
  c.chunks = (ck_.full ? 0 : commit_.chunks) + ck_.chunks;
  c.log_bytes = (ck_.full ? 0 : commit_.log_bytes) + ck_.bytes;
  commit(c);
  if (!ck_.reply.empty()) natsConnection_PublishString(sh_.conn.get(), ck_.reply.c_str(), "+ACK");
  inflight_ -= ck_.inflight;
  last_checkpoint_ns_ = steady_ns();
  sh_.counts.checkpoints.fetch_add(1, std::memory_order_relaxed);
  sh_.counts.checkpoint_bytes.fetch_add(ck_.bytes, std::memory_order_relaxed);
  const bool full = ck_.full;
  ck_ = CheckpointRun{};
  if (full && c.base > 1) {
    // What the new log makes obsolete; a purge that fails leaves only garbage.
    auto purge = [this](const std::string& subject, uint64_t below, uint64_t keep) {
      jsOptions o;
      jsOptions_Init(&o);
      o.Stream.Purge.Subject = subject.c_str();
      o.Stream.Purge.Sequence = below;
      o.Stream.Purge.Keep = keep;
      return js_PurgeStream(js_.get(), sh_.cfg.state_stream.c_str(), &o, nullptr);
    };
    natsStatus ps = purge(chunk_subject_, c.base, 0);
    if (ps == NATS_OK) ps = purge(commit_subject_, 0, 1);
    if (ps != NATS_OK)
      sh_.say("partition " + std::to_string(p_) + ": old checkpoint chunks were not purged (" + describe(ps) +
              "); the next full checkpoint tries again");
  }
}

// At a release: the run under way finished, then one more for what came since.
void PartitionConsumer::last_checkpoint() {
  while (ck_.active && !stopping()) checkpoint_step();
  if (inflight_ == 0 && dirty_.empty()) return;
  begin_checkpoint();
  while (ck_.active && !stopping()) checkpoint_step();
}

void PartitionConsumer::commit(const Commit& c) {
  const std::string text = commit_json(c);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  if (commit_seq_ == 0)
    po.ExpectNoMessage = true;
  else
    po.ExpectLastSubjectSeq = commit_seq_;
  jsPubAck* pa = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s =
      js_Publish(&pa, js_.get(), commit_subject_.c_str(), text.data(), static_cast<int>(text.size()), &po, &code);
  PubAckPtr owned(pa);
  if (code == JSStreamWrongLastSequenceErr) throw Lost("committed by another instance meanwhile, which owns it now");
  check(s, "cannot commit partition " + std::to_string(p_), code);
  commit_seq_ = pa->Sequence;
  commit_ = c;
}

void PartitionConsumer::drop_series() {
  sh_.counts.series.fetch_sub(table_.size(), std::memory_order_relaxed);
  ck_ = CheckpointRun{};
  table_.clear();
  dirty_.clear();
}

void PartitionConsumer::rewind() {
  sh_.counts.rewinds.fetch_add(1, std::memory_order_relaxed);
  ck_ = CheckpointRun{};
  sub_.reset();
  js_.discard();
  chunk_js_.discard();
  drop_series();
  loaded_ = false;
  commit_ = Commit{};
  commit_seq_ = 0;
}

}  // namespace ssm::nats
