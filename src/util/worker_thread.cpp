// Parked worker threads, reused across the data loader's epochs (sedensenet/util/worker_thread.hpp).
#include "sedensenet/util/worker_thread.hpp"

#include <pthread.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "sedensenet/data/codec.hpp"

namespace sedensenet::detail {

/// One worker thread's mailbox. Lives as long as its thread, which is never ended: the process's
/// exit ends parked threads.
struct WorkerSlot {
  std::mutex mutex;
  std::condition_variable wake, finished;
  std::function<void()> task;
  bool busy = false;  // a task was handed over and has not returned yet
};

namespace {

struct Parking {
  std::mutex mutex;
  std::vector<WorkerSlot*> idle;
};

Parking* parking_now = nullptr;

/// The parked threads of this process. Never destroyed (threads may still be parked during static
/// destruction); a child made by fork() has none of its parent's threads and starts empty.
Parking& parking() {
  static std::once_flag once;
  std::call_once(once, [] {
    parking_now = new Parking;
    ::pthread_atfork(nullptr, nullptr, [] { parking_now = new Parking; });
  });
  return *parking_now;
}

void worker_main(WorkerSlot* slot) {
  use_single_intra_op_thread();
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(slot->mutex);
      slot->wake.wait(lock, [&] { return static_cast<bool>(slot->task); });
      task = std::move(slot->task);
      slot->task = nullptr;
    }
    // As on a std::thread, an exception leaving the task ends the process.
    [&]() noexcept { task(); }();
    task = nullptr;  // what the task captured is released before join() returns
    {
      std::lock_guard<std::mutex> lock(slot->mutex);
      slot->busy = false;
    }
    slot->finished.notify_all();
  }
}

}  // namespace

WorkerThread::WorkerThread(std::function<void()> task) {
  WorkerSlot* slot = nullptr;
  {
    auto& p = parking();
    std::lock_guard<std::mutex> lock(p.mutex);
    if (!p.idle.empty()) {
      slot = p.idle.back();
      p.idle.pop_back();
    }
  }
  if (slot == nullptr) {
    auto fresh = std::make_unique<WorkerSlot>();
    std::thread(worker_main, fresh.get()).detach();  // std::system_error at the thread limit
    slot = fresh.release();
  }
  {
    std::lock_guard<std::mutex> lock(slot->mutex);
    slot->task = std::move(task);
    slot->busy = true;
  }
  slot->wake.notify_one();
  slot_ = slot;
}

WorkerThread::WorkerThread(WorkerThread&& other) noexcept : slot_(std::exchange(other.slot_, nullptr)) {}

WorkerThread& WorkerThread::operator=(WorkerThread&& other) noexcept {
  if (this != &other) {
    if (joinable()) join();
    slot_ = std::exchange(other.slot_, nullptr);
  }
  return *this;
}

WorkerThread::~WorkerThread() {
  if (joinable()) join();
}

void WorkerThread::join() {
  if (slot_ == nullptr) return;
  WorkerSlot* slot = std::exchange(slot_, nullptr);
  {
    std::unique_lock<std::mutex> lock(slot->mutex);
    slot->finished.wait(lock, [&] { return !slot->busy; });
  }
  // Parked only once joined, so that no other WorkerThread can hand it a task before.
  auto& p = parking();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.idle.push_back(slot);
}

}  // namespace sedensenet::detail
