#pragma once
/// \file
/// `RunFolder`: the files a training run writes besides its checkpoints: config.json, the history
/// (CSV, JSON lines, SVG plots) and the best model's metrics and confusion matrix.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "sedensenet/train/history.hpp"
#include "sedensenet/train/metrics.hpp"

namespace sedensenet {

/// A run folder. Every file is written atomically (io::write_file_atomically): a reader, or a run
/// killed while writing, sees the old file or the new one, never a mix.
class RunFolder {
 public:
  explicit RunFolder(std::filesystem::path dir) : dir_(std::move(dir)) {}
  const std::filesystem::path& path() const { return dir_; }
  /// last.pt: the full state after the latest epoch (or mid-epoch stop).
  std::filesystem::path last_checkpoint() const { return dir_ / "last.pt"; }
  /// best.pt: the weights of the best epoch so far.
  std::filesystem::path best_checkpoint() const { return dir_ / "best.pt"; }

  /// The files a run writes here (config.json, checkpoints, history, metrics, plots).
  static const std::vector<std::string>& file_names();
  /// The run files present: empty when the folder is missing or holds no run (config.json alone,
  /// of a run stopped before its first epoch, does not count).
  std::vector<std::string> run_files() const;
  /// Deletes the run files (only those: anything else in the folder stays).
  void clear() const;
  /// Creates the folder and removes temporaries a killed process left behind.
  void prepare() const;
  /// config.json: everything the run was started with.
  void write_config(const nlohmann::json& config) const;
  /// history.csv, history.jsonl, loss.svg, accuracy.svg and lr.svg.
  void write_history(const History& history) const;
  /// metrics.json (loss, top-1, top-5, macro-F1, per class), confusion_matrix.{json,csv,svg} of
  /// the best model (epoch `best_epoch`). Classes without a name are named by their index.
  void write_final_metrics(const Evaluation& evaluation, std::vector<std::string> class_names,
                           int64_t best_epoch) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace sedensenet
