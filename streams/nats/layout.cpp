// Subjects, checkpoint records, the streams' shapes and the ownership of
// the partitions.
#include "layout.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ssm/hash.hpp"

namespace ssm::nats {

namespace {

constexpr char kChunkMagic[8] = {'S', 'S', 'M', 'N', 'C', 'K', '0', '1'};
constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr int64_t kDay = 24 * 3600 * kNsPerSecond;

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  const auto* b = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), b, b + sizeof v);
}

// Reads little-endian fields off a chunk, each check naming what is cut short.
struct Reader {
  std::span<const uint8_t> bytes;
  size_t at = 0;
  template <class T>
  T get() {
    require(at + sizeof(T) <= bytes.size(), "truncated");
    T v;
    std::memcpy(&v, bytes.data() + at, sizeof v);
    at += sizeof v;
    return v;
  }
  std::span<const uint8_t> take(size_t n) {
    require(n <= bytes.size() - at, "truncated");
    auto s = bytes.subspan(at, n);
    at += n;
    return s;
  }
};

// A stream's info, or null when there is none; throws for other failures.
StreamInfoPtr stream_info(jsCtx* js, const std::string& name) {
  jsStreamInfo* si = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetStreamInfo(&si, js, name.c_str(), nullptr, &code);
  if (s == NATS_NOT_FOUND || code == JSStreamNotFoundErr) return nullptr;
  check(s, "cannot read stream " + name, code);
  return StreamInfoPtr(si);
}

bool has_subject(const jsStreamConfig& c, const std::string& subject) {
  for (int i = 0; i < c.SubjectsLen; ++i)
    if (c.Subjects[i] == subject || std::string_view(c.Subjects[i]) == ">") return true;
  return false;
}

std::string subjects_of(const jsStreamConfig& c) {
  std::string out;
  for (int i = 0; i < c.SubjectsLen; ++i) out += (i ? ", " : "") + std::string("'") + c.Subjects[i] + "'";
  return out.empty() ? "none" : out;
}

const char* retention_name(jsRetentionPolicy r) {
  return r == js_LimitsPolicy ? "limits" : r == js_InterestPolicy ? "interest" : "work queue";
}

// Creates a stream of `subject` (limits retention, file storage); another
// instance creating it at the same moment is no error.
void create_stream(jsCtx* js, const std::string& name, const std::string& subject, int64_t max_age_ns,
                   bool allow_direct, int64_t duplicates_ns) {
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char* subjects[] = {subject.c_str()};
  sc.Name = name.c_str();
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Retention = js_LimitsPolicy;
  sc.Storage = js_FileStorage;
  sc.MaxAge = max_age_ns;
  sc.AllowDirect = allow_direct;
  sc.Duplicates = duplicates_ns;
  jsStreamInfo* si = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s = js_AddStream(&si, js, &sc, nullptr, &code);
  jsStreamInfo_Destroy(si);
  if (code == JSStreamNameExistErr) return;
  check(s, "cannot create stream " + name + " (subjects '" + subject + "')", code);
}

}  // namespace

bool parse_value_subject(std::string_view subject, std::string_view root, size_t partitions, size_t* p,
                         std::string_view* suffix) {
  if (subject.size() < root.size() + 4 || subject.substr(0, root.size()) != root || subject[root.size()] != '.')
    return false;
  subject.remove_prefix(root.size() + 1);
  const size_t dot = subject.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == subject.size()) return false;
  if (subject[0] == '0' && dot > 1) return false;
  size_t v = 0;
  const auto r = std::from_chars(subject.data(), subject.data() + dot, v);
  if (r.ec != std::errc() || r.ptr != subject.data() + dot || v >= partitions) return false;
  *p = v;
  *suffix = subject.substr(dot + 1);
  return true;
}

// ------------------------------------------------------------ checkpoints

ChunkWriter::ChunkWriter(uint32_t partition) : partition_(partition) { take(); }

void ChunkWriter::add(Pos pos, std::string_view name, std::span<const uint8_t> state) {
  put(out_, pos.seq);
  put(out_, pos.point);
  put(out_, static_cast<uint32_t>(name.size()));
  out_.insert(out_.end(), name.begin(), name.end());
  put(out_, static_cast<uint32_t>(state.size()));
  out_.insert(out_.end(), state.begin(), state.end());
  ++count_;
}

std::vector<uint8_t> ChunkWriter::take() {
  std::vector<uint8_t> done;
  if (!out_.empty()) {
    std::memcpy(out_.data() + 12, &count_, 4);
    put(out_, fnv1a(out_.data(), out_.size()));
    done.swap(out_);
  }
  out_.assign(kChunkMagic, kChunkMagic + 8);
  put(out_, partition_);
  put(out_, uint32_t{0});  // the count, set by take()
  count_ = 0;
  return done;
}

std::vector<ChunkRecord> parse_chunk(std::span<const uint8_t> bytes, uint32_t partition) {
  require(bytes.size() >= 24 && std::memcmp(bytes.data(), kChunkMagic, 8) == 0, "not a checkpoint chunk");
  uint64_t sum = 0;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  require(sum == fnv1a(bytes.data(), bytes.size() - 8), "checksum mismatch (damaged)");
  Reader r{bytes.first(bytes.size() - 8), 8};
  const auto part = r.get<uint32_t>();
  require(part == partition, "a chunk of partition " + std::to_string(part) + ", not " + std::to_string(partition));
  const auto count = r.get<uint32_t>();
  std::vector<ChunkRecord> out;
  out.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    ChunkRecord rec;
    rec.pos.seq = r.get<uint64_t>();
    rec.pos.point = r.get<uint32_t>();
    const auto name = r.take(r.get<uint32_t>());
    require(!name.empty(), "an empty series name");
    rec.name = std::string_view(reinterpret_cast<const char*>(name.data()), name.size());
    rec.state = r.take(r.get<uint32_t>());
    out.push_back(rec);
  }
  require(r.at == r.bytes.size(), "bytes after the last record");
  return out;
}

std::string commit_json(const Commit& c) {
  return nlohmann::json{{"seq", c.seq},       {"base", c.base},     {"owner", c.owner},
                        {"series", c.series}, {"chunks", c.chunks}, {"log_bytes", c.log_bytes}}
      .dump();
}

Commit parse_commit(std::string_view text, const std::string& source) {
  try {
    const auto j = nlohmann::json::parse(text);
    Commit c;
    c.seq = j.at("seq").get<uint64_t>();
    c.base = j.at("base").get<uint64_t>();
    c.owner = j.at("owner").get<std::string>();
    c.series = j.value("series", uint64_t{0});
    c.chunks = j.value("chunks", uint64_t{0});
    c.log_bytes = j.value("log_bytes", uint64_t{0});
    return c;
  } catch (const nlohmann::json::exception& e) {
    fail(source + ": not a checkpoint commit: " + e.what());
  }
}

// ------------------------------------------------------------ streams and buckets

bool transient(const NatsError& e) {
  switch (e.status()) {
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
    case NATS_IO_ERROR:
      return true;
    default:
      break;
  }
  // Right after a restart JetStream answers for a while that it is not
  // ready, or not enabled, until it has recovered its streams.
  // A failure with no JetStream error code is the client's (a reply that
  // came back empty or cut short while the server went away).
  return e.code() == JSClusterNotAvailErr || e.code() == JSNotEnabledErr || e.code() == JSNotEnabledForAccountErr ||
         (e.status() == NATS_ERR && e.code() == 0);
}

void ensure_metrics_stream(jsCtx* js, const NatsConfig& cfg) {
  const std::string subject = cfg.subject + ".>";
  auto si = stream_info(js, cfg.stream);
  if (!si) return create_stream(js, cfg.stream, subject, kDay, false, 0);
  const jsStreamConfig& c = *si->Config;
  const std::string where = "stream " + cfg.stream + " (--nats-stream)";
  require(has_subject(c, subject), where + " takes subjects " + subjects_of(c) + ", not '" + subject +
                                       "' (--nats-subject): another stream of that name is in the way");
  require(c.Retention == js_LimitsPolicy, where + " has " + retention_name(c.Retention) +
                                              " retention: it needs limits retention, since a takeover replays "
                                              "values that were delivered but not yet checkpointed");
  require(c.MaxMsgsPerSubject <= 0, where + " keeps at most " + std::to_string(c.MaxMsgsPerSubject) +
                                        " messages per subject: that would discard values before they are scored");
}

void ensure_state_stream(jsCtx* js, const NatsConfig& cfg) {
  const std::string subject = cfg.state_stream + ".>";
  auto si = stream_info(js, cfg.state_stream);
  if (!si) return create_stream(js, cfg.state_stream, subject, 0, true, 0);
  const jsStreamConfig& c = *si->Config;
  const std::string where = "stream " + cfg.state_stream + " (--nats-state-stream)";
  require(has_subject(c, subject), where + " takes subjects " + subjects_of(c) + ", not '" + subject + "'");
  require(c.Retention == js_LimitsPolicy,
          where + " has " + std::string(retention_name(c.Retention)) + " retention; checkpoints need limits retention");
  require(c.MaxAge <= 0, where + " expires messages after " +
                             seconds_text(static_cast<double>(c.MaxAge) / kNsPerSecond) +
                             ": checkpoints must not expire (max age 0)");
  require(c.MaxMsgs <= 0 && c.MaxBytes <= 0 && c.MaxMsgsPerSubject <= 0,
          where + " has a message or byte limit: checkpoints must not be discarded");
  require(c.AllowDirect, where + " does not allow direct gets (allow_direct), which a takeover reads checkpoints with");
}

void ensure_out_stream(jsCtx* js, const NatsConfig& cfg) {
  if (cfg.out_stream.empty()) return;
  const std::string subject = cfg.out_subject + ".>";
  auto si = stream_info(js, cfg.out_stream);
  if (!si) return create_stream(js, cfg.out_stream, subject, kDay, false, 120 * kNsPerSecond);
  const jsStreamConfig& c = *si->Config;
  const std::string where = "stream " + cfg.out_stream + " (--nats-out-stream)";
  require(has_subject(c, subject),
          where + " takes subjects " + subjects_of(c) + ", not '" + subject + "' (--nats-out-subject)");
  require(c.Duplicates >= 10 * kNsPerSecond,
          where + " has a duplicate window of " + seconds_text(static_cast<double>(c.Duplicates) / kNsPerSecond) +
              ": at least 10 s are needed to drop the scores a takeover replays (2 min is the default)");
}

KvPtr ensure_lease_bucket(jsCtx* js, const NatsConfig& cfg) {
  const auto ttl = static_cast<int64_t>(std::llround(cfg.lease_seconds * 1000)) * 1'000'000;
  const std::string where = "KV bucket " + cfg.bucket + " (--nats-bucket)";
  if (auto si = stream_info(js, "KV_" + cfg.bucket)) {
    const jsStreamConfig& c = *si->Config;
    require(c.MaxMsgsPerSubject == 1,
            where + " keeps " + std::to_string(c.MaxMsgsPerSubject) + " values per key; leases need a history of 1");
    require(c.MaxAge == ttl, where + " has a TTL of " + seconds_text(static_cast<double>(c.MaxAge) / kNsPerSecond) +
                                 ", but --nats-lease-ttl is " + seconds_text(static_cast<double>(ttl) / kNsPerSecond) +
                                 ": every instance of a cluster needs the same lease TTL");
    kvStore* kv = nullptr;
    check(js_KeyValue(&kv, js, cfg.bucket.c_str()), "cannot open " + where);
    return KvPtr(kv);
  }
  kvConfig kc;
  kvConfig_Init(&kc);
  kc.Bucket = cfg.bucket.c_str();
  kc.History = 1;
  kc.TTL = ttl;
  kc.StorageType = js_FileStorage;
  kvStore* kv = nullptr;
  check(js_CreateKeyValue(&kv, js, &kc), "cannot create " + where);
  return KvPtr(kv);
}

void ensure_cluster_config(jsCtx* js, const NatsConfig& cfg, const std::string& detector_id) {
  const Layout names(cfg);
  const nlohmann::json mine = {{"partitions", cfg.partitions},
                               {"stream", cfg.stream},
                               {"subject", cfg.subject},
                               {"out_subject", cfg.out_subject},
                               {"detector", detector_id}};
  const std::string subject = names.config_subject();
  for (int attempt = 0; attempt < 2; ++attempt) {
    natsMsg* got = nullptr;
    jsDirectGetMsgOptions o;
    jsDirectGetMsgOptions_Init(&o);
    o.LastBySubject = subject.c_str();
    const natsStatus s = js_DirectGetMsg(&got, js, cfg.state_stream.c_str(), nullptr, &o);
    MsgPtr owned(got);
    if (s == NATS_OK) {
      nlohmann::json theirs;
      try {
        theirs = nlohmann::json::parse(std::string_view(natsMsg_GetData(got), natsMsg_GetDataLength(got)));
      } catch (const nlohmann::json::exception& e) {
        fail(subject + " in stream " + cfg.state_stream + " is not this cluster's config: " + e.what());
      }
      const std::pair<const char*, const char*> fields[] = {{"partitions", "--nats-partitions"},
                                                            {"stream", "--nats-stream"},
                                                            {"subject", "--nats-subject"},
                                                            {"out_subject", "--nats-out-subject"},
                                                            {"detector", "--model / --config"}};
      for (const auto& [key, flag] : fields)
        require(theirs.value(key, nlohmann::json()) == mine[key],
                "the cluster of state stream " + cfg.state_stream + " was made with " + key + " " +
                    theirs.value(key, nlohmann::json()).dump() + ", this instance has " + mine[key].dump() + " (" +
                    flag + "); a cluster keeps these for its life (another --nats-state-stream starts a new one)");
      return;
    }
    if (s != NATS_NOT_FOUND) check(s, "cannot read " + subject + " in stream " + cfg.state_stream);
    // None yet: write it, unless another instance does so first.
    const std::string text = mine.dump();
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.ExpectNoMessage = true;
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus ps =
        js_Publish(nullptr, js, subject.c_str(), text.data(), static_cast<int>(text.size()), &po, &code);
    if (ps == NATS_OK) return;
    if (code != JSStreamWrongLastSequenceErr) check(ps, "cannot write " + subject, code);
  }
  fail("cannot settle " + subject + " in stream " + cfg.state_stream);
}

// ------------------------------------------------------------ ownership

std::vector<size_t> assign_partitions(std::span<const std::string> members, size_t partitions) {
  std::vector<size_t> owner(partitions, 0);
  const size_t m = members.size();
  if (m <= 1) return owner;
  // Every (partition, member) pair by its weight, heaviest first; each
  // partition goes to the first member of its pairs that has room.
  struct Pair {
    uint64_t weight;
    uint32_t p, member;
  };
  std::vector<Pair> pairs;
  pairs.reserve(partitions * m);
  for (size_t p = 0; p < partitions; ++p) {
    const std::string tag = "/" + std::to_string(p);
    for (size_t i = 0; i < m; ++i)
      pairs.push_back({fnv1a(tag, fnv1a(members[i])), static_cast<uint32_t>(p), static_cast<uint32_t>(i)});
  }
  std::sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) {
    return a.weight != b.weight ? a.weight > b.weight : a.p != b.p ? a.p < b.p : a.member < b.member;
  });
  // Each member takes floor(partitions / m), the first partitions % m to
  // get there one more.
  const size_t floor = partitions / m;
  size_t extra = partitions % m;
  std::vector<size_t> load(m, 0);
  std::vector<bool> placed(partitions, false);
  for (const Pair& x : pairs) {
    if (placed[x.p]) continue;
    size_t& l = load[x.member];
    if (l < floor || (l == floor && extra > 0)) {
      if (l == floor) --extra;
      owner[x.p] = x.member;
      placed[x.p] = true;
      ++l;
    }
  }
  return owner;
}

}  // namespace ssm::nats
