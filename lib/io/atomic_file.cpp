#include "ssm/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "ssm/common.hpp"

namespace ssm {

namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

void atomic_write_file(const std::filesystem::path& path, std::span<const uint8_t> bytes) {
  static std::atomic<uint64_t> counter{0};
  const std::string target = path.string();
  const std::string tmp = target + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot write " + target + ": cannot create " + tmp + ": " + errno_text());
  auto abandon = [&](const std::string& what) {
    const std::string reason = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot write " + target + ": " + what + ": " + reason);
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) abandon("write to " + tmp + " failed");
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) abandon("fsync of " + tmp + " failed");
  if (::close(fd) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp.c_str());
    fail("cannot write " + target + ": close of " + tmp + " failed: " + reason);
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp.c_str());
    fail("cannot write " + target + ": rename from " + tmp + " failed: " + reason);
  }
  // Make the rename itself durable; some file systems refuse to fsync a
  // directory, which loses nothing already written.
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void atomic_write_file(const std::filesystem::path& path, std::string_view text) {
  atomic_write_file(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace ssm
