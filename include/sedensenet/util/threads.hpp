#pragma once
/// \file
/// Thread-count set-up. LibTorch may start with one intra-op thread (Debian's does), and with one
/// thread and small batches LibTorch 1.13 also routes many convolutions to a slow non-oneDNN path,
/// so every program of this project sets the count explicitly.

#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

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
inline int set_num_threads(int threads = 0) {
  TORCH_CHECK(threads >= 0, "threads must be >= 0 (0 = one per core), got ", threads);
  at::set_num_threads(threads == 0 ? hardware_threads() : threads);
  return at::get_num_threads();
}

}  // namespace sedensenet
