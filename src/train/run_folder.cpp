#include "sedensenet/train/run_folder.hpp"

#include <cmath>

#include "sedensenet/io/files.hpp"
#include "sedensenet/util/svg.hpp"

namespace sedensenet {

const std::vector<std::string>& RunFolder::file_names() {
  static const std::vector<std::string> names = {
      "config.json",  "last.pt",          "best.pt",  "history.csv",         "history.jsonl",
      "loss.svg",     "accuracy.svg",     "lr.svg",   "metrics.json",        "confusion_matrix.json",
      "confusion_matrix.csv", "confusion_matrix.svg"};
  return names;
}

std::vector<std::string> RunFolder::run_files() const {
  // config.json alone is a run stopped before its first epoch: nothing to lose.
  std::vector<std::string> present;
  std::error_code error;
  for (const auto& name : file_names()) {
    if (name != "config.json" && std::filesystem::exists(dir_ / name, error)) present.push_back(name);
  }
  return present;
}

void RunFolder::clear() const {
  for (const auto& name : file_names()) std::filesystem::remove(dir_ / name);
}

void RunFolder::prepare() const {
  std::filesystem::create_directories(dir_);
  io::remove_stale_temporaries(dir_);
}

void RunFolder::write_config(const nlohmann::json& config) const {
  io::write_file_atomically(dir_ / "config.json", config.dump(2) + "\n");
}

void RunFolder::write_history(const History& history) const {
  io::write_file_atomically(dir_ / "history.csv", history.to_csv());
  io::write_file_atomically(dir_ / "history.jsonl", history.to_jsonl());
  io::write_file_atomically(dir_ / "loss.svg", history.plot("loss"));
  io::write_file_atomically(dir_ / "accuracy.svg", history.plot("accuracy"));
  io::write_file_atomically(dir_ / "lr.svg", history.plot("lr"));
}

void RunFolder::write_final_metrics(const Evaluation& evaluation, std::vector<std::string> names,
                                    int64_t best_epoch) const {
  const int64_t classes = evaluation.confusion.classes();
  for (auto i = static_cast<int64_t>(names.size()); i < classes; ++i) names.push_back(std::to_string(i));
  auto confusion = evaluation.confusion.to_json(names);
  auto number = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  nlohmann::json metrics = {{"best_epoch", best_epoch},
                            {"test_loss", evaluation.loss},
                            {"test_accuracy", evaluation.accuracy},
                            {"test_top5", number(evaluation.top5)},
                            {"test_images", evaluation.images},
                            {"macro_f1", confusion["macro_f1"]},
                            {"per_class", confusion["per_class"]}};
  io::write_file_atomically(dir_ / "metrics.json", metrics.dump(2) + "\n");
  io::write_file_atomically(dir_ / "confusion_matrix.json", confusion.dump(2) + "\n");
  io::write_file_atomically(dir_ / "confusion_matrix.csv", evaluation.confusion.to_csv(names));
  const auto counts = evaluation.confusion.counts().to(torch::kDouble).contiguous();
  const auto* data = counts.data_ptr<double>();
  std::vector<std::vector<double>> matrix;
  for (int64_t i = 0; i < classes; ++i) matrix.emplace_back(data + i * classes, data + (i + 1) * classes);
  svg::ChartOptions chart;
  chart.title = "confusion matrix (best model, epoch " + std::to_string(best_epoch) + ")";
  chart.x_label = "predicted";
  chart.y_label = "true";
  io::write_file_atomically(dir_ / "confusion_matrix.svg", svg::heatmap(matrix, names, names, chart));
}

}  // namespace sedensenet
