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

#include "sedensenet/util/json.hpp"

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

inline const char* to_string(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::adam: return "adam";
    case OptimizerKind::adamw: return "adamw";
    case OptimizerKind::sgd: return "sgd";
  }
  return "?";
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

inline OptimizerKind optimizer_from_string(const std::string& s) {
  if (s == "adam") return OptimizerKind::adam;
  if (s == "adamw") return OptimizerKind::adamw;
  if (s == "sgd") return OptimizerKind::sgd;
  TORCH_CHECK(false, "unknown optimizer '", s, "': expected adam, adamw or sgd");
}

inline ScheduleKind schedule_from_string(const std::string& s) {
  for (auto k : {ScheduleKind::constant, ScheduleKind::step, ScheduleKind::multistep,
                 ScheduleKind::cosine, ScheduleKind::plateau, ScheduleKind::onecycle}) {
    if (s == to_string(k)) return k;
  }
  TORCH_CHECK(false, "unknown scheduler '", s,
              "': expected constant, step, multistep, cosine, plateau or onecycle");
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
  /// Stop when the test accuracy has not improved for this many epochs; 0 disables.
  TORCH_ARG(int64_t, early_stopping_patience) = 0;
  /// "cpu", "cuda" or "cuda:N".
  TORCH_ARG(std::string, device) = "cpu";
  /// LibTorch intra-op threads; 0 = one per core.
  TORCH_ARG(int, threads) = 0;
  /// bfloat16 autocast for the forward pass (CUDA only).
  TORCH_ARG(bool, bf16) = false;
  /// Seed of the model's random ops (dropout), MixUp/CutMix and anything else random in training.
  /// The data order and augmentation have their own seed (LoaderOptions::seed).
  TORCH_ARG(uint64_t, seed) = 0;
  /// Run folder (config.json, history, checkpoints, metrics, plots); empty = write nothing.
  TORCH_ARG(std::string, run_dir) = "";

 public:
  /// The recipe this library recommends for training from scratch: AdamW with lr 2e-3, weight
  /// decay 0.05 (not on BatchNorm and biases), one epoch of warm-up then cosine decay, label
  /// smoothing 0.1, gradient clipping at 5.
  static TrainerOptions recommended() {
    return TrainerOptions()
        .optimizer(OptimizerKind::adamw)
        .lr(2e-3)
        .weight_decay(0.05)
        .scheduler(ScheduleKind::cosine)
        .warmup_epochs(1.0)
        .min_lr(1e-5)
        .label_smoothing(0.1)
        .grad_clip_norm(5.0);
  }

  /// The reference's recipe: Adam, lr 1e-4, constant (the defaults).
  static TrainerOptions reference() { return TrainerOptions(); }

  /// Throws, naming the option, its value and the valid range, if any option is invalid.
  void validate() const {
    TORCH_CHECK(epochs_ >= 1, "TrainerOptions: epochs must be >= 1, got ", epochs_);
    TORCH_CHECK(lr_ > 0 && std::isfinite(lr_), "TrainerOptions: lr must be > 0, got ", lr_);
    TORCH_CHECK(momentum_ >= 0 && momentum_ < 1, "TrainerOptions: momentum must be in [0, 1), got ",
                momentum_);
    TORCH_CHECK(!nesterov_ || optimizer_ == OptimizerKind::sgd,
                "TrainerOptions: nesterov applies to the sgd optimizer only");
    TORCH_CHECK(weight_decay_ >= 0, "TrainerOptions: weight_decay must be >= 0, got ",
                weight_decay_);
    TORCH_CHECK(step_size_ >= 1, "TrainerOptions: step_size must be >= 1, got ", step_size_);
    TORCH_CHECK(gamma_ > 0 && gamma_ <= 1, "TrainerOptions: gamma must be in (0, 1], got ", gamma_);
    for (size_t i = 0; i < milestones_.size(); ++i) {
      TORCH_CHECK(milestones_[i] >= 1 && (i == 0 || milestones_[i] > milestones_[i - 1]),
                  "TrainerOptions: milestones must be increasing epochs >= 1, got ",
                  c10::IntArrayRef(milestones_));
    }
    TORCH_CHECK(scheduler_ != ScheduleKind::multistep || !milestones_.empty(),
                "TrainerOptions: the multistep scheduler needs milestones");
    TORCH_CHECK(warmup_epochs_ >= 0, "TrainerOptions: warmup_epochs must be >= 0, got ",
                warmup_epochs_);
    TORCH_CHECK(min_lr_ >= 0 && min_lr_ <= lr_, "TrainerOptions: min_lr must be in [0, lr], got ",
                min_lr_);
    TORCH_CHECK(plateau_patience_ >= 1, "TrainerOptions: plateau_patience must be >= 1, got ",
                plateau_patience_);
    TORCH_CHECK(plateau_factor_ > 0 && plateau_factor_ < 1,
                "TrainerOptions: plateau_factor must be in (0, 1), got ", plateau_factor_);
    TORCH_CHECK(onecycle_pct_start_ > 0 && onecycle_pct_start_ < 1,
                "TrainerOptions: onecycle_pct_start must be in (0, 1), got ", onecycle_pct_start_);
    TORCH_CHECK(onecycle_div_factor_ > 1, "TrainerOptions: onecycle_div_factor must be > 1, got ",
                onecycle_div_factor_);
    TORCH_CHECK(onecycle_final_div_factor_ > 1,
                "TrainerOptions: onecycle_final_div_factor must be > 1, got ",
                onecycle_final_div_factor_);
    TORCH_CHECK(label_smoothing_ >= 0 && label_smoothing_ < 1,
                "TrainerOptions: label_smoothing must be in [0, 1), got ", label_smoothing_);
    TORCH_CHECK(grad_clip_norm_ >= 0, "TrainerOptions: grad_clip_norm must be >= 0 (0 = off), got ",
                grad_clip_norm_);
    TORCH_CHECK(mixup_alpha_ >= 0, "TrainerOptions: mixup_alpha must be >= 0 (0 = off), got ",
                mixup_alpha_);
    TORCH_CHECK(cutmix_alpha_ >= 0, "TrainerOptions: cutmix_alpha must be >= 0 (0 = off), got ",
                cutmix_alpha_);
    TORCH_CHECK(early_stopping_patience_ >= 0,
                "TrainerOptions: early_stopping_patience must be >= 0 (0 = off), got ",
                early_stopping_patience_);
    TORCH_CHECK(threads_ >= 0, "TrainerOptions: threads must be >= 0 (0 = one per core), got ",
                threads_);
    try {
      torch::Device parsed(device_);
      TORCH_CHECK(parsed.is_cpu() || parsed.is_cuda(), "unsupported");
    } catch (const std::exception&) {
      TORCH_CHECK(false, "TrainerOptions: device must be cpu, cuda or cuda:N, got '", device_, "'");
    }
  }

  nlohmann::json to_json() const {
    return {{"epochs", epochs_},
            {"optimizer", to_string(optimizer_)},
            {"lr", lr_},
            {"momentum", momentum_},
            {"nesterov", nesterov_},
            {"weight_decay", weight_decay_},
            {"no_decay_norm_and_bias", no_decay_norm_and_bias_},
            {"scheduler", to_string(scheduler_)},
            {"step_size", step_size_},
            {"gamma", gamma_},
            {"milestones", milestones_},
            {"warmup_epochs", warmup_epochs_},
            {"min_lr", min_lr_},
            {"plateau_patience", plateau_patience_},
            {"plateau_factor", plateau_factor_},
            {"onecycle_pct_start", onecycle_pct_start_},
            {"onecycle_div_factor", onecycle_div_factor_},
            {"onecycle_final_div_factor", onecycle_final_div_factor_},
            {"label_smoothing", label_smoothing_},
            {"grad_clip_norm", grad_clip_norm_},
            {"mixup_alpha", mixup_alpha_},
            {"cutmix_alpha", cutmix_alpha_},
            {"early_stopping_patience", early_stopping_patience_},
            {"device", device_},
            {"threads", threads_},
            {"bf16", bf16_},
            {"seed", seed_},
            {"run_dir", run_dir_}};
  }

  /// Reads the options from JSON; keys not present keep `base`'s values, unknown keys are an
  /// error naming the key.
  static TrainerOptions from_json(const nlohmann::json& j) { return from_json(j, TrainerOptions()); }
  static TrainerOptions from_json(const nlohmann::json& j, TrainerOptions base) {
    TORCH_CHECK(j.is_object(), "trainer options: expected a JSON object");
    auto& o = base;
    for (const auto& [key, value] : j.items()) {
      try {
        if (key == "epochs") o.epochs(util::json_integer<int64_t>(value, "TrainerOptions '" + key + "'"));
        else if (key == "optimizer") o.optimizer(optimizer_from_string(value.get<std::string>()));
        else if (key == "lr") o.lr(value.get<double>());
        else if (key == "momentum") o.momentum(value.get<double>());
        else if (key == "nesterov") o.nesterov(value.get<bool>());
        else if (key == "weight_decay") o.weight_decay(value.get<double>());
        else if (key == "no_decay_norm_and_bias") o.no_decay_norm_and_bias(value.get<bool>());
        else if (key == "scheduler") o.scheduler(schedule_from_string(value.get<std::string>()));
        else if (key == "step_size") o.step_size(util::json_integer<int64_t>(value, "TrainerOptions '" + key + "'"));
        else if (key == "gamma") o.gamma(value.get<double>());
        else if (key == "milestones") o.milestones(util::json_integers<int64_t>(value, "TrainerOptions '" + key + "'"));
        else if (key == "warmup_epochs") o.warmup_epochs(value.get<double>());
        else if (key == "min_lr") o.min_lr(value.get<double>());
        else if (key == "plateau_patience") o.plateau_patience(util::json_integer<int64_t>(value, "TrainerOptions '" + key + "'"));
        else if (key == "plateau_factor") o.plateau_factor(value.get<double>());
        else if (key == "onecycle_pct_start") o.onecycle_pct_start(value.get<double>());
        else if (key == "onecycle_div_factor") o.onecycle_div_factor(value.get<double>());
        else if (key == "onecycle_final_div_factor") o.onecycle_final_div_factor(value.get<double>());
        else if (key == "label_smoothing") o.label_smoothing(value.get<double>());
        else if (key == "grad_clip_norm") o.grad_clip_norm(value.get<double>());
        else if (key == "mixup_alpha") o.mixup_alpha(value.get<double>());
        else if (key == "cutmix_alpha") o.cutmix_alpha(value.get<double>());
        else if (key == "early_stopping_patience") o.early_stopping_patience(util::json_integer<int64_t>(value, "TrainerOptions '" + key + "'"));
        else if (key == "device") o.device(value.get<std::string>());
        else if (key == "threads") o.threads(util::json_integer<int>(value, "TrainerOptions '" + key + "'"));
        else if (key == "bf16") o.bf16(value.get<bool>());
        else if (key == "seed") o.seed(util::json_integer<uint64_t>(value, "TrainerOptions '" + key + "'"));
        else if (key == "run_dir") o.run_dir(value.get<std::string>());
        else TORCH_CHECK(false, "trainer options: unknown key '", key, "'");
      } catch (const nlohmann::json::exception&) {
        TORCH_CHECK(false, "trainer options: '", key, "' has the wrong type (", value.dump(), ")");
      }
    }
    return o;
  }
};

}  // namespace sedensenet
