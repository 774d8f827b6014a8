#include "state_file.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "ssm/common.hpp"
#include "ssm/hash.hpp"

namespace ssm::detect {

namespace {

constexpr char kMagic[8] = {'S', 'S', 'M', 'D', 'S', 'T', 'S', '1'};

void put(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}

}  // namespace

void StateFileSegment::add(uint64_t seen, std::string_view name, std::span<const uint8_t> state) {
  starts_.emplace_back(seen, records_.size());
  const auto nl = static_cast<uint32_t>(name.size()), bl = static_cast<uint32_t>(state.size());
  put(records_, &nl, 4);
  put(records_, name.data(), nl);
  put(records_, &bl, 4);
  put(records_, state.data(), bl);
}

std::vector<uint8_t> merge_state_file(std::span<const StateFileSegment* const> parts) {
  size_t bytes = 24;
  uint64_t count = 0;
  for (const StateFileSegment* p : parts)
    if (p) {
      bytes += p->records_.size();
      count += p->count();
    }
  std::vector<uint8_t> out(kMagic, kMagic + sizeof(kMagic));
  out.reserve(bytes);
  put(out, &count, 8);
  // A k-way merge by `seen`: each part is in ascending order already.
  std::vector<size_t> next(parts.size(), 0);
  for (uint64_t done = 0; done < count; ++done) {
    size_t best = SIZE_MAX;
    for (size_t k = 0; k < parts.size(); ++k)
      if (parts[k] && next[k] < parts[k]->count() &&
          (best == SIZE_MAX || parts[k]->starts_[next[k]].first < parts[best]->starts_[next[best]].first))
        best = k;
    const StateFileSegment& p = *parts[best];
    const size_t i = next[best]++;
    const size_t from = p.starts_[i].second, to = i + 1 < p.count() ? p.starts_[i + 1].second : p.records_.size();
    put(out, p.records_.data() + from, to - from);
  }
  const uint64_t sum = fnv1a(out.data(), out.size());
  put(out, &sum, 8);
  return out;
}

std::vector<StateFileEntry> parse_state_file(std::span<const uint8_t> bytes, size_t max_name) {
  const uint8_t* p = bytes.data();
  const size_t n = bytes.size();
  require(n >= 24 && std::memcmp(p, kMagic, 8) == 0, "not a state file");
  uint64_t sum = 0, count = 0;
  std::memcpy(&sum, p + n - 8, 8);
  require(sum == fnv1a(p, n - 8), "checksum mismatch (damaged)");
  std::memcpy(&count, p + 8, 8);
  std::vector<StateFileEntry> entries;
  size_t at = 16;
  const size_t end = n - 8;
  for (uint64_t i = 0; i < count; ++i) {
    uint32_t nl = 0, bl = 0;
    require(at + 4 <= end, "truncated");
    std::memcpy(&nl, p + at, 4);
    at += 4;
    require(nl > 0 && nl <= max_name && at + nl + 4 <= end, "a bad series name");
    const std::string_view name(reinterpret_cast<const char*>(p + at), nl);
    at += nl;
    std::memcpy(&bl, p + at, 4);
    at += 4;
    require(bl <= end - at, "truncated");
    entries.push_back({name, bytes.subspan(at, bl)});
    at += bl;
  }
  require(at == end, "bytes after the last series");
  return entries;
}

std::vector<uint8_t> read_whole_file(const std::filesystem::path& path, int cancel_fd) {
  // Non-blocking open and poll: a FIFO with no writer neither blocks the
  // open nor reads as an early end of file, and cancel_fd can end the wait
  // at any moment (a stop during the restore).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail("cannot open " + path.string() + ": " + std::strerror(errno));
  auto failed = [&](const std::string& why) {
    ::close(fd);
    fail("cannot read " + path.string() + ": " + why);
  };
  std::vector<uint8_t> out;
  size_t have = 0;
  for (;;) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    const int n = ::poll(fds, cancel_fd >= 0 ? 2 : 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) failed(std::strerror(errno));
    if (cancel_fd >= 0 && fds[1].revents != 0) failed("cancelled");
    if (out.size() - have < (size_t{1} << 20)) out.resize(std::max(out.size() * 2, have + (size_t{1} << 20)));
    const ssize_t r = ::read(fd, out.data() + have, out.size() - have);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) failed(std::strerror(errno));
    if (r == 0) break;
    have += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(have);
  return out;
}

std::vector<std::pair<std::string, uintmax_t>> remove_stale_state_temps(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, uintmax_t>> removed;
  const std::string prefix = std::string(kStateFile) + ".tmp.";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    // "<pid>.<n>": the writer's process id decides whether it may still be writing.
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size();
    long pid = 0;
    const auto r = std::from_chars(first, last, pid);
    if (r.ec != std::errc() || r.ptr == last || *r.ptr != '.' || pid <= 0) continue;
    if (pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;  // still running
    std::error_code e2;
    const uintmax_t size = fs::file_size(e.path(), e2);
    if (fs::remove(e.path(), e2)) removed.emplace_back(e.path().string(), e2 ? 0 : size);
  }
  return removed;
}

}  // namespace ssm::detect
