#pragma once
/// \file
/// Per-epoch metrics of a run, as CSV, JSON lines and SVG plots.

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "sedensenet/util/json.hpp"
#include "sedensenet/util/svg.hpp"

namespace sedensenet {

/// What one epoch measured. Test values are NaN when there is no test set; top-5 values are NaN
/// when there are fewer than 5 classes.
struct EpochMetrics {
  int64_t epoch = 0;  ///< 1-based
  double train_loss = NAN, train_accuracy = NAN, train_top5 = NAN;
  double test_loss = NAN, test_accuracy = NAN, test_top5 = NAN;
  double test_macro_f1 = NAN;        ///< mean per-class F1 on the test side
  std::vector<double> test_recall;   ///< per class: share of its test images predicted right
  int64_t test_top_class = -1;       ///< the class predicted most often on the test side
  double test_top_class_share = NAN; ///< the share of test images predicted as test_top_class
  double lr = NAN;                 ///< learning rate at the end of the epoch
  double seconds = NAN;            ///< wall time of the epoch (training and evaluation)
  double images_per_second = NAN;  ///< training images per second, loading included
  int64_t train_images = 0;

  nlohmann::json to_json() const;

  static EpochMetrics from_json(const nlohmann::json& j);
};

/// The metrics of every epoch so far.
class History {
 public:
  void add(const EpochMetrics& m) { epochs_.push_back(m); }
  const std::vector<EpochMetrics>& epochs() const { return epochs_; }
  bool empty() const { return epochs_.empty(); }

  /// Header plus one row per epoch; empty cells for values not measured.
  std::string to_csv() const;

  /// One JSON object per line.
  std::string to_jsonl() const;

  nlohmann::json to_json() const;
  static History from_json(const nlohmann::json& j);

  /// SVG plots against epoch: "loss", "accuracy" or "lr".
  std::string plot(const std::string& what, const std::string& title_prefix = "") const;

 private:
  std::vector<EpochMetrics> epochs_;
};

}  // namespace sedensenet
