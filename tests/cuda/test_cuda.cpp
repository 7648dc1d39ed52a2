// The CUDA paths: memory-efficient dense layers on CUDA tensors, batch norm + ReLU on CUDA,
// MemoryTracker on the caching allocator, pinned batches from the loader, bf16 autocast through
// the checkpointed layers, and the NCCL process group. Needs a CUDA device (main.cpp skips).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <optional>

#include "sedensenet/data/loader.hpp"
#include "sedensenet/data/transforms.hpp"
#include "sedensenet/nn.hpp"
#include "sedensenet/serve/inference_graph.hpp"
#include "sedensenet/util/memory.hpp"
#include "sedensenet/util/torch_compat.hpp"
#include "support/image_tree.hpp"
#include "support/tensor_matchers.hpp"
#if defined(USE_C10D_NCCL)
#include "sedensenet/distributed/process_group.hpp"
#endif

using namespace sedensenet;
using sedensenet::test::scaled_difference;
namespace fs = std::filesystem;

namespace {
const torch::Device kCuda(torch::kCUDA, 0);

struct Step {
  torch::Tensor logits;
  std::vector<torch::Tensor> grads;
  int64_t peak = 0;
};

Step train_step(DenseNet& net, const torch::Tensor& x, const torch::Tensor& y, bool bf16) {
  net->zero_grad();
  Step s;
  MemoryTracker tracker(kCuda);
  {
    std::optional<compat::AutocastGuard> autocast;
    if (bf16) autocast.emplace(at::kCUDA, at::kBFloat16);
    s.logits = net->forward(x);
  }
  torch::nn::functional::cross_entropy(s.logits.to(torch::kFloat), y).backward();
  torch::cuda::synchronize();
  s.peak = tracker.peak_increase_bytes();
  for (const auto& p : net->parameters()) s.grads.push_back(p.grad().clone());
  return s;
}
}  // namespace

TEST_CASE("CUDA: efficient dense layers match the standard ones and hold less memory",
          "[cuda][efficient]") {
  const bool bf16 = GENERATE(false, true);
  DYNAMIC_SECTION((bf16 ? "bf16 autocast" : "float32")) {
    torch::manual_seed(1);
    DenseNet standard(DenseNetOptions::densenet_bc(40, 12).num_classes(10));
    DenseNet efficient(std::dynamic_pointer_cast<DenseNetImpl>(standard->clone()));
    efficient->set_memory(MemoryMode::efficient);
    standard->to(kCuda);
    efficient->to(kCuda);
    auto x = torch::randn({32, 3, 32, 32}, kCuda);
    auto y = torch::randint(0, 10, {32}, torch::TensorOptions(kCuda).dtype(torch::kLong));
    // cuDNN picks its algorithms per call; the comparison needs the same ones on both sides.
    at::globalContext().setDeterministicCuDNN(true);
    auto a = train_step(standard, x, y, bf16);
    auto b = train_step(efficient, x, y, bf16);
    at::globalContext().setDeterministicCuDNN(false);
    CHECK(a.logits.scalar_type() == (bf16 ? torch::kBFloat16 : torch::kFloat));
    const double tolerance = bf16 ? 2e-2 : 1e-4;
    CHECK(scaled_difference(b.logits, a.logits) <= tolerance);
    for (size_t i = 0; i < a.grads.size(); ++i) {
      INFO("parameter " << i);
      CHECK(scaled_difference(b.grads[i], a.grads[i]) <= tolerance);
    }
    INFO("peak increase: standard " << a.peak << " B, efficient " << b.peak << " B");
    CHECK(b.peak < a.peak);
  }
}

TEST_CASE("CUDA: batch_norm_relu falls back to LibTorch's kernels and matches them",
          "[cuda][batch_norm_relu]") {
  torch::manual_seed(2);
  torch::nn::BatchNorm2d ours(16), reference(16);
  ours->to(kCuda);
  reference->to(kCuda);
  auto x = torch::randn({8, 16, 12, 12}, kCuda);
  CHECK_FALSE(uses_fused_batch_norm(x, *ours));
  auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
  auto ya = batch_norm_relu(xa, *ours);
  auto yb = torch::relu(reference->forward(xb));
  CHECK(scaled_difference(ya, yb) <= 1e-6);
  ya.sum().backward();
  yb.sum().backward();
  CHECK(scaled_difference(xa.grad(), xb.grad()) <= 1e-5);
  CHECK(scaled_difference(ours->running_mean, reference->running_mean) <= 1e-6);
}

TEST_CASE("CUDA: MemoryTracker reads the caching allocator", "[cuda][memory]") {
  MemoryTracker tracker(kCuda);
  {
    auto t = torch::empty({64 << 20}, torch::TensorOptions(kCuda).dtype(torch::kUInt8));
    CHECK(tracker.current_bytes() - tracker.baseline_bytes() >= (64 << 20));
  }
  tracker.stop();
  CHECK(tracker.peak_increase_bytes() >= (64 << 20));
  CHECK(tracker.peak_reserved_bytes() >= tracker.peak_bytes());
}

TEST_CASE("CUDA: the loader fills pinned batches when asked", "[cuda][loader]") {
  const auto root = fs::temp_directory_path() / "sedensenet_cuda_loader";
  fs::remove_all(root);
  test::make_image_tree(root, {"a", "b"}, {4, 4});
  for (bool pin : {false, true}) {
    data::ImageLoader loader(data::ImageFolder(root), std::make_shared<data::ToTensor>(),
                             data::LoaderOptions().batch_size(4).workers(2).pin_memory(pin));
    int batches = 0;
    for (auto& batch : loader.epoch(0)) {
      CHECK(batch.images.is_pinned() == pin);
      auto on_device = batch.images.to(kCuda, /*non_blocking=*/true);
      CHECK(on_device.is_cuda());
      ++batches;
    }
    CHECK(batches == 2);
  }
  fs::remove_all(root);
}

#if defined(USE_C10D_NCCL)
TEST_CASE("CUDA: a one-rank NCCL process group reduces device tensors", "[cuda][nccl]") {
  distributed::Environment env;
  env.master_port = 29731;
  auto group = distributed::ProcessGroup::create(
      env, distributed::ProcessGroupOptions().backend("nccl").device(kCuda));
  auto t = torch::arange(8, torch::TensorOptions(kCuda).dtype(torch::kFloat));
  group->all_reduce(t);
  CHECK(group->world_size() == 1);
  torch::cuda::synchronize();
  CHECK(torch::equal(t.cpu(), torch::arange(8, torch::kFloat)));
}
#endif

TEST_CASE("CUDA: the inference graph on the GPU gives the CPU graph's logits", "[cuda][serve]") {
  torch::manual_seed(4);
  sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet_bc(16, 8).num_classes(5));
  net->eval();
  const auto cpu = sedensenet::serve::InferenceGraph::lower(net);
  const auto gpu = cpu.to(torch::kCUDA);
  const auto x = torch::randn({4, 3, 32, 32});
  const auto expected = cpu.forward(x);
  const auto logits = gpu.forward(x.to(torch::kCUDA)).cpu();
  CHECK((logits - expected).abs().max().item<double>() <= 1e-4);
}
