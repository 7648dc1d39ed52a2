#pragma once
// Builds small image folders for the data tests.

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "sedensenet/data/image.hpp"

namespace sedensenet::test {

/// Writes `per_class[c]` PNG images of `size` x `size` into root/<classes[c]>/, with pixel values
/// that encode the class and the image number (so tests can check what they got back).
inline void make_image_tree(const std::filesystem::path& root, const std::vector<std::string>& classes,
                            const std::vector<int>& per_class, int size = 12, int channels = 3) {
  for (size_t c = 0; c < classes.size(); ++c) {
    std::filesystem::create_directories(root / classes[c]);
    for (int i = 0; i < per_class[c]; ++i) {
      auto image = torch::full({channels, size, size}, static_cast<int64_t>(10 * c + i % 10),
                               torch::kUInt8);
      image.index_put_({torch::indexing::Slice(), 0, 0}, static_cast<int64_t>(i));
      char name[32];
      std::snprintf(name, sizeof name, "img_%03d.png", i);
      data::write_png(root / classes[c] / name, image);
    }
  }
}

}  // namespace sedensenet::test
