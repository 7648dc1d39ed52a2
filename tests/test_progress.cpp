// ProgressPrinter: lines fitted to the terminal width, the run's ETA, the epoch summary with
// macro-F1 and recall, and the warning for a model that predicts one class.

#include <catch2/catch.hpp>

#include <cstdio>
#include <regex>
#include <string>
#include <vector>

#include "sedensenet/train/progress.hpp"

using namespace sedensenet;
using Catch::Matchers::Contains;

namespace {

/// What the printer wrote, cut into the segments a terminal shows as lines (at \r and \n), with
/// the clear-to-end-of-line sequence removed.
std::vector<std::string> segments(std::FILE* file) {
  std::rewind(file);
  std::string text;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, file)) > 0;) text.append(buffer, n);
  text = std::regex_replace(text, std::regex("\x1b\\[K"), "");
  std::vector<std::string> out;
  std::string current;
  for (const char c : text) {
    if (c == '\r' || c == '\n') {
      if (!current.empty()) out.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  if (!current.empty()) out.push_back(current);
  return out;
}

BatchEvent event(int64_t epoch, int64_t batch, double elapsed) {
  BatchEvent e;
  e.epoch = epoch;
  e.epochs = 3;
  e.batch = batch;
  e.batches = 10;
  e.loss = 1.23456;
  e.accuracy = 0.5;
  e.images_per_second = 1234;
  e.elapsed_seconds = elapsed;
  return e;
}

EpochMetrics metrics(int64_t epoch, double top_share) {
  EpochMetrics m;
  m.epoch = epoch;
  m.train_loss = 1.1;
  m.train_accuracy = 0.6;
  m.test_loss = 1.2;
  m.test_accuracy = 0.55;
  m.test_top5 = 0.95;
  m.test_macro_f1 = 0.5;
  m.test_recall = std::vector<double>(10, 0.55);
  m.test_top_class = 3;
  m.test_top_class_share = top_share;
  m.lr = 1e-3;
  m.seconds = 12;
  m.images_per_second = 1000;
  return m;
}

}  // namespace

TEST_CASE("fit joins fields into lines of the width, breaking long ones at spaces", "[progress]") {
  CHECK((ProgressPrinter::fit({"a b", "c"}, 40) == std::vector<std::string>{"a b | c"}));
  CHECK((ProgressPrinter::fit({"aaaaaaaa aaaaaaaa", "bbbb"}, 20) == std::vector<std::string>{"aaaaaaaa aaaaaaaa", "  bbbb"}));
  const auto lines = ProgressPrinter::fit({"one two three four five six seven eight nine ten"}, 20);
  CHECK((lines == std::vector<std::string>{"one two three four", "  five six seven", "  eight nine ten"}));
}

TEST_CASE("The bar and the epoch summary fit 60 and 80 columns; the ETA covers the run", "[progress]") {
  for (const int width : {60, 80}) {
    INFO(width);
    std::FILE* file = std::tmpfile();
    REQUIRE(file != nullptr);
    ProgressPrinter printer(file, /*interactive=*/1, 30.0, width);
    for (int64_t b = 1; b <= 10; ++b) printer.batch(event(1, b, static_cast<double>(b)));
    printer.epoch(metrics(1, 0.3));
    for (int64_t b = 1; b <= 10; ++b) printer.batch(event(2, b, 1.2 * static_cast<double>(b)));
    printer.epoch(metrics(2, 0.3));
    const auto lines = segments(file);
    std::fclose(file);
    std::string all;
    for (const auto& line : lines) {
      INFO(line);
      CHECK(static_cast<int>(line.size()) <= width);
      all += line + "\n";
    }
    // Epoch 1, batch 5 of 10 after 5 s: 5 s left in the epoch, then 2 epochs of 10 s.
    CHECK_THAT(all, Contains("ETA 0:05, run 0:25"));
    // Epoch 2, batch 5 after 6 s: 6 s left, then one epoch as long as epoch 1 was (12 s).
    CHECK_THAT(all, Contains("ETA 0:06, run 0:18"));
    CHECK_THAT(all, Contains("epoch 1: train loss 1.1000 acc 60.00%"));
    CHECK_THAT(all, Contains("macro-F1 0.500"));
    CHECK_THAT(all, Contains("recall 0.55 0.55 0.55 0.55 0.55 0.55 0.55 0.55 0.55 0.55"));
    CHECK_THAT(all, !Contains("warning"));
  }
}

TEST_CASE("A model predicting one class for almost every test image is named in a warning", "[progress]") {
  std::FILE* file = std::tmpfile();
  ProgressPrinter printer(file, /*interactive=*/0, 30.0, 60);
  printer.epoch(metrics(1, 0.96));
  const auto lines = segments(file);
  std::fclose(file);
  std::string all;
  for (const auto& line : lines) {
    CHECK(line.size() <= 60);
    all += line + " ";
  }
  CHECK_THAT(all, Contains("warning: 96% of the test images are predicted as class 3"));
  CHECK_THAT(all, Contains("--balance sampler"));
}
