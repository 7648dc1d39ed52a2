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
  void add(const torch::Tensor& logits, const torch::Tensor& labels, double loss) {
    const int64_t n = labels.size(0);
    if (n == 0) return;
    torch::NoGradGuard no_grad;
    auto labels_cpu = labels.to(torch::kCPU);
    auto logits_cpu = logits.detach().to(torch::kCPU, torch::kFloat);
    const int64_t k = std::min<int64_t>(5, logits_cpu.size(1));
    auto top = std::get<1>(logits_cpu.topk(k, 1));
    auto hits = top.eq(labels_cpu.unsqueeze(1));
    correct1_ += hits.select(1, 0).sum().item<int64_t>();
    correct5_ += hits.any(1).sum().item<int64_t>();
    loss_sum_ += loss * static_cast<double>(n);
    count_ += n;
  }
  int64_t count() const { return count_; }
  double loss() const { return count_ ? loss_sum_ / static_cast<double>(count_) : 0.0; }
  double accuracy() const { return count_ ? static_cast<double>(correct1_) / count_ : 0.0; }
  double top5() const { return count_ ? static_cast<double>(correct5_) / count_ : 0.0; }

  /// The sums: images, top-1 hits, top-5 hits, loss sum (what ranks add up in distributed
  /// training; counts stay exact as doubles up to 2^53).
  std::array<double, 4> sums() const {
    return {static_cast<double>(count_), static_cast<double>(correct1_),
            static_cast<double>(correct5_), loss_sum_};
  }
  static RunningMetrics from_sums(const std::array<double, 4>& sums) {
    RunningMetrics m;
    m.count_ = static_cast<int64_t>(std::llround(sums[0]));
    m.correct1_ = static_cast<int64_t>(std::llround(sums[1]));
    m.correct5_ = static_cast<int64_t>(std::llround(sums[2]));
    m.loss_sum_ = sums[3];
    return m;
  }

  /// The sums so far (for a checkpoint taken in the middle of an epoch); JSON keeps doubles exact.
  nlohmann::json to_json() const {
    return {{"count", count_}, {"correct1", correct1_}, {"correct5", correct5_}, {"loss_sum", loss_sum_}};
  }
  static RunningMetrics from_json(const nlohmann::json& j) {
    RunningMetrics m;
    m.count_ = util::json_integer<int64_t>(j.at("count"), "epoch metrics 'count'");
    m.correct1_ = util::json_integer<int64_t>(j.at("correct1"), "epoch metrics 'correct1'");
    m.correct5_ = util::json_integer<int64_t>(j.at("correct5"), "epoch metrics 'correct5'");
    m.loss_sum_ = j.at("loss_sum").get<double>();
    return m;
  }

 private:
  int64_t count_ = 0, correct1_ = 0, correct5_ = 0;
  double loss_sum_ = 0.0;
};

/// Rows: true class; columns: predicted class.
class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t classes = 0)
      : counts_(torch::zeros({classes, classes}, torch::kLong)) {}

  void add(const torch::Tensor& logits, const torch::Tensor& labels) {
    torch::NoGradGuard no_grad;
    const int64_t c = counts_.size(0);
    auto predicted = logits.detach().argmax(1).to(torch::kCPU);
    auto flat = labels.to(torch::kCPU) * c + predicted;
    counts_ += torch::bincount(flat, {}, c * c).view({c, c});
  }

  const torch::Tensor& counts() const { return counts_; }
  /// A matrix from counts (classes x classes, int64): true class by row, predicted by column.
  static ConfusionMatrix from_counts(torch::Tensor counts) {
    TORCH_CHECK(counts.dim() == 2 && counts.size(0) == counts.size(1), "ConfusionMatrix::from_counts: "
                "a square matrix is needed, got shape ", counts.sizes());
    ConfusionMatrix m;
    m.counts_ = counts.to(torch::kLong);
    return m;
  }
  int64_t classes() const { return counts_.size(0); }

  /// Per class: precision = TP / predicted, recall = TP / actual, F1 their harmonic mean
  /// (0 where undefined).
  struct PerClass {
    double precision, recall, f1;
    int64_t support;
  };
  std::vector<PerClass> per_class() const {
    std::vector<PerClass> out;
    auto m = counts_.to(torch::kDouble);
    auto tp = m.diagonal();
    auto predicted = m.sum(0);
    auto actual = m.sum(1);
    for (int64_t i = 0; i < classes(); ++i) {
      const double t = tp[i].item<double>(), p = predicted[i].item<double>(),
                   a = actual[i].item<double>();
      const double precision = p > 0 ? t / p : 0.0, recall = a > 0 ? t / a : 0.0;
      const double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
      out.push_back({precision, recall, f1, static_cast<int64_t>(a)});
    }
    return out;
  }

  double accuracy() const {
    const auto total = counts_.sum().item<int64_t>();
    return total ? static_cast<double>(counts_.diagonal().sum().item<int64_t>()) / total : 0.0;
  }

  /// {"classes": [...], "matrix": [[...]], "per_class": {name: {precision, recall, f1,
  /// support}}, "accuracy", "macro_f1"}.
  nlohmann::json to_json(const std::vector<std::string>& names) const {
    nlohmann::json j;
    j["classes"] = names;
    std::vector<std::vector<int64_t>> rows;
    for (int64_t i = 0; i < classes(); ++i) {
      std::vector<int64_t> row;
      for (int64_t k = 0; k < classes(); ++k) row.push_back(counts_[i][k].item<int64_t>());
      rows.push_back(row);
    }
    j["matrix"] = rows;
    double macro = 0;
    const auto stats = per_class();
    for (size_t i = 0; i < stats.size(); ++i) {
      const auto name = i < names.size() ? names[i] : std::to_string(i);
      j["per_class"][name] = {{"precision", stats[i].precision},
                              {"recall", stats[i].recall},
                              {"f1", stats[i].f1},
                              {"support", stats[i].support}};
      macro += stats[i].f1;
    }
    j["accuracy"] = accuracy();
    j["macro_f1"] = stats.empty() ? 0.0 : macro / static_cast<double>(stats.size());
    return j;
  }

  /// CSV with a header row of predicted classes and one row per true class.
  std::string to_csv(const std::vector<std::string>& names) const {
    std::ostringstream os;
    os << "true\\predicted";
    for (const auto& n : names) os << "," << n;
    os << "\n";
    for (int64_t i = 0; i < classes(); ++i) {
      os << (static_cast<size_t>(i) < names.size() ? names[static_cast<size_t>(i)] : std::to_string(i));
      for (int64_t k = 0; k < classes(); ++k) os << "," << counts_[i][k].item<int64_t>();
      os << "\n";
    }
    return os.str();
  }

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
