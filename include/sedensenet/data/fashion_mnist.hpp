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
inline const std::array<const char*, 10>& fashion_mnist_classes() {
  static const std::array<const char*, 10> names = {
      "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle_boot"};
  return names;
}

/// What `prepare_fashion_mnist` did.
struct PreparedDataset {
  std::filesystem::path root;  ///< the folder written (contains train/ and test/)
  int64_t train_images = 0;
  int64_t test_images = 0;
  bool reused = false;  ///< the folder was already complete and was left as it was
};

namespace detail {
inline uint32_t big_endian(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

/// Images (N, rows, cols) uint8 from an IDX3 file (gzip'd).
inline torch::Tensor read_idx_images(const std::filesystem::path& path) {
  const auto bytes = gunzip(read_file(path), path.string());
  TORCH_CHECK(bytes.size() >= 16 && big_endian(bytes.data()) == 0x00000803, path.string(),
              " is not an IDX image file (magic 0x00000803)");
  const int64_t n = big_endian(bytes.data() + 4), rows = big_endian(bytes.data() + 8),
                cols = big_endian(bytes.data() + 12);
  TORCH_CHECK(static_cast<int64_t>(bytes.size()) == 16 + n * rows * cols, path.string(),
              " is truncated: ", bytes.size(), " bytes for ", n, " images of ", rows, "x", cols);
  return torch::from_blob(const_cast<uint8_t*>(bytes.data()) + 16, {n, rows, cols}, torch::kUInt8)
      .clone();
}

/// Labels (N) uint8 from an IDX1 file (gzip'd).
inline torch::Tensor read_idx_labels(const std::filesystem::path& path) {
  const auto bytes = gunzip(read_file(path), path.string());
  TORCH_CHECK(bytes.size() >= 8 && big_endian(bytes.data()) == 0x00000801, path.string(),
              " is not an IDX label file (magic 0x00000801)");
  const int64_t n = big_endian(bytes.data() + 4);
  TORCH_CHECK(static_cast<int64_t>(bytes.size()) == 8 + n, path.string(), " is truncated");
  return torch::from_blob(const_cast<uint8_t*>(bytes.data()) + 8, {n}, torch::kUInt8).clone();
}

inline void write_split(const std::filesystem::path& dir, const torch::Tensor& images,
                        const torch::Tensor& labels, int64_t count, int threads) {
  for (const auto* name : fashion_mnist_classes()) std::filesystem::create_directories(dir / name);
  std::atomic<int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    try {
      for (int64_t i = next++; i < count; i = next++) {
        const auto label = labels[i].item<int64_t>();
        TORCH_CHECK(label >= 0 && label < 10, "Fashion-MNIST label ", label, " out of range");
        char name[32];
        std::snprintf(name, sizeof name, "%05ld.png", static_cast<long>(i));
        write_png(dir / fashion_mnist_classes()[static_cast<size_t>(label)] / name,
                  images[i].unsqueeze(0));
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = count;
    }
  };
  run_on_threads(threads, work);
  if (failure) std::rethrow_exception(failure);
}
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
inline PreparedDataset prepare_fashion_mnist(const std::filesystem::path& out,
                                             const std::filesystem::path& source = kFashionMnistSource,
                                             int64_t max_train = -1, int64_t max_test = -1,
                                             int threads = 0) {
  namespace fs = std::filesystem;
  const auto marker = out / ".complete";
  const std::string stamp =
      "fashion-mnist train " + std::to_string(max_train) + " test " + std::to_string(max_test);
  PreparedDataset result{out, 0, 0, false};
  std::error_code ec;
  if (fs::exists(marker, ec)) {
    std::ifstream in(marker);
    std::string line;
    std::getline(in, line);
    int64_t train = 0, test = 0;
    in >> train >> test;
    if (line == stamp) return {out, train, test, true};
  }
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    TORCH_CHECK(fs::exists(source / name), "Fashion-MNIST file ", (source / name).string(),
                " not found; install Debian's package: apt-get install dataset-fashion-mnist "
                "(or pass the folder that holds the four .gz files)");
  }
  if (fs::exists(out, ec)) {
    // Replace only what this function wrote before (it carries the marker); never a user's data.
    TORCH_CHECK(fs::is_directory(out, ec), out.string(), " exists and is not a folder");
    TORCH_CHECK(fs::exists(marker, ec) || fs::is_empty(out, ec), out.string(),
                " exists and was not written by prepare_fashion_mnist; choose another folder or "
                "remove it");
  }
  const int workers = thread_count(threads, "prepare threads");
  const auto partial = fs::path(out.string() + ".partial");
  fs::remove_all(partial, ec);
  auto write = [&](const char* split, const char* images_file, const char* labels_file,
                   int64_t limit) {
    const auto images = detail::read_idx_images(source / images_file);
    const auto labels = detail::read_idx_labels(source / labels_file);
    TORCH_CHECK(images.size(0) == labels.size(0), "Fashion-MNIST ", split, ": ", images.size(0),
                " images but ", labels.size(0), " labels");
    const int64_t count = limit < 0 ? images.size(0) : std::min(limit, images.size(0));
    detail::write_split(partial / split, images, labels, count, workers);
    return count;
  };
  result.train_images = write("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", max_train);
  result.test_images = write("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", max_test);
  std::ofstream(partial / ".complete") << stamp << "\n"
                                       << result.train_images << " " << result.test_images << "\n";
  fs::remove_all(out, ec);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  fs::rename(partial, out);
  return result;
}

}  // namespace sedensenet::data
