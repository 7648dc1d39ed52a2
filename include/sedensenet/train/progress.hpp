#pragma once
/// \file
/// Progress output for training: a live bar on a terminal (the epoch's and the run's ETA,
/// images/s, running loss and accuracy), plain periodic lines otherwise (logs, CI), and an epoch
/// summary (loss, accuracy, top-5, macro-F1, recall per class, learning rate, speed), all fitted
/// to the terminal's width; a warning when the model predicts one class for almost everything.

#include <cstdio>
#include <string>
#include <vector>

#include "sedensenet/train/trainer.hpp"

namespace sedensenet {

/// The columns of the terminal `out` writes to; else $COLUMNS; else 80.
int terminal_columns(std::FILE* out);

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
  /// `line_every_seconds`: how often the non-interactive mode prints a line. `width`: the
  /// columns a line may take (0: the terminal's, else $COLUMNS, else 80; at least 40).
  explicit ProgressPrinter(std::FILE* out = stdout, int interactive = -1, double line_every_seconds = 30.0,
                           int width = 0);

  /// Registers the callbacks on a trainer (and reads its class names for the summaries).
  void attach(Trainer& trainer);

  void batch(const BatchEvent& e);
  void epoch(const EpochMetrics& m);

  /// The columns lines are fitted to.
  int width() const { return width_; }

  /// `fields` joined by " | " into lines of at most `width` columns; a field that does not fit
  /// on the current line starts a new one (indented by two spaces), and one longer than a line
  /// is broken at spaces.
  static std::vector<std::string> fit(const std::vector<std::string>& fields, int width);

 private:
  std::FILE* out_;
  bool interactive_;
  double every_;
  int width_;
  double last_line_ = 0.0;
  const Trainer* trainer_ = nullptr;
  double finished_epoch_seconds_ = 0.0;  // this session's completed epochs, evaluation included
  int64_t finished_epochs_ = 0;
};

}  // namespace sedensenet
