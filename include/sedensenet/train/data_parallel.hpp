#pragma once
/// \file
/// `DataParallel`: everything the Trainer does differently when several processes train one model,
/// gathered at the few points where the loop calls it. Without a communicator (one process) every
/// call is a no-op or returns its input, so the loop has one path.

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sedensenet/data/batch_source.hpp"
#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/train/communicator.hpp"
#include "sedensenet/train/metrics.hpp"

namespace sedensenet {

/// Data-parallel training over the ranks of a `Communicator` (see `Trainer::set_communicator` for
/// what a distributed run does). One object per Trainer.
class DataParallel {
 public:
  /// One process.
  DataParallel() = default;
  /// The ranks of `communicator`; a null one or a world of one rank is one process. `bucket_mb`
  /// and `first_bucket_mb` size the gradient buckets (`GradientReducer`).
  DataParallel(std::shared_ptr<Communicator> communicator, double bucket_mb, double first_bucket_mb);

  bool distributed() const { return comm_ != nullptr; }
  int64_t rank() const { return comm_ ? comm_->rank() : 0; }
  int64_t world_size() const { return comm_ ? comm_->world_size() : 1; }
  /// "world_size" and the group's description for config.json (null for one process).
  nlohmann::json describe() const;
  /// The gradient reducer (null before `start` or for one process).
  const GradientReducer* reducer() const { return reducer_.get(); }

  /// Start of `fit`: shards the data (training padded, test not), checks that every rank has as
  /// many training batches, makes rank 0's parameters everyone's (and its buffers unless
  /// `keep_buffers`: a run resumed mid-epoch has each rank's statistics back) and sets up the
  /// gradient buckets.
  void start(data::BatchSource& train, data::BatchSource* test, torch::nn::Module& module,
             bool keep_buffers);

  /// What the ranks agree on after each batch's forward pass.
  struct StepCheck {
    std::vector<int64_t> non_finite_ranks;  ///< ranks whose loss is not finite (empty: none)
    bool stop = false;                      ///< some rank was asked to stop
  };
  /// Every rank learns whether any rank's loss is not finite or any rank was asked to stop, so
  /// that all stop at the same batch.
  StepCheck check_step(double loss, bool stop_requested);
  /// `loss.backward()` with gradients averaged over the ranks as their buckets fill. A rank with an
  /// empty batch passes an undefined `loss` and still takes part.
  void backward(const torch::Tensor& loss);

  /// Element-wise sums and maxima over the ranks.
  std::vector<double> sum(std::vector<double> values);
  std::vector<double> max(std::vector<double> values);
  /// `RunningMetrics` summed over the ranks.
  RunningMetrics sum(const RunningMetrics& local);
  /// End of an epoch: every rank gets the mean of the ranks' BatchNorm statistics.
  void average_buffers(torch::nn::Module& module);

  /// Before an evaluation: each rank scores its shard, without padding (every image counts once).
  void shard_for_evaluation(data::BatchSource& source);
  /// After it: the sums, the class count and the confusion matrix over the ranks.
  void reduce_evaluation(RunningMetrics& running, ConfusionMatrix& confusion, int64_t& classes);

  /// `read()` on rank 0, its bytes sent to every rank (a failure there is thrown on every rank).
  std::string from_root(const std::function<std::string()>& read);

  /// For last.pt (every rank calls it; rank 0 writes): adds "world_size" and each rank's epoch
  /// metrics so far ("partial_ranks") to `state`, and returns the tensors to store: each rank's
  /// random state and, mid-epoch, its BatchNorm statistics.
  io::NamedTensors gather_rank_state(nlohmann::json& state, const torch::nn::Module& module,
                                     bool mid_epoch, const nlohmann::json& partial);

  /// What one rank resumes with.
  struct RankState {
    torch::Tensor rng;       ///< CPU generator state (undefined: seed from seed, rank and epoch)
    nlohmann::json partial;  ///< the epoch's metrics so far
  };
  /// Reads this rank's state from `last` (written by `gather_rank_state`, or by one process):
  /// `saved` holds what rank 0 saved. A run saved on another number of ranks resumes at an epoch
  /// boundary only; on as many, each rank gets its own random state, metrics and statistics.
  RankState restore_rank_state(const io::CheckpointFile& last, const std::string& name,
                               torch::nn::Module& module, int64_t epoch, int64_t batch_in_epoch,
                               RankState saved);

 private:
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<GradientReducer> reducer_;
  double bucket_mb_ = 25, first_bucket_mb_ = 1;
};

}  // namespace sedensenet
