// Transition: shape, names, the computation, gradients.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "sedensenet/nn/transition.hpp"
#include "support/gradcheck.hpp"
#include "support/tensor_matchers.hpp"

using namespace sedensenet;
using sedensenet::test::AllClose;
using Catch::Matchers::Contains;

TEST_CASE("Transition compresses channels and halves the resolution", "[transition]") {
  Transition t(TransitionOptions(20, 10));
  auto [h, w] = GENERATE(table<int64_t, int64_t>({{8, 8}, {7, 9}, {2, 2}}));
  auto y = t->forward(torch::randn({2, 20, h, w}));
  CHECK(y.sizes() == torch::IntArrayRef({2, 10, h / 2, w / 2}));
  auto names = t->named_parameters();
  CHECK(names.contains("norm.weight"));
  CHECK(names.contains("conv.weight"));
  CHECK(names.size() == 3);
}

TEST_CASE("Transition computes avgpool2(conv1x1(relu(bn(x))))", "[transition]") {
  torch::manual_seed(0);
  Transition t(TransitionOptions(6, 3));
  t->eval();
  auto x = torch::randn({2, 6, 4, 4});
  auto expected = torch::avg_pool2d(
      torch::conv2d(torch::relu(torch::batch_norm(x, t->norm->weight, t->norm->bias,
                                                  t->norm->running_mean, t->norm->running_var,
                                                  false, 0.1, 1e-5, false)),
                    t->conv->weight),
      2, 2);
  CHECK_THAT(t->forward(x), AllClose(expected, 1e-6, 1e-7));
}

TEST_CASE("Transition gradients match finite differences (double precision)",
          "[transition][gradcheck]") {
  torch::manual_seed(1);
  Transition t(TransitionOptions(4, 2));
  t->to(torch::kDouble);
  auto x = torch::randn({3, 4, 4, 4}, torch::dtype(torch::kDouble).requires_grad(true));
  std::vector<torch::Tensor> leaves{x};
  for (const auto& p : t->parameters()) leaves.push_back(p);
  auto result = test::gradcheck([&] { return t->forward(x); }, leaves);
  INFO(result.report);
  CHECK(result.ok);
}

TEST_CASE("TransitionOptions are validated", "[transition][errors]") {
  REQUIRE_THROWS_WITH(Transition(TransitionOptions(0, 2)),
                      Contains("in_channels must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(Transition(TransitionOptions(4, -1)),
                      Contains("out_channels must be >= 1, got -1"));
}
