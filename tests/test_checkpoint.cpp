// sedensenet::checkpoint: same values and gradients as running the function directly, with the
// random-number and autocast state of the first run restored for the second.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "sedensenet/util/torch_compat.hpp"

#include "sedensenet/nn/checkpoint.hpp"
#include "sedensenet/util/memory.hpp"
#include "support/tensor_matchers.hpp"

using namespace sedensenet;
using sedensenet::test::AllClose;

namespace {
torch::nn::Sequential make_mlp(double dropout) {
  return torch::nn::Sequential(torch::nn::Linear(16, 64), torch::nn::Tanh(),
                               torch::nn::Dropout(dropout), torch::nn::Linear(64, 8));
}

void copy_parameters(torch::nn::Module& to, const torch::nn::Module& from) {
  torch::NoGradGuard no_grad;
  auto source = from.parameters();
  auto target = to.parameters();
  for (size_t i = 0; i < target.size(); ++i) target[i].copy_(source[i]);
}
}  // namespace

TEST_CASE("checkpoint gives the direct run's outputs and gradients", "[checkpoint]") {
  auto dropout = GENERATE(0.0, 0.5);
  torch::manual_seed(0);
  auto direct = make_mlp(dropout);
  auto checkpointed = make_mlp(dropout);
  copy_parameters(*checkpointed, *direct);
  auto x = torch::randn({5, 16});
  auto x_direct = x.clone().requires_grad_(true);
  auto x_checkpointed = x.clone().requires_grad_(true);

  torch::manual_seed(9);
  auto y_direct = direct->forward(x_direct);
  torch::manual_seed(9);
  auto y_checkpointed = checkpoint(checkpointed, x_checkpointed);
  CHECK_THAT(y_checkpointed, AllClose(y_direct, 0.0, 0.0));
  // Something else draws random numbers between forward and backward: must not matter.
  torch::rand({100});
  y_direct.pow(2).sum().backward();
  y_checkpointed.pow(2).sum().backward();
  CHECK_THAT(x_checkpointed.grad(), AllClose(x_direct.grad(), 1e-6, 1e-8));
  auto direct_params = direct->parameters();
  auto checkpointed_params = checkpointed->parameters();
  for (size_t i = 0; i < direct_params.size(); ++i) {
    CHECK_THAT(checkpointed_params[i].grad(), AllClose(direct_params[i].grad(), 1e-6, 1e-8));
  }
}

TEST_CASE("checkpoint passes gradients to parameters when the input needs none",
          "[checkpoint]") {
  torch::manual_seed(1);
  auto mlp = make_mlp(0.0);
  auto x = torch::randn({3, 16});
  auto y = checkpoint(mlp, x);
  REQUIRE(y.requires_grad());
  y.sum().backward();
  for (const auto& p : mlp->parameters()) {
    REQUIRE(p.grad().defined());
    CHECK(p.grad().abs().sum().item<double>() > 0.0);
  }
}

TEST_CASE("checkpoint keeps the intermediates out of memory", "[checkpoint][memory]") {
  install_cpu_memory_tracking();
  torch::manual_seed(2);
  torch::nn::Sequential wide(torch::nn::Linear(256, 4096), torch::nn::Tanh(),
                             torch::nn::Linear(4096, 4096), torch::nn::Tanh(),
                             torch::nn::Linear(4096, 256));
  auto x = torch::randn({256, 256}, torch::requires_grad());
  int64_t direct_kept, checkpointed_kept;
  {
    MemoryTracker tracker;
    auto y = wide->forward(x);
    direct_kept = tracker.current_bytes() - tracker.baseline_bytes();
  }
  {
    MemoryTracker tracker;
    auto y = checkpoint(wide, x);
    checkpointed_kept = tracker.current_bytes() - tracker.baseline_bytes();
  }
  INFO("kept after forward: direct " << direct_kept << " B, checkpointed " << checkpointed_kept);
  // Direct keeps two 256x4096 activations (each tanh output, shared with the next linear's
  // input: 8 MiB); the checkpoint only its 256x256 output.
  CHECK(direct_kept >= 2 * 256 * 4096 * 4);
  CHECK(checkpointed_kept <= 2 * 256 * 256 * 4);
}

TEST_CASE("checkpoint restores the autocast state for the recomputation",
          "[checkpoint][autocast]") {
  torch::manual_seed(3);
  torch::nn::Linear direct(32, 32), checkpointed(32, 32);
  copy_parameters(*checkpointed, *direct);
  auto x = torch::randn({4, 32});
  auto x_direct = x.clone().requires_grad_(true);
  auto x_checkpointed = x.clone().requires_grad_(true);

  torch::Tensor y_direct, y_checkpointed;
  {
    sedensenet::compat::AutocastGuard autocast(at::kCPU, at::kBFloat16);  // bfloat16 matrix products
    y_direct = direct->forward(x_direct);
    y_checkpointed = checkpoint(checkpointed, x_checkpointed);
  }
  REQUIRE(y_direct.scalar_type() == torch::kBFloat16);
  CHECK_THAT(y_checkpointed, AllClose(y_direct, 0.0, 0.0));

  // Backward runs with autocast off; the recomputation must still use bfloat16 to match.
  y_direct.to(torch::kFloat).pow(2).sum().backward();
  y_checkpointed.to(torch::kFloat).pow(2).sum().backward();
  CHECK_THAT(checkpointed->weight.grad(), AllClose(direct->weight.grad(), 0.0, 0.0));
  CHECK_THAT(x_checkpointed.grad(), AllClose(x_direct.grad(), 0.0, 0.0));
  CHECK_FALSE(sedensenet::compat::autocast_enabled(at::kCPU));
}

TEST_CASE("checkpoint without gradients just runs the function", "[checkpoint]") {
  torch::NoGradGuard no_grad;
  auto mlp = make_mlp(0.0);
  auto x = torch::randn({2, 16});
  CHECK_THAT(checkpoint(mlp, x), AllClose(mlp->forward(x), 0.0, 0.0));
}
