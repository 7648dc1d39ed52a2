#pragma once
/// \file
/// CPU memory for training: `keep_freed_memory()`. A training step frees and allocates the same
/// large activation blocks every iteration. Left to the C library, big blocks go back to the
/// operating system and come back as page faults in every step, or, kept in glibc's heap, they
/// fragment it: the shared-storage dense blocks held about twice their live tensors as process
/// memory that way. The library's pool keeps freed blocks resident and places them best fit in one
/// range, so that the process holds little more than the step's peak of live tensors.

#include <cstdint>

namespace sedensenet {

/// Sets up CPU memory for training; call once, early (before the model is built), in a program
/// that trains on the CPU. Two parts:
/// - CPU tensors of 128 KiB and more come from the library's pool: freed blocks stay in the process
///   for reuse (no page faults in the next step) and are placed best fit with their free
///   neighbours merged, so the process's memory stays near the peak of live tensors;
/// - smaller blocks stay with glibc's malloc, told to keep freed memory too (blocks up to 32 MiB
///   from the heap, trimmed only above 1 GiB free).
/// The pool is off under AddressSanitizer (large tensors keep its checks) and off other C
/// libraries and systems than Linux. Returns whether anything was set. Idempotent; `sedensenet
/// train` calls it. Counted by `MemoryTracker` either way.
bool keep_freed_memory();

/// What the CPU pool holds: `touched_bytes` (the part of its range ever used: resident unless
/// trimmed), `allocated_bytes` (live blocks now), `peak_allocated_bytes` and `reserved_bytes`
/// (address space, not memory). All 0 when the pool is not installed.
struct CpuPoolStats {
  int64_t touched_bytes = 0;
  int64_t allocated_bytes = 0;
  int64_t peak_allocated_bytes = 0;
  int64_t reserved_bytes = 0;
};
CpuPoolStats cpu_pool_stats();

/// Returns the pool's free blocks to the operating system (they stay usable: the next use costs
/// page faults). For a program that trains and then does something else; returns the bytes given
/// back.
int64_t trim_cpu_pool();

/// glibc's part of `keep_freed_memory()` for another process (such as a Python reference run side
/// by side), as the GLIBC_TUNABLES environment value. The pool itself is this library's.
inline const char* keep_freed_memory_tunables() {
  return "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:"
         "glibc.malloc.top_pad=67108864";
}

}  // namespace sedensenet
