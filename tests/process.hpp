// Runs a program (the ssm binary, jackd) from a test: the exit status, what it
// printed, and its peak memory; or a background child killed when its guard
// goes out of scope, so a failing test never leaves a server running.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ssm::testing {

struct RunResult {
  int status = -1;       // exit code, or 128 + signal
  std::string output;    // stdout and stderr together
  long peak_rss_kb = 0;  // the child's maximum resident set
};

// stdout and stderr go to `log_path`; stdout to `stdout_path` instead when
// given; stdin comes from `stdin_path` (default /dev/null).
inline pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path,
                   const std::vector<std::pair<std::string, std::string>>& env = {},
                   const std::string& stdin_path = "/dev/null", const std::string& stdout_path = "") {
  const pid_t pid = fork();
  if (pid == 0) {
    // Dies with the test process, whatever happens to it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (!stdout_path.empty()) {
      const int out = open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out >= 0) {
        dup2(out, 1);
        close(out);
      }
    }
    const int in = open(stdin_path.c_str(), O_RDONLY);
    if (in >= 0) {
      dup2(in, 0);
      close(in);
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// The full path of `name` on $PATH, "" when it is not there.
inline std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  const std::string p = path ? path : "/usr/bin:/bin";
  for (size_t start = 0; start <= p.size();) {
    const size_t end = p.find(':', start);
    const std::string dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const std::string cand = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (access(cand.c_str(), X_OK) == 0) return cand;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return "";
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

inline RunResult run(const std::vector<std::string>& argv,
                     const std::vector<std::pair<std::string, std::string>>& env = {},
                     const std::string& stdin_path = "/dev/null", const std::string& stdout_path = "") {
  const std::string log = "/tmp/ssm_test_run_" + std::to_string(getpid()) + ".log";
  RunResult r;
  const pid_t pid = spawn(argv, log, env, stdin_path, stdout_path);
  int st = 0;
  rusage ru{};
  if (wait4(pid, &st, 0, &ru) == pid) {
    r.status = decode_status(st);
    r.peak_rss_kb = ru.ru_maxrss;
  }
  r.output = read_text(log);
  unlink(log.c_str());
  return r;
}

// A background process, stopped (SIGTERM, then SIGKILL) when the guard dies.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log,
        const std::vector<std::pair<std::string, std::string>>& env = {})
      : log_(log), pid_(spawn(argv, log, env)) {}
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log() const { return log_; }
  // Still running?
  bool alive() {
    if (pid_ <= 0) return false;
    int st = 0;
    const pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = decode_status(st);
      pid_ = -1;
      return false;
    }
    return r == 0;
  }
  void signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Waits up to `seconds` for the exit; the exit status, or -1 on timeout.
  int wait(double seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (alive()) {
      if (std::chrono::steady_clock::now() > end) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }
  void stop() {
    if (!alive()) return;
    signal(SIGTERM);
    if (wait(3.0) == -1 && alive()) {
      signal(SIGKILL);
      wait(3.0);
    }
  }

 private:
  std::string log_;
  pid_t pid_;
  int status_ = -1;
};

}  // namespace ssm::testing
