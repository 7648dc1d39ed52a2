// Memory modes as a user feels them: each (model, mode) measured in its own fresh process, in a
// rotated order each round, medians over rounds. Reports the live-tensor peak, the process's peak
// RSS growth (what `top` shows: freed blocks the C library keeps count), the step time and, on
// CUDA, the caching allocator's reserved peak, each as a ratio to the standard mode.
//
//   memory_modes [--rounds 3] [--modes standard,efficient,shared,shared_ultra] [--depths 100]
//                [--batch 64] [--densenet121] [--threads 2] [--steps 3] [--warmup 1]
//                [--device cpu|cuda] [--csv memory_modes.csv] [--cap-mb 4096]
//
// --cap-mb: also the largest batch whose training step fits in that many MB of tensors, per model
// and mode. Tensor memory is affine in the batch (the weights, gradients and optimizer state plus
// a per-sample part), so two measured batches (--fit-batches, each in a fresh process) give it.
//
// The child is `efficient_memory --child` (one training step = zero_grad, forward, cross-entropy,
// backward, Adam step), with the library's allocator settings (`keep_freed_memory`), as
// `sedensenet train` runs. The modes `pytorch` and `pytorch_checkpoint` are PyTorch's side, the
// same step on the same model (python/sedensenet.py; `torch.utils.checkpoint` on each bottleneck
// for the second), measured the same way by `pytorch_efficient_memory.py --child` with the same
// allocator settings (GLIBC_TUNABLES) and the library's tensor counter loaded into it.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <sedensenet/sedensenet.hpp>

#include "fresh_process.hpp"

namespace {

struct Config {
  std::string name;    // "BC-100" or "DenseNet-121"
  std::string args;    // efficient_memory arguments selecting it
  std::string python;  // pytorch_efficient_memory.py's model:depth:batch:size
};

bool is_pytorch(const std::string& mode) { return mode == "pytorch" || mode == "pytorch_checkpoint"; }

/// The command measuring `mode` on `c` in a fresh process (prints a RESULT line).
std::string child_command(const std::filesystem::path& child, const std::string& mode, const Config& c,
                          int threads, int steps, int warmup, const std::string& device) {
  if (is_pytorch(mode)) {
    return fmt::format(
        "GLIBC_TUNABLES={} {} {}/pytorch_efficient_memory.py --child {} --configs {} --threads {} "
        "--steps {} --warmup {} --device {} --probe {} --csv /dev/null",
        sedensenet::keep_freed_memory_tunables(), SEDENSENET_PYTHON, SEDENSENET_BENCHMARK_DIR,
        mode == "pytorch" ? "standard" : "checkpoint", c.python, threads, steps, warmup, device,
        SEDENSENET_MEMORY_PROBE_PATH);
  }
  return fmt::format("{} --child --modes {} {} --threads {} --steps {} --warmup {} --device {} --csv "
                     "/dev/null --svg /dev/null",
                     child.string(), mode, c.args, threads, steps, warmup, device);
}

struct Sample {
  std::vector<double> tensor_mb, step_s, rss_mb, reserved_mb;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Memory modes, each in a fresh process: tensor peak, process RSS growth, step time"};
  int rounds = 3, threads = 2, steps = 3, warmup = 1;
  std::vector<std::string> modes = {"standard",     "efficient", "shared",
                                    "shared_ultra", "pytorch",   "pytorch_checkpoint"};
  std::vector<int> depths = {100};
  int batch = 64, densenet121_batch = 8;
  bool densenet121 = false;
  std::string device = "cpu", csv_path = "memory_modes.csv";
  app.add_option("--rounds", rounds, "fresh processes per (model, mode)")->check(CLI::Range(1, 50));
  app.add_option("--modes", modes,
                 "memory modes (and pytorch, pytorch_checkpoint); the first is the ratios' reference")
      ->delimiter(',');
  app.add_option("--depths", depths, "SE-DenseNet-BC depths at 32x32")->delimiter(',');
  app.add_option("--batch", batch, "DenseNet-BC batch")->check(CLI::PositiveNumber);
  app.add_flag("--densenet121", densenet121, "also DenseNet-121 + SE at 224x224");
  app.add_option("--densenet121-batch", densenet121_batch, "its batch")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "LibTorch threads")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps per process (median)")->check(CLI::Range(1, 100));
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::Range(0, 100));
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--csv", csv_path, "CSV output (one row per process, then the medians)");
  double cap_mb = 0;
  std::vector<int> fit_batches = {4, 8};
  app.add_option("--cap-mb", cap_mb, "also report the largest batch within this tensor memory")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--fit-batches", fit_batches, "the two DenseNet-BC batches the --cap-mb fit uses")
      ->delimiter(',')
      ->expected(2);
  CLI11_PARSE(app, argc, argv);

  try {
    const auto child = std::filesystem::canonical("/proc/self/exe").parent_path() /
                       "efficient_memory";
    std::vector<Config> configs;
    for (int d : depths) {
      configs.push_back({fmt::format("BC-{}", d),
                         fmt::format("--depths {} --batch {} --no-densenet121", d, batch),
                         fmt::format("densenet_bc:{}:{}:32", d, batch)});
    }
    if (densenet121) {
      configs.push_back({"DenseNet-121",
                         fmt::format("--only-densenet121 --densenet121-batch {}", densenet121_batch),
                         fmt::format("densenet121:121:{}:224", densenet121_batch)});
    }
    std::ofstream csv(csv_path);
    csv << "model,mode,round,tensor_peak_mb,step_s,rss_growth_mb,reserved_mb\n";
    std::map<std::pair<std::string, std::string>, Sample> samples;
    for (const auto& c : configs) {
      for (int round = 0; round < rounds; ++round) {
        for (size_t i = 0; i < modes.size(); ++i) {
          const auto& mode = modes[(i + static_cast<size_t>(round)) % modes.size()];
          const auto v = sedensenet::bench::run_fresh(
              child_command(child, mode, c, threads, steps, warmup, device));
          if (v.size() < 4) throw std::runtime_error("a --child measurement: short RESULT line");
          auto& s = samples[{c.name, mode}];
          s.tensor_mb.push_back(v[0]);
          s.step_s.push_back(v[1]);
          s.rss_mb.push_back(v[2]);
          s.reserved_mb.push_back(v[3]);
          csv << fmt::format("{},{},{},{:.1f},{:.4f},{:.1f},{:.1f}\n", c.name, mode, round + 1, v[0],
                             v[1], v[2], v[3]);
          fmt::print("  {:<13} {:<18} round {}: tensor peak {:>8.1f} MB  RSS growth {:>8.1f} MB  "
                     "step {:.3f} s\n",
                     c.name, mode, round + 1, v[0], v[2], v[1]);
          std::fflush(stdout);
        }
      }
    }
    using sedensenet::bench::median;
    fmt::print("\n{:<13} {:<18} | {:>10} {:>10} {:>8} {:>10} | {:>7} {:>7} {:>7} {:>7}\n", "model",
               "mode", "tensor MB", "RSS MB", "step s", "reserved", "tensor", "RSS", "time",
               "reserved");
    fmt::print("{}\n", std::string(109, '-'));
    for (const auto& c : configs) {
      const auto& base = samples[{c.name, modes.front()}];
      for (const auto& mode : modes) {
        const auto& s = samples[{c.name, mode}];
        auto r = [](const std::vector<double>& a, const std::vector<double>& b) {
          return median(b) > 0 ? fmt::format("{:.2f}x", median(a) / median(b)) : std::string("-");
        };
        fmt::print("{:<13} {:<18} | {:>10.1f} {:>10.1f} {:>8.3f} {:>10.1f} | {:>7} {:>7} {:>7} {:>7}\n",
                   c.name, mode, median(s.tensor_mb), median(s.rss_mb), median(s.step_s),
                   median(s.reserved_mb), r(s.tensor_mb, base.tensor_mb), r(s.rss_mb, base.rss_mb),
                   r(s.step_s, base.step_s), r(s.reserved_mb, base.reserved_mb));
        csv << fmt::format("{},{},median,{:.1f},{:.4f},{:.1f},{:.1f}\n", c.name, mode,
                           median(s.tensor_mb), median(s.step_s), median(s.rss_mb),
                           median(s.reserved_mb));
      }
    }
    fmt::print("medians over {} fresh processes per row, rotated order; ratios to {}. RSS: peak "
               "resident set growth over the process's start (LibTorch loaded).\n",
               rounds, modes.front());
    if (cap_mb > 0) {
      // Largest batch within the cap: peak(batch) = fixed + per_sample * batch, fitted on two
      // batches, each measured in a fresh process (DenseNet-BC depths only).
      fmt::print("\nlargest batch within {:.0f} MB of tensors (fit on batches {} and {}):\n", cap_mb,
                 fit_batches[0], fit_batches[1]);
      for (int d : depths) {
        for (const auto& mode : modes) {
          std::array<double, 2> peak{};
          for (size_t i = 0; i < 2; ++i) {
            const Config fit{"", fmt::format("--depths {} --batch {} --no-densenet121", d, fit_batches[i]),
                             fmt::format("densenet_bc:{}:{}:32", d, fit_batches[i])};
            peak[i] = sedensenet::bench::run_fresh(child_command(child, mode, fit, threads, 1, 1, device))
                          .at(0);
          }
          const double per_sample = (peak[1] - peak[0]) / (fit_batches[1] - fit_batches[0]);
          const double fixed = peak[0] - per_sample * fit_batches[0];
          const auto largest = static_cast<int64_t>((cap_mb - fixed) / per_sample);
          fmt::print("  BC-{:<4} {:<18} {:>8.2f} MB per sample + {:>7.1f} MB: largest batch {}\n", d,
                     mode, per_sample, fixed, largest);
          csv << fmt::format("BC-{},{},cap {:.0f} MB,largest batch {},{:.3f} MB/sample,{:.1f} MB\n",
                             d, mode, cap_mb, largest, per_sample, fixed);
        }
      }
    }
    fmt::print("wrote {}\n", csv_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "memory_modes: {}\n", e.what());
    return 1;
  }
  return 0;
}
