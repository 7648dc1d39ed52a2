#pragma once
/// \file
/// `Trainer`: trains any module that maps images to logits, evaluates it every epoch, keeps the
/// best weights, and (with a run folder) records everything needed to reproduce and resume.

#include "sedensenet/util/torch_compat.hpp"
#include <nlohmann/json.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim.h>
#include <torch/types.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "sedensenet/util/json.hpp"
#include "sedensenet/data/loader.hpp"
#include "sedensenet/data/rng.hpp"
#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/train/communicator.hpp"
#include "sedensenet/train/history.hpp"
#include "sedensenet/train/metrics.hpp"
#include "sedensenet/train/optimizer_state.hpp"
#include "sedensenet/train/options.hpp"
#include "sedensenet/train/schedule.hpp"
#include "sedensenet/util/errors.hpp"
#include "sedensenet/util/svg.hpp"
#include "sedensenet/util/threads.hpp"

namespace sedensenet {

/// A training run stopped because something went wrong in it (non-finite loss, ...). The message
/// says where and what to do.
class TrainingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Where batches come from. `ImageLoaderSource` wraps an `ImageLoader`; `TensorSource` serves
/// tensors already in memory. Implement it for anything else.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// Calls `fn` with each batch of epoch `epoch` (0-based), in order; stops early if it returns
  /// false.
  virtual void for_each(int64_t epoch, const std::function<bool(const data::Batch&)>& fn) = 0;
  /// Like `for_each`, starting at batch `first_batch` (0-based) of the epoch: how a run resumes
  /// from a checkpoint taken in the middle of an epoch. The batches must be those `for_each`
  /// would give from that point. The default reads and drops the first batches; sources that can
  /// seek override it.
  virtual void for_each_from(int64_t epoch, int64_t first_batch,
                             const std::function<bool(const data::Batch&)>& fn) {
    int64_t index = 0;
    for_each(epoch, [&](const data::Batch& batch) { return index++ < first_batch || fn(batch); });
  }
  /// Batches per epoch (for progress and the learning-rate schedule).
  virtual int64_t batches_per_epoch() const = 0;
  /// Distributed training: from now on yield only shard `index` of `count` of every epoch (see
  /// `data::ImageLoader::set_shard` for the rule: the same order on every rank, rank r takes every
  /// count-th sample from position r; `pad` repeats samples so that every shard has as many
  /// batches). The Trainer calls it. Sources that cannot be split keep this default, which refuses.
  virtual void shard(int64_t index, int64_t count, bool pad) {
    TORCH_CHECK(count == 1, "this BatchSource cannot be split across ", count, " ranks (shard ",
                index, "): override BatchSource::shard, or use ImageLoaderSource or TensorSource");
  }
};

/// Batches from an `ImageLoader` (which must outlive the source).
class ImageLoaderSource : public BatchSource {
 public:
  explicit ImageLoaderSource(data::ImageLoader& loader) : loader_(&loader) {}
  void for_each(int64_t epoch, const std::function<bool(const data::Batch&)>& fn) override {
    for_each_from(epoch, 0, fn);
  }
  void for_each_from(int64_t epoch, int64_t first_batch,
                     const std::function<bool(const data::Batch&)>& fn) override {
    auto pass = loader_->epoch(epoch, first_batch);  // skipped batches are never decoded
    while (auto batch = pass.next()) {
      if (!fn(*batch)) break;
    }
  }
  int64_t batches_per_epoch() const override { return loader_->batches_per_epoch(); }
  void shard(int64_t index, int64_t count, bool pad) override { loader_->set_shard(index, count, pad); }

 private:
  data::ImageLoader* loader_;
};

/// Batches of in-memory tensors: images (N, ...) and labels (N), shuffled per epoch from a seed.
class TensorSource : public BatchSource {
 public:
  TensorSource(torch::Tensor images, torch::Tensor labels, int64_t batch_size, bool shuffle = true,
               uint64_t seed = 0)
      : images_(std::move(images)), labels_(std::move(labels)), batch_size_(batch_size),
        shuffle_(shuffle), seed_(seed) {
    TORCH_CHECK(images_.size(0) == labels_.size(0), "TensorSource: ", images_.size(0),
                " images but ", labels_.size(0), " labels");
    TORCH_CHECK(batch_size >= 1, "TensorSource: batch_size must be >= 1, got ", batch_size);
  }
  void for_each(int64_t epoch, const std::function<bool(const data::Batch&)>& fn) override {
    std::vector<int64_t> order(static_cast<size_t>(images_.size(0)));
    std::iota(order.begin(), order.end(), 0);
    if (shuffle_) order = data::Rng::for_item(seed_, static_cast<uint64_t>(epoch), 7).permutation(images_.size(0));
    order = data::shard_of(order, shard_index_, shard_count_, shard_pad_);
    const auto n = static_cast<int64_t>(order.size());
    auto index = torch::tensor(order, torch::kLong);
    for (int64_t start = 0; start < n; start += batch_size_) {
      const int64_t len = std::min(batch_size_, n - start);
      auto idx = index.narrow(0, start, len);
      data::Batch b{images_.index_select(0, idx), labels_.index_select(0, idx),
                    std::vector<int64_t>(order.begin() + start, order.begin() + start + len)};
      if (!fn(b)) break;
    }
  }
  int64_t batches_per_epoch() const override {
    const int64_t n = data::shard_size(images_.size(0), shard_index_, shard_count_, shard_pad_);
    return (n + batch_size_ - 1) / batch_size_;
  }
  void shard(int64_t index, int64_t count, bool pad) override {
    TORCH_CHECK(count >= 1 && index >= 0 && index < count, "TensorSource::shard: index ", index,
                " outside [0, ", count, ")");
    shard_index_ = index;
    shard_count_ = count;
    shard_pad_ = pad;
  }

 private:
  torch::Tensor images_, labels_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  int64_t shard_index_ = 0, shard_count_ = 1;
  bool shard_pad_ = true;
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

/// What `evaluate` measures.
struct Evaluation {
  double loss = NAN, accuracy = NAN, top5 = NAN;
  int64_t images = 0;
  ConfusionMatrix confusion;
};

/// What `fit` returns.
struct TrainResult {
  History history;
  int64_t best_epoch = 0;       ///< 1-based epoch with the best test accuracy (0: none)
  double best_accuracy = NAN;
  bool early_stopped = false;   ///< early stopping ended the run
  bool interrupted = false;     ///< request_stop() ended the run before its last epoch
};

/// Trains a classifier.
///
/// Every epoch: train loss and accuracy, test loss and accuracy, top-5 when there are at least 5
/// classes, the learning rate, epoch time and images/s. The weights with the best test accuracy
/// are kept (as the reference does) and loaded into the model when `fit` returns. With a run
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
      : module_(model.ptr()),
        forward_([impl = model.ptr()](const torch::Tensor& x) { return impl->forward(x); }),
        options_(validated(std::move(options))),
        device_(options_.device()) {
    TORCH_CHECK(!device_.is_cuda() || torch::cuda::is_available(), "TrainerOptions: device '",
                options_.device(), "' requested but CUDA is not available in this build/machine");
    set_num_threads(options_.threads());
    module_->to(device_);
    build_optimizer();
  }

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
                        double first_bucket_mb = 1) {
    TORCH_CHECK(bucket_mb > 0 && first_bucket_mb > 0, "set_communicator: bucket sizes must be > 0");
    comm_ = communicator && communicator->world_size() > 1 ? std::move(communicator) : nullptr;
    bucket_mb_ = bucket_mb;
    first_bucket_mb_ = first_bucket_mb;
    reducer_.reset();
  }
  /// This process's rank (0 without a communicator) and the number of ranks.
  int64_t rank() const { return comm_ ? comm_->rank() : 0; }
  int64_t world_size() const { return comm_ ? comm_->world_size() : 1; }
  /// The gradient reducer of a distributed run (null before `fit` or without a communicator):
  /// its bucket count and the time spent waiting for communication.
  const GradientReducer* gradient_reducer() const { return reducer_.get(); }

  /// Class names (for metrics files and checkpoints), in label order.
  void set_class_names(std::vector<std::string> names) { class_names_ = std::move(names); }
  /// Extra JSON recorded in config.json and in every checkpoint ("model", "data", ...): what a
  /// program needs to rebuild the model and its input pipeline from the run folder.
  void set_metadata(nlohmann::json metadata) { metadata_ = std::move(metadata); }
  const nlohmann::json& metadata() const { return metadata_; }

  /// Continues the run saved in `run_dir` (its last.pt): model, optimizer, schedule, epoch, random
  /// state and history. The next `fit` starts after the saved epoch.
  void resume(const std::filesystem::path& run_dir) {
    const auto path = run_dir / "last.pt";
    auto read_last = [&] {
      TORCH_CHECK(std::filesystem::exists(path), "cannot resume: ", path.string(),
                  " not found (no completed epoch in that run folder?)");
      try {
        return io::read_regular_file(path);
      } catch (const std::exception& e) {
        TORCH_CHECK(false, "cannot resume: ", error_message(e));
      }
      return std::string();
    };
    auto read_best = [&] {
      if (!std::filesystem::exists(run_dir / "best.pt")) return std::string();
      try {
        return io::read_regular_file(run_dir / "best.pt");
      } catch (const std::exception& e) {
        TORCH_CHECK(false, "cannot resume: ", error_message(e), "; move it away to resume without it");
      }
      return std::string();
    };
    // Distributed: rank 0 reads the files and sends them, so other machines need no copy.
    const std::string last_bytes = shared_from_root(read_last);
    const std::string best_bytes = shared_from_root(read_best);
    io::CheckpointFile last;
    try {
      last = io::decode_checkpoint(last_bytes, path);
    } catch (const std::exception& e) {
      // The reader's message starts with the file's name: say it once.
      std::string reason = error_message(e);
      const std::string prefix = path.string() + ": ";
      if (reason.rfind(prefix, 0) == 0) reason = reason.substr(prefix.size());
      TORCH_CHECK(false, "cannot resume: ", path.string(), " is not a readable checkpoint: ", reason);
    }
    TORCH_CHECK(!last.optimizer.is_null(), "cannot resume: ", path.string(), " holds weights only "
                "(a best.pt, or a converted old checkpoint): its optimizer state is missing. "
                "Start a new run with --init-weights ", path.string(), " instead");
    try {
      io::load_module_tensors(*module_, last.model, path.string());
      load_optimizer_state(*optimizer_, options_.optimizer(), last.optimizer,
                           last.optimizer_tensors, path.string());
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "cannot resume: ", error_message(e), ". Resume with the run's own "
                  "model and settings (its config.json)");
    }
    module_->to(device_);
    const auto& state = last.state;
    auto field = [&](const char* key) -> const nlohmann::json& {
      TORCH_CHECK(state.contains(key), "cannot resume: ", path.string(), " has no '", key,
                  "' in its run state (damaged checkpoint?)");
      return state.at(key);
    };
    start_epoch_ = util::json_integer<int64_t>(field("epoch"), "checkpoint state 'epoch'");
    // A checkpoint taken when the run was stopped in the middle of an epoch: continue from there.
    batch_in_epoch_ = util::json_integer<int64_t>(state.value("batch", nlohmann::json(0)), "checkpoint state 'batch'");
    TORCH_CHECK(start_epoch_ >= 0 && batch_in_epoch_ >= 0, "cannot resume: ", path.string(),
                " has a negative epoch or batch (damaged checkpoint?)");
    partial_metrics_ = state.value("partial", nlohmann::json());
    history_ = History::from_json(field("history"));
    best_epoch_ = util::json_integer<int64_t>(field("best_epoch"), "checkpoint state 'best_epoch'");
    best_accuracy_ = field("best_accuracy").is_number() ? field("best_accuracy").get<double>() : NAN;
    epochs_without_improvement_ = util::json_integer<int64_t>(field("epochs_without_improvement"), "checkpoint state 'epochs_without_improvement'");
    schedule_state_ = field("schedule");
    if (state.contains("metadata") && metadata_.is_null()) metadata_ = state.at("metadata");
    if (state.contains("classes") && class_names_.empty()) {
      class_names_ = state.at("classes").get<std::vector<std::string>>();
    }
    rng_state_ = last.extra_tensor("rng_cpu");
    TORCH_CHECK(rng_state_.defined() && rng_state_.scalar_type() == torch::kUInt8 &&
                    rng_state_.numel() == at::detail::getDefaultCPUGenerator().get_state().numel(),
                "cannot resume: ", path.string(), " has no valid random state (damaged checkpoint?)");
    // Ranks: each continues with its own random state and epoch metrics when the run had as
    // many; a run resumed on another number of ranks continues at an epoch boundary only.
    const int64_t saved_world = util::json_integer<int64_t>(state.value("world_size", nlohmann::json(1)), "checkpoint state 'world_size'");
    if (saved_world != world_size()) {
      TORCH_CHECK(batch_in_epoch_ == 0, "cannot resume: ", path.string(), " was saved in the middle "
                  "of epoch ", start_epoch_ + 1, " by a run on ", saved_world, " process(es); "
                  "resume it on ", saved_world, " (this run has ", world_size(), ")");
      if (rank() != 0) rng_state_ = torch::Tensor();  // seeded from the seed, the rank and the epoch
    } else if (saved_world > 1) {
      const auto all = last.extra_tensor("rng_cpu_ranks");
      TORCH_CHECK(all.defined() && all.dim() == 2 && all.size(0) == saved_world &&
                      all.size(1) == rng_state_.numel() && all.scalar_type() == torch::kUInt8,
                  "cannot resume: ", path.string(), " has no valid per-rank random state");
      rng_state_ = all[rank()].clone();
      if (state.contains("partial_ranks") && !state.at("partial_ranks").is_null()) {
        partial_metrics_ = state.at("partial_ranks").at(static_cast<size_t>(rank()));
      }
      // Stopped mid-epoch: each rank's own BatchNorm statistics (averaged at the epoch's end).
      const auto buffers = last.extra_tensor("buffers_ranks");
      if (buffers.defined()) {
        int64_t total = 0;
        for (auto& b : module_->buffers()) total += b.is_floating_point() ? b.numel() : 0;
        TORCH_CHECK(buffers.dim() == 2 && buffers.size(0) == saved_world && buffers.size(1) == total,
                    "cannot resume: ", path.string(), " has per-rank statistics of another model");
        auto row = buffers[rank()];
        torch::NoGradGuard no_grad;
        int64_t offset = 0;
        for (auto& b : module_->buffers()) {
          if (!b.is_floating_point()) continue;
          b.copy_(row.narrow(0, offset, b.numel()).view_as(b));
          offset += b.numel();
        }
      }
    }
    if (!best_bytes.empty()) {
      // Keep the best weights in memory as the uninterrupted run would have.
      try {
        // Loaded into the model (a strict check that works for any module, Cloneable or not),
        // then the current weights go back.
        auto best = io::decode_checkpoint(best_bytes, run_dir / "best.pt");
        const auto current = io::module_tensors(*module_);
        io::load_module_tensors(*module_, best.model, (run_dir / "best.pt").string());
        io::load_module_tensors(*module_, current, "the current weights");
        best_weights_ = std::move(best.model);
      } catch (const std::exception& e) {
        TORCH_CHECK(false, "cannot resume: ", error_message(e), "; move it away to resume without it");
      }
    }
    resumed_ = true;
  }

  /// Epochs completed (after `resume`, the saved epoch).
  int64_t completed_epochs() const { return start_epoch_; }
  /// Batches completed in the epoch after `completed_epochs()`: non-zero when the run was stopped
  /// (`request_stop`) in the middle of an epoch, or resumed from such a checkpoint.
  int64_t batches_into_epoch() const { return batch_in_epoch_; }

  /// Trains until `options.epochs()` epochs are complete (or early stopping, or request_stop()).
  /// `test` may be null (then the best model is the last one).
  TrainResult fit(BatchSource& train, BatchSource* test = nullptr) {
    stop_requested_ = false;
    const auto run_dir = std::filesystem::path(options_.run_dir());
    if (!run_dir.empty() && rank() == 0) {
      std::filesystem::create_directories(run_dir);
      io::remove_stale_temporaries(run_dir);  // left by a process killed while writing
      write_config(run_dir);
    }
    if (resumed_ && rng_state_.defined()) {
      at::Generator cpu = at::detail::getDefaultCPUGenerator();
      cpu.set_state(rng_state_);
    } else {
      // Rank 0 draws what a single process would; the others get streams of their own.
      torch::manual_seed(options_.seed() + static_cast<uint64_t>(rank()) * 1000003u +
                         (resumed_ ? static_cast<uint64_t>(start_epoch_) : 0u));
    }
    if (comm_) start_distributed(train, test);
    LearningRateSchedule schedule(options_, train.batches_per_epoch());
    if (!schedule_state_.is_null()) schedule.from_json(schedule_state_);

    TrainResult result;
    for (int64_t epoch = start_epoch_; epoch < options_.epochs(); ++epoch) {
      const auto started = std::chrono::steady_clock::now();
      EpochMetrics metrics;
      metrics.epoch = epoch + 1;
      const bool completed = train_epoch(train, epoch, schedule, metrics);
      if (!completed) {
        // Stopped after a batch in the middle of the epoch: last.pt records the exact position
        // (weights, optimizer, random state, the epoch's metrics so far), so that a resumed run
        // continues with the next batch and ends as an uninterrupted one would.
        result.interrupted = true;
        schedule_state_ = schedule.to_json();
        if (!run_dir.empty()) write_checkpoint(run_dir / "last.pt", /*full=*/true);
        break;
      }
      batch_in_epoch_ = 0;
      partial_metrics_ = nullptr;
      if (comm_) average_buffers(*comm_, *module_);  // one model on every rank
      if (test != nullptr) {
        auto evaluation = evaluate(*test);
        metrics.test_loss = evaluation.loss;
        metrics.test_accuracy = evaluation.accuracy;
        metrics.test_top5 = evaluation.top5;
        schedule.observe(evaluation.loss);
      }
      metrics.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (comm_) {  // the slowest rank's time: one history on every rank
        auto seconds = torch::tensor({metrics.seconds}, torch::kDouble);
        comm_->all_reduce(seconds, Communicator::Op::max);
        metrics.seconds = seconds.item<double>();
      }
      history_.add(metrics);

      const double score = test != nullptr ? metrics.test_accuracy : metrics.train_accuracy;
      const bool improved = std::isnan(best_accuracy_) || score > best_accuracy_;
      if (improved) {
        best_accuracy_ = score;
        best_epoch_ = metrics.epoch;
        epochs_without_improvement_ = 0;
        best_weights_ = io::module_tensors(*module_);
      } else {
        ++epochs_without_improvement_;
      }
      start_epoch_ = epoch + 1;
      schedule_state_ = schedule.to_json();
      if (!run_dir.empty()) {
        if (improved) write_checkpoint(run_dir / "best.pt", /*full=*/false);
        write_checkpoint(run_dir / "last.pt", /*full=*/true);
        if (rank() == 0) write_history(run_dir);
      }
      for (auto& callback : epoch_callbacks_) callback(metrics);
      if (options_.early_stopping_patience() > 0 &&
          epochs_without_improvement_ >= options_.early_stopping_patience()) {
        result.early_stopped = true;
        break;
      }
      if (stop_requested_) {
        result.interrupted = start_epoch_ < options_.epochs();
        break;
      }
    }

    // The reference keeps the weights with the best test accuracy: load them.
    if (!best_weights_.empty()) {
      io::load_module_tensors(*module_, best_weights_, "the best weights");
      module_->to(device_);
    }
    if (!run_dir.empty() && test != nullptr && !best_weights_.empty() && !result.interrupted) {
      write_final_metrics(run_dir, evaluate(*test));
    }
    result.history = history_;
    result.best_epoch = best_epoch_;
    result.best_accuracy = best_accuracy_;
    return result;
  }

  /// Loss, top-1 and top-5 accuracy and the confusion matrix of the model on `source` (eval mode,
  /// no gradients).
  ///
  /// With a communicator, every rank must call it: each evaluates its shard of `source` (which
  /// is sharded here, without padding, so every image counts once) and the sums and the
  /// confusion matrix are added up over the ranks.
  Evaluation evaluate(BatchSource& source) {
    if (comm_) source.shard(comm_->rank(), comm_->world_size(), /*pad=*/false);
    const bool was_training = module_->is_training();
    module_->eval();
    torch::NoGradGuard no_grad;
    RunningMetrics running;
    Evaluation result;
    int64_t classes = 0;
    source.for_each(0, [&](const data::Batch& batch) {
      if (batch.labels.size(0) == 0) return true;
      auto x = batch.images.to(device_, /*non_blocking=*/true);
      auto y = batch.labels.to(device_);
      auto logits = forward_with_autocast(x).to(torch::kFloat);
      if (classes == 0) {
        classes = logits.size(1);
        result.confusion = ConfusionMatrix(classes);
      }
      auto loss = torch::nn::functional::cross_entropy(logits, y);
      running.add(logits, y, loss.item<double>());
      result.confusion.add(logits, y);
      return true;
    });
    if (was_training) module_->train();
    if (comm_) {
      auto c = torch::tensor({classes}, torch::kLong);
      comm_->all_reduce(c, Communicator::Op::max);
      classes = c.item<int64_t>();
      if (result.confusion.classes() != classes) result.confusion = ConfusionMatrix(classes);
      running = reduced(running);
      auto counts = result.confusion.counts().clone();
      comm_->all_reduce(counts);
      result.confusion = ConfusionMatrix::from_counts(counts);
    }
    result.images = running.count();
    if (running.count() > 0) {
      result.loss = running.loss();
      result.accuracy = running.accuracy();
      result.top5 = classes >= 5 ? running.top5() : NAN;
    }
    return result;
  }

  const TrainerOptions& options() const { return options_; }
  const History& history() const { return history_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }

 private:
  static TrainerOptions validated(TrainerOptions options) {
    options.validate();
    return options;
  }

  void build_optimizer() {
    std::vector<torch::Tensor> decay, no_decay;
    for (const auto& p : module_->parameters()) {
      if (!p.requires_grad()) continue;
      (options_.no_decay_norm_and_bias() && p.dim() <= 1 ? no_decay : decay).push_back(p);
    }
    const double wd = options_.weight_decay();
    std::vector<torch::optim::OptimizerParamGroup> groups;
    auto make_group = [&](std::vector<torch::Tensor> params, double group_decay) {
      switch (options_.optimizer()) {
        case OptimizerKind::adam:
          return torch::optim::OptimizerParamGroup(
              params, std::make_unique<torch::optim::AdamOptions>(
                          torch::optim::AdamOptions(options_.lr()).weight_decay(group_decay)));
        case OptimizerKind::adamw:
          return torch::optim::OptimizerParamGroup(
              params, std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(options_.lr()).weight_decay(group_decay)));
        case OptimizerKind::sgd:
        default:
          return torch::optim::OptimizerParamGroup(
              params, std::make_unique<torch::optim::SGDOptions>(
                          torch::optim::SGDOptions(options_.lr())
                              .momentum(options_.momentum())
                              .nesterov(options_.nesterov())
                              .weight_decay(group_decay)));
      }
    };
    if (!decay.empty()) groups.push_back(make_group(decay, wd));
    if (!no_decay.empty()) groups.push_back(make_group(no_decay, 0.0));
    TORCH_CHECK(!groups.empty(), "Trainer: the model has no trainable parameters");
    switch (options_.optimizer()) {
      case OptimizerKind::adam:
        optimizer_ = std::make_unique<torch::optim::Adam>(groups, torch::optim::AdamOptions(options_.lr()));
        break;
      case OptimizerKind::adamw:
        optimizer_ = std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(options_.lr()));
        break;
      case OptimizerKind::sgd:
        optimizer_ = std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(options_.lr()));
        break;
    }
  }

  void set_lr(double lr) {
    for (auto& group : optimizer_->param_groups()) {
      switch (options_.optimizer()) {
        case OptimizerKind::adam:
          static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
          break;
        case OptimizerKind::adamw:
          static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
          break;
        case OptimizerKind::sgd:
          static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
          break;
      }
    }
  }

  torch::Tensor forward_with_autocast(const torch::Tensor& x) {
    if (!(options_.bf16() && device_.is_cuda())) return forward_(x);
    compat::AutocastGuard autocast(at::kCUDA, at::kBFloat16);
    auto out = forward_(x);
    return out;
  }

  /// MixUp or CutMix of a batch: returns the mixed images, the permutation and the weight of the
  /// original labels; lambda = 1 means no mixing.
  struct Mixed {
    torch::Tensor images;
    torch::Tensor permutation;
    double lambda = 1.0;
  };

  Mixed mix(const torch::Tensor& images, int64_t epoch, int64_t batch) {
    const double mixup = options_.mixup_alpha(), cutmix = options_.cutmix_alpha();
    if ((mixup <= 0 && cutmix <= 0) || images.size(0) < 2) return {images, {}, 1.0};
    data::Rng rng = data::Rng::for_item(options_.seed(), static_cast<uint64_t>(epoch),
                                        static_cast<uint64_t>(batch) + 0x9e37);
    const bool use_cutmix = cutmix > 0 && (mixup <= 0 || rng.bernoulli(0.5));
    const double alpha = use_cutmix ? cutmix : mixup;
    auto beta = [&rng](double a) {
      // Beta(a, a) as G1 / (G1 + G2), Gamma(a) by Marsaglia and Tsang (boosted for a < 1).
      auto gamma = [&rng](double shape) {
        const double boost = shape < 1 ? std::pow(rng.uniform(), 1.0 / shape) : 1.0;
        const double d = (shape < 1 ? shape + 1 : shape) - 1.0 / 3.0, c = 1.0 / std::sqrt(9 * d);
        for (;;) {
          double x, v;
          do {
            // Normal deviate by Box-Muller.
            const double u1 = std::max(rng.uniform(), 1e-300), u2 = rng.uniform();
            x = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
            v = 1 + c * x;
          } while (v <= 0);
          v = v * v * v;
          const double u = rng.uniform();
          if (u < 1 - 0.0331 * x * x * x * x || std::log(u) < 0.5 * x * x + d * (1 - v + std::log(v))) {
            return d * v * boost;
          }
        }
      };
      const double g1 = gamma(a), g2 = gamma(a);
      return g1 / (g1 + g2);
    };
    double lambda = beta(alpha);
    auto order = rng.permutation(images.size(0));
    auto permutation = torch::tensor(order, torch::kLong).to(images.device());
    auto shuffled = images.index_select(0, permutation);
    if (!use_cutmix) return {images * lambda + shuffled * (1 - lambda), permutation, lambda};
    const int64_t h = images.size(2), w = images.size(3);
    const double ratio = std::sqrt(1 - lambda);
    const auto cut_h = static_cast<int64_t>(h * ratio), cut_w = static_cast<int64_t>(w * ratio);
    const int64_t cy = rng.randint(0, h), cx = rng.randint(0, w);
    const int64_t y0 = std::clamp<int64_t>(cy - cut_h / 2, 0, h), y1 = std::clamp<int64_t>(cy + cut_h / 2, 0, h);
    const int64_t x0 = std::clamp<int64_t>(cx - cut_w / 2, 0, w), x1 = std::clamp<int64_t>(cx + cut_w / 2, 0, w);
    auto mixed = images.clone();
    if (y1 > y0 && x1 > x0) {
      mixed.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0)
          .copy_(shuffled.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0));
    }
    lambda = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
    return {mixed, permutation, lambda};
  }

  bool train_epoch(BatchSource& train, int64_t epoch, LearningRateSchedule& schedule,
                   EpochMetrics& metrics) {
    module_->train();
    RunningMetrics running;
    const auto started = std::chrono::steady_clock::now();
    const int64_t batches = train.batches_per_epoch();
    int64_t batch_index = 0;
    if (batch_in_epoch_ > 0 && epoch == start_epoch_) {
      // Resumed from a checkpoint taken in the middle of this epoch.
      batch_index = batch_in_epoch_;
      if (!partial_metrics_.is_null()) running = RunningMetrics::from_json(partial_metrics_);
    }
    const int64_t first_batch = batch_index;
    const int64_t images_before = running.count();  // speed counts this session's images only
    double lr = schedule.at(epoch, 0);
    namespace F = torch::nn::functional;
    const auto ce = F::CrossEntropyFuncOptions().label_smoothing(options_.label_smoothing());
    bool stopped = false;
    int64_t classes = 0;
    train.for_each_from(epoch, first_batch, [&](const data::Batch& batch) {
      // An empty batch (every file unusable) is skipped; in a distributed run this rank still
      // takes part in the step's collectives, contributing nothing.
      const bool empty = batch.labels.size(0) == 0;
      if (empty && !comm_) {
        ++batch_index;
        return true;
      }
      lr = schedule.at(epoch, batch_index);
      set_lr(lr);
      torch::Tensor logits, loss, counted;
      double loss_value = 0;
      if (!empty) {
        auto x = batch.images.to(device_, /*non_blocking=*/true);
        auto y = batch.labels.to(device_);
        auto mixed = mix(x, epoch, batch_index);
        logits = forward_with_autocast(mixed.images).to(torch::kFloat);
        loss = F::cross_entropy(logits, y, ce);
        counted = y;
        if (mixed.lambda < 1.0) {
          auto y2 = y.index_select(0, mixed.permutation);
          loss = loss * mixed.lambda + F::cross_entropy(logits, y2, ce) * (1 - mixed.lambda);
          if (mixed.lambda < 0.5) counted = y2;  // accuracy counts the dominant label
        }
        loss_value = loss.item<double>();
      }
      bool stop_after = false;
      if (comm_) {
        // Every rank learns whether any rank's loss is not finite or any rank was asked to stop,
        // so that all of them stop at the same batch.
        const int64_t world = comm_->world_size(), me = comm_->rank();
        auto flags = torch::zeros({2 * world}, torch::kDouble);
        flags[me] = std::isfinite(loss_value) ? 0.0 : 1.0;
        flags[world + me] = stop_requested_ ? 1.0 : 0.0;
        comm_->all_reduce(flags);
        const auto flag = flags.accessor<double, 1>();
        std::vector<int64_t> bad;
        for (int64_t r = 0; r < world; ++r) {
          if (flag[r] > 0) bad.push_back(r);
          if (flag[world + r] > 0) stop_after = true;
        }
        if (!bad.empty()) {
          std::string ranks;
          for (auto r : bad) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
          throw TrainingError(non_finite_message(loss_value, epoch, batch_index, batches, lr,
                                                 (bad.size() == 1 ? " on rank " : " on ranks ") + ranks));
        }
      } else if (!std::isfinite(loss_value)) {
        throw TrainingError(non_finite_message(loss_value, epoch, batch_index, batches, lr, ""));
      }
      optimizer_->zero_grad();
      if (!comm_) {
        loss.backward();
      } else if (empty) {
        reducer_->finish_without_backward();
      } else {
        reducer_->prepare();
        loss.backward();  // buckets are all-reduced as their gradients arrive
        reducer_->finish();
      }
      if (options_.grad_clip_norm() > 0) {
        torch::nn::utils::clip_grad_norm_(module_->parameters(), options_.grad_clip_norm());
      }
      optimizer_->step();
      if (!empty) {
        running.add(logits, counted, loss_value);
        classes = logits.size(1);
      }
      ++batch_index;
      if (!batch_callbacks_.empty()) {
        BatchEvent event;
        event.epoch = epoch + 1;
        event.epochs = options_.epochs();
        event.batch = batch_index;
        event.batches = batches;
        event.loss = running.loss();
        event.accuracy = running.accuracy();
        event.lr = lr;
        event.elapsed_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        event.images_per_second =
            static_cast<double>(running.count() - images_before) / event.elapsed_seconds;
        for (auto& callback : batch_callbacks_) callback(event);
      }
      // One process stops after the batch during which it was asked to; ranks stop together
      // after the batch whose flags carried the request.
      if ((comm_ ? stop_after : stop_requested_.load()) && batch_index < batches) {
        stopped = true;
        batch_in_epoch_ = batch_index;
        partial_metrics_ = running.to_json();
        return false;
      }
      return true;
    });
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    int64_t session_images = running.count() - images_before;
    if (comm_ && !stopped) {
      // Global figures: sums over the ranks; the epoch took as long as its slowest rank.
      running = reduced(running);
      auto sums = torch::tensor({static_cast<double>(session_images), stop_requested_ ? 1.0 : 0.0},
                                torch::kDouble);
      comm_->all_reduce(sums);
      auto maxima = torch::tensor({seconds, static_cast<double>(classes)}, torch::kDouble);
      comm_->all_reduce(maxima, Communicator::Op::max);
      session_images = static_cast<int64_t>(std::llround(sums[0].item<double>()));
      if (sums[1].item<double>() > 0) stop_requested_ = true;  // every rank stops after this epoch
      seconds = maxima[0].item<double>();
      classes = static_cast<int64_t>(maxima[1].item<double>());
    }
    metrics.train_loss = running.loss();
    metrics.train_accuracy = running.accuracy();
    metrics.train_top5 = classes >= 5 ? running.top5() : NAN;
    metrics.lr = lr;
    metrics.train_images = running.count();
    metrics.images_per_second = static_cast<double>(session_images) / seconds;
    return !stopped;
  }

  std::string non_finite_message(double value, int64_t epoch, int64_t batch_index, int64_t batches,
                                 double lr, const std::string& where) const {
    std::ostringstream os;
    os << "the loss became " << (std::isfinite(value) ? std::string("non-finite") : std::to_string(value))
       << where << " at epoch " << epoch + 1 << ", batch " << batch_index + 1 << " of " << batches
       << " (learning rate " << lr << "); "
       << (options_.run_dir().empty()
               ? std::string("nothing was saved")
               : options_.run_dir() + "/last.pt holds the last good state (epoch " +
                     std::to_string(start_epoch_) + ")")
       << ". Lower the learning rate, enable gradient clipping (grad_clip_norm) or check the data";
    return os.str();
  }

  /// `read()` on rank 0, sent to every rank (a failure there is thrown on every rank); without
  /// a communicator, just `read()`.
  template <typename Read>
  std::string shared_from_root(Read&& read) {
    if (!comm_) return read();
    std::string bytes, error;
    if (comm_->rank() == 0) {
      try {
        bytes = read();
      } catch (const std::exception& e) {
        error = error_message(e);
      }
    }
    try {
      return broadcast_bytes(*comm_, bytes, 0, error);
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      TORCH_CHECK(false, error_message(e));
    }
    return {};
  }

  /// Sums over the ranks.
  RunningMetrics reduced(const RunningMetrics& local) {
    const auto sums = local.sums();
    auto t = torch::tensor(std::vector<double>(sums.begin(), sums.end()), torch::kDouble);
    comm_->all_reduce(t);
    return RunningMetrics::from_sums({t[0].item<double>(), t[1].item<double>(), t[2].item<double>(),
                                      t[3].item<double>()});
  }

  /// Shards the data, checks that every rank sees the same amount of it, makes rank 0's model
  /// everyone's and sets up the gradient buckets.
  void start_distributed(BatchSource& train, BatchSource* test) {
    const int64_t me = comm_->rank(), world = comm_->world_size();
    train.shard(me, world, /*pad=*/true);
    if (test != nullptr) test->shard(me, world, /*pad=*/false);
    const int64_t batches = train.batches_per_epoch();
    auto range = torch::tensor({batches, -batches}, torch::kLong);
    comm_->all_reduce(range, Communicator::Op::max);
    TORCH_CHECK(range[0].item<int64_t>() == -range[1].item<int64_t>(), "rank ", me, ": the ranks "
                "disagree on the number of training batches per epoch (from ", -range[1].item<int64_t>(),
                " to ", range[0].item<int64_t>(), "; this rank has ", batches, "): every rank must "
                "read the same data with the same batch size");
    // Resumed in the middle of an epoch, each rank has its own BatchNorm statistics back.
    broadcast_module(*comm_, *module_, 0, /*buffers=*/!(resumed_ && batch_in_epoch_ > 0));
    if (!reducer_) {
      reducer_ = std::make_unique<GradientReducer>(*comm_, module_->parameters(), bucket_mb_, first_bucket_mb_);
    }
  }

  nlohmann::json state_json() const {
    return {{"epoch", start_epoch_},
            {"batch", batch_in_epoch_},
            {"partial", partial_metrics_},
            {"history", history_.to_json()},
            {"best_epoch", best_epoch_},
            {"best_accuracy", std::isnan(best_accuracy_) ? nlohmann::json(nullptr)
                                                         : nlohmann::json(best_accuracy_)},
            {"epochs_without_improvement", epochs_without_improvement_},
            {"schedule", schedule_state_},
            {"options", options_.to_json()},
            {"metadata", metadata_},
            {"classes", class_names_}};
  }

  /// The model's current weights with the run state: last.pt (full: also optimizer, random state)
  /// or best.pt (written when the model is the best so far), atomically.
  /// Distributed: every rank calls it (each rank's random state and epoch metrics are gathered);
  /// rank 0 writes.
  void write_checkpoint(const std::filesystem::path& path, bool full) {
    auto state = state_json();
    torch::Tensor rng_ranks;
    torch::Tensor buffer_ranks;
    if (comm_ && full) {
      state["world_size"] = comm_->world_size();
      rng_ranks = torch::stack(comm_->all_gather(at::detail::getDefaultCPUGenerator().get_state()));
      if (batch_in_epoch_ > 0) {
        // Mid-epoch, the ranks' BatchNorm statistics still differ: keep each.
        std::vector<torch::Tensor> parts;
        for (const auto& b : module_->buffers()) {
          if (b.is_floating_point()) parts.push_back(b.detach().reshape({-1}).to(torch::kCPU, torch::kDouble));
        }
        if (!parts.empty()) buffer_ranks = torch::stack(comm_->all_gather(torch::cat(parts)));
      }
      if (!partial_metrics_.is_null()) {
        const auto sums = RunningMetrics::from_json(partial_metrics_).sums();
        auto all = comm_->all_gather(torch::tensor(std::vector<double>(sums.begin(), sums.end()), torch::kDouble));
        state["partial_ranks"] = nlohmann::json::array();
        for (auto& t : all) {
          state["partial_ranks"].push_back(RunningMetrics::from_sums(
              {t[0].item<double>(), t[1].item<double>(), t[2].item<double>(), t[3].item<double>()}).to_json());
        }
      }
    }
    if (rank() != 0) return;
    io::CheckpointFile file;
    file.state = std::move(state);
    file.model = io::module_tensors(*module_);
    if (full) {
      std::tie(file.optimizer, file.optimizer_tensors) = optimizer_state(*optimizer_, options_.optimizer());
      file.extra.emplace_back("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
      if (rng_ranks.defined()) file.extra.emplace_back("rng_cpu_ranks", rng_ranks);
      if (buffer_ranks.defined()) file.extra.emplace_back("buffers_ranks", buffer_ranks);
    }
    io::write_checkpoint_file(path, file);
  }

  void write_config(const std::filesystem::path& run_dir) {
    nlohmann::json config = {{"trainer", options_.to_json()}, {"metadata", metadata_},
                             {"classes", class_names_}};
    if (comm_) config["distributed"] = {{"world_size", comm_->world_size()}, {"group", comm_->describe()}};
    io::write_file_atomically(run_dir / "config.json", config.dump(2) + "\n");
  }

  void write_history(const std::filesystem::path& run_dir) {
    io::write_file_atomically(run_dir / "history.csv", history_.to_csv());
    io::write_file_atomically(run_dir / "history.jsonl", history_.to_jsonl());
    io::write_file_atomically(run_dir / "loss.svg", history_.plot("loss"));
    io::write_file_atomically(run_dir / "accuracy.svg", history_.plot("accuracy"));
    io::write_file_atomically(run_dir / "lr.svg", history_.plot("lr"));
  }

  void write_final_metrics(const std::filesystem::path& run_dir, const Evaluation& evaluation) {
    if (rank() != 0) return;
    std::vector<std::string> names = class_names_;
    for (auto i = static_cast<int64_t>(names.size()); i < evaluation.confusion.classes(); ++i) {
      names.push_back(std::to_string(i));
    }
    auto confusion = evaluation.confusion.to_json(names);
    nlohmann::json metrics = {{"best_epoch", best_epoch_},
                              {"test_loss", evaluation.loss},
                              {"test_accuracy", evaluation.accuracy},
                              {"test_top5", std::isnan(evaluation.top5) ? nlohmann::json(nullptr)
                                                                        : nlohmann::json(evaluation.top5)},
                              {"test_images", evaluation.images},
                              {"macro_f1", confusion["macro_f1"]},
                              {"per_class", confusion["per_class"]}};
    io::write_file_atomically(run_dir / "metrics.json", metrics.dump(2) + "\n");
    io::write_file_atomically(run_dir / "confusion_matrix.json", confusion.dump(2) + "\n");
    io::write_file_atomically(run_dir / "confusion_matrix.csv", evaluation.confusion.to_csv(names));
    std::vector<std::vector<double>> matrix;
    for (int64_t i = 0; i < evaluation.confusion.classes(); ++i) {
      std::vector<double> row;
      for (int64_t k = 0; k < evaluation.confusion.classes(); ++k) {
        row.push_back(static_cast<double>(evaluation.confusion.counts()[i][k].item<int64_t>()));
      }
      matrix.push_back(row);
    }
    svg::ChartOptions chart;
    chart.title = "confusion matrix (best model, epoch " + std::to_string(best_epoch_) + ")";
    chart.x_label = "predicted";
    chart.y_label = "true";
    io::write_file_atomically(run_dir / "confusion_matrix.svg",
                              svg::heatmap(matrix, names, names, chart));
  }

  std::shared_ptr<torch::nn::Module> module_;
  std::function<torch::Tensor(const torch::Tensor&)> forward_;
  TrainerOptions options_;
  torch::Device device_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<BatchCallback> batch_callbacks_;
  std::vector<EpochCallback> epoch_callbacks_;
  std::atomic<bool> stop_requested_{false};
  std::vector<std::string> class_names_;
  nlohmann::json metadata_;
  History history_;
  int64_t start_epoch_ = 0;
  int64_t best_epoch_ = 0;
  double best_accuracy_ = NAN;
  int64_t epochs_without_improvement_ = 0;
  nlohmann::json schedule_state_;
  torch::Tensor rng_state_;
  int64_t batch_in_epoch_ = 0;        // batches done in epoch start_epoch_ (a mid-epoch stop)
  nlohmann::json partial_metrics_;     // that epoch's RunningMetrics so far
  io::NamedTensors best_weights_;  // the best epoch's parameters and buffers (CPU copies)
  bool resumed_ = false;
  std::shared_ptr<Communicator> comm_;       // distributed training (null: one process)
  std::unique_ptr<GradientReducer> reducer_;
  double bucket_mb_ = 25, first_bucket_mb_ = 1;
};

}  // namespace sedensenet
