#pragma once
/// \file
/// `TrainerOptions`: everything that defines a training run, validated, and round-tripped
/// through JSON (a run folder's config.json).

#include <nlohmann/json.hpp>
#include <torch/arg.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sedensenet/util/option_schema.hpp"

namespace sedensenet {

/// The optimizers `Trainer` builds.
enum class OptimizerKind {
  adam,   ///< Adam (the reference's); default lr 1e-4
  adamw,  ///< AdamW (decoupled weight decay)
  sgd,    ///< SGD with momentum (optionally Nesterov)
};

/// Learning-rate schedules. All are evaluated per batch, so warm-up and cosine are smooth.
enum class ScheduleKind {
  constant,   ///< the reference's: lr throughout
  step,       ///< lr * gamma every step_size epochs (StepLR)
  multistep,  ///< lr * gamma at each epoch in milestones (MultiStepLR)
  cosine,     ///< linear warm-up over warmup_epochs, then cosine from lr to min_lr
  plateau,    ///< lr * plateau_factor after plateau_patience epochs without a better test loss
  onecycle,   ///< OneCycle: from lr / div_factor up to lr (cosine) then down to lr / (div * final_div)
};

/// What picks the best epoch: its weights are best.pt and what `fit` ends with; early stopping
/// counts epochs without a better one.
enum class BestMetric {
  accuracy,  ///< test accuracy (the reference's)
  macro_f1,  ///< mean per-class F1 on the test side: every class counts the same, whatever its size
  loss,      ///< lowest test loss
};

inline const char* to_string(BestMetric m) {
  switch (m) {
    case BestMetric::accuracy: return "accuracy";
    case BestMetric::macro_f1: return "macro_f1";
    case BestMetric::loss: return "loss";
  }
  return "?";
}
inline std::vector<BestMetric> enum_values(BestMetric) {
  return {BestMetric::accuracy, BestMetric::macro_f1, BestMetric::loss};
}

inline const char* to_string(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::adam: return "adam";
    case OptimizerKind::adamw: return "adamw";
    case OptimizerKind::sgd: return "sgd";
  }
  return "?";
}
inline std::vector<OptimizerKind> enum_values(OptimizerKind) {
  return {OptimizerKind::adam, OptimizerKind::adamw, OptimizerKind::sgd};
}

inline const char* to_string(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::step: return "step";
    case ScheduleKind::multistep: return "multistep";
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::plateau: return "plateau";
    case ScheduleKind::onecycle: return "onecycle";
  }
  return "?";
}
inline std::vector<ScheduleKind> enum_values(ScheduleKind) {
  return {ScheduleKind::constant, ScheduleKind::step,    ScheduleKind::multistep,
          ScheduleKind::cosine,   ScheduleKind::plateau, ScheduleKind::onecycle};
}

inline OptimizerKind optimizer_from_string(const std::string& s) {
  return schema::enum_from_string<OptimizerKind>(s, "optimizer");
}
inline ScheduleKind schedule_from_string(const std::string& s) {
  return schema::enum_from_string<ScheduleKind>(s, "scheduler");
}

/// Options of a training run. The defaults are the reference's recipe (Adam, lr 1e-4, constant
/// learning rate, no augmentation beyond the data pipeline's); `recommended()` is the recipe this
/// library suggests (see docs/results.md for both measured side by side).
///
/// Example:
/// ```
/// auto options = sedensenet::TrainerOptions::recommended().epochs(8).run_dir("runs/fmnist");
/// ```
struct TrainerOptions {
  /// Passes over the training data, >= 1.
  TORCH_ARG(int64_t, epochs) = 10;
  /// The fewest optimizer steps a run makes; 0 disables. When `epochs` passes over the training
  /// data make fewer steps (a small folder: 2,000 images at batch 64 make 30 per epoch), `fit`
  /// raises the epoch count to the fewest that make this many, at most 10 x `epochs`
  /// (`epochs_for_min_steps`), and the schedule spans them. A model trained from scratch needs a
  /// few thousand steps whatever the folder's size (docs/results.md, "Another data set"). The
  /// count depends only on the options and the training data's size, so a resumed run arrives at
  /// the same one.
  TORCH_ARG(int64_t, min_steps) = 0;
  /// Optimizer.
  TORCH_ARG(OptimizerKind, optimizer) = OptimizerKind::adam;
  /// Peak learning rate, > 0. Default 1e-4 (the reference's Adam).
  TORCH_ARG(double, lr) = 1e-4;
  /// SGD momentum in [0, 1).
  TORCH_ARG(double, momentum) = 0.9;
  /// SGD with Nesterov momentum.
  TORCH_ARG(bool, nesterov) = false;
  /// Weight decay (L2 for Adam/SGD, decoupled for AdamW), >= 0.
  TORCH_ARG(double, weight_decay) = 0.0;
  /// Exempt BatchNorm parameters and biases from weight decay.
  TORCH_ARG(bool, no_decay_norm_and_bias) = true;
  /// Learning-rate schedule.
  TORCH_ARG(ScheduleKind, scheduler) = ScheduleKind::constant;
  /// step: epochs between decays, >= 1.
  TORCH_ARG(int64_t, step_size) = 30;
  /// step, multistep: decay factor in (0, 1].
  TORCH_ARG(double, gamma) = 0.1;
  /// multistep: epochs (1-based, increasing) after which lr is multiplied by gamma.
  TORCH_ARG(std::vector<int64_t>, milestones) = {};
  /// cosine: epochs of linear warm-up from lr / 100, >= 0.
  TORCH_ARG(double, warmup_epochs) = 0.0;
  /// cosine: final learning rate, >= 0.
  TORCH_ARG(double, min_lr) = 0.0;
  /// plateau: epochs without improvement of the test loss before decaying, >= 1.
  TORCH_ARG(int64_t, plateau_patience) = 3;
  /// plateau: decay factor in (0, 1).
  TORCH_ARG(double, plateau_factor) = 0.1;
  /// onecycle: fraction of the steps spent increasing the learning rate, in (0, 1).
  TORCH_ARG(double, onecycle_pct_start) = 0.3;
  /// onecycle: starting lr = lr / div_factor (> 1).
  TORCH_ARG(double, onecycle_div_factor) = 25.0;
  /// onecycle: final lr = starting lr / final_div_factor (> 1).
  TORCH_ARG(double, onecycle_final_div_factor) = 1e4;
  /// Label smoothing of the cross-entropy, in [0, 1).
  TORCH_ARG(double, label_smoothing) = 0.0;
  /// Clip the gradients' global L2 norm to this value; 0 disables.
  TORCH_ARG(double, grad_clip_norm) = 0.0;
  /// MixUp: Beta(alpha, alpha) mixing of image pairs; 0 disables.
  TORCH_ARG(double, mixup_alpha) = 0.0;
  /// CutMix: Beta(alpha, alpha) box pasting; 0 disables. With MixUp too, each batch uses one of
  /// the two, chosen at random.
  TORCH_ARG(double, cutmix_alpha) = 0.0;
  /// Exponential moving average of the weights (`WeightAverage`): after every optimizer step the
  /// average moves towards the weights by 1 - min(ema_decay, n / (n + 9)) at step n. With it, every
  /// evaluation, the best epoch, best.pt and the weights `fit` ends with are the average's; last.pt
  /// holds both. 0 disables; 0.999 averages over about the last thousand steps.
  TORCH_ARG(double, ema_decay) = 0.0;
  /// Wall-time budget of `fit`, in minutes; 0 disables. With a budget, `epochs` is an upper bound:
  /// when the first epoch is done (its training and evaluation), the run fixes its epoch
  /// count to the most that fit the budget at that epoch's pace, at least 1 and at most `epochs`,
  /// and the schedule spans that count (`Trainer::planned_epochs`; recorded in last.pt, so a
  /// resumed run keeps it). The first epoch's learning rates must not depend on the count: the
  /// cosine schedule needs warmup_epochs >= 1, and onecycle cannot be used. A run trains the same
  /// as one given that epoch count; only the count depends on the machine's speed.
  TORCH_ARG(double, time_budget_minutes) = 0.0;
  /// Stop when the test accuracy has not improved for this many epochs; 0 disables.
  TORCH_ARG(int64_t, early_stopping_patience) = 0;
  /// What picks the best epoch (best.pt, the weights `fit` ends with, early stopping). Without a
  /// test source: train accuracy.
  TORCH_ARG(BestMetric, best_metric) = BestMetric::accuracy;
  /// "cpu", "cuda" or "cuda:N".
  TORCH_ARG(std::string, device) = "cpu";
  /// LibTorch intra-op threads; 0 = one per core.
  TORCH_ARG(int, threads) = 0;
  /// bfloat16 autocast for the forward pass (CUDA only).
  TORCH_ARG(bool, bf16) = false;
  /// On the CPU, a `DenseNet` in the standard memory mode trains on channels-last maps
  /// (`DenseNetImpl::set_memory_format`): oneDNN's convolutions then skip the conversion to and
  /// from their blocked layout at every call (docs/benchmarks.md, "Training throughput").
  TORCH_ARG(bool, channels_last) = true;
  /// Seed of the model's random ops (dropout), MixUp/CutMix and anything else random in training.
  /// The data order and augmentation have their own seed (LoaderOptions::seed).
  TORCH_ARG(uint64_t, seed) = 0;
  /// Run folder (config.json, history, checkpoints, metrics, plots); empty = write nothing.
  TORCH_ARG(std::string, run_dir) = "";
  /// Replace the run that run_dir already holds. Without it, `fit` refuses a run folder holding
  /// another run's files (config.json, checkpoints, history) unless the run was resumed from it.
  TORCH_ARG(bool, overwrite) = false;

 public:
  /// The recipe this library recommends for training from scratch: AdamW with lr 2e-3, weight
  /// decay 0.05 (not on BatchNorm and biases), one epoch of warm-up then cosine decay, label
  /// smoothing 0.1, gradient clipping at 5, at least 3,000 steps however small the data
  /// (`min_steps`; set it to 0 to train exactly `epochs`); the best epoch is the one with the best
  /// macro-F1, so that on unbalanced data a model that ignores the small classes is not the one
  /// kept.
  static TrainerOptions recommended() {
    return TrainerOptions()
        .optimizer(OptimizerKind::adamw)
        .lr(2e-3)
        .weight_decay(0.05)
        .scheduler(ScheduleKind::cosine)
        .warmup_epochs(1.0)
        .min_lr(1e-5)
        .label_smoothing(0.1)
        .grad_clip_norm(5.0)
        .min_steps(3000)
        .best_metric(BestMetric::macro_f1);
  }

  /// The reference's recipe: Adam, lr 1e-4, constant (the defaults).
  static TrainerOptions reference() { return TrainerOptions(); }

  /// Every option once: its key (JSON, config files; the tool's flag with '-' for '_'), its
  /// member, its help and its range. Range checks, JSON and the tool's flags come from this list.
  template <typename Visitor>
  static void fields(Visitor&& visit) {
    using schema::above;
    using schema::any;
    using schema::at_least;
    using schema::between;
    using T = TrainerOptions;
    visit("epochs", &T::epochs_, "passes over the training data", between(1, 100000));
    visit("min_steps", &T::min_steps_, "train at least this many optimizer steps: on a small data set the epoch count is raised to the fewest that make them, at most 10x (0 = off)", between(0, 100000000));
    visit("optimizer", &T::optimizer_, "adam, adamw or sgd", any());
    visit("lr", &T::lr_, "peak learning rate", above(0));
    visit("momentum", &T::momentum_, "sgd: momentum", between(0, 1, false, true));
    visit("nesterov", &T::nesterov_, "sgd: Nesterov momentum", any());
    visit("weight_decay", &T::weight_decay_, "weight decay (L2 for adam and sgd, decoupled for adamw)", at_least(0));
    visit("no_decay_norm_and_bias", &T::no_decay_norm_and_bias_, "no weight decay on BatchNorm parameters and biases", any());
    visit("scheduler", &T::scheduler_, "learning-rate schedule: constant, step, multistep, cosine, plateau or onecycle", any());
    visit("step_size", &T::step_size_, "step: epochs between decays", at_least(1));
    visit("gamma", &T::gamma_, "step, multistep: decay factor", between(0, 1, true, false));
    visit("milestones", &T::milestones_, "multistep: epochs after which lr is multiplied by gamma (increasing, comma-separated)", any());
    visit("warmup_epochs", &T::warmup_epochs_, "cosine: epochs of linear warm-up", at_least(0));
    visit("min_lr", &T::min_lr_, "cosine: final learning rate, in [0, lr]", at_least(0));
    visit("plateau_patience", &T::plateau_patience_, "plateau: epochs without a better test loss before decaying", at_least(1));
    visit("plateau_factor", &T::plateau_factor_, "plateau: decay factor", between(0, 1, true, true));
    visit("onecycle_pct_start", &T::onecycle_pct_start_, "onecycle: share of the steps spent increasing lr", between(0, 1, true, true));
    visit("onecycle_div_factor", &T::onecycle_div_factor_, "onecycle: starting lr = lr / this", above(1));
    visit("onecycle_final_div_factor", &T::onecycle_final_div_factor_, "onecycle: final lr = starting lr / this", above(1));
    visit("label_smoothing", &T::label_smoothing_, "label smoothing of the cross-entropy", between(0, 1, false, true));
    visit("grad_clip_norm", &T::grad_clip_norm_, "clip the gradients' global L2 norm to this (0 = off)", at_least(0));
    visit("mixup_alpha", &T::mixup_alpha_, "MixUp: Beta(alpha, alpha) mixing of image pairs (0 = off)", at_least(0));
    visit("cutmix_alpha", &T::cutmix_alpha_, "CutMix: Beta(alpha, alpha) box pasting (0 = off; with MixUp, one of the two per batch)", at_least(0));
    visit("ema_decay", &T::ema_decay_, "evaluate and keep an exponential moving average of the weights with this decay per step (0 = off; 0.999: about the last 1000 steps)", between(0, 1, false, true));
    visit("time_budget_minutes", &T::time_budget_minutes_, "wall-time budget in minutes: after the first epoch, the epoch count is fixed to what fits at that pace (at most epochs; 0 = off; cosine needs warmup_epochs >= 1, not with onecycle)", at_least(0));
    visit("early_stopping_patience", &T::early_stopping_patience_, "stop after this many epochs without a better best_metric (0 = off)", between(0, 100000));
    visit("best_metric", &T::best_metric_, "what picks the best epoch (best.pt, early stopping): accuracy, macro_f1 (every class counts the same) or loss", any());
    visit("device", &T::device_, "cpu, cuda or cuda:N", any());
    visit("threads", &T::threads_, "LibTorch threads (0 = one per core)", at_least(0));
    visit("bf16", &T::bf16_, "bfloat16 autocast for the forward pass (CUDA only)", any());
    visit("channels_last", &T::channels_last_, "CPU: train a standard-mode DenseNet on channels-last maps (faster convolutions)", any());
    visit("seed", &T::seed_, "seed of dropout, MixUp/CutMix and anything else random in training", any());
    visit("run_dir", &T::run_dir_, "run folder (empty: write nothing)", any());
    visit("overwrite", &T::overwrite_, "replace the run the run folder already holds (its checkpoints and history are deleted)", any());
  }

  /// Throws, naming the option, its value and the valid range, if any option is invalid.
  void validate() const {
    schema::check_ranges(*this, "TrainerOptions");
    TORCH_CHECK(!nesterov_ || optimizer_ == OptimizerKind::sgd,
                "TrainerOptions: nesterov applies to the sgd optimizer only");
    for (size_t i = 0; i < milestones_.size(); ++i) {
      TORCH_CHECK(milestones_[i] >= 1 && (i == 0 || milestones_[i] > milestones_[i - 1]),
                  "TrainerOptions: milestones must be increasing epochs >= 1, got ",
                  c10::IntArrayRef(milestones_));
    }
    TORCH_CHECK(scheduler_ != ScheduleKind::multistep || !milestones_.empty(),
                "TrainerOptions: the multistep scheduler needs milestones");
    TORCH_CHECK(min_lr_ <= lr_, "TrainerOptions: min_lr must be in [0, lr], got ", min_lr_,
                " with lr ", lr_);
    if (time_budget_minutes_ > 0) {
      TORCH_CHECK(scheduler_ != ScheduleKind::onecycle,
                  "TrainerOptions: time_budget_minutes fixes the epoch count after the first epoch, but "
                  "the onecycle schedule's first epoch depends on that count: use the cosine schedule "
                  "with warmup_epochs >= 1, or give epochs without a time budget");
      TORCH_CHECK(scheduler_ != ScheduleKind::cosine || warmup_epochs_ >= 1.0,
                  "TrainerOptions: time_budget_minutes fixes the epoch count after the first epoch, but "
                  "with warmup_epochs ", warmup_epochs_, " the cosine schedule's first epoch depends on "
                  "that count: set warmup_epochs to 1 or more (the recommended recipe's is 1)");
    }
    try {
      torch::Device parsed(device_);
      TORCH_CHECK(parsed.is_cpu() || parsed.is_cuda(), "unsupported");
    } catch (const std::exception&) {
      TORCH_CHECK(false, "TrainerOptions: device must be cpu, cuda or cuda:N, got '", device_, "'");
    }
  }

  /// The options as JSON (a run folder's config.json), one key per option.
  nlohmann::json to_json() const { return schema::to_json(*this); }

  /// Reads the options from JSON; keys not present keep `base`'s values, unknown keys are an
  /// error naming the key.
  static TrainerOptions from_json(const nlohmann::json& j) { return from_json(j, TrainerOptions()); }
  static TrainerOptions from_json(const nlohmann::json& j, TrainerOptions base) {
    return schema::from_json(j, std::move(base), "trainer options");
  }
};

}  // namespace sedensenet
