#pragma once
/// \file
/// CPU allocator tuning for training. A training step frees and reallocates the same large
/// activation buffers every iteration; glibc returns big blocks to the operating system and the
/// next step pays for page faults again. Keeping freed memory in the process removes that cost
/// (measured: +15% to +35% training throughput on SE-DenseNet-BC at 28x28 on 2 cores).

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace sedensenet {

/// Makes glibc keep freed memory for reuse: blocks up to 32 MiB come from the heap rather than
/// fresh mappings, and the heap is trimmed only above 1 GiB of free space. The process's resident
/// memory then stays near its peak instead of shrinking between steps. Returns false (and changes
/// nothing) on other C libraries.
inline bool keep_freed_memory() {
#if defined(__GLIBC__)
  constexpr int kMmapThreshold = 32 << 20;  // glibc's largest allowed value
  constexpr int kTrimThreshold = 1 << 30;
  constexpr int kTopPad = 64 << 20;
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 &&
         mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 && mallopt(M_TOP_PAD, kTopPad) == 1;
#else
  return false;
#endif
}

/// The same settings for another process (such as a Python reference run side by side), as the
/// GLIBC_TUNABLES environment value.
inline const char* keep_freed_memory_tunables() {
  return "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:"
         "glibc.malloc.top_pad=67108864";
}

}  // namespace sedensenet
