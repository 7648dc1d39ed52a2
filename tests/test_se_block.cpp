// SEBlock<Gate>: shape, hidden width, the computation itself, the degenerate k=12/r=16 case,
// the identity ScaledSigmoid start, gradients, option validation.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "sedensenet/nn/attention.hpp"
#include "support/gradcheck.hpp"
#include "support/tensor_matchers.hpp"

using namespace sedensenet;
using sedensenet::test::AllClose;
using sedensenet::test::Equals;
using Catch::Matchers::Contains;

TEST_CASE("SEBlock hidden width is max(min_hidden, C / r) and output keeps the input shape",
          "[se]") {
  auto [channels, reduction, min_hidden, hidden] = GENERATE(table<int64_t, int64_t, int64_t, int64_t>({
      {64, 16, 1, 4},
      {12, 16, 1, 1},   // the reference's C / r = 0 case
      {32, 16, 1, 2},
      {12, 16, 4, 4},
      {48, 4, 1, 12},
      {1, 1, 1, 1},
  }));
  SEBlock<> se(SEBlockOptions(channels).reduction(reduction).min_hidden(min_hidden));
  CHECK(se->fc1->weight.sizes() == torch::IntArrayRef({hidden, channels}));
  CHECK(se->fc2->weight.sizes() == torch::IntArrayRef({channels, hidden}));
  CHECK_FALSE(se->fc1->bias.defined());
  CHECK_FALSE(se->fc2->bias.defined());
  auto x = torch::randn({3, channels, 5, 4});
  CHECK(se->forward(x).sizes() == x.sizes());
}

TEST_CASE("SEBlock computes x * gate(fc2(relu(fc1(mean_hw(x)))))", "[se]") {
  torch::manual_seed(0);
  auto x = torch::randn({2, 32, 6, 6});
  SECTION("sigmoid gate") {
    SEBlock<Sigmoid> se(SEBlockOptions(32).reduction(8));
    auto s = x.mean({2, 3});
    auto w = torch::sigmoid(torch::relu(s.matmul(se->fc1->weight.t())).matmul(se->fc2->weight.t()));
    CHECK_THAT(se->forward(x), AllClose(x * w.view({2, 32, 1, 1}), 1e-6, 1e-7));
  }
  SECTION("scaled sigmoid gate") {
    SEBlock<ScaledSigmoid> se(SEBlockOptions(32).reduction(8));
    auto s = x.mean({2, 3});
    auto w =
        2 * torch::sigmoid(torch::relu(s.matmul(se->fc1->weight.t())).matmul(se->fc2->weight.t()));
    CHECK_THAT(se->forward(x), AllClose(x * w.view({2, 32, 1, 1}), 1e-6, 1e-7));
  }
}

TEST_CASE("SEBlock with k = 12 and r = 16 has a working gate (the reference's would be dead)",
          "[se]") {
  torch::manual_seed(1);
  SEBlock<> se(SEBlockOptions(12).reduction(16));
  REQUIRE(se->options.hidden() == 1);
  auto x = torch::randn({4, 12, 5, 5}, torch::requires_grad());
  auto y = se->forward(x);
  // The gate depends on the input: different images get different channel weights.
  auto gate = (y / x).mean({2, 3});
  CHECK((gate[0] - gate[1]).abs().max().item<double>() > 1e-4);
  // And it learns: both layers receive gradient.
  y.pow(2).sum().backward();
  CHECK(se->fc1->weight.grad().abs().sum().item<double>() > 0.0);
  CHECK(se->fc2->weight.grad().abs().sum().item<double>() > 0.0);
}

TEST_CASE("SEBlock<ScaledSigmoid> with zero_init_last starts as the identity", "[se]") {
  SEBlock<ScaledSigmoid> se(SEBlockOptions(24).reduction(4).zero_init_last(true));
  auto x = torch::randn({2, 24, 7, 7});
  CHECK_THAT(se->forward(x), Equals(x));
}

TEST_CASE("SEBlock gradients match finite differences (double precision)", "[se][gradcheck]") {
  torch::manual_seed(2);
  auto check = [](auto se) {
    se->to(torch::kDouble);
    auto x = torch::randn({2, 6, 3, 3}, torch::dtype(torch::kDouble).requires_grad(true));
    std::vector<torch::Tensor> leaves{x, se->fc1->weight, se->fc2->weight};
    auto result = test::gradcheck([&] { return se->forward(x); }, leaves);
    INFO(result.report);
    CHECK(result.ok);
  };
  SECTION("sigmoid") { check(SEBlock<Sigmoid>(SEBlockOptions(6).reduction(2))); }
  SECTION("scaled sigmoid") { check(SEBlock<ScaledSigmoid>(SEBlockOptions(6).reduction(3))); }
}

TEST_CASE("SEBlockOptions are validated with the option, its value and the valid range",
          "[se][errors]") {
  REQUIRE_THROWS_WITH(SEBlock<>(SEBlockOptions(0)), Contains("channels must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(SEBlock<>(SEBlockOptions(8).reduction(0)),
                      Contains("reduction must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(SEBlock<>(SEBlockOptions(8).min_hidden(-2)),
                      Contains("min_hidden must be >= 1, got -2"));
  SEBlock<> se(SEBlockOptions(8));
  REQUIRE_THROWS_WITH(se->forward(torch::randn({1, 4, 2, 2})),
                      Contains("SEBlock expects input (N, 8, H, W)"));
}
