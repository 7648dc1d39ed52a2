// The fused batch norm + ReLU (sedensenet::batch_norm_relu) against LibTorch's batch norm followed
// by an in-place ReLU, training mode, on the activation shapes of SE-DenseNet-BC-22 (k = 12) at
// 28x28 with a batch of 64: forward alone, and forward + backward. Medians of interleaved runs.
//
//   batch_norm_relu [--batch 64] [--repeats 30] [--threads 0] [--csv batch_norm_relu.csv]
#include <sedensenet/sedensenet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <vector>

namespace {

template <typename F>
double median_ms(F&& f, int repeats) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fused batch norm + ReLU against LibTorch's batch norm and ReLU"};
  int64_t batch = 64;
  int repeats = 30, threads = 0;
  std::string csv_path = "batch_norm_relu.csv";
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--repeats", repeats, "timed runs per case (median)")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "LibTorch threads (0 = one per core)");
  app.add_option("--csv", csv_path, "CSV output");
  CLI11_PARSE(app, argc, argv);
  try {
    threads = sedensenet::set_num_threads(threads);
    sedensenet::keep_freed_memory();
    // (channels, size): norm1 of the three layers of each block, norm2 (48), the transitions.
    const std::vector<std::pair<int64_t, int64_t>> shapes = {
        {24, 28}, {36, 28}, {48, 28}, {60, 28}, {30, 14}, {54, 14}, {66, 14}, {45, 7}};
    fmt::print("batch {}, {} threads, medians of {} runs (ms)\n", batch, threads, repeats);
    fmt::print("{:>8} {:>5} {:>12} {:>12} {:>8} {:>16} {:>16} {:>8} {:>10}\n", "channels", "size",
               "fwd LibTorch", "fwd fused", "speed-up", "fwd+bwd LibTorch", "fwd+bwd fused",
               "speed-up", "max |diff|");
    std::ofstream csv(csv_path);
    csv << "channels,size,forward_libtorch_ms,forward_fused_ms,train_libtorch_ms,train_fused_ms,"
           "max_abs_diff\n";
    double total_plain = 0, total_fused = 0;
    for (const auto& [channels, size] : shapes) {
      torch::manual_seed(0);
      auto x = torch::randn({batch, channels, size, size}).requires_grad_(true);
      auto grad = torch::randn({batch, channels, size, size});
      torch::nn::BatchNorm2d norm(channels);
      auto run = [&](bool fused, bool backward) {
        sedensenet::set_fused_batch_norm(fused);
        if (!backward) {
          torch::NoGradGuard no_grad;
          return sedensenet::batch_norm_relu(x, *norm);
        }
        x.mutable_grad() = torch::Tensor();
        auto y = sedensenet::batch_norm_relu(x, *norm);
        y.backward(grad);
        return y;
      };
      const double diff =
          (run(true, false) - run(false, false)).abs().max().item<double>();
      const double fwd_plain = median_ms([&] { run(false, false); }, repeats);
      const double fwd_fused = median_ms([&] { run(true, false); }, repeats);
      const double train_plain = median_ms([&] { run(false, true); }, repeats);
      const double train_fused = median_ms([&] { run(true, true); }, repeats);
      total_plain += train_plain;
      total_fused += train_fused;
      fmt::print("{:>8} {:>5} {:>12.2f} {:>12.2f} {:>7.2f}x {:>16.2f} {:>16.2f} {:>7.2f}x {:>10.1e}\n",
                 channels, size, fwd_plain, fwd_fused, fwd_plain / fwd_fused, train_plain,
                 train_fused, train_plain / train_fused, diff);
      csv << fmt::format("{},{},{:.3f},{:.3f},{:.3f},{:.3f},{:.2e}\n", channels, size, fwd_plain,
                         fwd_fused, train_plain, train_fused, diff);
    }
    sedensenet::set_fused_batch_norm(true);
    fmt::print("all shapes, forward + backward: LibTorch {:.2f} ms, fused {:.2f} ms ({:.2f}x)\n",
               total_plain, total_fused, total_plain / total_fused);
    fmt::print("wrote {}\n", csv_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "batch_norm_relu: {}\n", sedensenet::error_message(e));
    return 1;
  }
  return 0;
}
