// Classify images with a trained model through the inference path (sedensenet::Classifier): the
// weights file records the architecture, the class names and the preprocessing, so nothing else is
// needed. Batch norm is folded into the convolutions and autograd is off (docs/deploy.md).
//
//   predict WEIGHTS IMAGE...
#include <sedensenet/serve.hpp>
#include <sedensenet/util/errors.hpp>
#include <sedensenet/util/threads.hpp>

#include <cstdio>
#include <iostream>

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: predict WEIGHTS IMAGE...\n";
    return 2;
  }
  sedensenet::set_num_threads(0);  // one LibTorch thread per core

  // 1. One call: model, classes and preprocessing from the checkpoint.
  const auto classifier = sedensenet::Classifier::load(argv[1]);

  // 2. All images at once: decoded in parallel, run in batches of 32, top 3 each.
  const std::vector<std::filesystem::path> files(argv + 2, argv + argc);
  const auto predictions = classifier.predict(files, /*k=*/3);
  for (size_t i = 0; i < files.size(); ++i) {
    std::printf("%s:", files[i].c_str());
    for (const auto& c : predictions[i].top) std::printf(" %s %.1f%%", c.name.c_str(), 100 * c.probability);
    std::printf("\n");
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "predict: " << sedensenet::error_message(e) << "\n";
  return 1;
}
