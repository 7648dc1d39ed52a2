#include "sedensenet/data/fashion_mnist.hpp"

namespace sedensenet::data {

const std::array<const char*, 10>& fashion_mnist_classes() {
  static const std::array<const char*, 10> names = {
      "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle_boot"};
  return names;
}

}  // namespace sedensenet::data

namespace sedensenet::data::detail {

uint32_t big_endian(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

torch::Tensor read_idx_images(const std::filesystem::path& path) {
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

torch::Tensor read_idx_labels(const std::filesystem::path& path) {
  const auto bytes = gunzip(read_file(path), path.string());
  TORCH_CHECK(bytes.size() >= 8 && big_endian(bytes.data()) == 0x00000801, path.string(),
              " is not an IDX label file (magic 0x00000801)");
  const int64_t n = big_endian(bytes.data() + 4);
  TORCH_CHECK(static_cast<int64_t>(bytes.size()) == 8 + n, path.string(), " is truncated");
  return torch::from_blob(const_cast<uint8_t*>(bytes.data()) + 8, {n}, torch::kUInt8).clone();
}

void write_split(const std::filesystem::path& dir, const torch::Tensor& images,
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

}  // namespace sedensenet::data::detail

namespace sedensenet::data {

PreparedDataset prepare_fashion_mnist(const std::filesystem::path& out,
                                      const std::filesystem::path& source,
                                      int64_t max_train, int64_t max_test,
                                      int threads) {
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


