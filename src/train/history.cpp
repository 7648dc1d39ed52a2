#include "sedensenet/train/history.hpp"


namespace sedensenet {

auto EpochMetrics::to_json() const -> nlohmann::json {
  auto number = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  return {{"epoch", epoch},
          {"train_loss", number(train_loss)},
          {"train_accuracy", number(train_accuracy)},
          {"train_top5", number(train_top5)},
          {"test_loss", number(test_loss)},
          {"test_accuracy", number(test_accuracy)},
          {"test_top5", number(test_top5)},
          {"test_macro_f1", number(test_macro_f1)},
          {"test_recall", test_recall},
          {"test_top_class", test_top_class},
          {"test_top_class_share", number(test_top_class_share)},
          {"lr", number(lr)},
          {"seconds", number(seconds)},
          {"images_per_second", number(images_per_second)},
          {"train_images", train_images}};
}

auto EpochMetrics::from_json(const nlohmann::json& j) -> EpochMetrics {
  auto number = [&](const char* key) {
    return j.contains(key) && !j.at(key).is_null() ? j.at(key).get<double>() : NAN;
  };
  EpochMetrics m;
  m.epoch = util::json_integer<int64_t>(j.at("epoch"), "history 'epoch'");
  m.train_loss = number("train_loss");
  m.train_accuracy = number("train_accuracy");
  m.train_top5 = number("train_top5");
  m.test_loss = number("test_loss");
  m.test_accuracy = number("test_accuracy");
  m.test_top5 = number("test_top5");
  m.test_macro_f1 = number("test_macro_f1");  // absent from older histories: NaN
  if (j.contains("test_recall") && j.at("test_recall").is_array()) {
    for (const auto& r : j.at("test_recall")) m.test_recall.push_back(r.is_number() ? r.get<double>() : NAN);
  }
  m.test_top_class = j.contains("test_top_class") ? util::json_integer<int64_t>(j.at("test_top_class"), "history 'test_top_class'") : -1;
  m.test_top_class_share = number("test_top_class_share");
  m.lr = number("lr");
  m.seconds = number("seconds");
  m.images_per_second = number("images_per_second");
  m.train_images = j.value("train_images", int64_t{0});
  return m;
}

auto History::to_csv() const -> std::string {
  std::ostringstream os;
  os << "epoch,train_loss,train_accuracy,train_top5,test_loss,test_accuracy,test_top5,lr,"
        "seconds,images_per_second,train_images,test_macro_f1\n";
  auto cell = [](double v) {
    if (std::isnan(v)) return std::string();
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.6g", v);
    return std::string(buffer);
  };
  for (const auto& m : epochs_) {
    os << m.epoch << "," << cell(m.train_loss) << "," << cell(m.train_accuracy) << ","
       << cell(m.train_top5) << "," << cell(m.test_loss) << "," << cell(m.test_accuracy) << ","
       << cell(m.test_top5) << "," << cell(m.lr) << "," << cell(m.seconds) << ","
       << cell(m.images_per_second) << "," << m.train_images << "," << cell(m.test_macro_f1) << "\n";
  }
  return os.str();
}

auto History::to_jsonl() const -> std::string {
  std::string out;
  for (const auto& m : epochs_) out += m.to_json().dump() + "\n";
  return out;
}

auto History::to_json() const -> nlohmann::json {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& m : epochs_) j.push_back(m.to_json());
  return j;
}

auto History::from_json(const nlohmann::json& j) -> History {
  History h;
  for (const auto& e : j) h.add(EpochMetrics::from_json(e));
  return h;
}

auto History::plot(const std::string& what, const std::string& title_prefix) const -> std::string {
  svg::ChartOptions chart;
  chart.x_label = "epoch";
  std::vector<svg::Series> series;
  auto make = [&](const std::string& name, double EpochMetrics::*field, double scale = 1.0) {
    svg::Series s;
    s.name = name;
    for (const auto& m : epochs_) {
      s.x.push_back(static_cast<double>(m.epoch));
      s.y.push_back(m.*field * scale);
    }
    return s;
  };
  if (what == "loss") {
    chart.title = title_prefix + "loss";
    chart.y_label = "cross-entropy";
    series = {make("train", &EpochMetrics::train_loss), make("test", &EpochMetrics::test_loss)};
  } else if (what == "accuracy") {
    chart.title = title_prefix + "accuracy";
    chart.y_label = "accuracy (%)";
    series = {make("train top-1", &EpochMetrics::train_accuracy, 100),
              make("test top-1", &EpochMetrics::test_accuracy, 100)};
    if (!epochs_.empty() && !std::isnan(epochs_.back().test_top5)) {
      series.push_back(make("test top-5", &EpochMetrics::test_top5, 100));
      series.back().dashed = true;
    }
  } else {
    chart.title = title_prefix + "learning rate";
    chart.y_label = "learning rate";
    chart.y_from_zero = true;
    series = {make("lr (end of epoch)", &EpochMetrics::lr)};
  }
  return svg::line_plot(series, chart);
}

}  // namespace sedensenet
