#pragma once
/// \file
/// Classification metrics: running loss and top-k accuracy, the confusion matrix and per-class
/// precision, recall and F1.

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "sedensenet/util/json.hpp"

namespace sedensenet {

/// Accumulates loss and top-1 / top-5 accuracy over batches.
class RunningMetrics {
 public:
  /// `logits` (N, C), `labels` (N), `loss` the batch's mean loss.
  void add(const torch::Tensor& logits, const torch::Tensor& labels, double loss);
  int64_t count() const { return count_; }
  double loss() const { return count_ ? loss_sum_ / static_cast<double>(count_) : 0.0; }
  double accuracy() const { return count_ ? static_cast<double>(correct1_) / count_ : 0.0; }
  double top5() const { return count_ ? static_cast<double>(correct5_) / count_ : 0.0; }

  /// The sums: images, top-1 hits, top-5 hits, loss sum (what ranks add up in distributed
  /// training; counts stay exact as doubles up to 2^53).
  std::array<double, 4> sums() const;
  static RunningMetrics from_sums(const std::array<double, 4>& sums);

  /// The sums so far (for a checkpoint taken in the middle of an epoch); JSON keeps doubles exact.
  nlohmann::json to_json() const;
  static RunningMetrics from_json(const nlohmann::json& j);

 private:
  int64_t count_ = 0, correct1_ = 0, correct5_ = 0;
  double loss_sum_ = 0.0;
};

/// Rows: true class; columns: predicted class.
class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t classes = 0)
      : counts_(torch::zeros({classes, classes}, torch::kLong)) {}

  void add(const torch::Tensor& logits, const torch::Tensor& labels);

  const torch::Tensor& counts() const { return counts_; }
  /// A matrix from counts (classes x classes, int64): true class by row, predicted by column.
  static ConfusionMatrix from_counts(torch::Tensor counts);
  int64_t classes() const { return counts_.size(0); }

  /// Per class: precision = TP / predicted, recall = TP / actual, F1 their harmonic mean
  /// (0 where undefined).
  struct PerClass {
    double precision, recall, f1;
    int64_t support;
  };
  std::vector<PerClass> per_class() const;

  double accuracy() const;
  /// Mean of the per-class F1 (0 with no classes).
  double macro_f1() const;

  /// {"classes": [...], "matrix": [[...]], "per_class": {name: {precision, recall, f1,
  /// support}}, "accuracy", "macro_f1"}.
  nlohmann::json to_json(const std::vector<std::string>& names) const;

  /// CSV with a header row of predicted classes and one row per true class.
  std::string to_csv(const std::vector<std::string>& names) const;

 private:
  torch::Tensor counts_;
};

/// What `Trainer::evaluate` measures: mean loss, top-1 and top-5 accuracy (top-5: NaN with fewer
/// than 5 classes; all NaN for an empty source), the number of images and the confusion matrix.
struct Evaluation {
  double loss = NAN, accuracy = NAN, top5 = NAN;
  int64_t images = 0;
  ConfusionMatrix confusion;
};

}  // namespace sedensenet
