// DenseLayer<Attention> and DenseBlock<Layer>: shapes, names, gradients, user-written attention.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <set>

#include "sedensenet/nn/dense_block.hpp"
#include "sedensenet/nn/dense_layer.hpp"
#include "support/gradcheck.hpp"
#include "support/tensor_matchers.hpp"

using namespace sedensenet;
using sedensenet::test::AllClose;
using Catch::Matchers::Contains;

namespace {
std::set<std::string> keys_of(const torch::nn::Module& m) {
  std::set<std::string> keys;
  for (const auto& p : m.named_parameters()) keys.insert(p.key());
  for (const auto& b : m.named_buffers()) keys.insert(b.key());
  return keys;
}

// A user-written attention module: a learned per-channel gate from spatial max pooling. It only
// needs a channel-count constructor and Tensor forward(Tensor).
struct MaxPoolGateImpl : torch::nn::Module {
  explicit MaxPoolGateImpl(int64_t channels)
      : scale(register_parameter("scale", torch::ones({channels}))),
        shift(register_parameter("shift", torch::zeros({channels}))) {}
  torch::Tensor forward(torch::Tensor x) {
    auto pooled = std::get<0>(x.flatten(2).max(2));  // (N, C)
    auto gate = torch::sigmoid(pooled * scale + shift);
    return x * gate.unsqueeze(-1).unsqueeze(-1);
  }
  torch::Tensor scale, shift;
};
TORCH_MODULE(MaxPoolGate);
}  // namespace

TEST_CASE("DenseLayer outputs growth_rate channels and accepts the features as a list",
          "[dense_layer]") {
  torch::manual_seed(0);
  DenseLayer<SEBlock<>> layer(DenseLayerOptions(10, 6).bn_size(2));
  auto a = torch::randn({3, 4, 8, 8});
  auto b = torch::randn({3, 6, 8, 8});
  layer->eval();
  auto from_list = layer->forward({a, b});
  auto from_cat = layer->forward(torch::cat({a, b}, 1));
  CHECK(from_list.sizes() == torch::IntArrayRef({3, 6, 8, 8}));
  CHECK_THAT(from_list, AllClose(from_cat, 1e-6, 1e-7));
  REQUIRE_THROWS_WITH(layer->forward({a}),
                      Contains("inputs have 4 channels in total, the layer was built for "
                               "in_channels = 10"));
}

TEST_CASE("DenseLayer parameters carry PyTorch's names, SE under 'se'", "[dense_layer][names]") {
  DenseLayer<SEBlock<>> with_se(DenseLayerOptions(16, 12));
  const std::set<std::string> expected_se = {
      "norm1.weight", "norm1.bias", "norm1.running_mean", "norm1.running_var",
      "norm1.num_batches_tracked", "conv1.weight", "norm2.weight", "norm2.bias",
      "norm2.running_mean", "norm2.running_var", "norm2.num_batches_tracked", "conv2.weight",
      "se.fc1.weight", "se.fc2.weight"};
  CHECK(keys_of(*with_se) == expected_se);
  CHECK(with_se->conv1->weight.sizes() == torch::IntArrayRef({48, 16, 1, 1}));
  CHECK(with_se->conv2->weight.sizes() == torch::IntArrayRef({12, 48, 3, 3}));

  DenseLayer<NoAttention> plain(DenseLayerOptions(16, 12));
  auto expected_plain = expected_se;
  expected_plain.erase("se.fc1.weight");
  expected_plain.erase("se.fc2.weight");
  CHECK(keys_of(*plain) == expected_plain);
}

TEST_CASE("DenseLayer gradients match finite differences (double precision, training mode)",
          "[dense_layer][gradcheck]") {
  torch::manual_seed(3);
  DenseLayer<SEBlock<>> layer(DenseLayerOptions(4, 3).bn_size(2).attention({/*reduction=*/2}));
  layer->to(torch::kDouble);
  layer->train();
  auto a = torch::randn({3, 2, 4, 4}, torch::dtype(torch::kDouble).requires_grad(true));
  auto b = torch::randn({3, 2, 4, 4}, torch::dtype(torch::kDouble).requires_grad(true));
  std::vector<torch::Tensor> leaves{a, b};
  for (const auto& p : layer->parameters()) leaves.push_back(p);
  auto result = test::gradcheck([&] { return layer->forward({a, b}); }, leaves);
  INFO(result.report);
  CHECK(result.ok);
}

TEST_CASE("DenseLayer dropout is active in training only", "[dense_layer]") {
  torch::manual_seed(4);
  DenseLayer<NoAttention> layer(DenseLayerOptions(8, 16).drop_rate(0.5));
  auto x = torch::randn({4, 8, 6, 6});
  layer->train();
  torch::NoGradGuard no_grad;
  auto y = layer->forward(x);
  const double zero_fraction = (y == 0).to(torch::kDouble).mean().item<double>();
  CHECK(zero_fraction > 0.3);
  layer->eval();
  CHECK_THAT(layer->forward(x), AllClose(layer->forward(x), 0.0, 0.0));
}

TEST_CASE("A user-written attention module plugs into DenseLayer and DenseBlock and trains",
          "[dense_layer][custom]") {
  torch::manual_seed(5);
  using Layer = DenseLayer<MaxPoolGate>;
  DenseBlock<Layer> block(DenseBlockOptions(3, DenseLayerOptions(8, 4)));
  auto keys = keys_of(*block);
  CHECK(keys.count("denselayer1.attention.scale") == 1);
  CHECK(keys.count("denselayer3.attention.shift") == 1);

  auto x = torch::randn({4, 8, 8, 8});
  auto target = torch::randn({4, 8 + 3 * 4, 8, 8});
  torch::optim::Adam optimizer(block->parameters(), torch::optim::AdamOptions(1e-2));
  auto scale_before = block->layers[0]->attention->scale.clone();
  auto loss_before = torch::mse_loss(block->forward(x), target);
  optimizer.zero_grad();
  loss_before.backward();
  CHECK(block->layers[0]->attention->scale.grad().abs().sum().item<double>() > 0.0);
  optimizer.step();
  CHECK_FALSE(torch::equal(scale_before, block->layers[0]->attention->scale));
  for (int step = 0; step < 20; ++step) {
    optimizer.zero_grad();
    auto loss = torch::mse_loss(block->forward(x), target);
    loss.backward();
    optimizer.step();
  }
  CHECK(torch::mse_loss(block->forward(x), target).item<double>() <
        loss_before.item<double>());
}

TEST_CASE("DenseBlock concatenates its input and every layer's output", "[dense_block]") {
  torch::manual_seed(6);
  DenseBlock<DenseLayer<SEBlock<>>> block(DenseBlockOptions(4, DenseLayerOptions(6, 5)));
  REQUIRE(block->options.out_channels() == 6 + 4 * 5);
  REQUIRE(block->layers.size() == 4);
  for (size_t i = 0; i < block->layers.size(); ++i) {
    CHECK(block->layers[i]->options.in_channels() == 6 + static_cast<int64_t>(i) * 5);
  }
  auto x = torch::randn({2, 6, 7, 7});
  auto y = block->forward(x);
  CHECK(y.sizes() == torch::IntArrayRef({2, 26, 7, 7}));
  CHECK(torch::equal(y.narrow(1, 0, 6), x));  // the input passes through unchanged
  auto names = keys_of(*block);
  CHECK(names.count("denselayer1.norm1.weight") == 1);
  CHECK(names.count("denselayer4.se.fc2.weight") == 1);
  CHECK(names.count("denselayer5.norm1.weight") == 0);
}

TEST_CASE("DenseLayerOptions are validated", "[dense_layer][errors]") {
  REQUIRE_THROWS_WITH(DenseLayer<>(DenseLayerOptions(0, 4)),
                      Contains("in_channels must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(DenseLayer<>(DenseLayerOptions(4, 0)),
                      Contains("growth_rate must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(DenseLayer<>(DenseLayerOptions(4, 4).bn_size(0)),
                      Contains("bn_size must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(DenseLayer<>(DenseLayerOptions(4, 4).drop_rate(1.0)),
                      Contains("drop_rate must be in [0, 1), got 1"));
  REQUIRE_THROWS_WITH(DenseBlock<>(DenseBlockOptions(0, DenseLayerOptions(4, 4))),
                      Contains("num_layers must be >= 1, got 0"));
}
