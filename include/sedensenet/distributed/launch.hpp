#pragma once
/// \file
/// A launcher for one machine's share of a distributed job (what torchrun does, for our
/// programs): starts N worker processes with MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
/// LOCAL_RANK and LOCAL_WORLD_SIZE set, forwards SIGINT/SIGTERM to them, and returns the first
/// failing worker's exit status. POSIX only.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace sedensenet::distributed {

/// What `launch` starts.
struct LaunchOptions {
  /// Worker processes on this machine.
  int64_t nproc = 2;
  /// Machines in the job, and this machine's index (rank = node_rank * nproc + local rank).
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  /// Rendezvous host (the machine of node 0) and port; port 0 picks a free loopback port (one
  /// machine only).
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  /// After a worker fails, how long the others get to stop by themselves (they notice within
  /// their collective timeout) before they are terminated.
  std::chrono::milliseconds grace = std::chrono::seconds(60);
  /// The program each worker runs and its arguments (argv[0] first).
  std::string executable = "/proc/self/exe";
  std::vector<std::string> arguments;
  /// More NAME=VALUE entries for the workers' environment.
  std::vector<std::string> extra_environment;
  /// Print a line to stderr when a worker fails.
  bool verbose = true;
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("free_loopback_port: socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("free_loopback_port: " + error);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace detail {
inline std::vector<pid_t>& launched_workers() {
  static std::vector<pid_t> pids;
  return pids;
}
inline volatile sig_atomic_t& forwarded_signal() {
  static volatile sig_atomic_t signal = 0;
  return signal;
}
extern "C" inline void forward_signal_to_workers(int signal) {
  if (signal == SIGINT || signal == SIGTERM) forwarded_signal() = signal;
  for (const pid_t pid : launched_workers()) {
    if (pid > 0) ::kill(pid, signal);
  }
}
inline std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int s = WTERMSIG(status);
    return "was killed by signal " + std::to_string(s) + " (" + ::strsignal(s) + ")";
  }
  return "stopped";
}
inline int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}
}  // namespace detail

/// Starts `options.nproc` workers and waits for them. Returns 0 when every worker exits with 0,
/// otherwise the exit status of the first that failed (128 + signal when it was killed).
/// Workers are in their own process group (a terminal's Ctrl-C reaches them once, through the
/// launcher) and, on Linux, get SIGTERM if the launcher dies.
inline int launch(const LaunchOptions& options) {
  if (options.nproc < 1) throw std::invalid_argument("--nproc must be >= 1, got " + std::to_string(options.nproc));
  if (options.nnodes < 1 || options.node_rank < 0 || options.node_rank >= options.nnodes) {
    throw std::invalid_argument("--node-rank " + std::to_string(options.node_rank) +
                                " must be in [0, --nnodes) with --nnodes " + std::to_string(options.nnodes));
  }
  int port = options.master_port;
  if (port == 0) {
    if (options.nnodes > 1) {
      throw std::invalid_argument("a job on " + std::to_string(options.nnodes) +
                                  " machines needs --master-port (the same on every machine)");
    }
    port = free_loopback_port();
  }
  const int64_t world = options.nproc * options.nnodes;

  // Everything the children need is built before fork: after it only exec-safe calls are made.
  std::vector<std::string> base_env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const auto name = entry.substr(0, entry.find('='));
    if (name == "MASTER_ADDR" || name == "MASTER_PORT" || name == "RANK" || name == "WORLD_SIZE" ||
        name == "LOCAL_RANK" || name == "LOCAL_WORLD_SIZE") {
      continue;
    }
    base_env.push_back(entry);
  }
  std::vector<char*> argv;
  for (const auto& a : options.arguments) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  auto& pids = detail::launched_workers();
  pids.assign(static_cast<size_t>(options.nproc), -1);
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(options.nproc));
  std::vector<std::vector<char*>> envps(static_cast<size_t>(options.nproc));
  for (int64_t i = 0; i < options.nproc; ++i) {
    auto& env = envs[static_cast<size_t>(i)];
    env = base_env;
    env.push_back("MASTER_ADDR=" + options.master_addr);
    env.push_back("MASTER_PORT=" + std::to_string(port));
    env.push_back("RANK=" + std::to_string(options.node_rank * options.nproc + i));
    env.push_back("WORLD_SIZE=" + std::to_string(world));
    env.push_back("LOCAL_RANK=" + std::to_string(i));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(options.nproc));
    for (const auto& extra : options.extra_environment) env.push_back(extra);
    for (auto& e : env) envps[static_cast<size_t>(i)].push_back(const_cast<char*>(e.c_str()));
    envps[static_cast<size_t>(i)].push_back(nullptr);
  }
  struct sigaction forward {}, old_int{}, old_term{};
  forward.sa_handler = detail::forward_signal_to_workers;
  sigemptyset(&forward.sa_mask);
  ::sigaction(SIGINT, &forward, &old_int);
  ::sigaction(SIGTERM, &forward, &old_term);
  detail::forwarded_signal() = 0;
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  for (int64_t i = 0; i < options.nproc; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      detail::forward_signal_to_workers(SIGTERM);
      throw std::runtime_error(std::string("could not start a worker process: ") + std::strerror(errno));
    }
    if (pid == 0) {
      ::setpgid(0, 0);
#if defined(__linux__)
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
#endif
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(SIGINT, &dfl, nullptr);
      ::sigaction(SIGTERM, &dfl, nullptr);
      ::execve(options.executable.c_str(), argv.data(), envps[static_cast<size_t>(i)].data());
      static const char message[] = "sedensenet: could not start a worker (execve failed)\n";
      [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, message, sizeof message - 1);
      ::_exit(127);
    }
    pids[static_cast<size_t>(i)] = pid;
  }

  int result = 0;
  int64_t running = options.nproc;
  bool failed = false, terminated = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (pids[i] != pid) continue;
        pids[i] = -1;
        --running;
        if (detail::exit_code(status) != 0 && !failed) {
          failed = true;
          result = detail::exit_code(status);
          deadline = std::chrono::steady_clock::now() + options.grace;
          // Workers that stop because they were asked to (Ctrl-C, SIGTERM) are not a failure to report.
          const bool asked = detail::forwarded_signal() != 0 && result == 128 + detail::forwarded_signal();
          if (options.verbose && !asked) {
            std::fprintf(stderr, "sedensenet: rank %lld (pid %d) %s; %lld other worker(s) still running\n",
                         static_cast<long long>(options.node_rank * options.nproc + static_cast<int64_t>(i)),
                         static_cast<int>(pid), detail::describe_status(status).c_str(),
                         static_cast<long long>(running));
            std::fflush(stderr);
          }
        }
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    const auto now = std::chrono::steady_clock::now();
    if (failed && now > deadline) {
      if (options.verbose && !terminated) {
        std::fprintf(stderr, "sedensenet: the remaining workers did not stop within %.0f s of the "
                     "failure; terminating them\n",
                     std::chrono::duration<double>(options.grace).count());
      }
      detail::forward_signal_to_workers(terminated ? SIGKILL : SIGTERM);
      terminated = true;
      deadline = now + std::chrono::seconds(5);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  pids.clear();
  return result;
}

}  // namespace sedensenet::distributed
