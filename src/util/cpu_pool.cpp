// The pooled CPU allocator behind `keep_freed_memory()` (see sedensenet/util/allocator.hpp for
// what it is for and what it measured). Blocks of at least `kPooledBytes` come from one reserved
// range of address space, best fit, split and coalesced; smaller ones go to the allocator it
// replaced (glibc's malloc through c10).
#include "sedensenet/util/allocator.hpp"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

#include "sedensenet/util/memory.hpp"

// Under AddressSanitizer the pool stays off, so that large tensors keep its checks.
#if defined(__SANITIZE_ADDRESS__)
#define SEDENSENET_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SEDENSENET_ASAN 1
#endif
#endif

namespace sedensenet {
namespace detail {
namespace {

constexpr size_t kPooledBytes = size_t{128} << 10;  // smaller blocks: the C library's malloc
constexpr size_t kGranule = 4096;                  // block sizes and addresses: whole pages
constexpr size_t kCommitStep = size_t{64} << 20;   // address space made usable at a time

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/// One reserved range of address space (PROT_NONE until used, so it costs nothing), handed out
/// best fit. Freed blocks merge with free neighbours and stay resident: the next step reuses them
/// without page faults. Placement that reuses the lowest addresses keeps the touched part, which
/// is what the process holds, near the peak of live blocks.
class CpuPool final : public c10::Allocator {
 public:
  CpuPool(c10::Allocator* fallback, char* base, size_t reserved)
      : fallback_(fallback), base_(base), reserved_(reserved) {}

#if SEDENSENET_TORCH_AT_LEAST(2, 3)
  c10::DataPtr allocate(size_t bytes) override { return allocate_block(bytes); }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
#else
  c10::DataPtr allocate(size_t bytes) const override {
    return const_cast<CpuPool*>(this)->allocate_block(bytes);
  }
#endif
  c10::DeleterFnPtr raw_deleter() const override { return &CpuPool::release; }

  static CpuPool*& instance() {
    static CpuPool* self = nullptr;
    return self;
  }

  CpuPoolStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(top_), static_cast<int64_t>(in_use_bytes_),
            static_cast<int64_t>(peak_in_use_bytes_), static_cast<int64_t>(reserved_)};
  }

  int64_t trim() {
#if defined(__linux__)
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t released = 0;
    for (const auto& [offset, size] : free_by_offset_) {
      if (madvise(base_ + offset, size, MADV_DONTNEED) == 0) released += static_cast<int64_t>(size);
    }
    return released;
#else
    return 0;
#endif
  }

 private:
  c10::DataPtr allocate_block(size_t bytes) {
    if (bytes < kPooledBytes) return fallback_->allocate(bytes);
    const size_t size = round_up(bytes, kGranule);
    size_t offset = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!take(size, &offset)) return fallback_->allocate(bytes);  // the range is full
      in_use_[offset] = size;
      in_use_bytes_ += size;
      peak_in_use_bytes_ = std::max(peak_in_use_bytes_, in_use_bytes_);
    }
    void* data = base_ + offset;
    return c10::DataPtr(data, data, &CpuPool::release, c10::Device(c10::DeviceType::CPU));
  }

  // Best fit among the free blocks, else the top of the used part; the caller holds the lock.
  bool take(size_t size, size_t* offset) {
    auto fit = free_by_size_.lower_bound({size, 0});
    if (fit != free_by_size_.end()) {
      const auto [free_size, free_offset] = *fit;
      free_by_size_.erase(fit);
      free_by_offset_.erase(free_offset);
      if (free_size > size) insert_free(free_offset + size, free_size - size);
      *offset = free_offset;
      return true;
    }
    // A free block that ends at the top grows into the untouched part.
    size_t start = top_;
    if (!free_by_offset_.empty()) {
      const auto last = std::prev(free_by_offset_.end());
      if (last->first + last->second == top_) {
        start = last->first;
        free_by_size_.erase({last->second, last->first});
        free_by_offset_.erase(last);
      }
    }
    if (start + size > reserved_ || !commit(start + size)) {
      if (start != top_) insert_free(start, top_ - start);
      return false;
    }
    top_ = start + size;
    *offset = start;
    return true;
  }

  // Makes [0, end) usable; the caller holds the lock.
  bool commit(size_t end) {
    if (end <= committed_) return true;
#if defined(__linux__)
    const size_t target = std::min(reserved_, round_up(end, kCommitStep));
    if (mprotect(base_ + committed_, target - committed_, PROT_READ | PROT_WRITE) != 0) {
      return false;
    }
    committed_ = target;
    return true;
#else
    return false;
#endif
  }

  void insert_free(size_t offset, size_t size) {
    free_by_offset_[offset] = size;
    free_by_size_.insert({size, offset});
  }

  static void release(void* data) {
    auto* self = instance();  // set before any block is handed out with this deleter
    auto* p = static_cast<char*>(data);
    if (p < self->base_ || p >= self->base_ + self->reserved_) {
      // A small block (or one made while the range was full): the fallback allocator's, freed
      // as it frees its raw allocations.
      self->fallback_->raw_deleter()(data);
      return;
    }
    std::lock_guard<std::mutex> lock(self->mutex_);
    size_t offset = static_cast<size_t>(p - self->base_);
    const auto used = self->in_use_.find(offset);
    TORCH_INTERNAL_ASSERT(used != self->in_use_.end(), "CpuPool: unknown block");
    size_t size = used->second;
    self->in_use_.erase(used);
    self->in_use_bytes_ -= size;
    // Merge with the free neighbours on both sides.
    auto next = self->free_by_offset_.find(offset + size);
    if (next != self->free_by_offset_.end()) {
      self->free_by_size_.erase({next->second, next->first});
      size += next->second;
      self->free_by_offset_.erase(next);
    }
    auto after = self->free_by_offset_.lower_bound(offset);
    if (after != self->free_by_offset_.begin()) {
      auto before = std::prev(after);
      if (before->first + before->second == offset) {
        self->free_by_size_.erase({before->second, before->first});
        offset = before->first;
        size += before->second;
        self->free_by_offset_.erase(before);
      }
    }
    self->insert_free(offset, size);
  }

  c10::Allocator* fallback_;
  char* base_;
  size_t reserved_;
  size_t committed_ = 0;
  size_t top_ = 0;  // everything above is untouched
  mutable std::mutex mutex_;
  std::map<size_t, size_t> free_by_offset_;         // offset -> size
  std::set<std::pair<size_t, size_t>> free_by_size_;  // (size, offset)
  std::unordered_map<size_t, size_t> in_use_;       // offset -> size
  size_t in_use_bytes_ = 0;
  size_t peak_in_use_bytes_ = 0;
};

// Address space to reserve: enough for any single machine's training, and free until used.
constexpr size_t kReservedBytes = size_t{1} << 40;  // 1 TiB of addresses, not memory

bool install_cpu_pool() {
#if defined(__linux__) && !defined(SEDENSENET_ASAN)
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (CpuPool::instance() != nullptr) return true;
  void* base = mmap(nullptr, kReservedBytes, PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return false;
  // Beneath the tensor counter when it is installed (it keeps counting every block), else in
  // place of the current allocator.
  auto* counter = CountingCpuAllocator::instance();
  const bool counted = counter != nullptr && c10::GetAllocator(c10::DeviceType::CPU) == counter;
  auto* pool = new CpuPool(counted ? counter->wrapped() : c10::GetAllocator(c10::DeviceType::CPU),
                           static_cast<char*>(base), kReservedBytes);
  CpuPool::instance() = pool;  // lives for the whole process, as the tensors it holds
  if (counted) {
    counter->set_wrapped(pool);
  } else {
    c10::SetAllocator(c10::DeviceType::CPU, pool, kTrackingAllocatorPriority);
  }
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace detail

bool keep_freed_memory() {
  bool tuned = false;
#if defined(__GLIBC__)
  constexpr int kMmapThreshold = 32 << 20;  // glibc's largest allowed value
  constexpr int kTrimThreshold = 1 << 30;
  constexpr int kTopPad = 64 << 20;
  tuned = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 &&
          mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 && mallopt(M_TOP_PAD, kTopPad) == 1;
#endif
  return detail::install_cpu_pool() || tuned;
}

CpuPoolStats cpu_pool_stats() {
  auto* pool = detail::CpuPool::instance();
  return pool != nullptr ? pool->stats() : CpuPoolStats{};
}

int64_t trim_cpu_pool() {
  auto* pool = detail::CpuPool::instance();
  return pool != nullptr ? pool->trim() : 0;
}

}  // namespace sedensenet
