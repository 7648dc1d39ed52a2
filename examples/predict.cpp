// Classify images with a trained model: the weights file records the architecture, the class names
// and the input pipeline, so nothing else is needed.
//
//   predict WEIGHTS IMAGE...
#include <sedensenet/sedensenet.hpp>

#include <cstdio>
#include <iostream>

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: predict WEIGHTS IMAGE...\n";
    return 2;
  }
  sedensenet::set_num_threads(0);

  // 1. The model, its classes and its evaluation pipeline, from the checkpoint.
  auto trained = sedensenet::io::load_trained_model(argv[1]);
  auto transform = trained.input.eval_transform();

  // 2. Each image: decode, transform, forward, softmax, top 3.
  torch::NoGradGuard no_grad;
  sedensenet::data::Rng rng(0);  // the eval pipeline is deterministic; transforms take an Rng
  for (int i = 2; i < argc; ++i) {
    auto image = transform->apply(sedensenet::data::read_image(argv[i]), rng);
    auto probabilities = torch::softmax(trained.model->forward(image.unsqueeze(0)), 1)[0];
    auto [values, indices] = probabilities.topk(std::min<int64_t>(3, probabilities.size(0)));
    std::printf("%s:", argv[i]);
    for (int64_t k = 0; k < values.size(0); ++k) {
      const auto c = indices[k].item<int64_t>();
      std::printf(" %s %.1f%%", trained.classes.at(static_cast<size_t>(c)).c_str(),
                  100 * values[k].item<double>());
    }
    std::printf("\n");
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "predict: " << sedensenet::error_message(e) << "\n";
  return 1;
}
