#pragma once
/// \file
/// `LearningRateSchedule`: the learning rate for every batch of a run, for each `ScheduleKind`.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sedensenet/util/json.hpp"
#include "sedensenet/train/options.hpp"

namespace sedensenet {

/// Computes the learning rate at (epoch, batch). Stateless except for the plateau schedule, whose
/// state (`to_json` / `from_json`) is saved in checkpoints.
class LearningRateSchedule {
 public:
  LearningRateSchedule(const TrainerOptions& options, int64_t batches_per_epoch)
      : o_(options), batches_(std::max<int64_t>(1, batches_per_epoch)), plateau_lr_(options.lr()) {}

  /// Learning rate for batch `batch` (0-based) of epoch `epoch` (0-based).
  double at(int64_t epoch, int64_t batch) const {
    const double progress = static_cast<double>(epoch) +
                            static_cast<double>(batch) / static_cast<double>(batches_);
    const double total = static_cast<double>(o_.epochs());
    const double lr = o_.lr();
    switch (o_.scheduler()) {
      case ScheduleKind::constant:
        return lr;
      case ScheduleKind::step:
        return lr * std::pow(o_.gamma(), static_cast<double>(epoch / o_.step_size()));
      case ScheduleKind::multistep: {
        int64_t passed = 0;
        for (auto m : o_.milestones()) passed += epoch >= m ? 1 : 0;
        return lr * std::pow(o_.gamma(), static_cast<double>(passed));
      }
      case ScheduleKind::cosine: {
        const double warmup = o_.warmup_epochs();
        if (progress < warmup) {
          const double start = lr / 100.0;
          return start + (lr - start) * progress / warmup;
        }
        const double span = std::max(total - warmup, 1e-12);
        const double t = std::clamp((progress - warmup) / span, 0.0, 1.0);
        return o_.min_lr() + (lr - o_.min_lr()) * 0.5 * (1.0 + std::cos(M_PI * t));
      }
      case ScheduleKind::plateau:
        return plateau_lr_;
      case ScheduleKind::onecycle: {
        const double initial = lr / o_.onecycle_div_factor();
        const double final_lr = initial / o_.onecycle_final_div_factor();
        const double t = std::clamp(progress / total, 0.0, 1.0);
        const double up = o_.onecycle_pct_start();
        auto anneal = [](double from, double to, double f) {
          return to + (from - to) * 0.5 * (1.0 + std::cos(M_PI * f));
        };
        return t < up ? anneal(initial, lr, t / up) : anneal(lr, final_lr, (t - up) / (1.0 - up));
      }
    }
    return lr;
  }

  /// Sets the number of epochs the schedule spans (a time budget fixes it after the first epoch:
  /// `TrainerOptions::time_budget_minutes`).
  void set_epochs(int64_t epochs) { o_.epochs(epochs); }

  /// Tells the plateau schedule the epoch's test loss (other schedules ignore it).
  void observe(double test_loss) {
    if (o_.scheduler() != ScheduleKind::plateau) return;
    if (test_loss < best_ - 1e-12) {
      best_ = test_loss;
      bad_epochs_ = 0;
    } else if (++bad_epochs_ >= o_.plateau_patience()) {
      plateau_lr_ *= o_.plateau_factor();
      bad_epochs_ = 0;
    }
  }

  nlohmann::json to_json() const {
    return {{"plateau_lr", plateau_lr_}, {"best", best_}, {"bad_epochs", bad_epochs_}};
  }
  void from_json(const nlohmann::json& j) {
    plateau_lr_ = j.at("plateau_lr").get<double>();
    best_ = j.at("best").get<double>();
    bad_epochs_ = util::json_integer<int64_t>(j.at("bad_epochs"), "schedule state 'bad_epochs'");
  }

 private:
  TrainerOptions o_;
  int64_t batches_;
  double plateau_lr_;
  double best_ = 1e300;
  int64_t bad_epochs_ = 0;
};

/// The epochs a run with a time budget trains: as many as fit `budget_seconds` when each takes
/// `first_epoch_seconds` (the first one's time, evaluation included), at least 1
/// (the first is done) and at most `max_epochs`.
inline int64_t epochs_within_budget(double budget_seconds, double first_epoch_seconds, int64_t max_epochs) {
  if (!(first_epoch_seconds > 0)) return max_epochs;
  const double fit = std::floor(budget_seconds / first_epoch_seconds);
  if (!(fit >= 1)) return std::min<int64_t>(1, max_epochs);
  return fit >= static_cast<double>(max_epochs) ? max_epochs : static_cast<int64_t>(fit);
}

/// How many times `epochs` `TrainerOptions::min_steps` may raise the count to: a folder that needs
/// more (fewer than about 1,900 images for 3,000 steps of 64 in 10 epochs) would evaluate and
/// write checkpoints every few steps, and is too small to train from scratch well anyway.
constexpr int64_t kMinStepsMaxEpochFactor = 10;

/// The epochs a run trains before any time budget: `epochs`, raised when they make fewer than
/// `min_steps` optimizer steps of `batches_per_epoch` to the fewest that make at least that many,
/// but to no more than `kMinStepsMaxEpochFactor` x `epochs` (`TrainerOptions::min_steps`; 0 leaves
/// `epochs` as it is).
inline int64_t epochs_for_min_steps(int64_t epochs, int64_t min_steps, int64_t batches_per_epoch) {
  if (min_steps <= 0 || batches_per_epoch <= 0) return epochs;
  const int64_t needed = (min_steps + batches_per_epoch - 1) / batches_per_epoch;
  return std::max(epochs, std::min(needed, kMinStepsMaxEpochFactor * epochs));
}

}  // namespace sedensenet
