#include "sedensenet/train/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace sedensenet {
namespace {

std::string clock(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds));
  char buffer[32];
  if (s >= 3600) {
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld", s / 60, s % 60);
  }
  return buffer;
}

std::string number(double v, const char* format) {
  if (std::isnan(v)) return "-";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, v);
  return buffer;
}

std::string percent(double v, const char* format = "%.2f") { return std::isnan(v) ? "-" : number(100 * v, format) + "%"; }

}  // namespace

int terminal_columns(std::FILE* out) {
  winsize size{};
  if (::ioctl(::fileno(out), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  if (const char* columns = std::getenv("COLUMNS")) {
    const int n = std::atoi(columns);
    if (n > 0) return n;
  }
  return 80;
}

ProgressPrinter::ProgressPrinter(std::FILE* out, int interactive, double line_every_seconds, int width)
    : out_(out),
      interactive_(interactive < 0 ? ::isatty(::fileno(out)) != 0 : interactive != 0),
      every_(line_every_seconds),
      width_(std::max(40, width > 0 ? width : terminal_columns(out))) {}

void ProgressPrinter::attach(Trainer& trainer) {
  trainer_ = &trainer;
  trainer.on_batch_end([this](const BatchEvent& e) { batch(e); });
  trainer.on_epoch_end([this](const EpochMetrics& m) { epoch(m); });
}

std::vector<std::string> ProgressPrinter::fit(const std::vector<std::string>& fields, int width) {
  std::vector<std::string> lines;
  std::string line;
  const auto limit = static_cast<size_t>(std::max(width, 20));
  for (const auto& field : fields) {
    if (field.empty()) continue;
    const std::string joined = line.empty() ? field : line + " | " + field;
    if (joined.size() <= limit) {
      line = joined;
      continue;
    }
    if (!line.empty()) lines.push_back(line);
    // A new line for the field (continuation lines indented by two), broken at spaces when it
    // is longer than a line.
    size_t indent = lines.empty() ? 0 : 2;
    line.assign(indent, ' ');
    std::istringstream words(field);
    for (std::string word; words >> word;) {
      if (line.size() > indent && line.size() + 1 + word.size() > limit) {
        lines.push_back(line);
        indent = 2;
        line.assign(indent, ' ');
      }
      line += (line.size() > indent ? " " : "") + word;
    }
  }
  if (!line.empty()) lines.push_back(line);
  return lines;
}

void ProgressPrinter::batch(const BatchEvent& e) {
  const double fraction = static_cast<double>(e.batch) / static_cast<double>(std::max<int64_t>(e.batches, 1));
  const double epoch_eta = e.batch > 0 ? e.elapsed_seconds * (1.0 - fraction) / fraction : 0.0;
  // The run's ETA: the rest of this epoch, then the remaining epochs at the mean duration of the
  // epochs finished so far (evaluation included), or this one's projected duration.
  const double epoch_seconds = finished_epochs_ > 0 ? finished_epoch_seconds_ / static_cast<double>(finished_epochs_)
                                                    : (fraction > 0 ? e.elapsed_seconds / fraction : 0.0);
  double run_eta = epoch_eta + static_cast<double>(e.epochs - e.epoch) * epoch_seconds;
  // With a time budget that has not fixed the count yet (the first epoch), `epochs` is only the
  // upper bound: the run ends within the budget.
  if (trainer_ != nullptr && trainer_->options().time_budget_minutes() > 0 && !trainer_->epochs_fixed_by_budget()) {
    run_eta = std::min(run_eta, std::max(epoch_eta, 60.0 * trainer_->options().time_budget_minutes() - e.elapsed_seconds));
  }
  const std::string eta = "ETA " + clock(epoch_eta) + (e.epoch < e.epochs ? ", run " + clock(run_eta) : "");
  const std::string head = "epoch " + std::to_string(e.epoch) + "/" + std::to_string(e.epochs);
  const std::string pct = number(100 * fraction, "%3.0f") + "%";
  const std::string speed = number(e.images_per_second, "%.0f") + " img/s";
  const std::string loss = "loss " + number(e.loss, "%.4f");
  const std::string acc = "acc " + percent(e.accuracy, "%.1f");
  if (interactive_) {
    // One line, one column short of the width (no wrap at the last column): drop the least
    // useful parts until it fits, and give the bar what is left (up to 24 columns).
    std::vector<std::string> parts = {pct, eta, loss, acc, speed};
    const auto others = [&] {
      size_t n = head.size() + 1;
      for (const auto& p : parts) n += p.size() + 2;
      return n;
    };
    const size_t room = static_cast<size_t>(width_ - 1);
    while (parts.size() > 2 && others() + 2 + 8 > room) parts.pop_back();
    const size_t bar_width = others() + 2 + 8 <= room ? std::min<size_t>(24, room - others() - 2) : 0;
    std::string line = head;
    if (bar_width > 0) {
      std::string bar(static_cast<size_t>(fraction * static_cast<double>(bar_width)), '#');
      bar.resize(bar_width, '.');
      line += " [" + bar + "]";
    }
    for (const auto& p : parts) line += "  " + p;
    if (line.size() > room) line.resize(room);
    std::fprintf(out_, "\r%s\x1b[K", line.c_str());
    std::fflush(out_);
    return;
  }
  if (e.batch == 1) last_line_ = 0.0;
  if (e.batch == e.batches || e.elapsed_seconds - last_line_ >= every_) {
    last_line_ = e.elapsed_seconds;
    const std::string position = head + " batch " + std::to_string(e.batch) + "/" + std::to_string(e.batches) + " (" +
                                 number(100 * fraction, "%.0f") + "%)";
    for (const auto& line : fit({position, eta, speed, loss + ", " + acc}, width_)) {
      std::fprintf(out_, "%s\n", line.c_str());
    }
    std::fflush(out_);
  }
}

void ProgressPrinter::epoch(const EpochMetrics& m) {
  if (interactive_) std::fprintf(out_, "\r\x1b[K");
  finished_epoch_seconds_ += std::isnan(m.seconds) ? 0.0 : m.seconds;
  ++finished_epochs_;
  std::vector<std::string> fields = {
      "epoch " + std::to_string(m.epoch) + ": train loss " + number(m.train_loss, "%.4f") + " acc " +
          percent(m.train_accuracy),
      "test loss " + number(m.test_loss, "%.4f") + " acc " + percent(m.test_accuracy) +
          (std::isnan(m.test_top5) ? "" : " top-5 " + percent(m.test_top5))};
  const std::vector<std::string> none;
  const auto& names = trainer_ != nullptr ? trainer_->class_names() : none;
  if (!std::isnan(m.test_macro_f1)) fields.push_back("macro-F1 " + number(m.test_macro_f1, "%.3f"));
  if (!m.test_recall.empty()) {
    if (m.test_recall.size() <= 10) {
      std::string recall = "recall";
      for (const double r : m.test_recall) recall += " " + number(r, "%.2f");
      fields.push_back(recall);
    } else {
      const auto lowest = std::min_element(m.test_recall.begin(), m.test_recall.end()) - m.test_recall.begin();
      const auto name = static_cast<size_t>(lowest) < names.size() ? names[static_cast<size_t>(lowest)] : std::to_string(lowest);
      fields.push_back("lowest recall " + number(m.test_recall[static_cast<size_t>(lowest)], "%.2f") + " (" + name + ")");
    }
  }
  fields.push_back("lr " + number(m.lr, "%.3g"));
  fields.push_back(number(m.seconds, "%.1f") + " s, " + number(m.images_per_second, "%.0f") + " img/s");
  for (const auto& line : fit(fields, width_)) std::fprintf(out_, "%s\n", line.c_str());
  if (m.test_recall.size() >= 2 && m.test_top_class_share >= 0.9) {
    const auto top = static_cast<size_t>(m.test_top_class);
    const std::string name = top < names.size() ? "'" + names[top] + "'" : "class " + std::to_string(top);
    const std::string warning = "warning: " + percent(m.test_top_class_share, "%.0f") + " of the test images are predicted as " +
                                name + ": the model does not tell the classes apart (yet). More epochs, --balance sampler "
                                "or a lower --lr may help.";
    for (const auto& line : fit({warning}, width_)) std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

}  // namespace sedensenet
