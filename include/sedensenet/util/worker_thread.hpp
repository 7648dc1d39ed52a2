#pragma once
/// \file
/// Worker threads that outlive their task: the data loader's workers are taken from a process-wide
/// set of parked threads instead of being started for every epoch.
///
/// Why: a new thread's first LibTorch parallel call re-applies the intra-op thread count, and
/// with that LibTorch rebuilds its global pthreadpool (`caffe2::PThreadPool::set_thread_count`),
/// whose fresh threads spin before they sleep. Started per epoch, that cost 6% of the loader's
/// throughput on short epochs (600 photos at 224, `loader_throughput --threads 2` against
/// `--threads 1`). A parked thread has done it once, when it was first started.

#include <functional>
#include <memory>

namespace sedensenet::detail {

struct WorkerSlot;

/// Runs one task on a parked worker thread, or on a new one when none is parked. Each worker
/// thread runs `use_single_intra_op_thread()` once, when it starts; after its task it parks again
/// (process-wide, no limit beyond the most that ran at once). Like `std::thread`: `join()` waits
/// for the task; a task that throws ends the process (catch inside the task).
///
/// Throws std::system_error when no thread is parked and the system refuses a new one.
class WorkerThread {
 public:
  WorkerThread() = default;
  explicit WorkerThread(std::function<void()> task);
  WorkerThread(WorkerThread&&) noexcept;
  WorkerThread& operator=(WorkerThread&&) noexcept;
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;
  /// Joins if still joinable.
  ~WorkerThread();

  /// True from construction until join().
  bool joinable() const { return slot_ != nullptr; }
  /// Waits until the task has returned; the thread parks for the next WorkerThread.
  void join();

 private:
  WorkerSlot* slot_ = nullptr;
};

}  // namespace sedensenet::detail
