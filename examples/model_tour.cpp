// A tour of the model API: build every preset, print its summary, and run one training step.
//
//   model_tour [--threads N] [--preset NAME] [--batch B]
//
// Read it top to bottom: it is the shortest path from "I have the library" to "I have trained".
#include <sedensenet/sedensenet.hpp>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Build each SE-DenseNet preset, print its summary and run one training step"};
  int threads = 0;
  int64_t batch = 2;
  std::vector<std::string> presets = {"densenet_bc_100", "densenet121", "densenet169",
                                      "densenet201", "densenet161"};
  app.add_option("--threads", threads, "LibTorch threads (0 = one per core)")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", batch, "images per training step")->check(CLI::PositiveNumber);
  app.add_option("--preset", presets, "presets to build (repeatable)");
  CLI11_PARSE(app, argc, argv);

  // 1. Threads: LibTorch may start with one; set them explicitly.
  std::cout << "threads: " << sedensenet::set_num_threads(threads) << "\n";
  torch::manual_seed(0);

  for (const auto& name : presets) {
    // 2. Options: a preset sets the shape; everything else keeps the reference defaults
    //    (SE with r = 16, 10 classes). Memory-efficient dense layers are one option away.
    auto options = sedensenet::DenseNetOptions::preset(name)
                       .num_classes(10)
                       .memory(sedensenet::MemoryMode::efficient);
    sedensenet::DenseNet net(options);

    // 3. Summary: parameters, each stage's output shape, forward MACs. CIFAR-style presets take
    //    32x32 images, ImageNet-style ones 224x224.
    const int64_t size = options.small_inputs() ? 32 : 224;
    std::cout << "\n=== " << name << " (" << size << "x" << size << ") ===\n"
              << sedensenet::summary(net, {3, size, size});

    // 4. One training step: forward, cross-entropy, backward, Adam (the reference's recipe).
    torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-4));
    net->train();
    auto images = torch::randn({batch, 3, size, size});
    auto labels = torch::randint(0, 10, {batch}, torch::kLong);
    const auto start = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(images), labels);
    loss.backward();
    optimizer.step();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "training step: loss " << loss.item<double>() << ", " << seconds << " s\n";
  }
  return 0;
}
