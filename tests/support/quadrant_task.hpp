#pragma once
// A small synthetic classification task for the training tests: the class is the bright quadrant.

#include <torch/torch.h>

#include <cstdint>
#include <utility>

namespace sedensenet::test {

/// `n` images of 3 x size x size, standard-normal noise times 0.5, whose class (one of 4) is the
/// quadrant raised by 1.5; the labels are drawn with `seed`.
inline std::pair<torch::Tensor, torch::Tensor> quadrant_task(int64_t n, uint64_t seed, int64_t size = 8) {
  torch::manual_seed(seed);
  auto labels = torch::randint(0, 4, {n}, torch::kLong);
  auto images = torch::randn({n, 3, size, size}) * 0.5;
  const int64_t half = size / 2;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = labels[i].item<int64_t>();
    images[i].narrow(1, (c / 2) * half, half).narrow(2, (c % 2) * half, half).add_(1.5);
  }
  return {images, labels};
}

}  // namespace sedensenet::test
