// Training throughput, loading included: SEDenseNet's Trainer + ImageLoader against a PyTorch
// training loop of the same model (python/sedensenet.py) with torchvision's ImageFolder and
// DataLoader, on the same images, measured side by side in one run: each measurement in a fresh
// process, the implementations in a rotated order each round, medians over rounds. Then a roofline
// line: the machine's measured float32 GEMM peak (same run, same threads), the FLOPs of a training
// step, and the fraction of that peak each implementation reaches.
//
//   training_throughput [--data DIR] [--preset densenet_bc_22_k12] [--memory standard] [--image-size 28]
//                       [--batch 64] [--images 6400] [--workers 2] [--threads 0] [--rounds 3]
//                       [--csv FILE]
#include <sedensenet/sedensenet.hpp>

#include "fresh_process.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace data = sedensenet::data;
namespace bench = sedensenet::bench;

namespace {

/// The machine's float32 matrix-multiply rate on the current LibTorch threads, in GFLOP/s: the
/// best of 7 timings of 4 products of two 1024x1024 matrices (2 * 1024^3 FLOPs each), after a
/// warm-up. What oneDNN's convolutions can reach at best on this CPU.
double measure_gemm_gflops() {
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  const int64_t n = 1024;
  const auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::empty({n, n});
  for (int i = 0; i < 3; ++i) torch::mm_out(c, a, b);
  double best = 1e30;
  for (int trial = 0; trial < 7; ++trial) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 4; ++i) torch::mm_out(c, a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return 4 * 2.0 * static_cast<double>(n * n * n) / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Training throughput against a PyTorch + torchvision DataLoader loop"};
  std::string data_dir, preset = "densenet_bc_22_k12", csv_path = "training_throughput.csv";
  std::string memory = "standard";
  bool nchw = false;
  double ema = 0;
  int64_t image_size = 28, batch = 64, images = 6400, workers = 2, warmup_batches = 10;
  int threads = 0;
  bool skip_pytorch = false;
  int rounds = 3;
  std::string child;
  app.add_option("--data", data_dir, "image folder with train/ (default: Fashion-MNIST)");
  app.add_option("--preset", preset, "architecture");
  app.add_option("--memory", memory, "SEDenseNet's dense layers: standard, efficient, shared, ...");
  app.add_flag("--nchw", nchw, "(internal, with --child) SEDenseNet on NCHW maps (TrainerOptions::channels_last off)");
  app.add_option("--ema", ema, "(internal, with --child) SEDenseNet with a moving average of the weights (TrainerOptions::ema_decay)");
  app.add_option("--image-size", image_size, "input size");
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--images", images, "training images measured (after warm-up)")->check(CLI::PositiveNumber);
  app.add_option("--warmup-batches", warmup_batches, "batches not timed")->check(CLI::NonNegativeNumber);
  app.add_option("--workers", workers, "loader workers on both sides");
  app.add_option("--threads", threads, "LibTorch threads on both sides (0 = one per core)");
  app.add_flag("--no-pytorch", skip_pytorch, "measure SEDenseNet only");
  app.add_option("--rounds", rounds, "rounds (fresh processes, rotated order; medians)")->check(CLI::PositiveNumber);
  app.add_option("--child", child, "(internal) measure one implementation in this process: fused or unfused")
      ->check(CLI::IsMember({"fused", "unfused"}));
  app.add_option("--csv", csv_path, "CSV output");
  CLI11_PARSE(app, argc, argv);

  try {
    threads = sedensenet::set_num_threads(threads);
    sedensenet::keep_freed_memory();
    if (data_dir.empty()) data_dir = data::prepare_fashion_mnist("data/fashion-mnist").root.string();
    auto splits = data::ImageFolder::split(data_dir);
    const int64_t total = images + warmup_batches * batch;
    TORCH_CHECK(total <= static_cast<int64_t>(splits.train.samples().size()), "--images too large");
    auto train_set = splits.train.subset({splits.train.samples().begin(),
                                          splits.train.samples().begin() + total});
    sedensenet::io::InputSpec input;
    input.size = image_size;
    auto transform = data::compose({std::make_shared<data::Resize>(image_size, image_size),
                                    std::make_shared<data::RandomHorizontalFlip>(),
                                    std::make_shared<data::ToTensor>(),
                                    std::make_shared<data::Normalize>(input.mean, input.std)});
    auto measure_ours = [&](bool fused) {
      sedensenet::set_fused_batch_norm(fused);
      data::ImageLoader loader(train_set, transform,
                               data::LoaderOptions().batch_size(batch).workers(workers).seed(1));
      auto model_options = sedensenet::DenseNetOptions::preset(preset)
                               .num_classes(static_cast<int64_t>(splits.train.classes().size()))
                               .memory(sedensenet::memory_mode_from_string(memory));
      torch::manual_seed(0);
      sedensenet::DenseNet net(model_options);
      sedensenet::Trainer trainer(net, sedensenet::TrainerOptions::recommended().min_steps(0).epochs(1).threads(threads).channels_last(!nchw).ema_decay(ema));
      std::chrono::steady_clock::time_point start;
      int64_t timed_images = 0;
      trainer.on_batch_end([&](const sedensenet::BatchEvent& e) {
        if (e.batch == warmup_batches) start = std::chrono::steady_clock::now();
        if (e.batch > warmup_batches) timed_images += batch;
      });
      sedensenet::ImageLoaderSource source(loader);
      trainer.fit(source);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return static_cast<double>(timed_images) / seconds;
    };
    auto measure_pytorch = [&](bool tuned) {
      const auto out = std::filesystem::temp_directory_path() / "sedensenet_pytorch_training.txt";
      const auto command = fmt::format(
          "{}" SEDENSENET_PYTHON " {}/pytorch_training.py --data {} --preset {} --image-size {} "
          "--batch {} --images {} --warmup-batches {} --workers {} --threads {} > {}",
          tuned ? std::string("GLIBC_TUNABLES=") + sedensenet::keep_freed_memory_tunables() + " " : "",
          SEDENSENET_BENCHMARK_DIR, train_set.root().string(), preset, image_size, batch, images,
          warmup_batches, workers, threads, out.string());
      if (std::system(command.c_str()) != 0) throw std::runtime_error("the PyTorch script failed: " + command);
      std::ifstream in(out);
      double rate = 0;
      in >> rate;
      return rate;
    };
    if (!child.empty()) {
      fmt::print("RESULT {:.3f}\n", measure_ours(child == "fused"));
      return 0;
    }
    // Each measurement in a fresh process (a process that has already trained is faster: its heap
    // and thread pools are grown), in a rotated order each round (the machine's speed drifts by
    // 10% or more over minutes); medians over rounds.
    const std::string self = std::filesystem::canonical("/proc/self/exe").string();
    auto measure_ours_fresh = [&](const std::string& child_args) {
      return bench::run_fresh(fmt::format(
                                  "{} {} --data {} --preset {} --memory {} --image-size {} "
                                  "--batch {} --images {} --warmup-batches {} --workers {} --threads {}",
                                  self, child_args, data_dir, preset, memory, image_size, batch,
                                  images, warmup_batches, workers, threads))
          .at(0);
    };
    // Ours as shipped, then its ablations: the row's name and the child's arguments.
    const std::map<std::string, std::string> ours_rows = {
        {"sedensenet", "--child fused"},
        {"sedensenet (NCHW maps)", "--child fused --nchw"},
        {"sedensenet (LibTorch BN + ReLU)", "--child unfused"},
        {"sedensenet + EMA of the weights", "--child fused --ema 0.999"}};
    std::vector<std::string> names = {"sedensenet", "sedensenet (NCHW maps)",
                                      "sedensenet (LibTorch BN + ReLU)", "sedensenet + EMA of the weights"};
    if (!skip_pytorch) {
      names.insert(names.end(), {"pytorch", "pytorch (same malloc settings)"});
    }
    std::map<std::string, std::vector<double>> rates;
    for (int round = 0; round < rounds; ++round) {
      for (size_t i = 0; i < names.size(); ++i) {
        const auto& name = names[(i + static_cast<size_t>(round)) % names.size()];
        const auto ours_row = ours_rows.find(name);
        const double rate = ours_row != ours_rows.end() ? measure_ours_fresh(ours_row->second)
                                                        : measure_pytorch(name != "pytorch");
        rates[name].push_back(rate);
        fmt::print("round {}: {:<32} {:.0f} images/s\n", round + 1, name, rate);
        std::fflush(stdout);
      }
    }
    const double ours = bench::median(rates["sedensenet"]);
    std::vector<std::pair<std::string, double>> rows;
    for (const auto& name : names) rows.emplace_back(name, bench::median(rates[name]));
    fmt::print("\nmedians of {} rounds (each measurement a fresh process, rotated order), {} images "
               "each after {} warm-up batches\n",
               rounds, images, warmup_batches);
    fmt::print("{:<32} {:>10} {:>16}\n", "implementation", "images/s", "sedensenet / it");
    std::ofstream csv(csv_path);
    csv << "impl,images_per_s\n";
    for (const auto& [name, rate] : rows) {
      fmt::print("{:<32} {:>10.0f} {:>16}\n", name, rate,
                 name == "sedensenet" ? std::string("-") : fmt::format("{:.2f}x", ours / rate));
      csv << fmt::format("{},{:.1f}\n", name, rate);
    }
    fmt::print("wrote {}\n", csv_path);

    // Roofline: FLOPs of a training step (forward + the two backward products: 3 x forward, for
    // the convolutions and linear layers `summary` counts; batch norm, ReLU and concatenation are
    // memory-bound and not counted) against the measured GEMM peak.
    const double peak = measure_gemm_gflops();
    sedensenet::DenseNet probe(sedensenet::DenseNetOptions::preset(preset).num_classes(
        static_cast<int64_t>(splits.train.classes().size())));
    const auto macs = sedensenet::summary(probe, {3, image_size, image_size}).macs;
    const double flops_per_image = 3.0 * 2.0 * static_cast<double>(macs);
    fmt::print("\nroofline: float32 GEMM peak {:.1f} GFLOP/s ({} threads, 1024x1024 mm, best of 7); "
               "a training step of batch {} is {:.2f} GFLOP (3 x 2 x {} forward MACs per image)\n",
               peak, threads, batch, flops_per_image * static_cast<double>(batch) / 1e9, macs);
    fmt::print("{:<32} {:>10} {:>16}\n", "implementation", "GFLOP/s", "fraction of peak");
    const auto roofline_path = std::filesystem::path(csv_path).replace_extension("").string() + "_roofline.csv";
    std::ofstream roofline(roofline_path);
    roofline << "impl,images_per_s,gflop_per_s,gemm_peak_gflop_per_s,fraction_of_peak,forward_macs_per_image\n";
    for (const auto& [name, rate] : rows) {
      const double achieved = rate * flops_per_image / 1e9;
      fmt::print("{:<32} {:>10.2f} {:>15.1f}%\n", name, achieved, 100.0 * achieved / peak);
      roofline << fmt::format("{},{:.1f},{:.3f},{:.2f},{:.4f},{}\n", name, rate, achieved, peak,
                              achieved / peak, macs);
    }
    fmt::print("wrote {}\n", roofline_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "training_throughput: {}\n", sedensenet::error_message(e));
    return 1;
  }
  return 0;
}
