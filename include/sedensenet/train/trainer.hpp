#pragma once
/// \file
/// `Trainer`: trains any module that maps images to logits, evaluates it every epoch, keeps the
/// best weights, and (with a run folder) records everything needed to reproduce and resume.
///
/// The loop is here (compiled in src/train/trainer.cpp); its parts have files of their own:
/// batches come from a `data::BatchSource`, MixUp/CutMix is `data::BatchMix`, the optimizer comes
/// from `make_optimizer`, the schedule is `LearningRateSchedule`, checkpoints are
/// `io::CheckpointFile`s holding a `RunState`, the other files are `RunFolder`'s, and everything
/// distributed is `DataParallel`'s.

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sedensenet/data/batch_mix.hpp"
#include "sedensenet/data/batch_source.hpp"
#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/train/communicator.hpp"
#include "sedensenet/train/data_parallel.hpp"
#include "sedensenet/train/history.hpp"
#include "sedensenet/train/metrics.hpp"
#include "sedensenet/train/options.hpp"
#include "sedensenet/train/run_state.hpp"
#include "sedensenet/train/weight_average.hpp"

namespace sedensenet {

class LearningRateSchedule;

// The batch sources live in data/ (data/batch_source.hpp); these names keep code written for
// SEDenseNet 0.1 compiling.
using data::BatchSource;
using data::ImageLoaderSource;
using data::TensorSource;

/// A training run stopped because something went wrong in it (non-finite loss, ...). The message
/// says where and what to do.
class TrainingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Progress of the training loop, after every batch.
struct BatchEvent {
  int64_t epoch = 0;    ///< 1-based
  int64_t epochs = 0;
  int64_t batch = 0;    ///< 1-based
  int64_t batches = 0;
  double loss = 0;      ///< running mean over the epoch so far
  double accuracy = 0;  ///< running top-1 over the epoch so far
  double lr = 0;
  double images_per_second = 0;
  double elapsed_seconds = 0;  ///< since the epoch started
};

/// What `fit` returns.
struct TrainResult {
  History history;
  int64_t best_epoch = 0;       ///< 1-based best epoch by TrainerOptions::best_metric (0: none)
  double best_accuracy = NAN;   ///< the test accuracy of that epoch
  bool early_stopped = false;   ///< early stopping ended the run
  bool interrupted = false;     ///< request_stop() ended the run before its last epoch
};

/// Trains a classifier.
///
/// Every epoch: train loss and accuracy, test loss and accuracy, top-5 when there are at least 5
/// classes, the learning rate, epoch time and images/s. The weights with the best test accuracy
/// are kept (as the reference does) and loaded into the model when `fit` returns. With
/// `TrainerOptions::ema_decay`, the weights evaluated and kept are a moving average of the
/// trained ones (`WeightAverage`); the train metrics are still the trained weights'. With a run
/// folder: config.json, history.csv, history.jsonl, best.pt, last.pt (atomic, every epoch),
/// metrics.json and confusion_matrix.{json,csv} for the best model, and SVG plots.
///
/// Example:
/// ```
/// sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet_bc(40, 12));
/// sedensenet::Trainer trainer(net, sedensenet::TrainerOptions::recommended().epochs(5));
/// sedensenet::ImageLoaderSource train(train_loader), test(test_loader);
/// auto result = trainer.fit(train, &test);
/// ```
class Trainer {
 public:
  using BatchCallback = std::function<void(const BatchEvent&)>;
  using EpochCallback = std::function<void(const EpochMetrics&)>;

  /// `model` is a module holder (such as `DenseNet`) whose module maps (N, C, H, W) images to
  /// (N, classes) logits.
  template <typename ModuleHolder>
  Trainer(ModuleHolder model, TrainerOptions options)
      : Trainer(model.ptr(), [impl = model.ptr()](const torch::Tensor& x) { return impl->forward(x); },
                std::move(options)) {}
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Called after every training batch.
  void on_batch_end(BatchCallback callback) { batch_callbacks_.push_back(std::move(callback)); }
  /// Called after every epoch (after its checkpoints are written).
  void on_epoch_end(EpochCallback callback) { epoch_callbacks_.push_back(std::move(callback)); }
  /// Ends `fit` after the current batch; the run folder keeps the last complete epoch. Safe to
  /// call from a callback, another thread or a signal handler.
  void request_stop() { stop_requested_ = true; }

  /// Trains data-parallel with the other ranks of `communicator` (for example a
  /// `distributed::ProcessGroup`); call it before `resume` and `fit`, on every rank. Then:
  /// parameters and buffers are broadcast from rank 0 when `fit` starts; every rank trains on its
  /// shard of the data (`BatchSource::shard`; batch size is per rank, so the global batch is
  /// world size x batch size); gradients are averaged across ranks in buckets during backward
  /// (`GradientReducer`); BatchNorm statistics are averaged at the end of every epoch; metrics
  /// and evaluations are reduced over all ranks, so the history holds global figures; only rank 0
  /// writes the run folder; `resume` reads the checkpoint on rank 0 and sends it to the others.
  /// A rank that fails or goes away makes the others throw `DistributedError`.
  /// `bucket_mb` and `first_bucket_mb` size the gradient buckets (see `GradientReducer`).
  void set_communicator(std::shared_ptr<Communicator> communicator, double bucket_mb = 25,
                        double first_bucket_mb = 1);
  /// This process's rank (0 without a communicator) and the number of ranks.
  int64_t rank() const { return parallel_.rank(); }
  int64_t world_size() const { return parallel_.world_size(); }
  /// The gradient reducer of a distributed run (null before `fit` or without a communicator):
  /// its bucket count and the time spent waiting for communication.
  const GradientReducer* gradient_reducer() const { return parallel_.reducer(); }

  /// Class names (for metrics files and checkpoints), in label order.
  void set_class_names(std::vector<std::string> names) { state_.classes = std::move(names); }
  const std::vector<std::string>& class_names() const { return state_.classes; }
  /// Extra JSON recorded in config.json and in every checkpoint ("model", "data", ...): what a
  /// program needs to rebuild the model and its input pipeline from the run folder.
  void set_metadata(nlohmann::json metadata) { state_.metadata = std::move(metadata); }
  /// Weights the training loss by class (float, one per class; for unbalanced data, for example
  /// `class_balance_weights`). Evaluation losses stay unweighted, so they compare across runs.
  void set_class_weights(torch::Tensor weights) { class_weights_ = std::move(weights); }
  const nlohmann::json& metadata() const { return state_.metadata; }

  /// Continues the run saved in `run_dir` (its last.pt): model, optimizer, schedule, epoch, random
  /// state and history. The next `fit` starts after the saved epoch.
  void resume(const std::filesystem::path& run_dir);

  /// Epochs completed (after `resume`, the saved epoch).
  int64_t completed_epochs() const { return state_.epoch; }
  /// Batches completed in the epoch after `completed_epochs()`: non-zero when the run was stopped
  /// (`request_stop`) in the middle of an epoch, or resumed from such a checkpoint.
  int64_t batches_into_epoch() const { return state_.batch; }

  /// The epochs this run trains: `TrainerOptions::epochs` (raised by `min_steps` when `fit` starts
  /// and knows the data's size; `Experiment::planned_epochs` knows it before), or, with a time
  /// budget, the count fixed when the first epoch ended (until then, `epochs`).
  int64_t planned_epochs() const;
  /// Whether a time budget has fixed `planned_epochs`.
  bool epochs_fixed_by_budget() const { return state_.planned_epochs > 0; }

  /// Trains until `planned_epochs()` epochs are complete (or early stopping, or request_stop()).
  /// `test` may be null (then the best model is the last one). A run folder that holds another
  /// run's files is refused (`TrainingError`) unless this run was resumed from it, an earlier
  /// `fit` of this trainer wrote it, or `TrainerOptions::overwrite` is set.
  /// On the CPU it first calls `keep_freed_memory()`, the library's CPU memory pool for the
  /// process (sedensenet/util/allocator.hpp).
  TrainResult fit(BatchSource& train, BatchSource* test = nullptr);

  /// Loss, top-1 and top-5 accuracy and the confusion matrix of the model on `source` (eval mode,
  /// no gradients).
  ///
  /// With a communicator, every rank must call it: each evaluates its shard of `source` (which
  /// is sharded here, without padding, so every image counts once) and the sums and the
  /// confusion matrix are added up over the ranks.
  Evaluation evaluate(BatchSource& source);

  const TrainerOptions& options() const { return options_; }
  const History& history() const { return state_.history; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  /// The moving average of the weights (`TrainerOptions::ema_decay`); null without one, and
  /// before `fit` or `resume`.
  const WeightAverage* weight_average() const { return average_ ? &*average_ : nullptr; }

 private:
  using Forward = std::function<torch::Tensor(const torch::Tensor&)>;
  Trainer(std::shared_ptr<torch::nn::Module> module, Forward forward, TrainerOptions options);

  torch::Tensor forward_with_autocast(const torch::Tensor& x);
  bool train_epoch(BatchSource& train, int64_t epoch, LearningRateSchedule& schedule,
                   EpochMetrics& metrics);
  std::string non_finite_message(double value, int64_t epoch, int64_t batch_index, int64_t batches,
                                 double lr, const std::vector<int64_t>& ranks) const;
  void write_checkpoint(const std::filesystem::path& path, bool full);
  void restore_average(const io::CheckpointFile& last, int64_t updates, const std::string& name);
  void write_config(const std::filesystem::path& run_dir);

  std::shared_ptr<torch::nn::Module> module_;
  Forward forward_;
  TrainerOptions options_;
  torch::Device device_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  data::BatchMix mix_;
  DataParallel parallel_;
  std::vector<BatchCallback> batch_callbacks_;
  std::vector<EpochCallback> epoch_callbacks_;
  std::atomic<bool> stop_requested_{false};
  RunState state_;                 // epoch, history, best so far, schedule, metadata, classes
  torch::Tensor rng_state_;        // the CPU generator's state to continue with (after resume)
  torch::Tensor class_weights_;    // per-class weights of the training loss (undefined: none)
  io::NamedTensors best_weights_;  // the best epoch's parameters and buffers (CPU copies)
  std::optional<WeightAverage> average_;  // with ema_decay: what is evaluated and kept
  bool resumed_ = false;
  bool fitted_ = false;  // fit ran before: the run folder is this trainer's
};

}  // namespace sedensenet
