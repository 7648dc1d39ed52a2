#pragma once
/// \file
/// What data-parallel training needs from a process group, without depending on one:
/// `Communicator` (collectives), `GradientReducer` (gradients averaged across ranks in buckets,
/// each all-reduce started during backward as soon as its gradients are ready) and helpers that
/// broadcast and average a module's tensors. `sedensenet/distributed.hpp` implements
/// `Communicator` on PyTorch's c10d (Gloo on CPU, NCCL on CUDA); the Trainer uses only this
/// header, so programs that do not train across processes need no c10d or Gloo headers.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <chrono>
#include <cstring>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sedensenet {

/// Distributed training failed: a rank died or stopped answering, the store could not be reached,
/// or a collective timed out. The message names the rank(s) when they can be told.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Collective operations across the ranks of one training job. Every rank must call the same
/// collectives in the same order with tensors of the same shapes and types.
class Communicator {
 public:
  /// An operation in flight.
  class Pending {
   public:
    virtual ~Pending() = default;
    /// Blocks until the operation is complete on this rank; throws `DistributedError` on failure.
    virtual void wait() = 0;
  };
  enum class Op { sum, max };

  virtual ~Communicator() = default;
  /// This process's rank, 0 .. world_size() - 1.
  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;
  /// Reduces each tensor in place across ranks (element-wise), asynchronously. The tensors must
  /// stay alive and untouched until `wait()` returns.
  virtual std::unique_ptr<Pending> all_reduce_async(std::vector<torch::Tensor>& tensors,
                                                    Op op = Op::sum) = 0;
  /// Replaces each tensor by the root's, in place.
  virtual void broadcast(std::vector<torch::Tensor>& tensors, int64_t root = 0) = 0;
  /// Every rank's `tensor` (same shape and type on every rank), in rank order.
  virtual std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) = 0;
  /// One line for logs: backend, rank, world size, rendezvous address.
  virtual std::string describe() const = 0;

  /// Synchronous `all_reduce_async`.
  void all_reduce(std::vector<torch::Tensor>& tensors, Op op = Op::sum);
  void all_reduce(torch::Tensor& tensor, Op op = Op::sum);
  bool is_root() const { return rank() == 0; }
};

namespace detail {

/// Flattens tensors of one type and device into one, runs `fn` on it, copies the result back.
template <typename Fn>
void coalesced(std::vector<torch::Tensor> tensors, Fn&& fn) {
  std::vector<std::vector<torch::Tensor>> groups;
  for (auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    bool placed = false;
    for (auto& g : groups) {
      if (g.front().scalar_type() == t.scalar_type() && g.front().device() == t.device()) {
        g.push_back(t);
        placed = true;
        break;
      }
    }
    if (!placed) groups.push_back({t});
  }
  torch::NoGradGuard no_grad;
  for (auto& g : groups) {
    std::vector<torch::Tensor> flat_parts;
    for (auto& t : g) flat_parts.push_back(t.reshape({-1}));
    auto flat = torch::cat(flat_parts);
    fn(flat);
    int64_t offset = 0;
    for (auto& t : g) {
      t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

}  // namespace detail

/// Makes every rank's parameters (and buffers, unless `buffers` is false) equal to the root's,
/// as a run starts.
void broadcast_module(Communicator& comm, torch::nn::Module& module, int64_t root = 0,
                      bool buffers = true);

/// Averages the floating-point buffers (BatchNorm running statistics) across ranks, so that
/// every rank evaluates and saves the same model. Integer buffers (batches tracked) are equal on
/// every rank already and are left alone.
void average_buffers(Communicator& comm, torch::nn::Module& module);

/// Sends `bytes` from the root to every rank. If the root could not produce them it passes
/// `error` instead (non-empty); then every rank throws it, so that no rank waits for data that
/// will never come.
std::string broadcast_bytes(Communicator& comm, std::string bytes, int64_t root = 0,
                            const std::string& error = {});

/// Averages gradients across ranks the way PyTorch's DistributedDataParallel does: parameters
/// are grouped into buckets (in reverse registration order, roughly the order backward produces
/// their gradients), a hook on every parameter copies its gradient into its bucket, and the
/// bucket's all-reduce starts as soon as all its gradients are in, while backward goes on. After
/// backward, `finish()` waits for the buckets and writes the averages into the parameters'
/// `.grad`. Buckets are always launched in the same order on every rank.
///
/// Works with the memory-efficient dense layers: their recomputation runs inside backward and
/// each parameter's gradient still arrives once. A parameter whose gradient arrives twice in one
/// backward (a module used twice) is handled by reducing the accumulated gradients again after
/// backward (correct, without overlap for that step).
///
/// Example:
/// ```
/// sedensenet::GradientReducer reducer(comm, model->parameters());
/// reducer.prepare();
/// loss.backward();
/// reducer.finish();  // every rank now holds the mean gradient
/// optimizer.step();
/// ```
class GradientReducer {
 public:
  /// `bucket_mb`: size of each bucket after the first; `first_bucket_mb`: the first one (small, so
  /// that communication starts early in backward), as DistributedDataParallel does.
  GradientReducer(Communicator& comm, std::vector<torch::Tensor> parameters, double bucket_mb = 25,
                  double first_bucket_mb = 1);

  ~GradientReducer();

  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Call before backward: arms the hooks for one step.
  void prepare();

  /// Call after backward: launches what is left (parameters that got no gradient contribute
  /// zeros), waits for every bucket and sets each parameter's `.grad` to the mean over ranks.
  void finish();

  /// This rank had no data for the step (an empty batch) but the others did: contribute zeros so
  /// that the collectives still match, and take the mean like everyone else.
  void finish_without_backward();

  size_t bucket_count() const { return buckets_.size(); }
  /// Seconds spent in `finish()` (communication not hidden behind backward), since construction.
  double wait_seconds() const { return wait_seconds_; }
  int64_t steps() const { return steps_; }

 private:
  struct Slot {
    torch::Tensor parameter;
    size_t bucket;
    int64_t offset, numel;
    int arrivals = 0;
  };
  struct Bucket {
    torch::ScalarType type = torch::kFloat;
    torch::Device device = torch::kCPU;
    std::vector<size_t> slots;
    int64_t numel = 0;
    double bytes = 0;
    torch::Tensor flat;
    size_t ready = 0;
    bool launched = false;
    std::unique_ptr<Communicator::Pending> pending;
  };

  Bucket& bucket_of(const Slot& s) { return buckets_[s.bucket]; }

  void on_gradient(size_t index, const torch::Tensor& grad);

  /// Launches complete buckets in order (never out of order: every rank must issue the same
  /// collectives in the same sequence).
  void launch_ready();

  Communicator* comm_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hooks_;
  std::mutex mutex_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  bool repeated_ = false;
  double wait_seconds_ = 0;
  int64_t steps_ = 0;
};

}  // namespace sedensenet
