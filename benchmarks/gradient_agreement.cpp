// How far apart the float32 gradients of one training step are: standard against efficient dense
// layers, and each against a float64 copy of the model, with the fused batch norm + ReLU kernels
// on and off, over several input seeds. The figures behind docs/efficient-memory.md ("the ReLU
// mask"): standard and efficient agree (bit for bit with the fused kernels), while every float32
// path sits up to a few percent from float64 on the seeds where a pre-activation lands within
// rounding of the ReLU's kink.
//
//   gradient_agreement [--depth 40] [--growth 12] [--batch 12] [--size 32] [--seeds 1,2,3,4,7]
//                      [--dropout 0] [--threads 0] [--csv gradient_agreement.csv]
#include <sedensenet/sedensenet.hpp>
#include <torch/nn/functional/loss.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <vector>

namespace {

using sedensenet::DenseNet;
using sedensenet::DenseNetImpl;

// max |a - b| / max |b|.
double scaled_difference(const torch::Tensor& a, const torch::Tensor& b) {
  auto ad = a.detach().to(torch::kFloat64);
  auto bd = b.detach().to(torch::kFloat64);
  return ((ad - bd).abs().max() / bd.abs().max().clamp_min(1e-30)).item<double>();
}

struct Step {
  DenseNet net;
  torch::Tensor input_grad;
};

Step train_step(DenseNet net, const torch::Tensor& x, const torch::Tensor& labels) {
  auto input = x.clone().requires_grad_(true);
  torch::manual_seed(11);  // the same dropout masks in every copy
  torch::nn::functional::cross_entropy(net->forward(input), labels).backward();
  return {net, input.grad()};
}

// The largest per-tensor difference over every parameter gradient.
double worst_gradient(const Step& a, const Step& b) {
  auto others = b.net->named_parameters();
  double worst = 0.0;
  for (const auto& p : a.net->named_parameters()) {
    worst = std::max(worst, scaled_difference(p.value().grad(), others[p.key()].grad()));
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Float32 gradient agreement: standard vs efficient layers vs a float64 copy"};
  int depth = 40, growth = 12, threads = 0;
  int64_t batch = 12, size = 32;
  double dropout = 0.0;
  std::vector<int> seeds = {1, 2, 3, 4, 7};
  std::string csv_path = "gradient_agreement.csv";
  app.add_option("--depth", depth, "DenseNet-BC depth")->check(CLI::Range(10, 250));
  app.add_option("--growth", growth, "growth rate")->check(CLI::Range(1, 256));
  app.add_option("--batch", batch, "batch size")->check(CLI::Range(2, 1024));
  app.add_option("--size", size, "image size")->check(CLI::Range(8, 512));
  app.add_option("--seeds", seeds, "input seeds")->delimiter(',');
  app.add_option("--dropout", dropout, "drop rate")->check(CLI::Range(0.0, 0.9));
  app.add_option("--threads", threads, "LibTorch threads (0 = one per core)");
  app.add_option("--csv", csv_path, "CSV output");
  CLI11_PARSE(app, argc, argv);
  try {
    threads = sedensenet::set_num_threads(threads);
    fmt::print("SE-DenseNet-BC-{} (k = {}), batch {}, {}x{}, dropout {}, {} threads\n", depth,
               growth, batch, size, size, dropout, threads);
    fmt::print("largest per-tensor gradient difference, relative to the tensor's scale\n");
    fmt::print("{:>5} {:>6} {:>18} {:>18} {:>18} {:>12}\n", "seed", "fused", "standard-efficient",
               "standard-float64", "efficient-float64", "input grad");
    std::ofstream csv(csv_path);
    csv << "seed,fused,standard_vs_efficient,standard_vs_float64,efficient_vs_float64,"
           "input_grad_standard_vs_efficient\n";
    for (int seed : seeds) {
      for (bool fused : {true, false}) {
        sedensenet::set_fused_batch_norm(fused);
        torch::manual_seed(42);
        auto options = sedensenet::DenseNetOptions::densenet_bc(depth, growth)
                           .num_classes(5)
                           .drop_rate(dropout)
                           .memory(sedensenet::MemoryMode::standard);
        DenseNet standard(options);
        auto efficient = DenseNet(std::dynamic_pointer_cast<DenseNetImpl>(standard->clone()));
        efficient->set_memory(sedensenet::MemoryMode::efficient);
        auto reference = DenseNet(std::dynamic_pointer_cast<DenseNetImpl>(standard->clone()));
        reference->to(torch::kFloat64);
        for (auto* net : {&standard, &efficient, &reference}) (*net)->train();
        torch::manual_seed(seed);
        auto x = torch::randn({batch, 3, size, size});
        auto labels = torch::randint(0, 5, {batch}, torch::kLong);
        auto s = train_step(standard, x, labels);
        auto e = train_step(efficient, x, labels);
        auto r = train_step(reference, x.to(torch::kFloat64), labels);
        const double se = worst_gradient(e, s), sr = worst_gradient(s, r),
                     er = worst_gradient(e, r);
        const double input = scaled_difference(e.input_grad, s.input_grad);
        fmt::print("{:>5} {:>6} {:>18.1e} {:>18.1e} {:>18.1e} {:>12.1e}\n", seed,
                   fused ? "on" : "off", se, sr, er, input);
        csv << fmt::format("{},{},{:.3e},{:.3e},{:.3e},{:.3e}\n", seed, fused ? 1 : 0, se, sr,
                           er, input);
      }
    }
    sedensenet::set_fused_batch_norm(true);
    fmt::print("wrote {}\n", csv_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "gradient_agreement: {}\n", sedensenet::error_message(e));
    return 1;
  }
  return 0;
}
