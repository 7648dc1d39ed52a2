#pragma once
/// \file
/// Peak tensor memory over a region of code: `MemoryTracker`.
///
/// CPU: an allocator wrapper registered with c10 (`c10::SetAllocator`) counts the bytes of every
/// CPU tensor allocated after it is installed. Install it early (`install_cpu_memory_tracking()`,
/// or the first `MemoryTracker`) so the model's own tensors are counted too.
/// CUDA (LibTorch built with CUDA): the caching allocator's statistics for the device.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/types.h>
#include "sedensenet/util/torch_compat.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <unordered_map>

#if defined(SEDENSENET_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#endif

namespace sedensenet {
namespace detail {

/// Counts live bytes of CPU tensors; forwards the allocation itself to the allocator it replaced.
/// Pointers handed out have data == context (what `raw_allocate` users inside LibTorch require),
/// so the size and the original deleter of each block are kept in a table keyed by address.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* wrapped) : wrapped_(wrapped) {}

#if SEDENSENET_TORCH_AT_LEAST(2, 3)
  c10::DataPtr allocate(size_t bytes) override { return allocate_counted(bytes); }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
#else
  c10::DataPtr allocate(size_t bytes) const override { return allocate_counted(bytes); }
#endif
  c10::DeleterFnPtr raw_deleter() const override { return &CountingCpuAllocator::release; }

  int64_t current() const { return current_.load(std::memory_order_relaxed); }
  /// The allocator the blocks come from; `set_wrapped` changes it for blocks allocated from now
  /// on (each block keeps its own deleter).
  c10::Allocator* wrapped() const { return wrapped_.load(); }
  void set_wrapped(c10::Allocator* allocator) { wrapped_.store(allocator); }
  int64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  /// Starts a new peak window at the current level; returns the previous window's peak.
  int64_t restart_peak() { return peak_.exchange(current()); }
  /// Folds an enclosing window's peak back in when a nested window ends.
  void merge_peak(int64_t outer_peak) { raise_peak(outer_peak); }

  static CountingCpuAllocator*& instance() {
    static CountingCpuAllocator* self = nullptr;
    return self;
  }

 private:
  struct Block {
    int64_t bytes;
    void* context;
    c10::DeleterFnPtr deleter;
  };

  static void release(void* data) {
    auto* self = instance();
    Block block{};
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      auto it = self->blocks_.find(data);
      if (it == self->blocks_.end()) {
        // Allocated with raw_allocate before the counter was installed and released through the
        // current allocator's raw deleter (oneDNN does this): free it the way it was allocated.
        auto deleter = self->wrapped()->raw_deleter();
        TORCH_INTERNAL_ASSERT(deleter != nullptr, "MemoryTracker: unknown CPU block");
        deleter(data);
        return;
      }
      block = it->second;
      self->blocks_.erase(it);
    }
    self->current_.fetch_sub(block.bytes, std::memory_order_relaxed);
    if (block.deleter != nullptr) block.deleter(block.context);
  }

  void raise_peak(int64_t value) {
    int64_t seen = peak_.load(std::memory_order_relaxed);
    while (value > seen && !peak_.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
    }
  }

  c10::DataPtr allocate_counted(size_t bytes) const {
    auto* self = const_cast<CountingCpuAllocator*>(this);
    c10::DataPtr inner = wrapped()->allocate(bytes);
    void* data = inner.get();
    const c10::Device device = inner.device();
    if (data == nullptr) return inner;  // zero-byte allocations: nothing to count
    const c10::DeleterFnPtr deleter = inner.get_deleter();
    void* context = inner.release_context();
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      self->blocks_[data] = Block{static_cast<int64_t>(bytes), context, deleter};
    }
    const auto now =
        self->current_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed) +
        static_cast<int64_t>(bytes);
    self->raise_peak(now);
    return c10::DataPtr(data, data, &CountingCpuAllocator::release, device);
  }

  std::atomic<c10::Allocator*> wrapped_;
  std::mutex mutex_;
  std::unordered_map<void*, Block> blocks_;
  std::atomic<int64_t> current_{0};
  std::atomic<int64_t> peak_{0};
};

/// Highest priority a c10 allocator registration can have: ours must win over the default one.
constexpr uint8_t kTrackingAllocatorPriority = 255;

inline CountingCpuAllocator& cpu_counter() {
  static CountingCpuAllocator* counter = [] {
    auto* created = new CountingCpuAllocator(c10::GetAllocator(c10::DeviceType::CPU));
    CountingCpuAllocator::instance() = created;
    c10::SetAllocator(c10::DeviceType::CPU, created, kTrackingAllocatorPriority);
    return created;  // lives for the whole process: tensors may outlive every tracker
  }();
  return *counter;
}
}  // namespace detail

/// Installs the CPU allocation counter now (idempotent). Call at the start of a program whose
/// peak memory you want measured in full: tensors allocated before it are not counted.
inline void install_cpu_memory_tracking() { (void)detail::cpu_counter(); }

/// Measures peak tensor memory on one device from construction to destruction (or `stop()`).
/// Trackers nest: an inner tracker's region counts towards the enclosing tracker's peak.
///
/// Example:
/// ```
/// sedensenet::install_cpu_memory_tracking();
/// sedensenet::MemoryTracker tracker(torch::kCPU);
/// train_step();
/// std::cout << tracker.peak_bytes() / 1e6 << " MB at peak\n";
/// ```
class MemoryTracker {
 public:
  explicit MemoryTracker(torch::Device device = torch::kCPU) : device_(device) {
    if (device_.is_cpu()) {
      auto& counter = detail::cpu_counter();
      baseline_ = counter.current();
      outer_peak_ = counter.restart_peak();
    } else if (device_.is_cuda()) {
#if defined(SEDENSENET_WITH_CUDA)
      namespace alloc = c10::cuda::CUDACachingAllocator;
      const auto index = device_.has_index() ? device_.index() : 0;
      const auto devices = static_cast<int64_t>(torch::cuda::device_count());
      TORCH_CHECK(index < devices, "MemoryTracker: device ", device_.str(),
                  " is not available: this machine has ", devices, " CUDA device(s)");
      alloc::resetPeakStats(index);
      baseline_ = cuda_stats().allocated_bytes[kAggregate].current;
#else
      TORCH_CHECK(false, "MemoryTracker: this build of SEDenseNet has no CUDA support (device ",
                  device_.str(), ")");
#endif
    } else {
      TORCH_CHECK(false, "MemoryTracker: device ", device_.str(),
                  " is not supported (use cpu or cuda)");
    }
  }

  MemoryTracker(const MemoryTracker&) = delete;
  MemoryTracker& operator=(const MemoryTracker&) = delete;

  ~MemoryTracker() { stop(); }

  /// Ends the region (idempotent); `peak_bytes()` keeps its value afterwards.
  void stop() {
    if (stopped_) return;
    final_peak_ = live_peak();
    final_reserved_peak_ = live_reserved_peak();
    if (device_.is_cpu()) detail::cpu_counter().merge_peak(outer_peak_);
    stopped_ = true;
  }

  /// Highest number of bytes held by live tensors on the device during the region (tensors that
  /// existed before the region included).
  int64_t peak_bytes() const { return stopped_ ? final_peak_ : live_peak(); }
  /// Bytes held by live tensors when the region started.
  int64_t baseline_bytes() const { return baseline_; }
  /// Peak above the starting level: what the region itself needed at its worst moment.
  int64_t peak_increase_bytes() const { return peak_bytes() - baseline_; }
  /// CUDA: the highest number of bytes the caching allocator reserved from the device during the
  /// region (live tensors plus its cached free blocks: what other processes cannot use). CPU: the
  /// same as `peak_bytes()`, since freed CPU blocks go back to malloc.
  int64_t peak_reserved_bytes() const { return stopped_ ? final_reserved_peak_ : live_reserved_peak(); }
  /// Bytes held by live tensors now.
  int64_t current_bytes() const {
    if (device_.is_cpu()) return detail::cpu_counter().current();
#if defined(SEDENSENET_WITH_CUDA)
    return cuda_stats().allocated_bytes[kAggregate].current;
#else
    return 0;
#endif
  }

 private:
  int64_t live_reserved_peak() const {
#if defined(SEDENSENET_WITH_CUDA)
    if (device_.is_cuda()) return cuda_stats().reserved_bytes[kAggregate].peak;
#endif
    return live_peak();
  }

  int64_t live_peak() const {
    if (device_.is_cpu()) return detail::cpu_counter().peak();
#if defined(SEDENSENET_WITH_CUDA)
    return cuda_stats().allocated_bytes[kAggregate].peak;
#else
    return 0;
#endif
  }

#if defined(SEDENSENET_WITH_CUDA)
  static constexpr size_t kAggregate = 0;  // StatType::AGGREGATE (its home moved in LibTorch 2.x)
  auto cuda_stats() const -> decltype(c10::cuda::CUDACachingAllocator::getDeviceStats(0)) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device_.has_index() ? device_.index()
                                                                                : 0);
  }
#endif

  torch::Device device_;
  int64_t baseline_ = 0;
  int64_t outer_peak_ = 0;
  int64_t final_peak_ = 0;
  int64_t final_reserved_peak_ = 0;
  bool stopped_ = false;
};

/// Returns the caching allocator's free blocks on a CUDA `device` to the driver, so that the next
/// measurement's reserved bytes start from the live tensors only. Nothing to do on the CPU.
inline void release_cached_memory(torch::Device device) {
#if defined(SEDENSENET_WITH_CUDA)
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

}  // namespace sedensenet
