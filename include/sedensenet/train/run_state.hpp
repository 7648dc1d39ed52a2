#pragma once
/// \file
/// `RunState`: where a training run stands, as the "state" of every checkpoint (best.pt, last.pt;
/// the file itself is io/checkpoint_file.hpp's). The one place that writes and checks it.

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sedensenet/train/history.hpp"
#include "sedensenet/train/options.hpp"

namespace sedensenet {

/// A run's progress and what is needed to rebuild it.
struct RunState {
  int64_t epoch = 0;  ///< epochs completed
  int64_t batch = 0;  ///< batches completed in the next epoch (non-zero after a mid-epoch stop)
  nlohmann::json partial;  ///< that epoch's `RunningMetrics` so far (null at an epoch boundary)
  History history;
  int64_t best_epoch = 0;  ///< 1-based; 0 before the first epoch
  double best_accuracy = NAN;
  int64_t epochs_without_improvement = 0;
  nlohmann::json schedule;  ///< `LearningRateSchedule::to_json`
  /// The epoch count a time budget fixed after the first epoch (`TrainerOptions::time_budget_minutes`);
  /// 0 when none did, and the run trains `TrainerOptions::epochs`.
  int64_t planned_epochs = 0;
  /// Updates of the weight average (`WeightAverage::updates`; 0 without `ema_decay`). The average
  /// itself is in last.pt's extra tensors, as "average/<name>".
  int64_t average_updates = 0;
  nlohmann::json metadata;  ///< what the program recorded (`Trainer::set_metadata`)
  std::vector<std::string> classes;

  /// The JSON stored in checkpoints, with the `options` the run trains with.
  nlohmann::json to_json(const TrainerOptions& options) const;
  /// Reads what `to_json` wrote. Throws, naming `name` (the file), for a missing or malformed field.
  static RunState from_json(const nlohmann::json& state, const std::string& name);
};

}  // namespace sedensenet
