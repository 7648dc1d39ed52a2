// Data-loading throughput: SEDenseNet's ImageLoader against torchvision's DataLoader (PIL) on the
// same image folders and the same pipeline (Resize -> RandomHorizontalFlip -> ToTensor ->
// Normalize), side by side in one run. Every measurement runs in a fresh process; the
// configurations alternate, in a rotated order each round, and medians over rounds are reported.
//
//   loader_throughput [--folders fashion,photos,photos-large,icons] [--data DIR] [--sizes 224,32]
//                     [--workers 2] [--batch 64] [--seconds 4] [--rounds 3] [--ops] [--csv out.csv]
//
// Folders (made once under --data-root, default data/loader): Fashion-MNIST's training images
// (grey PNGs, from Debian's dataset-fashion-mnist), photo-like colour JPEGs at 500x375 and at
// 1024x768, and colour icons (benchmarks/loader_folders.py). --data DIR measures a folder of one's
// own instead. Configurations: "sedensenet" (full decode, torchvision's pixels), "draft"
// (decode-time downscaling, LoaderOptions::decode_downscale) and "torchvision" (--workers
// worker processes).
#include <sedensenet/sedensenet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "fresh_process.hpp"

namespace data = sedensenet::data;
namespace bench = sedensenet::bench;
namespace fs = std::filesystem;

namespace {

/// The child: images/s of one configuration, printed as a RESULT line.
int measure(const std::string& folder, int64_t size, int64_t workers, int64_t batch,
            double seconds, bool draft) {
  auto pipeline = data::compose(
      {std::make_shared<data::Resize>(size), std::make_shared<data::RandomHorizontalFlip>(),
       std::make_shared<data::ToTensor>(),
       std::make_shared<data::Normalize>(data::imagenet_mean(), data::imagenet_std())});
  data::ImageLoader loader(
      data::ImageFolder(folder), pipeline,
      data::LoaderOptions().batch_size(batch).workers(workers).decode_downscale(draft));
  // Whole batches until `seconds` have passed, over as many epochs as that takes.
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  int64_t seen = 0;
  for (int64_t epoch = 0; elapsed() < seconds; ++epoch) {
    auto e = loader.epoch(epoch);
    while (elapsed() < seconds) {
      auto b = e.next();
      if (!b) break;
      seen += b->images.size(0);
    }
  }
  std::printf("RESULT %.1f\n", static_cast<double>(seen) / elapsed());
  return 0;
}

/// The child for --ops: milliseconds per image of decoding and of Resize(size) alone, one thread,
/// over the folder's first 100 images (best of 5 passes), as "RESULT decode resize".
int measure_ops(const std::string& folder, int64_t size) {
  const data::ImageFolder images(folder);
  std::vector<std::vector<uint8_t>> files;
  for (const auto& sample : images.samples()) {
    if (files.size() == 100) break;
    files.push_back(data::read_file(sample.path));
  }
  std::vector<torch::Tensor> decoded(files.size());
  auto best_ms = [&](auto&& work) {
    double best = 1e30;
    for (int pass = 0; pass < 5; ++pass) {
      const auto start = std::chrono::steady_clock::now();
      for (size_t i = 0; i < files.size(); ++i) work(i);
      best = std::min(best, std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - start).count());
    }
    return best / static_cast<double>(files.size());
  };
  const double decode = best_ms([&](size_t i) { decoded[i] = data::decode_image(files[i], "image"); });
  data::Resize resize(size);
  data::Rng rng(0);
  const double resized = best_ms([&](size_t i) { resize.apply(decoded[i], rng); });
  std::printf("RESULT %.4f %.4f\n", decode, resized);
  return 0;
}

struct Folder {
  std::string name, path;
};

/// How far decode-time downscaling moves pixels: Resize(size) of the downscaled decode against
/// Resize(size) of the full decode (torchvision's pixels), over the first `count` JPEGs.
struct PixelDistance {
  int64_t images = 0, scaled = 0, other_size = 0;
  double mean_abs = 0, max_abs = 0;
};

PixelDistance draft_distance(const std::string& folder, int64_t size, int64_t count) {
  PixelDistance d;
  data::Resize resize(size);
  data::Rng rng(0);
  double total = 0;
  int64_t values = 0;
  const data::ImageFolder images(folder);
  for (const auto& sample : images.samples()) {
    if (d.images == count) break;
    auto extension = sample.path.extension().string();
    for (auto& ch : extension) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (extension != ".jpg" && extension != ".jpeg") continue;
    ++d.images;
    const auto bytes = data::read_file(sample.path);
    const auto full = resize.apply(data::decode_image(bytes, sample.path.string()), rng);
    const auto small = data::decode_image(bytes, sample.path.string(),
                                          data::DecodeOptions().min_size(resize.min_input_size()));
    const auto drafted = resize.apply(small, rng);
    if (small.size(2) * 2 <= data::read_header(bytes.data(), bytes.size(), "").width) ++d.scaled;
    if (drafted.sizes() != full.sizes()) {
      ++d.other_size;
      continue;
    }
    const auto diff = (drafted.to(torch::kInt) - full.to(torch::kInt)).abs();
    total += diff.sum().item<double>();
    values += diff.numel();
    d.max_abs = std::max(d.max_abs, diff.max().item<double>());
  }
  d.mean_abs = values > 0 ? total / static_cast<double>(values) : 0;
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Data-loading throughput against torchvision's DataLoader"};
  std::vector<std::string> folders = {"fashion", "photos", "photos-large", "icons"};
  std::vector<std::string> configs = {"sedensenet", "draft", "torchvision"};
  std::string data_dir, data_root = "data/loader", child, csv_path = "loader_throughput.csv";
  std::vector<int64_t> sizes = {224, 32};
  int64_t workers = 2, batch = 64, threads = 2;
  double seconds = 4;
  int rounds = 3;
  app.add_option("--folders", folders, "folders: fashion, photos, photos-large, icons")->delimiter(',');
  app.add_option("--data", data_dir, "measure this image folder instead");
  app.add_option("--data-root", data_root, "where the folders are made (once)");
  app.add_option("--configs", configs, "sedensenet, draft, torchvision")->delimiter(',');
  app.add_option("--sizes", sizes, "Resize sizes")->delimiter(',');
  app.add_option("--workers", workers, "loader threads (torchvision: worker processes)")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--seconds", seconds, "seconds per measurement")->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "rounds (fresh processes, rotated order; medians)")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "LibTorch threads of the main thread");
  app.add_option("--csv", csv_path, "CSV output");
  bool ops = false;
  app.add_flag("--ops", ops, "also time decoding and Resize alone, per image, against PIL");
  app.add_option("--child", child, "(internal) run one measurement: sedensenet or draft");
  CLI11_PARSE(app, argc, argv);

  try {
    sedensenet::set_num_threads(static_cast<int>(threads));
    if (child == "ops") return measure_ops(data_dir, sizes.at(0));
    if (!child.empty()) {
      return measure(data_dir, sizes.at(0), workers, batch, seconds, child == "draft");
    }
    std::vector<Folder> measured;
    if (!data_dir.empty()) {
      measured.push_back({fs::path(data_dir).filename().string(), data_dir});
    } else {
      for (const auto& name : folders) {
        if (name == "fashion") {
          auto prepared = data::prepare_fashion_mnist(fs::path(data_root) / "fashion-mnist");
          measured.push_back({name, (prepared.root / "train").string()});
          continue;
        }
        const auto path = fs::path(data_root) / name;
        if (!fs::exists(path)) {
          const auto command = fmt::format("{} {}/loader_folders.py {} {}", SEDENSENET_PYTHON,
                                           SEDENSENET_BENCHMARK_DIR, data_root, name);
          fmt::print("making {}: {}\n", path.string(), command);
          std::fflush(stdout);
          if (std::system(command.c_str()) != 0) {
            throw std::runtime_error("could not make " + path.string() + " (needs python3-pil)");
          }
        }
        measured.push_back({name, path.string()});
      }
    }
    const std::string self = fs::canonical("/proc/self/exe").string();
    auto command_for = [&](const std::string& config, const Folder& folder, int64_t size) {
      if (config == "torchvision") {
        return fmt::format("{} {}/torchvision_loader.py --data {} --size {} --workers {} --batch {} "
                           "--seconds {}",
                           SEDENSENET_PYTHON, SEDENSENET_BENCHMARK_DIR, folder.path, size, workers,
                           batch, seconds);
      }
      return fmt::format("{} --child {} --data {} --sizes {} --workers {} --batch {} --seconds {} "
                         "--threads {}",
                         self, config, folder.path, size, workers, batch, seconds, threads);
    };
    // rates[folder][size][config]: one value per round.
    std::map<std::string, std::map<int64_t, std::map<std::string, std::vector<double>>>> rates;
    for (int round = 0; round < rounds; ++round) {
      for (const auto& folder : measured) {
        for (auto size : sizes) {
          for (size_t i = 0; i < configs.size(); ++i) {
            const auto& config = configs[(i + static_cast<size_t>(round)) % configs.size()];
            const double rate = bench::run_fresh(command_for(config, folder, size)).at(0);
            rates[folder.name][size][config].push_back(rate);
            fmt::print("round {}  {:<13} {:>4}  {:<12} {:>8.0f} images/s\n", round + 1, folder.name,
                       size, config, rate);
            std::fflush(stdout);
          }
        }
      }
    }

    fmt::print("\n{:<13} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10}\n", "folder", "resize",
               "sedensenet", "draft", "torchvision", "ratio", "draft");
    fmt::print("{}\n", std::string(81, '-'));
    std::ofstream csv(csv_path);
    csv << "folder,size,config,images_per_s,vs_torchvision,rounds\n";
    for (const auto& folder : measured) {
      for (auto size : sizes) {
        auto& by_config = rates[folder.name][size];
        auto rate = [&](const std::string& c) { return bench::median(by_config[c]); };
        const double tv = rate("torchvision");
        auto ratio = [&](const std::string& c) {
          return tv > 0 && rate(c) > 0 ? fmt::format("{:.2f}x", rate(c) / tv) : std::string("-");
        };
        fmt::print("{:<13} {:>6} {:>12.0f} {:>12.0f} {:>12.0f} {:>10} {:>10}\n", folder.name, size,
                   rate("sedensenet"), rate("draft"), tv, ratio("sedensenet"), ratio("draft"));
        for (const auto& config : configs) {
          csv << fmt::format("{},{},{},{:.1f},{:.3f},{}\n", folder.name, size, config, rate(config),
                             tv > 0 ? rate(config) / tv : 0.0, by_config[config].size());
        }
      }
    }
    fmt::print("{} workers, batch {}, {} s per measurement, medians of {} rounds of fresh "
               "processes; wrote {}\n",
               workers, batch, seconds, rounds, csv_path);

    // What the draft decode costs in pixels (JPEG folders only).
    const auto pixels_path = fs::path(csv_path).replace_extension("").string() + "_draft_pixels.csv";
    std::ofstream pixels_csv(pixels_path);
    pixels_csv << "folder,size,images,downscaled,mean_abs_levels,max_abs_levels,other_size\n";
    fmt::print("\ndraft decode against the full decode, after Resize (levels of 255)\n");
    fmt::print("{:<13} {:>6} {:>8} {:>11} {:>10} {:>8}\n", "folder", "resize", "images", "downscaled",
               "mean |d|", "max |d|");
    for (const auto& folder : measured) {
      for (auto size : sizes) {
        const auto d = draft_distance(folder.path, size, 100);
        if (d.images == 0) continue;
        fmt::print("{:<13} {:>6} {:>8} {:>11} {:>10.2f} {:>8.0f}{}\n", folder.name, size, d.images,
                   d.scaled, d.mean_abs, d.max_abs,
                   d.other_size ? fmt::format("  ({} of another size)", d.other_size) : "");
        pixels_csv << fmt::format("{},{},{},{},{:.3f},{:.0f},{}\n", folder.name, size, d.images,
                                  d.scaled, d.mean_abs, d.max_abs, d.other_size);
      }
    }
    fmt::print("wrote {}\n", pixels_path);

    if (ops) {
      // Per image, one thread, fresh processes: decoding and Resize alone, ours and PIL's.
      const auto ops_path = fs::path(csv_path).replace_extension("").string() + "_ops.csv";
      std::ofstream ops_csv(ops_path);
      ops_csv << "folder,size,decode_ms,pil_decode_ms,resize_ms,pil_resize_ms\n";
      fmt::print("\nper image, one thread (ms; best of 5 passes over 100 images)\n");
      fmt::print("{:<13} {:>6} {:>9} {:>11} {:>9} {:>11}\n", "folder", "resize", "decode",
                 "PIL decode", "resize", "PIL resize");
      for (const auto& folder : measured) {
        for (auto size : sizes) {
          const auto ours = bench::run_fresh(fmt::format("{} --child ops --data {} --sizes {} --threads 1",
                                                         self, folder.path, size));
          const auto pil = bench::run_fresh(fmt::format("{} {}/torchvision_loader.py --ops --data {} --size {}",
                                                        SEDENSENET_PYTHON, SEDENSENET_BENCHMARK_DIR,
                                                        folder.path, size));
          fmt::print("{:<13} {:>6} {:>9.3f} {:>11.3f} {:>9.3f} {:>11.3f}\n", folder.name, size,
                     ours.at(0), pil.at(0), ours.at(1), pil.at(1));
          ops_csv << fmt::format("{},{},{:.4f},{:.4f},{:.4f},{:.4f}\n", folder.name, size, ours.at(0),
                                 pil.at(0), ours.at(1), pil.at(1));
        }
      }
      fmt::print("wrote {}\n", ops_path);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "loader_throughput: {}\n", sedensenet::error_message(e));
    return 1;
  }
  return 0;
}
