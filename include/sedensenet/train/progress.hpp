#pragma once
/// \file
/// Progress output for training: a live bar on a terminal (ETA, images/s, running loss and
/// accuracy), plain periodic lines otherwise (logs, CI), and one summary line per epoch.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "sedensenet/train/trainer.hpp"

namespace sedensenet {

/// Prints training progress to a C stream.
///
/// Example:
/// ```
/// sedensenet::ProgressPrinter progress;  // stdout; a bar when stdout is a terminal
/// progress.attach(trainer);
/// ```
class ProgressPrinter {
 public:
  /// `interactive`: draw a bar that updates in place (default: whether `out` is a terminal).
  /// `line_every_seconds`: how often the non-interactive mode prints a line.
  explicit ProgressPrinter(FILE* out = stdout, int interactive = -1,
                           double line_every_seconds = 30.0)
      : out_(out),
        interactive_(interactive < 0 ? ::isatty(::fileno(out)) != 0 : interactive != 0),
        every_(line_every_seconds) {}

  /// Registers the callbacks on a trainer.
  void attach(Trainer& trainer) {
    trainer.on_batch_end([this](const BatchEvent& e) { batch(e); });
    trainer.on_epoch_end([this](const EpochMetrics& m) { epoch(m); });
  }

  void batch(const BatchEvent& e) {
    const double fraction = static_cast<double>(e.batch) / static_cast<double>(std::max<int64_t>(e.batches, 1));
    const double eta = e.batch > 0 ? e.elapsed_seconds * (1.0 - fraction) / fraction : 0.0;
    if (interactive_) {
      constexpr int kWidth = 24;
      const int filled = static_cast<int>(fraction * kWidth);
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(kWidth, '.');
      std::fprintf(out_, "\repoch %lld/%lld [%s] %3.0f%% %lld/%lld  ETA %s  %5.0f img/s  loss %.4f  acc %5.1f%%  ",
                   static_cast<long long>(e.epoch), static_cast<long long>(e.epochs), bar.c_str(),
                   100 * fraction, static_cast<long long>(e.batch),
                   static_cast<long long>(e.batches), clock(eta).c_str(), e.images_per_second,
                   e.loss, 100 * e.accuracy);
      std::fflush(out_);
      return;
    }
    const bool first = e.batch == 1;
    if (first) last_line_ = 0.0;
    if (e.batch == e.batches || e.elapsed_seconds - last_line_ >= every_) {
      last_line_ = e.elapsed_seconds;
      std::fprintf(out_, "epoch %lld/%lld batch %lld/%lld (%.0f%%) ETA %s, %.0f img/s, loss %.4f, acc %.1f%%\n",
                   static_cast<long long>(e.epoch), static_cast<long long>(e.epochs),
                   static_cast<long long>(e.batch), static_cast<long long>(e.batches),
                   100 * fraction, clock(eta).c_str(), e.images_per_second, e.loss,
                   100 * e.accuracy);
      std::fflush(out_);
    }
  }

  void epoch(const EpochMetrics& m) {
    if (interactive_) std::fprintf(out_, "\n");
    std::fprintf(out_, "epoch %lld: train loss %.4f acc %.2f%% | test loss %s acc %s%s | lr %.3g | %.1f s, %.0f img/s\n",
                 static_cast<long long>(m.epoch), m.train_loss, 100 * m.train_accuracy,
                 number(m.test_loss, "%.4f").c_str(), percent(m.test_accuracy).c_str(),
                 std::isnan(m.test_top5) ? "" : (" top-5 " + percent(m.test_top5)).c_str(), m.lr,
                 m.seconds, m.images_per_second);
    std::fflush(out_);
  }

 private:
  static std::string clock(double seconds) {
    const auto s = static_cast<long long>(std::max(0.0, seconds));
    char buffer[32];
    if (s >= 3600) {
      std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    } else {
      std::snprintf(buffer, sizeof buffer, "%lld:%02lld", s / 60, s % 60);
    }
    return buffer;
  }
  static std::string number(double v, const char* format) {
    if (std::isnan(v)) return "-";
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, format, v);
    return buffer;
  }
  static std::string percent(double v) {
    return std::isnan(v) ? "-" : number(100 * v, "%.2f") + "%";
  }

  FILE* out_;
  bool interactive_;
  double every_;
  double last_line_ = 0.0;
};

}  // namespace sedensenet
