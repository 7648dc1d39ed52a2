#pragma once
/// \file
/// `distributed::ProcessGroup`: a `Communicator` on PyTorch's c10d. Rendezvous through a
/// TCPStore hosted by rank 0, Gloo on CPU, NCCL when training on CUDA (in LibTorch builds that
/// have it). Failures become `DistributedError`s that name the rank that went away.
///
/// Needs LibTorch's c10d headers and Gloo's (Debian: libgloo-dev); the CMake target
/// SEDenseNet::sedensenet is enough to build with it.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <c10/util/Logging.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(USE_C10D_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/types.h>

#if !defined(USE_C10D_GLOO) && !defined(USE_C10D_NCCL)
#error "sedensenet/distributed: this LibTorch has no c10d backend (neither USE_C10D_GLOO nor USE_C10D_NCCL is defined); link the Torch CMake target, which defines them"
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sedensenet/distributed/environment.hpp"
#include "sedensenet/train/communicator.hpp"
#include "sedensenet/util/errors.hpp"

namespace sedensenet::distributed {

/// Options of `ProcessGroup::create`.
struct ProcessGroupOptions {
  /// "auto" (NCCL for CUDA devices when available, Gloo otherwise), "gloo" or "nccl".
  TORCH_ARG(std::string, backend) = "auto";
  /// How long a rank waits for the others (rendezvous, and every collective) before it gives up
  /// with a `DistributedError`.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(5);
  /// The device the tensors live on (decides "auto").
  TORCH_ARG(torch::Device, device) = torch::kCPU;
};

/// A process group of this job's ranks.
///
/// Example (each of N processes, with torchrun's variables set):
/// ```
/// auto group = sedensenet::distributed::ProcessGroup::create(
///     sedensenet::distributed::Environment::from_environment());
/// trainer.set_communicator(group);
/// ```
class ProcessGroup : public Communicator {
 public:
  static std::shared_ptr<ProcessGroup> create(const Environment& env,
                                              ProcessGroupOptions options = {}) {
    return std::shared_ptr<ProcessGroup>(new ProcessGroup(env, std::move(options)));
  }

  ~ProcessGroup() override {
    {
      std::lock_guard<std::mutex> lock(heartbeat_mutex_);
      stopping_ = true;
    }
    heartbeat_cv_.notify_all();
    if (heartbeat_.joinable()) heartbeat_.join();
  }

  int64_t rank() const override { return env_.rank; }
  int64_t world_size() const override { return env_.world_size; }
  const Environment& environment() const { return env_; }
  const std::string& backend_name() const { return backend_name_; }
  std::chrono::milliseconds timeout() const { return options_.timeout(); }

  std::unique_ptr<Pending> all_reduce_async(std::vector<torch::Tensor>& tensors,
                                            Op op = Op::sum) override {
    c10d::AllreduceOptions o;
    o.reduceOp = op == Op::sum ? c10d::ReduceOp::SUM : c10d::ReduceOp::MAX;
    o.timeout = options_.timeout();
    if (staged(tensors)) {
      // NCCL reduces device memory only: CPU tensors (metrics, flags) go through the GPU.
      auto on_device = to_device(tensors);
      guarded([&] {
        call([&](auto& b) { return b.allreduce(on_device, o); })->wait();
        return 0;
      });
      for (size_t i = 0; i < tensors.size(); ++i) tensors[i].copy_(on_device[i]);
      return std::make_unique<Done>();
    }
    return guarded([&] { return std::make_unique<Work>(this, call([&](auto& b) { return b.allreduce(tensors, o); })); });
  }

  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root = 0) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = options_.timeout();
    const bool stage = staged(tensors);
    auto on_device = stage ? to_device(tensors) : tensors;
    guarded([&] {
      call([&](auto& b) { return b.broadcast(on_device, o); })->wait();
      return 0;
    });
    if (stage) {
      for (size_t i = 0; i < tensors.size(); ++i) tensors[i].copy_(on_device[i]);
    }
  }

  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) override {
    std::vector<torch::Tensor> input{tensor.contiguous()};
    const bool stage = staged(input);
    if (stage) input = to_device(input);
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int64_t r = 0; r < env_.world_size; ++r) output[0].push_back(torch::empty_like(input[0]));
    c10d::AllgatherOptions o;
    o.timeout = options_.timeout();
    guarded([&] {
      call([&](auto& b) { return b.allgather(output, input, o); })->wait();
      return 0;
    });
    if (stage) {
      for (auto& t : output[0]) t = t.to(torch::kCPU);
    }
    return output[0];
  }

  std::string describe() const override {
    return backend_name_ + ", " + env_.describe();
  }

  /// Why the job failed, from the heartbeats every rank keeps in the store: names the ranks that
  /// stopped (or rank 0, when the store it hosts is gone). `what` is the backend's message.
  std::string diagnose(const std::string& what) {
    std::lock_guard<std::mutex> lock(diagnosis_mutex_);
    if (!diagnosis_.empty()) return diagnosis_;
    std::ostringstream os;
    os << "rank " << env_.rank << ": distributed training failed: ";
    std::vector<int64_t> before, after;
    bool reachable = true;
    try {
      QuietC10dLog quiet;  // a store that is gone is the expected answer here, not a stack trace
      auto store = connect(std::chrono::seconds(3));
      before = heartbeats(*store);
      std::this_thread::sleep_for(kHeartbeat * 3 + std::chrono::milliseconds(500));
      after = heartbeats(*store);
    } catch (const std::exception&) {
      reachable = false;
    }
    if (!reachable) {
      os << (env_.rank == 0 ? "the rendezvous store could not be read"
                            : "rank 0 has stopped (the rendezvous store it hosts at " +
                                  env_.master_addr + ":" + std::to_string(env_.master_port) +
                                  " no longer answers)");
    } else {
      std::vector<int64_t> dead;
      for (int64_t r = 0; r < env_.world_size; ++r) {
        if (r != env_.rank && after[static_cast<size_t>(r)] == before[static_cast<size_t>(r)]) dead.push_back(r);
      }
      if (dead.empty()) {
        os << "a collective did not complete (every rank is still alive: one may be stuck, much "
              "slower than the others, or running different code; the timeout is "
           << options_.timeout().count() / 1000.0 << " s)";
      } else {
        os << (dead.size() == 1 ? "rank " : "ranks ");
        for (size_t i = 0; i < dead.size(); ++i) os << (i ? ", " : "") << dead[i];
        os << (dead.size() == 1 ? " has" : " have")
           << " stopped (no heartbeat; see that rank's output for why)";
      }
    }
    os << " [" << first_line(what) << "]";
    diagnosis_ = os.str();
    return diagnosis_;
  }

 private:
  static constexpr std::chrono::milliseconds kHeartbeat{1000};

  class Done : public Pending {
   public:
    void wait() override {}
  };

  bool staged(const std::vector<torch::Tensor>& tensors) const {
    return backend_name_ == "nccl" && !tensors.empty() && !tensors.front().is_cuda();
  }
  std::vector<torch::Tensor> to_device(const std::vector<torch::Tensor>& tensors) const {
    std::vector<torch::Tensor> out;
    for (const auto& t : tensors) out.push_back(t.to(options_.device()));
    return out;
  }

  class Work : public Pending {
   public:
    Work(ProcessGroup* group, c10::intrusive_ptr<c10d::Work> work) : group_(group), work_(std::move(work)) {}
    void wait() override {
      group_->guarded([&] {
        work_->wait();
        return 0;
      });
    }

   private:
    ProcessGroup* group_;
    c10::intrusive_ptr<c10d::Work> work_;
  };

  ProcessGroup(const Environment& env, ProcessGroupOptions options)
      : env_(env), options_(std::move(options)) {
    TORCH_CHECK(env_.world_size >= 1 && env_.rank >= 0 && env_.rank < env_.world_size,
                "ProcessGroup: rank ", env_.rank, " is outside world size ", env_.world_size);
    // The store: rank 0 hosts it.
    try {
      c10d::TCPStoreOptions o;
      o.port = static_cast<uint16_t>(env_.master_port);
      o.isServer = env_.rank == 0;
      o.waitWorkers = false;
      o.timeout = options_.timeout();
      QuietC10dLog quiet;
      store_ = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, o);
    } catch (const std::exception& e) {
      if (env_.rank == 0) {
        throw DistributedError("rank 0 could not start the rendezvous store on port " +
                               std::to_string(env_.master_port) + " (MASTER_PORT): " +
                               first_line(e.what()) + "; is another job using that port?");
      }
      throw DistributedError("rank " + std::to_string(env_.rank) + " could not reach the rendezvous store at " +
                             env_.master_addr + ":" + std::to_string(env_.master_port) +
                             " (MASTER_ADDR:MASTER_PORT) within " + seconds() +
                             ": is rank 0 running, and is that address reachable from here? [" +
                             first_line(e.what()) + "]");
    }
    // Every rank checks in; a rank that never comes is named.
    std::vector<std::string> keys;
    for (int64_t r = 0; r < env_.world_size; ++r) keys.push_back(joined_key(r));
    try {
      store_->set(joined_key(env_.rank), std::vector<uint8_t>{1});
      store_->wait(keys, options_.timeout());
    } catch (const std::exception& e) {
      std::vector<int64_t> missing;
      try {
        for (int64_t r = 0; r < env_.world_size; ++r) {
          if (!store_->check({joined_key(r)})) missing.push_back(r);
        }
      } catch (const std::exception&) {
      }
      std::ostringstream os;
      os << "rank " << env_.rank << ": ";
      if (missing.empty()) {
        os << "the rendezvous failed (" << first_line(e.what()) << ")";
      } else {
        os << (missing.size() == 1 ? "rank " : "ranks ");
        for (size_t i = 0; i < missing.size(); ++i) os << (i ? ", " : "") << missing[i];
        os << " did not join within " << seconds() << " (WORLD_SIZE=" << env_.world_size
           << "; were all ranks started, with the same MASTER_ADDR:MASTER_PORT?)";
      }
      throw DistributedError(os.str());
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("sedensenet/pg", store_);
    std::string backend = options_.backend();
    if (backend == "auto") backend = options_.device().is_cuda() ? "nccl" : "gloo";
    if (backend == "nccl") {
#if defined(USE_C10D_NCCL)
      TORCH_CHECK(options_.device().is_cuda(), "the NCCL backend needs a CUDA device; use gloo on CPU");
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = options_.timeout();
      nccl_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, static_cast<int>(env_.rank),
                                                          static_cast<int>(env_.world_size), o);
      backend_name_ = "nccl";
#else
      throw DistributedError("the NCCL backend is not available in this LibTorch build (CPU only); "
                             "use --dist-backend gloo");
#endif
    } else if (backend == "gloo") {
#if defined(USE_C10D_GLOO)
      auto o = c10d::ProcessGroupGloo::Options::create();
      o->timeout = options_.timeout();
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(env_.master_addr)) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      try {
        gloo_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, static_cast<int>(env_.rank),
                                                            static_cast<int>(env_.world_size), o);
      } catch (const std::exception& e) {
        throw DistributedError("rank " + std::to_string(env_.rank) + ": Gloo could not connect the ranks: " +
                               first_line(e.what()) + " (set GLOO_SOCKET_IFNAME to the network interface "
                               "the machines reach each other on)");
      }
      backend_name_ = "gloo";
#else
      throw DistributedError("this LibTorch build has no Gloo backend (USE_C10D_GLOO is not defined)");
#endif
    } else {
      throw std::invalid_argument("distributed backend must be auto, gloo or nccl, got '" + backend + "'");
    }
    try {
      heartbeat_ = std::thread([this] { beat(); });
    } catch (const std::system_error& e) {
      throw DistributedError(std::string("cannot start the heartbeat thread (") + e.what() +
                             "): the system is at its thread limit");
    }
  }

  template <typename Fn>
  c10::intrusive_ptr<c10d::Work> call(Fn&& fn) {
#if defined(USE_C10D_GLOO)
#if defined(USE_C10D_NCCL)
    if (nccl_) return fn(*nccl_);
#endif
    return fn(*gloo_);
#else
    return fn(*nccl_);
#endif
  }

  /// Runs `fn`; a backend failure becomes a `DistributedError` naming the rank that went away.
  template <typename Fn>
  auto guarded(Fn&& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      throw DistributedError(diagnose(e.what()));
    }
  }

  c10::intrusive_ptr<c10d::TCPStore> connect(std::chrono::milliseconds timeout) const {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(env_.master_port);
    o.isServer = false;
    o.waitWorkers = false;
    o.timeout = timeout;
    QuietC10dLog quiet;
    return c10::make_intrusive<c10d::TCPStore>(env_.master_addr, o);
  }

  /// LibTorch 2.x's c10d logs every failed connection attempt to the store, with a stack trace;
  /// the error we raise says what happened in one line. c10's log level is raised to FATAL while
  /// a store connects (nesting and threads share one count), and restored after.
  class QuietC10dLog {
   public:
    QuietC10dLog() {
      std::lock_guard<std::mutex> lock(mutex());
      if (depth()++ == 0) {
        saved() = FLAGS_caffe2_log_level;
        FLAGS_caffe2_log_level = std::max(saved(), 3);
      }
    }
    ~QuietC10dLog() {
      std::lock_guard<std::mutex> lock(mutex());
      if (--depth() == 0) FLAGS_caffe2_log_level = saved();
    }
    QuietC10dLog(const QuietC10dLog&) = delete;
    QuietC10dLog& operator=(const QuietC10dLog&) = delete;

   private:
    static std::mutex& mutex() {
      static std::mutex m;
      return m;
    }
    static int& depth() {
      static int d = 0;
      return d;
    }
    static int& saved() {
      static int s = 0;
      return s;
    }
  };

  std::vector<int64_t> heartbeats(c10d::Store& store) const {
    std::vector<int64_t> counts;
    for (int64_t r = 0; r < env_.world_size; ++r) counts.push_back(store.add(heartbeat_key(r), 0));
    return counts;
  }

  /// Every second: one more in this rank's heartbeat counter (own connection to the store).
  void beat() {
    c10::intrusive_ptr<c10d::TCPStore> store;
    try {
      store = connect(options_.timeout());
    } catch (const std::exception&) {
      return;
    }
    std::unique_lock<std::mutex> lock(heartbeat_mutex_);
    while (!stopping_) {
      try {
        QuietC10dLog quiet;
        store->add(heartbeat_key(env_.rank), 1);
      } catch (const std::exception&) {
        return;  // the store is gone (rank 0 stopped): diagnose() reports it
      }
      heartbeat_cv_.wait_for(lock, kHeartbeat, [&] { return stopping_; });
    }
  }

  static std::string joined_key(int64_t r) { return "sedensenet/joined/" + std::to_string(r); }
  static std::string heartbeat_key(int64_t r) { return "sedensenet/heartbeat/" + std::to_string(r); }
  static bool is_loopback(const std::string& addr) {
    return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
  }
  static std::string first_line(const std::string& text) {
    auto line = text.substr(0, text.find('\n'));
    return line.size() > 300 ? line.substr(0, 300) + "..." : line;
  }
  std::string seconds() const {
    std::ostringstream os;
    os << options_.timeout().count() / 1000.0 << " s";
    return os.str();
  }

  Environment env_;
  ProcessGroupOptions options_;
  std::string backend_name_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
#if defined(USE_C10D_GLOO)
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo_;
#endif
#if defined(USE_C10D_NCCL)
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl_;
#endif
  std::thread heartbeat_;
  std::mutex heartbeat_mutex_;
  std::condition_variable heartbeat_cv_;
  bool stopping_ = false;
  std::mutex diagnosis_mutex_;
  std::string diagnosis_;
};

}  // namespace sedensenet::distributed
