#pragma once
/// \file
/// Thread-count set-up. LibTorch may start with one intra-op thread (Debian's does), and with one
/// thread and small batches LibTorch 1.13 also routes many convolutions to a slow non-oneDNN path,
/// so every program of this project sets the count explicitly.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <system_error>
#include <thread>
#include <vector>

namespace sedensenet {

/// Number of cores the machine reports (at least 1).
inline int hardware_threads() {
  return std::max(1u, std::thread::hardware_concurrency());
}

/// Sets LibTorch's intra-op thread count: `threads` > 0 sets that many, 0 means one per core.
/// Returns the count in effect.
///
/// Example:
/// ```
/// sedensenet::set_num_threads(0);  // use every core
/// ```
inline int set_num_threads(int threads = 0);

/// The most threads LibTorch or a worker pool is given: 4x the cores. More only costs memory and
/// switching, and a count from a file (a config's `"workers": 1000000`) must not start threads
/// without bound.
inline int max_threads() { return 4 * hardware_threads(); }

/// `requested` threads (0: one per core), capped at `max_threads()` with a warning on stderr that
/// names `what` (e.g. "--workers").
inline int thread_count(int64_t requested, const char* what) {
  TORCH_CHECK(requested >= 0, what, " must be >= 0 (0 = one per core), got ", requested);
  if (requested == 0) return hardware_threads();
  if (requested > max_threads()) {
    std::fprintf(stderr, "warning: %s %lld is more than 4x the %d cores; using %d\n", what,
                 static_cast<long long>(requested), hardware_threads(), max_threads());
    return max_threads();
  }
  return static_cast<int>(requested);
}

/// Runs `work` on `count` threads, the calling thread being one of them, and waits for all.
/// `work` must share its work out itself (a shared counter): when the system refuses to start a
/// thread (std::system_error at its thread limit), the threads that did start do it all, instead
/// of the process ending in std::terminate.
template <typename F>
void run_on_threads(int count, const F& work) {
  std::vector<std::thread> pool;
  for (int t = 1; t < count; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error&) {
      break;
    }
  }
  work();
  for (auto& t : pool) t.join();
}

/// Sets LibTorch's intra-op thread count: `threads` > 0 sets that many (at most `max_threads()`,
/// with a warning), 0 means one per core. Returns the count in effect.
///
/// Example:
/// ```
/// sedensenet::set_num_threads(0);  // use every core
/// ```
inline int set_num_threads(int threads) {
  at::set_num_threads(thread_count(threads, "threads"));
  return at::get_num_threads();
}

}  // namespace sedensenet
