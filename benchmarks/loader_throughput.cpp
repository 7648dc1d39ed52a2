// Data-loading throughput: SEDenseNet's ImageLoader against torchvision's DataLoader on the same
// image folder and the same pipeline (Resize -> RandomHorizontalFlip -> ToTensor -> Normalize),
// measured side by side in one run.
//
//   loader_throughput [--data DIR] [--sizes 224,32] [--workers 2] [--batch 64] [--images 10000]
//                     [--torchvision] [--csv out.csv]
//
// Without --data, Fashion-MNIST is prepared from Debian's dataset-fashion-mnist package.
#include <sedensenet/sedensenet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace data = sedensenet::data;

namespace {
struct Row {
  std::string impl;
  int64_t size;
  int64_t workers;
  double images_per_s;
};

double measure(const data::ImageFolder& folder, int64_t size, int64_t workers, int64_t batch,
               int64_t images, bool cache) {
  auto pipeline = data::compose(
      {std::make_shared<data::Resize>(size), std::make_shared<data::RandomHorizontalFlip>(),
       std::make_shared<data::ToTensor>(),
       std::make_shared<data::Normalize>(data::imagenet_mean(), data::imagenet_std())});
  data::ImageLoader loader(folder, pipeline,
                           data::LoaderOptions().batch_size(batch).workers(workers).cache(cache));
  const auto start = std::chrono::steady_clock::now();
  int64_t seen = 0;
  {
    auto epoch = loader.epoch(0);
    while (seen < images) {
      auto b = epoch.next();
      if (!b) break;
      seen += b->images.size(0);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(seen) / seconds;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Data-loading throughput against torchvision's DataLoader"};
  std::string data_dir;
  std::vector<int64_t> sizes = {224, 32};
  std::vector<int64_t> workers = {2};
  int64_t batch = 64, images = 10000;
  int threads = 0;
  bool torchvision = false;
  std::string csv_path = "loader_throughput.csv";
  std::string script = SEDENSENET_BENCHMARK_DIR "/torchvision_loader.py";
  app.add_option("--data", data_dir, "image folder (default: Fashion-MNIST prepared here)");
  app.add_option("--sizes", sizes, "Resize sizes")->delimiter(',');
  app.add_option("--workers", workers, "worker counts to measure")->delimiter(',');
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--images", images, "images per measurement")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "LibTorch threads of the main thread (0 = cores)");
  app.add_flag("--torchvision", torchvision, "also measure torchvision (python3-torchvision)");
  app.add_option("--csv", csv_path, "CSV output");
  CLI11_PARSE(app, argc, argv);

  try {
    sedensenet::set_num_threads(threads);
    if (data_dir.empty()) {
      auto prepared = data::prepare_fashion_mnist("data/fashion-mnist");
      data_dir = prepared.root.string();
      fmt::print("Fashion-MNIST at {} ({} train images{})\n", data_dir, prepared.train_images,
                 prepared.reused ? ", reused" : "");
    }
    auto splits = data::ImageFolder::split(data_dir);
    fmt::print("measuring on {} ({} images), {} images per measurement, batch {}\n",
               splits.train.root().string(), splits.train.size().value(), images, batch);

    std::vector<Row> rows;
    for (auto size : sizes) {
      for (auto w : workers) {
        const double rate = measure(splits.train, size, w, batch, images, false);
        fmt::print("  sedensenet   resize {:>3}  workers {}  {:>8.0f} images/s\n", size, w, rate);
        std::fflush(stdout);
        rows.push_back({"sedensenet", size, w, rate});
      }
    }
    if (torchvision) {
      const auto csv = std::filesystem::temp_directory_path() / "sedensenet_torchvision_loader.csv";
      std::string size_list, worker_list = "0";
      for (auto s : sizes) size_list += (size_list.empty() ? "" : ",") + std::to_string(s);
      for (auto w : workers) worker_list += "," + std::to_string(w);
      const auto command = fmt::format(
          SEDENSENET_PYTHON " {} --data {} --sizes {} --workers {} --batch {} --images {} --csv {}",
          script, splits.train.root().string(), size_list, worker_list, batch, images, csv.string());
      fmt::print("running torchvision: {}\n", command);
      std::fflush(stdout);
      if (std::system(command.c_str()) != 0) {
        throw std::runtime_error("the torchvision script failed; it needs python3-torchvision");
      }
      std::ifstream in(csv);
      std::string line;
      std::getline(in, line);
      while (std::getline(in, line)) {
        std::stringstream ss(line);
        std::string impl, size, w, rate;
        std::getline(ss, impl, ',');
        std::getline(ss, size, ',');
        std::getline(ss, w, ',');
        std::getline(ss, rate, ',');
        rows.push_back({impl, std::stoll(size), std::stoll(w), std::stod(rate)});
      }
    }

    fmt::print("\n{:<12} {:>6} {:>8} {:>12} {:>22}\n", "impl", "resize", "workers", "images/s",
               "vs torchvision (same workers)");
    fmt::print("{}\n", std::string(66, '-'));
    for (const auto& r : rows) {
      std::string ratio = "-";
      for (const auto& t : rows) {
        if (t.impl == "torchvision" && r.impl == "sedensenet" && t.size == r.size &&
            t.workers == r.workers) {
          ratio = fmt::format("{:.2f}x", r.images_per_s / t.images_per_s);
        }
      }
      fmt::print("{:<12} {:>6} {:>8} {:>12.0f} {:>22}\n", r.impl, r.size, r.workers,
                 r.images_per_s, ratio);
    }
    std::ofstream csv(csv_path);
    csv << "impl,size,workers,images_per_s\n";
    for (const auto& r : rows) {
      csv << fmt::format("{},{},{},{:.1f}\n", r.impl, r.size, r.workers, r.images_per_s);
    }
    fmt::print("wrote {}\n", csv_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "loader_throughput: {}\n", sedensenet::error_message(e));
    return 1;
  }
  return 0;
}
