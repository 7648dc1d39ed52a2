#include "sedensenet/train/metrics.hpp"


namespace sedensenet {

void RunningMetrics::add(const torch::Tensor& logits, const torch::Tensor& labels, double loss) {
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

auto RunningMetrics::sums() const -> std::array<double, 4> {
  return {static_cast<double>(count_), static_cast<double>(correct1_),
          static_cast<double>(correct5_), loss_sum_};
}

auto RunningMetrics::from_sums(const std::array<double, 4>& sums) -> RunningMetrics {
  RunningMetrics m;
  m.count_ = static_cast<int64_t>(std::llround(sums[0]));
  m.correct1_ = static_cast<int64_t>(std::llround(sums[1]));
  m.correct5_ = static_cast<int64_t>(std::llround(sums[2]));
  m.loss_sum_ = sums[3];
  return m;
}

auto RunningMetrics::to_json() const -> nlohmann::json {
  return {{"count", count_}, {"correct1", correct1_}, {"correct5", correct5_}, {"loss_sum", loss_sum_}};
}

auto RunningMetrics::from_json(const nlohmann::json& j) -> RunningMetrics {
  RunningMetrics m;
  m.count_ = util::json_integer<int64_t>(j.at("count"), "epoch metrics 'count'");
  m.correct1_ = util::json_integer<int64_t>(j.at("correct1"), "epoch metrics 'correct1'");
  m.correct5_ = util::json_integer<int64_t>(j.at("correct5"), "epoch metrics 'correct5'");
  m.loss_sum_ = j.at("loss_sum").get<double>();
  return m;
}

void ConfusionMatrix::add(const torch::Tensor& logits, const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  const int64_t c = counts_.size(0);
  auto predicted = logits.detach().argmax(1).to(torch::kCPU);
  auto flat = labels.to(torch::kCPU) * c + predicted;
  counts_ += torch::bincount(flat, {}, c * c).view({c, c});
}

auto ConfusionMatrix::from_counts(torch::Tensor counts) -> ConfusionMatrix {
  TORCH_CHECK(counts.dim() == 2 && counts.size(0) == counts.size(1), "ConfusionMatrix::from_counts: "
              "a square matrix is needed, got shape ", counts.sizes());
  ConfusionMatrix m;
  m.counts_ = counts.to(torch::kLong);
  return m;
}

auto ConfusionMatrix::per_class() const -> std::vector<PerClass> {
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

auto ConfusionMatrix::accuracy() const -> double {
  const auto total = counts_.sum().item<int64_t>();
  return total ? static_cast<double>(counts_.diagonal().sum().item<int64_t>()) / total : 0.0;
}

auto ConfusionMatrix::to_json(const std::vector<std::string>& names) const -> nlohmann::json {
  nlohmann::json j;
  j["classes"] = names;
  std::vector<std::vector<int64_t>> rows;
  for (int64_t i = 0; i < classes(); ++i) {
    std::vector<int64_t> row;
    for (int64_t k = 0; k < classes(); ++k) row.push_back(counts_[i][k].item<int64_t>());
    rows.push_back(row);
  }
  j["matrix"] = rows;
  const auto stats = per_class();
  for (size_t i = 0; i < stats.size(); ++i) {
    const auto name = i < names.size() ? names[i] : std::to_string(i);
    j["per_class"][name] = {{"precision", stats[i].precision},
                            {"recall", stats[i].recall},
                            {"f1", stats[i].f1},
                            {"support", stats[i].support}};
  }
  j["accuracy"] = accuracy();
  j["macro_f1"] = macro_f1();
  return j;
}

auto ConfusionMatrix::macro_f1() const -> double {
  const auto stats = per_class();
  double sum = 0;
  for (const auto& s : stats) sum += s.f1;
  return stats.empty() ? 0.0 : sum / static_cast<double>(stats.size());
}

auto ConfusionMatrix::to_csv(const std::vector<std::string>& names) const -> std::string {
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

}  // namespace sedensenet
