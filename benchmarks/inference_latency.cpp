// Inference latency and throughput, side by side in one run: SEDenseNet's inference path
// (Classifier / serve::InferenceGraph), the training model's forward (eval mode, no autograd),
// PyTorch eager (python/sedensenet.py with the same weights), torch.jit with
// optimize_for_inference (our TorchScript export), and ONNX Runtime (our ONNX export). Each
// measurement runs in a fresh process; the methods alternate, in a rotated order each round, and
// the medians over rounds are reported.
//
//   inference_latency [--models demo,densenet121] [--batches 1,32] [--threads 2] [--rounds 3]
//                     [--seconds 2] [--methods ours,model,eager,jit,ort] [--csv FILE]
// (--methods libtorch_conv adds our graph with LibTorch's convolutions instead of its own oneDNN
// primitives: the ablation of that choice.)
#include <sedensenet/sedensenet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>

#include "fresh_process.hpp"

namespace {
namespace bench = sedensenet::bench;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct ModelConfig {
  std::string name, preset;
  int64_t size, classes;
};

ModelConfig model_config(const std::string& name) {
  if (name == "demo") return {"demo (densenet_bc_22_k12, 28x28)", "densenet_bc_22_k12", 28, 10};
  if (name == "densenet121") return {"DenseNet-121 + SE (224x224)", "densenet121", 224, 1000};
  throw std::invalid_argument("--models: unknown model '" + name + "' (demo or densenet121)");
}

/// Peak resident memory of this process, MB (VmHWM).
double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      double kb = 0;
      status >> kb;
      return kb / 1024.0;
    }
  }
  return 0;
}

/// Times `step` for about `seconds` after a warm-up; prints the result line the driver reads.
template <typename Step>
void time_and_report(Step&& step, int64_t batch, double seconds) {
  const auto warm_until = Clock::now() + std::chrono::milliseconds(500);
  for (int i = 0; i < 3 || Clock::now() < warm_until; ++i) step();
  std::vector<double> ms;
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (ms.size() < 5 || Clock::now() < until) {
    const auto t0 = Clock::now();
    step();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf("RESULT %.4f %.2f %.1f\n", median, 1000.0 * static_cast<double>(batch) / median,
              peak_rss_mb());
}

int worker(const std::string& method, const std::string& file, int64_t batch, double seconds) {
  auto trained = sedensenet::io::load_trained_model(file);
  torch::manual_seed(0);
  const auto x = torch::randn({batch, 3, trained.input.size, trained.input.size});
  if (method == "ours") {
    const sedensenet::Classifier classifier(trained);
    time_and_report([&] { classifier.logits(x); }, batch, seconds);
  } else if (method == "libtorch_conv") {
    // The ablation: the same graph with every convolution on LibTorch's mkldnn_convolution
    // (what the inference path ran before it made oneDNN primitives of its own).
    const auto graph =
        sedensenet::serve::InferenceGraph::lower(trained.model).with_libtorch_convolutions();
    time_and_report([&] { graph.forward(x); }, batch, seconds);
  } else {
    trained.model->eval();
    torch::NoGradGuard no_grad;
    time_and_report([&] { trained.model->forward(x); }, batch, seconds);
  }
  return 0;
}

struct Result {
  double ms = 0, images_per_s = 0, rss_mb = 0;
};

/// One measurement in a fresh process: its RESULT line (ms, images/s, peak RSS).
Result run_fresh(const std::string& command) {
  const auto v = bench::run_fresh(command);
  if (v.size() != 3) throw std::runtime_error("unexpected RESULT line from: " + command);
  return {v[0], v[1], v[2]};
}

using bench::median;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Inference latency: SEDenseNet's inference path against PyTorch and ONNX Runtime"};
  std::vector<std::string> models = {"demo", "densenet121"}, methods = {"ours", "model", "eager", "jit", "ort"};
  std::vector<int64_t> batches = {1, 32};
  int threads = 2, rounds = 3;
  double seconds = 2.0;
  std::string csv_path = "inference_latency.csv", work_dir, python = SEDENSENET_PYTHON,
              onnx_python = SEDENSENET_ONNX_PYTHON, worker_method, worker_file;
  int64_t worker_batch = 1;
  app.add_option("--models", models, "demo and/or densenet121")->delimiter(',');
  app.add_option("--batches", batches, "batch sizes")->delimiter(',');
  app.add_option("--methods", methods,
                 "ours, model (training model, eval), eager, jit, ort; libtorch_conv (ours with "
                 "LibTorch's convolutions: the ablation)")->delimiter(',');
  app.add_option("--threads", threads, "threads of every runtime")->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "rounds (fresh processes, rotated order; medians)")->check(CLI::PositiveNumber);
  app.add_option("--seconds", seconds, "timed seconds per measurement")->check(CLI::PositiveNumber);
  app.add_option("--csv", csv_path, "CSV output");
  app.add_option("--work-dir", work_dir, "where the model files go (default: a temporary folder)");
  app.add_option("--python", python, "Python with torch (eager, jit)");
  app.add_option("--onnx-python", onnx_python, "Python with onnxruntime");
  app.add_option("--worker", worker_method, "(internal) measure one method in this process");
  app.add_option("--file", worker_file, "(internal) the model file of --worker");
  app.add_option("--batch", worker_batch, "(internal) the batch of --worker");
  CLI11_PARSE(app, argc, argv);

  try {
    sedensenet::set_num_threads(threads);
    if (!worker_method.empty()) return worker(worker_method, worker_file, worker_batch, seconds);

    const fs::path dir = work_dir.empty() ? fs::temp_directory_path() / fmt::format("sedensenet-inference-{}", getpid()) : fs::path(work_dir);
    fs::create_directories(dir);
    const std::string self = fs::canonical("/proc/self/exe").string();
    const std::string script = std::string(SEDENSENET_BENCHMARK_DIR) + "/inference_reference.py";
    std::map<std::tuple<std::string, int64_t, std::string>, std::vector<Result>> results;

    for (const auto& model_name : models) {
      const auto config = model_config(model_name);
      // Seeded weights; every format is written from the same model.
      torch::manual_seed(0);
      sedensenet::DenseNet net(sedensenet::DenseNetOptions::preset(config.preset).num_classes(config.classes));
      sedensenet::io::InputSpec input;
      input.size = config.size;
      const auto base = dir / model_name;
      sedensenet::io::save_trained_model(base.string() + ".pt", net, input);
      sedensenet::io::save_state_dict(*net, base.string() + ".state.pt");
      sedensenet::io::TrainedModel trained{net, net->options, input, {}, {}};
      sedensenet::serve::ExportOptions overwrite;
      overwrite.overwrite = true;
      sedensenet::serve::export_torchscript(trained, base.string() + ".ts", overwrite);
      sedensenet::serve::export_onnx(trained, base.string() + ".onnx", overwrite);

      for (const auto batch : batches) {
        for (int round = 0; round < rounds; ++round) {
          for (size_t m = 0; m < methods.size(); ++m) {
            // Rotated order: each method runs first in some round (an order artefact would show).
            const auto& method = methods[(m + static_cast<size_t>(round)) % methods.size()];
            std::string command;
            if (method == "ours" || method == "model" || method == "libtorch_conv") {
              command = fmt::format("{} --worker {} --file {}.pt --batch {} --threads {} --seconds {}",
                                    self, method, base.string(), batch, threads, seconds);
            } else {
              const auto& py = method == "ort" ? onnx_python : python;
              const auto file = base.string() + (method == "ort" ? ".onnx" : method == "jit" ? ".ts" : ".state.pt");
              command = fmt::format("{} {} --method {} --file {} --preset {} --classes {} --size {} --batch {} "
                                    "--threads {} --seconds {}", py, script, method, file, config.preset,
                                    config.classes, config.size, batch, threads, seconds);
            }
            results[{config.name, batch, method}].push_back(run_fresh(command));
          }
        }
      }
    }

    std::ofstream csv(csv_path);
    csv << "model,batch,method,median_ms,images_per_s,speedup_vs_eager,peak_rss_mb,rounds\n";
    fmt::print("{:<34} {:>5}  {:<38} {:>10} {:>9} {:>9} {:>9}\n", "model", "batch", "method",
               "ms/batch", "images/s", "vs eager", "RSS MB");
    const std::map<std::string, std::string> labels = {
        {"ours", "SEDenseNet inference path (Classifier)"}, {"model", "SEDenseNet training model, eval"},
        {"libtorch_conv", "ours, LibTorch's convolutions"},
        {"eager", "PyTorch eager"}, {"jit", "torch.jit optimize_for_inference"}, {"ort", "ONNX Runtime"}};
    for (const auto& model_name : models) {
      const auto config = model_config(model_name);
      for (const auto batch : batches) {
        auto summary = [&](const std::string& method) {
          std::vector<double> ms, rss;
          for (const auto& r : results[{config.name, batch, method}]) {
            ms.push_back(r.ms);
            rss.push_back(r.rss_mb);
          }
          return std::make_pair(median(ms), median(rss));
        };
        const bool has_eager = results.count({config.name, batch, "eager"}) > 0;
        const double eager_ms = has_eager ? summary("eager").first : 0;
        for (const auto& method : methods) {
          const auto [ms, rss] = summary(method);
          const double speedup = has_eager ? eager_ms / ms : 0;
          fmt::print("{:<34} {:>5}  {:<38} {:>10.2f} {:>9.1f} {:>8.2f}x {:>9.0f}\n", config.name, batch,
                     labels.count(method) ? labels.at(method) : method, ms,
                     1000.0 * static_cast<double>(batch) / ms, speedup, rss);
          csv << fmt::format("\"{}\",{},{},{:.4f},{:.2f},{:.3f},{:.1f},{}\n", config.name, batch, method, ms,
                             1000.0 * static_cast<double>(batch) / ms, speedup, rss, rounds);
        }
      }
    }
    fmt::print("{} threads, {} rounds of fresh processes, medians; wrote {}\n", threads, rounds, csv_path);
    if (work_dir.empty()) fs::remove_all(dir);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "inference_latency: {}\n", sedensenet::error_message(e));
    return 1;
  }
}
