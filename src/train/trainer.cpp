// The training loop: see include/sedensenet/train/trainer.hpp.
#include "sedensenet/train/trainer.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>

#include <chrono>
#include <cmath>
#include <optional>
#include <sstream>

#include "sedensenet/io/files.hpp"
#include "sedensenet/nn/densenet.hpp"
#include "sedensenet/train/optimizer_factory.hpp"
#include "sedensenet/train/optimizer_state.hpp"
#include "sedensenet/train/run_folder.hpp"
#include "sedensenet/train/schedule.hpp"
#include "sedensenet/util/allocator.hpp"
#include "sedensenet/util/errors.hpp"
#include "sedensenet/util/threads.hpp"
#include "sedensenet/util/torch_compat.hpp"

namespace sedensenet {

namespace {

TrainerOptions validated(TrainerOptions options) {
  options.validate();
  return options;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Trainer::Trainer(std::shared_ptr<torch::nn::Module> module, Forward forward, TrainerOptions options)
    : module_(std::move(module)),
      forward_(std::move(forward)),
      options_(validated(std::move(options))),
      device_(options_.device()),
      mix_(options_.mixup_alpha(), options_.cutmix_alpha(), options_.seed()) {
  TORCH_CHECK(!device_.is_cuda() || torch::cuda::is_available(), "TrainerOptions: device '",
              options_.device(), "' requested but CUDA is not available in this build/machine");
  set_num_threads(options_.threads());
  module_->to(device_);
  // Channels-last maps on the CPU for the library's own network in the standard memory mode (the
  // other modes keep their NCHW block buffers): before the optimizer sees the parameters.
  if (auto* net = dynamic_cast<DenseNetImpl*>(module_.get());
      net != nullptr && options_.channels_last() && device_.is_cpu() &&
      net->options.memory() == MemoryMode::standard) {
    net->set_memory_format(torch::MemoryFormat::ChannelsLast);
  }
  optimizer_ = make_optimizer(module_->parameters(), options_);
}

Trainer::~Trainer() = default;

void Trainer::set_communicator(std::shared_ptr<Communicator> communicator, double bucket_mb,
                               double first_bucket_mb) {
  parallel_ = DataParallel(std::move(communicator), bucket_mb, first_bucket_mb);
}

TrainResult Trainer::fit(BatchSource& train, BatchSource* test) {
  stop_requested_ = false;
  // CPU training: freed activation blocks stay in the process, placed so that they do not
  // fragment it (sedensenet/util/allocator.hpp); once per process.
  if (device_.is_cpu()) keep_freed_memory();
  const std::optional<RunFolder> folder =
      options_.run_dir().empty() ? std::nullopt : std::optional<RunFolder>(RunFolder(options_.run_dir()));
  const bool writes = folder && rank() == 0;
  if (writes && !resumed_ && !fitted_) {
    // A run folder is never overwritten unasked.
    if (const auto files = folder->run_files(); !files.empty()) {
      if (!options_.overwrite()) {
        std::string names;
        for (size_t i = 0; i < files.size() && i < 3; ++i) names += (i ? ", " : "") + files[i];
        throw TrainingError("run folder " + folder->path().string() + " already holds a run (" + names +
                            (files.size() > 3 ? ", ..." : "") +
                            "): continue it with resume (sedensenet train --resume " + folder->path().string() +
                            "), choose another run folder, or set overwrite (--overwrite) to replace it");
      }
      folder->clear();
    }
  }
  fitted_ = true;
  if (writes) {
    folder->prepare();
    write_config(folder->path());
  }
  if (resumed_ && rng_state_.defined()) {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    cpu.set_state(rng_state_);
  } else {
    // Rank 0 draws what a single process would; the others get streams of their own.
    torch::manual_seed(options_.seed() + static_cast<uint64_t>(rank()) * 1000003u +
                       (resumed_ ? static_cast<uint64_t>(state_.epoch) : 0u));
  }
  parallel_.start(train, test, *module_, /*keep_buffers=*/resumed_ && state_.batch > 0);
  // On a small data set the epoch count rises to make options_.min_steps() steps; the count
  // depends only on the options and the data's size, so a resumed run arrives at the same one.
  options_.epochs(epochs_for_min_steps(options_.epochs(), options_.min_steps(), train.batches_per_epoch()));
  LearningRateSchedule schedule(options_, train.batches_per_epoch());
  schedule.set_epochs(planned_epochs());
  if (!state_.schedule.is_null()) schedule.from_json(state_.schedule);
  // A time budget is measured from here; the first epoch's share trained in this session scales
  // its time when a run resumed in the middle of it.
  const auto fit_started = std::chrono::steady_clock::now();
  const double first_epoch_share =
      state_.epoch == 0 ? 1.0 - static_cast<double>(state_.batch) /
                                    static_cast<double>(std::max<int64_t>(1, train.batches_per_epoch()))
                        : 1.0;
  // The average starts at the weights every rank starts with (resume restored it already).
  if (options_.ema_decay() > 0 && !average_) average_.emplace(*module_, options_.ema_decay());

  TrainResult result;
  for (int64_t epoch = state_.epoch; epoch < planned_epochs(); ++epoch) {
    const auto started = std::chrono::steady_clock::now();
    EpochMetrics metrics;
    metrics.epoch = epoch + 1;
    if (!train_epoch(train, epoch, schedule, metrics)) {
      // Stopped after a batch in the middle of the epoch: last.pt records the exact position
      // (weights, optimizer, random state, the epoch's metrics so far), so that a resumed run
      // continues with the next batch and ends as an uninterrupted one would.
      result.interrupted = true;
      state_.schedule = schedule.to_json();
      if (folder) write_checkpoint(folder->last_checkpoint(), /*full=*/true);
      break;
    }
    state_.batch = 0;
    state_.partial = nullptr;
    parallel_.average_buffers(*module_);  // one model on every rank
    // With a weight average, it is what is evaluated and kept, until the trained weights come
    // back for last.pt. Its BatchNorm statistics are per rank like the model's; their mean over
    // the ranks is the average of the ranks' mean, so they are averaged the same way.
    std::optional<WeightAverage::Applied> averaged;
    if (average_) {
      averaged.emplace(average_->apply_to(*module_));
      if (parallel_.distributed()) {
        parallel_.average_buffers(*module_);
        average_->assign(*module_);
      }
    }
    if (test != nullptr) {
      auto evaluation = evaluate(*test);
      metrics.test_loss = evaluation.loss;
      metrics.test_accuracy = evaluation.accuracy;
      metrics.test_top5 = evaluation.top5;
      metrics.test_macro_f1 = evaluation.confusion.macro_f1();
      for (const auto& c : evaluation.confusion.per_class()) metrics.test_recall.push_back(c.recall);
      const auto predicted = evaluation.confusion.counts().sum(0);
      if (predicted.numel() > 0 && evaluation.images > 0) {
        metrics.test_top_class = predicted.argmax().item<int64_t>();
        metrics.test_top_class_share =
            static_cast<double>(predicted[metrics.test_top_class].item<int64_t>()) / static_cast<double>(evaluation.images);
      }
      schedule.observe(evaluation.loss);
    }
    metrics.seconds = parallel_.max({seconds_since(started)}).at(0);  // one history on every rank
    state_.history.add(metrics);

    // The best epoch by options_.best_metric (train accuracy without a test source).
    const auto score = [&](const EpochMetrics& m) {
      if (test == nullptr) return m.train_accuracy;
      switch (options_.best_metric()) {
        case BestMetric::macro_f1: return m.test_macro_f1;
        case BestMetric::loss: return -m.test_loss;
        case BestMetric::accuracy: break;
      }
      return m.test_accuracy;
    };
    const EpochMetrics* best = nullptr;
    for (const auto& m : state_.history.epochs()) {
      if (m.epoch == state_.best_epoch) best = &m;
    }
    const bool improved = best == nullptr || std::isnan(score(*best)) || score(metrics) > score(*best);
    if (improved) {
      state_.best_accuracy = test != nullptr ? metrics.test_accuracy : metrics.train_accuracy;
      state_.best_epoch = metrics.epoch;
      state_.epochs_without_improvement = 0;
      best_weights_ = io::module_tensors(*module_);
    } else {
      ++state_.epochs_without_improvement;
    }
    averaged.reset();
    state_.epoch = epoch + 1;
    state_.schedule = schedule.to_json();
    if (epoch == 0 && options_.time_budget_minutes() > 0 && state_.planned_epochs == 0) {
      // The time budget fixes the epoch count at the first epoch's pace (training and evaluation,
      // the slowest rank's); last.pt, written next, records it for a resumed run.
      const double seconds = parallel_.max({seconds_since(fit_started) / std::max(first_epoch_share, 1e-3)}).at(0);
      state_.planned_epochs = epochs_within_budget(60.0 * options_.time_budget_minutes(), seconds, options_.epochs());
      schedule.set_epochs(state_.planned_epochs);
    }
    if (folder) {
      if (improved) write_checkpoint(folder->best_checkpoint(), /*full=*/false);
      write_checkpoint(folder->last_checkpoint(), /*full=*/true);
      if (writes) folder->write_history(state_.history);
    }
    for (auto& callback : epoch_callbacks_) callback(metrics);
    if (options_.early_stopping_patience() > 0 &&
        state_.epochs_without_improvement >= options_.early_stopping_patience()) {
      result.early_stopped = true;
      break;
    }
    // The ranks agree here too: a request that arrived after the epoch's last collective (during
    // evaluation or while a checkpoint was written) must not stop one rank and not the others.
    const bool stop = parallel_.distributed()
                          ? parallel_.sum({stop_requested_ ? 1.0 : 0.0}).at(0) > 0
                          : stop_requested_.load();
    if (stop) {
      stop_requested_ = true;
      result.interrupted = state_.epoch < planned_epochs();
      break;
    }
  }

  // The reference keeps the weights with the best test accuracy: load them.
  if (!best_weights_.empty()) {
    io::load_module_tensors(*module_, best_weights_, "the best weights");
    module_->to(device_);
  }
  if (folder && test != nullptr && !best_weights_.empty() && !result.interrupted) {
    const auto evaluation = evaluate(*test);
    if (writes) folder->write_final_metrics(evaluation, state_.classes, state_.best_epoch);
  }
  result.history = state_.history;
  result.best_epoch = state_.best_epoch;
  result.best_accuracy = state_.best_accuracy;
  return result;
}

int64_t Trainer::planned_epochs() const {
  return state_.planned_epochs > 0 ? std::min(state_.planned_epochs, options_.epochs()) : options_.epochs();
}

Evaluation Trainer::evaluate(BatchSource& source) {
  parallel_.shard_for_evaluation(source);
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
  parallel_.reduce_evaluation(running, result.confusion, classes);
  result.images = running.count();
  if (running.count() > 0) {
    result.loss = running.loss();
    result.accuracy = running.accuracy();
    result.top5 = classes >= 5 ? running.top5() : NAN;
  }
  return result;
}

torch::Tensor Trainer::forward_with_autocast(const torch::Tensor& x) {
  if (!(options_.bf16() && device_.is_cuda())) return forward_(x);
  compat::AutocastGuard autocast(at::kCUDA, at::kBFloat16);
  return forward_(x);
}

bool Trainer::train_epoch(BatchSource& train, int64_t epoch, LearningRateSchedule& schedule,
                          EpochMetrics& metrics) {
  namespace F = torch::nn::functional;
  module_->train();
  RunningMetrics running;
  const auto started = std::chrono::steady_clock::now();
  const int64_t batches = train.batches_per_epoch();
  int64_t batch_index = 0;
  if (state_.batch > 0 && epoch == state_.epoch) {
    // Resumed from a checkpoint taken in the middle of this epoch.
    batch_index = state_.batch;
    if (!state_.partial.is_null()) running = RunningMetrics::from_json(state_.partial);
  }
  const int64_t first_batch = batch_index;
  const int64_t images_before = running.count();  // speed counts this session's images only
  double lr = schedule.at(epoch, 0);
  auto ce = F::CrossEntropyFuncOptions().label_smoothing(options_.label_smoothing());
  if (class_weights_.defined()) ce.weight(class_weights_.to(device_));
  bool stopped = false;
  int64_t classes = 0;
  train.for_each_from(epoch, first_batch, [&](const data::Batch& batch) {
    // An empty batch (every file unusable) is skipped; in a distributed run this rank still
    // takes part in the step's collectives, contributing nothing.
    const bool empty = batch.labels.size(0) == 0;
    if (empty && !parallel_.distributed()) {
      ++batch_index;
      return true;
    }
    lr = schedule.at(epoch, batch_index);
    set_learning_rate(*optimizer_, lr);
    torch::Tensor logits, loss, counted;
    double loss_value = 0;
    if (!empty) {
      auto x = batch.images.to(device_, /*non_blocking=*/true);
      auto y = batch.labels.to(device_);
      auto mixed = mix_(x, epoch, batch_index);
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
    const auto check = parallel_.check_step(loss_value, stop_requested_);
    if (!check.non_finite_ranks.empty()) {
      throw TrainingError(non_finite_message(loss_value, epoch, batch_index, batches, lr,
                                             check.non_finite_ranks));
    }
    optimizer_->zero_grad();
    parallel_.backward(loss);
    if (options_.grad_clip_norm() > 0) {
      torch::nn::utils::clip_grad_norm_(module_->parameters(), options_.grad_clip_norm());
    }
    optimizer_->step();
    if (average_) average_->update(*module_);
    if (!empty) {
      running.add(logits, counted, loss_value);
      classes = logits.size(1);
    }
    ++batch_index;
    if (!batch_callbacks_.empty()) {
      BatchEvent event;
      event.epoch = epoch + 1;
      event.epochs = planned_epochs();
      event.batch = batch_index;
      event.batches = batches;
      event.loss = running.loss();
      event.accuracy = running.accuracy();
      event.lr = lr;
      event.elapsed_seconds = seconds_since(started);
      event.images_per_second =
          static_cast<double>(running.count() - images_before) / event.elapsed_seconds;
      for (auto& callback : batch_callbacks_) callback(event);
    }
    // One process stops after the batch during which it was asked to (a callback above may
    // ask); ranks stop together after the batch whose flags carried the request.
    const bool stop = parallel_.distributed() ? check.stop : stop_requested_.load();
    if (stop && batch_index < batches) {
      stopped = true;
      state_.batch = batch_index;
      state_.partial = running.to_json();
      return false;
    }
    return true;
  });
  double seconds = seconds_since(started);
  auto session_images = static_cast<double>(running.count() - images_before);
  if (!stopped) {
    // Global figures: sums over the ranks; the epoch took as long as its slowest rank.
    running = parallel_.sum(running);
    const auto sums = parallel_.sum({session_images, stop_requested_ ? 1.0 : 0.0});
    const auto maxima = parallel_.max({seconds, static_cast<double>(classes)});
    session_images = sums[0];
    if (sums[1] > 0) stop_requested_ = true;  // every rank stops after this epoch
    seconds = maxima[0];
    classes = static_cast<int64_t>(maxima[1]);
  }
  metrics.train_loss = running.loss();
  metrics.train_accuracy = running.accuracy();
  metrics.train_top5 = classes >= 5 ? running.top5() : NAN;
  metrics.lr = lr;
  metrics.train_images = running.count();
  metrics.images_per_second = session_images / seconds;
  return !stopped;
}

std::string Trainer::non_finite_message(double value, int64_t epoch, int64_t batch_index,
                                        int64_t batches, double lr,
                                        const std::vector<int64_t>& ranks) const {
  std::ostringstream os;
  os << "the loss became " << (std::isfinite(value) ? std::string("non-finite") : std::to_string(value));
  if (parallel_.distributed()) {
    os << (ranks.size() == 1 ? " on rank " : " on ranks ");
    for (size_t i = 0; i < ranks.size(); ++i) os << (i ? ", " : "") << ranks[i];
  }
  os << " at epoch " << epoch + 1 << ", batch " << batch_index + 1 << " of " << batches
     << " (learning rate " << lr << "); "
     << (options_.run_dir().empty()
             ? std::string("nothing was saved")
             : options_.run_dir() + "/last.pt holds the last good state (epoch " +
                   std::to_string(state_.epoch) + ")")
     << ". Lower the learning rate, enable gradient clipping (grad_clip_norm) or check the data";
  return os.str();
}

}  // namespace sedensenet
