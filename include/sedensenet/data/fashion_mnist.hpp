#pragma once
/// \file
/// `prepare_fashion_mnist`: Debian's Fashion-MNIST (package dataset-fashion-mnist, gzip'd IDX
/// files) written as an image folder: train/<class>/<n>.png and test/<class>/<n>.png.

#include <torch/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "sedensenet/util/threads.hpp"
#include "sedensenet/data/image.hpp"

namespace sedensenet::data {

/// Where Debian's dataset-fashion-mnist package puts the files.
inline const char* kFashionMnistSource = "/usr/share/datasets/fashion-mnist";

/// The ten Fashion-MNIST classes in label order (folder-safe names).
const std::array<const char*, 10>& fashion_mnist_classes();

/// What `prepare_fashion_mnist` did.
struct PreparedDataset {
  std::filesystem::path root;  ///< the folder written (contains train/ and test/)
  int64_t train_images = 0;
  int64_t test_images = 0;
  bool reused = false;  ///< the folder was already complete and was left as it was
};

namespace detail {
uint32_t big_endian(const uint8_t* p);

/// Images (N, rows, cols) uint8 from an IDX3 file (gzip'd).
torch::Tensor read_idx_images(const std::filesystem::path& path);

/// Labels (N) uint8 from an IDX1 file (gzip'd).
torch::Tensor read_idx_labels(const std::filesystem::path& path);

void write_split(const std::filesystem::path& dir, const torch::Tensor& images,
                 const torch::Tensor& labels, int64_t count, int threads);
}  // namespace detail

/// Writes Fashion-MNIST from `source` (Debian's gzip'd IDX files) to `out` as train/<class>/ and
/// test/<class>/ PNG folders, the first `max_train` / `max_test` images of each split (-1 = all:
/// 60,000 and 10,000). Idempotent: a complete folder written with the same limits is reused. The
/// folder is written under a temporary name and renamed when complete, so an interrupted run
/// never leaves a half-written dataset behind.
///
/// Example:
/// ```
/// auto prepared = sedensenet::data::prepare_fashion_mnist("data/fashion-mnist");
/// auto splits = sedensenet::data::ImageFolder::split(prepared.root);  // uses train/ and test/
/// ```
PreparedDataset prepare_fashion_mnist(const std::filesystem::path& out,
                                      const std::filesystem::path& source = kFashionMnistSource,
                                      int64_t max_train = -1, int64_t max_test = -1,
                                      int threads = 0);

}  // namespace sedensenet::data
