// Standard against memory-efficient dense layers: peak training-step memory and median step time,
// measured side by side in one run, optionally with the PyTorch reference in the same run.
//
//   efficient_memory [--device cpu|cuda] [--threads N] [--steps 5] [--warmup 1]
//                    [--depths 40,100,160,250] [--batch 64] [--no-densenet121] [--bf16]
//                    [--pytorch] [--csv out.csv] [--svg out.svg]
//   efficient_memory --child --modes MODE --depths D [--no-densenet121 | --only-densenet121] ...
//                    (one configuration and mode; prints "RESULT tensor_peak_mb step_s
//                    rss_growth_mb reserved_mb": what memory_modes runs in fresh processes)
//
// Both sides keep freed memory in the process, as `sedensenet train` does
// (`sedensenet::keep_freed_memory()`; the PyTorch script gets the same glibc settings).
//
// One training step = zero_grad, forward (under bf16 autocast with --bf16), cross-entropy,
// backward, Adam step. Peak memory is the highest number of bytes held by live tensors during a
// step after warm-up (parameters, gradients, Adam state and the batch included), measured by
// sedensenet::MemoryTracker; on CUDA also the caching allocator's reserved peak (what the process
// holds on the device), starting each configuration from an emptied cache.
#include <sedensenet/sedensenet.hpp>
#include <sedensenet/util/svg.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Config {
  std::string model;  // "densenet_bc" or "densenet121"
  int64_t depth;
  int64_t batch;
  int64_t size;
};

struct Row {
  std::string impl;  // "sedensenet" or "pytorch"
  Config config;
  std::string device;
  std::string precision = "fp32";  // or "bf16" (autocast)
  std::string mode;
  double peak_mb = 0;
  double reserved_mb = 0;
  double step_s = 0;
  double img_per_s = 0;
};

sedensenet::DenseNetOptions options_for(const Config& c) {
  auto o = c.model == "densenet121" ? sedensenet::DenseNetOptions::densenet121()
                                    : sedensenet::DenseNetOptions::densenet_bc(c.depth, 12);
  return o.num_classes(10);  // SE on, r = 16: the library default
}

/// Feature maps every implementation must hold through a training step: each dense block's
/// output (its input plus every layer's new features) and, per parameter, the parameter, its
/// gradient and Adam's two moments.
double lower_bound_mb(const Config& c) {
  const auto o = options_for(c);
  int64_t parameters = 0;
  {
    sedensenet::DenseNet net(o);
    for (const auto& p : net->parameters()) parameters += p.numel();
  }
  int64_t resolution = o.small_inputs() ? c.size / o.stem_stride() : c.size / 4;
  int64_t channels = o.num_init_features();
  double bytes = 4.0 * 4.0 * static_cast<double>(parameters);
  for (size_t b = 0; b < o.block_config().size(); ++b) {
    channels += o.block_config()[b] * o.growth_rate();
    bytes += 4.0 * static_cast<double>(c.batch * channels * resolution * resolution);
    if (b + 1 < o.block_config().size()) {
      channels = static_cast<int64_t>(channels * o.compression());
      resolution /= 2;
    }
  }
  return bytes / 1e6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Row measure(const Config& c, sedensenet::MemoryMode mode, torch::Device device, bool bf16,
            int warmup, int steps) {
  torch::manual_seed(0);
  sedensenet::release_cached_memory(device);
  sedensenet::DenseNet net(options_for(c).memory(mode));
  net->to(device);
  net->train();
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-4));
  auto images = torch::randn({c.batch, 3, c.size, c.size}, device);
  auto labels = torch::randint(0, 10, {c.batch}, torch::TensorOptions(device).dtype(torch::kLong));

  auto step = [&] {
    optimizer.zero_grad();
    torch::Tensor logits;
    {
      std::optional<sedensenet::compat::AutocastGuard> autocast;
      if (bf16) autocast.emplace(device.type(), torch::kBFloat16);
      logits = net->forward(images);
    }
    auto loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat), labels);
    loss.backward();
    optimizer.step();
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  for (int i = 0; i < warmup; ++i) step();

  double peak_bytes = 0, reserved_bytes = 0;
  std::vector<double> times;
  for (int i = 0; i < steps; ++i) {
    sedensenet::MemoryTracker tracker(device);
    const auto start = std::chrono::steady_clock::now();
    step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    tracker.stop();
    peak_bytes = std::max(peak_bytes, static_cast<double>(tracker.peak_bytes()));
    reserved_bytes = std::max(reserved_bytes, static_cast<double>(tracker.peak_reserved_bytes()));
  }
  Row row;
  row.impl = "sedensenet";
  row.config = c;
  row.device = device.str();
  row.precision = bf16 ? "bf16" : "fp32";
  row.mode = sedensenet::to_string(mode);
  row.peak_mb = peak_bytes / 1e6;
  row.reserved_mb = reserved_bytes / 1e6;
  row.step_s = median(times);
  row.img_per_s = static_cast<double>(c.batch) / row.step_s;
  return row;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string cell;
  while (std::getline(ss, cell, ',')) out.push_back(cell);
  return out;
}

/// Runs benchmarks/pytorch_efficient_memory.py on the same configurations, with the same thread
/// count and step counts; returns its rows.
std::vector<Row> run_pytorch(const std::vector<Config>& configs, torch::Device device, bool bf16,
                             int threads, int warmup, int steps, const std::string& probe,
                             const std::string& script) {
  const auto csv = std::filesystem::temp_directory_path() / "sedensenet_pytorch_bench.csv";
  std::string list;
  for (const auto& c : configs) {
    list += fmt::format("{}{}:{}:{}:{}", list.empty() ? "" : ",", c.model, c.depth, c.batch,
                        c.size);
  }
  const auto command = fmt::format(
      "GLIBC_TUNABLES={} " SEDENSENET_PYTHON " {} --configs {} --threads {} --warmup {} --steps {} "
      "--probe {} --csv {} --device {}{}",
      sedensenet::keep_freed_memory_tunables(), script, list, threads, warmup, steps, probe, csv.string(), device.is_cuda() ? "cuda" : "cpu",
      bf16 ? " --bf16" : "");
  fmt::print("running the PyTorch reference: {}\n", command);
  std::fflush(stdout);
  if (std::system(command.c_str()) != 0) {
    throw std::runtime_error("the PyTorch reference script failed (command above); it needs "
                             "torch in " SEDENSENET_PYTHON " (Debian: apt-get install python3-torch)");
  }
  std::vector<Row> rows;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    auto f = split_csv_line(line);
    if (f.size() < 12) continue;
    Row r;
    r.impl = f[0];
    r.config = Config{f[1], std::stoll(f[2]), std::stoll(f[3]), std::stoll(f[4])};
    r.device = f[5];
    r.precision = f[6];
    r.mode = f[7];
    r.peak_mb = std::stod(f[8]);
    r.reserved_mb = std::stod(f[9]);
    r.step_s = std::stod(f[10]);
    r.img_per_s = std::stod(f[11]);
    rows.push_back(r);
  }
  return rows;
}

const Row* find(const std::vector<Row>& rows, const Config& c, const std::string& impl,
                const std::string& mode) {
  for (const auto& r : rows) {
    if (r.impl == impl && r.mode == mode && r.config.model == c.model &&
        r.config.depth == c.depth && r.config.batch == c.batch) {
      return &r;
    }
  }
  return nullptr;
}

std::string ratio(const Row* a, const Row* b, double Row::*field) {
  if (a == nullptr || b == nullptr) return "-";
  return fmt::format("{:.2f}x", (a->*field) / (b->*field));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Peak memory and step time: standard vs memory-efficient dense layers"};
  std::string device_name = "cpu";
  int threads = 0, steps = 5, warmup = 1;
  std::vector<int64_t> depths = {40, 100, 160, 250};
  int64_t batch = 64, size = 32, densenet121_batch = 0;
  bool no_densenet121 = false, pytorch = false, bf16 = false;
  std::vector<std::string> modes = {"standard", "efficient", "efficient_input_only"};
  std::string csv_path = "efficient_memory.csv", svg_path = "efficient_memory.svg";
  std::string probe = SEDENSENET_MEMORY_PROBE_PATH;
  std::string script = SEDENSENET_BENCHMARK_DIR "/pytorch_efficient_memory.py";
  app.add_option("--device", device_name, "cpu or cuda (cuda when available)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--threads", threads, "LibTorch threads (0 = one per core)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--steps", steps, "timed steps per measurement (median reported)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::Range(0, 100));
  app.add_option("--depths", depths, "DenseNet-BC depths (6n + 4)")->delimiter(',');
  app.add_option("--batch", batch, "DenseNet-BC batch size")->check(CLI::PositiveNumber);
  app.add_option("--size", size, "DenseNet-BC image size")->check(CLI::PositiveNumber);
  app.add_option("--densenet121-batch", densenet121_batch,
                 "DenseNet-121 batch (default 8 on CPU, 64 on CUDA)");
  app.add_flag("--no-densenet121", no_densenet121, "skip DenseNet-121 + SE at 224x224");
  app.add_option("--modes", modes, "memory modes to measure")->delimiter(',');
  app.add_flag("--bf16", bf16, "bfloat16 autocast in the forward pass (both implementations)");
  app.add_flag("--pytorch", pytorch,
               "also measure the PyTorch reference (standard and torch.utils.checkpoint) with "
               "the torch of " SEDENSENET_PYTHON);
  app.add_option("--csv", csv_path, "CSV output");
  app.add_option("--svg", svg_path, "SVG plot of peak memory against depth");
  app.add_option("--probe", probe, "memory probe library the Python side loads");
  bool child = false, only_densenet121 = false;
  app.add_flag("--child", child, "(internal) measure the first configuration and mode only and "
                                 "print a RESULT line");
  app.add_flag("--only-densenet121", only_densenet121, "measure DenseNet-121 + SE only");
  CLI11_PARSE(app, argc, argv);

  try {
    sedensenet::install_cpu_memory_tracking();
    threads = sedensenet::set_num_threads(threads);
    sedensenet::keep_freed_memory();
    auto max_rss_mb = [] {
      rusage usage{};
      getrusage(RUSAGE_SELF, &usage);
      return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kilobytes on Linux
    };
    const double rss_before = max_rss_mb();
    torch::Device device(torch::kCPU);
    if (device_name == "cuda") {
      if (!torch::cuda::is_available()) {
        fmt::print("CUDA is not available: measuring on the CPU\n");
      } else {
        device = torch::Device(torch::kCUDA, 0);
      }
    }
    if (densenet121_batch == 0) densenet121_batch = device.is_cuda() ? 64 : 8;

    std::vector<Config> configs;
    if (!only_densenet121) {
      for (auto d : depths) configs.push_back({"densenet_bc", d, batch, size});
    }
    if (!no_densenet121) configs.push_back({"densenet121", 121, densenet121_batch, 224});
    if (child) {
      if (configs.empty() || modes.empty()) throw std::runtime_error("--child: nothing to measure");
      const auto row = measure(configs.front(), sedensenet::memory_mode_from_string(modes.front()),
                               device, bf16, warmup, steps);
      fmt::print("RESULT {:.1f} {:.4f} {:.1f} {:.1f}\n", row.peak_mb, row.step_s,
                 max_rss_mb() - rss_before, row.reserved_mb);
      return 0;
    }

    fmt::print("device {}, {} threads, {} warm-up + {} timed steps per measurement\n",
               device.str(), threads, warmup, steps);
    std::vector<Row> rows;
    for (const auto& c : configs) {
      for (const auto& m : modes) {
        auto row = measure(c, sedensenet::memory_mode_from_string(m), device, bf16, warmup, steps);
        fmt::print("  {:<12} depth {:>3} batch {:>3} {:>3}px {} {:<22} peak {:>8.1f} MB  reserved "
                   "{:>8.1f} MB  step {:.3f} s\n",
                   c.model, c.depth, c.batch, c.size, row.precision, m, row.peak_mb,
                   row.reserved_mb, row.step_s);
        std::fflush(stdout);
        rows.push_back(row);
      }
    }
    if (pytorch) {
      auto py = run_pytorch(configs, device, bf16, threads, warmup, steps, probe, script);
      rows.insert(rows.end(), py.begin(), py.end());
    }

    // Table: one line per configuration, ratios side by side.
    fmt::print("\n{:<12} {:>5} {:>5} {:>5} | {:>9} {:>9} {:>9} | {:>8} {:>8} | {:>7} {:>7} {:>7} | {:>9} {:>9} {:>8}\n",
               "model", "depth", "batch", "size", "std MB", "eff MB", "bound MB", "std s",
               "eff s", "mem", "res", "time", "torch MB", "torch s", "std/torch");
    fmt::print("{}\n", std::string(158, '-'));
    for (const auto& c : configs) {
      const Row* s = find(rows, c, "sedensenet", "standard");
      const Row* e = find(rows, c, "sedensenet", "efficient");
      const Row* ts = find(rows, c, "pytorch", "standard");
      auto value = [](const Row* r, double Row::*f, const char* spec) {
        return r ? fmt::format(fmt::runtime(spec), r->*f) : std::string("-");
      };
      fmt::print("{:<12} {:>5} {:>5} {:>5} | {:>9} {:>9} {:>9.1f} | {:>8} {:>8} | {:>7} {:>7} {:>7} | {:>9} {:>9} {:>8}\n",
                 c.model, c.depth, c.batch, c.size, value(s, &Row::peak_mb, "{:.1f}"),
                 value(e, &Row::peak_mb, "{:.1f}"), lower_bound_mb(c),
                 value(s, &Row::step_s, "{:.3f}"), value(e, &Row::step_s, "{:.3f}"),
                 ratio(e, s, &Row::peak_mb), ratio(e, s, &Row::reserved_mb), ratio(e, s, &Row::step_s),
                 value(ts, &Row::peak_mb, "{:.1f}"), value(ts, &Row::step_s, "{:.3f}"),
                 ratio(s, ts, &Row::step_s));
    }
    fmt::print("mem, res, time: efficient / standard (live tensor peak, reserved peak, median step "
               "time). std/torch: our standard step time / PyTorch's.\n");
    if (pytorch) {
      fmt::print("\nagainst PyTorch's torch.utils.checkpoint (use_reentrant=False), {}:\n",
                 bf16 ? "bf16 autocast" : "float32");
      for (const auto& c : configs) {
        const Row* e = find(rows, c, "sedensenet", "efficient");
        const Row* tc = find(rows, c, "pytorch", "checkpoint");
        const Row* ts = find(rows, c, "pytorch", "standard");
        fmt::print("  {:<12} {:>3}: checkpoint/standard mem {} time {}; our efficient/checkpoint "
                   "mem {} time {}\n",
                   c.model, c.depth, ratio(tc, ts, &Row::peak_mb), ratio(tc, ts, &Row::step_s),
                   ratio(e, tc, &Row::peak_mb), ratio(e, tc, &Row::step_s));
      }
    }
    // Depth scaling of the efficient peak.
    const Config* d100 = nullptr;
    const Config* d250 = nullptr;
    for (const auto& c : configs) {
      if (c.model == "densenet_bc" && c.depth == 100) d100 = &c;
      if (c.model == "densenet_bc" && c.depth == 250) d250 = &c;
    }
    if (d100 && d250) {
      const Row* a = find(rows, *d250, "sedensenet", "efficient");
      const Row* b = find(rows, *d100, "sedensenet", "efficient");
      const Row* sa = find(rows, *d250, "sedensenet", "standard");
      const Row* sb = find(rows, *d100, "sedensenet", "standard");
      fmt::print("peak(depth 250) / peak(depth 100): efficient {}, standard {}\n",
                 ratio(a, b, &Row::peak_mb), ratio(sa, sb, &Row::peak_mb));
    }

    std::ofstream csv(csv_path);
    csv << "impl,model,depth,batch,size,device,precision,mode,peak_mb,reserved_mb,step_s,img_per_s\n";
    for (const auto& r : rows) {
      csv << fmt::format("{},{},{},{},{},{},{},{},{:.2f},{:.2f},{:.4f},{:.2f}\n", r.impl,
                         r.config.model, r.config.depth, r.config.batch, r.config.size, r.device,
                         r.precision, r.mode, r.peak_mb, r.reserved_mb, r.step_s, r.img_per_s);
    }
    fmt::print("wrote {}\n", csv_path);

    // Plot: peak memory against depth for the DenseNet-BC configurations.
    std::vector<sedensenet::svg::Series> series;
    auto add_series = [&](const std::string& impl, const std::string& mode,
                          const std::string& label, bool dashed) {
      sedensenet::svg::Series s;
      s.name = label;
      s.dashed = dashed;
      for (const auto& c : configs) {
        if (c.model != "densenet_bc") continue;
        if (const Row* r = find(rows, c, impl, mode)) {
          s.x.push_back(static_cast<double>(c.depth));
          s.y.push_back(r->peak_mb);
        }
      }
      if (!s.x.empty()) series.push_back(s);
    };
    for (const auto& m : modes) add_series("sedensenet", m, "SEDenseNet " + m, false);
    add_series("pytorch", "standard", "PyTorch standard", true);
    add_series("pytorch", "checkpoint", "PyTorch checkpoint", true);
    sedensenet::svg::Series bound;
    bound.name = "lower bound";
    bound.dashed = true;
    bound.color = "#000000";
    for (const auto& c : configs) {
      if (c.model != "densenet_bc") continue;
      bound.x.push_back(static_cast<double>(c.depth));
      bound.y.push_back(lower_bound_mb(c));
    }
    series.push_back(bound);
    sedensenet::svg::ChartOptions chart;
    chart.title = fmt::format("SE-DenseNet-BC (k=12) training step, batch {}, {}x{}, {}", batch,
                              size, size, device.str());
    chart.x_label = "depth";
    chart.y_label = "peak tensor memory (MB)";
    chart.y_from_zero = true;
    std::ofstream(svg_path) << sedensenet::svg::line_plot(series, chart);
    fmt::print("wrote {}\n", svg_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "efficient_memory: {}\n", sedensenet::error_message(e));
    return 1;
  }
  return 0;
}
