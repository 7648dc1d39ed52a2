// Saving and reloading trained models: save_trained_model / load_trained_model round trips, and
// models with user-written attention, which reload only with the block builder they were built with.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "sedensenet/sedensenet.hpp"
#include "support/python.hpp"

using namespace sedensenet;
using Catch::Matchers::Contains;

namespace {

// A user-written attention module: a learned per-channel gate (not an SE block).
struct ChannelGateImpl : torch::nn::Module {
  explicit ChannelGateImpl(int64_t channels)
      : scale(register_parameter("scale", torch::zeros({channels}))) {}
  torch::Tensor forward(torch::Tensor x) {
    return x * torch::sigmoid(scale).view({1, -1, 1, 1});
  }
  torch::Tensor scale;
};
TORCH_MODULE(ChannelGate);
using GatedLayer = DenseLayer<ChannelGate>;

DenseNetOptions small_options() { return DenseNetOptions::densenet_bc(10, 4).num_classes(3); }

// Moves every parameter and buffer away from its initial value, so that a reload that silently
// re-initialised anything would show in the logits.
void randomise(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.uniform_(-0.5, 0.5);
  for (auto& b : module.named_buffers()) {
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
    else if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.2, 0.2);
  }
}

}  // namespace

TEST_CASE("A model with user-written attention reloads with its block builder, and only with it",
          "[trained_model][attention]") {
  test::TempDir dir;
  torch::manual_seed(3);
  DenseNet net(small_options(), block_builder<GatedLayer>(), "channel-gate");
  REQUIRE(net->blocks() == "channel-gate");
  randomise(*net);
  net->eval();
  const auto path = dir / "gated.pt";
  io::save_trained_model(path, net, io::InputSpec{}, {"a", "b", "c"});

  // Never replaced unasked.
  REQUIRE_THROWS_WITH(io::save_trained_model(path, net, io::InputSpec{}),
                      Contains("gated.pt") && Contains("already exists"));

  // Without the builder: refused, saying what the blocks are and what to pass.
  REQUIRE_THROWS_WITH(io::load_trained_model(path),
                      Contains("gated.pt") && Contains("'channel-gate'") &&
                          Contains("block_builder"));

  // With it: the same network, weights and logits.
  auto loaded = io::load_trained_model(path, torch::kCPU, block_builder<GatedLayer>());
  CHECK(loaded.model->blocks() == "channel-gate");
  CHECK(loaded.classes == std::vector<std::string>({"a", "b", "c"}));
  const auto keys = [](torch::nn::Module& m) {
    std::vector<std::string> k;
    for (const auto& p : m.named_parameters()) k.push_back(p.key());
    return k;
  };
  CHECK(keys(*loaded.model) == keys(*net));
  const auto net_keys = keys(*net);
  const bool has_gate = std::any_of(net_keys.begin(), net_keys.end(), [](const std::string& k) {
    return k.find(".attention.scale") != std::string::npos;
  });
  CHECK(has_gate);
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 16, 16});
  CHECK(torch::equal(loaded.model->forward(x), net->forward(x)));

  // With another builder: the weights do not fit, and the error names the file.
  REQUIRE_THROWS_WITH(
      io::load_trained_model(path, torch::kCPU, block_builder<DenseLayer<SEBlock<>>>()),
      Contains("gated.pt"));
}

TEST_CASE("save_trained_model writes a checkpoint load_trained_model and the tool read",
          "[trained_model]") {
  test::TempDir dir;
  torch::manual_seed(4);
  DenseNet net(small_options());
  CHECK(net->blocks() == "default");
  randomise(*net);
  net->eval();
  io::InputSpec input;
  input.size = 16;
  const auto path = dir / "plain.pt";
  io::save_trained_model(path, net, input, {"x", "y", "z"});
  CHECK(io::is_trainer_checkpoint(path));
  auto loaded = io::load_trained_model(path);
  CHECK(loaded.input.size == 16);
  CHECK(loaded.options.growth_rate() == net->options.growth_rate());
  CHECK_FALSE(loaded.state.at("metadata").contains("blocks"));
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 16, 16});
  CHECK(torch::equal(loaded.model->forward(x), net->forward(x)));
  REQUIRE_THROWS_WITH(io::save_trained_model(dir / "wrong.pt", net, input, {"only", "two"}),
                      Contains("2 class names") && Contains("3 classes"));
}

TEST_CASE("InputSpec records how transparent images were decoded; older checkpoints dropped alpha",
          "[trained_model][alpha]") {
  io::InputSpec spec;
  spec.alpha = data::Alpha::white;
  CHECK(io::InputSpec::from_json(spec.to_json()).alpha == data::Alpha::white);
  CHECK(io::InputSpec::from_json(spec.to_json()).decode_options().alpha() == data::Alpha::white);
  auto old = spec.to_json();
  old.erase("alpha");
  CHECK(io::InputSpec::from_json(old).alpha == data::Alpha::drop);
  old["alpha"] = "black";
  CHECK_THROWS_WITH(io::InputSpec::from_json(old), Catch::Contains("'alpha' must be drop or white"));
  CHECK(DataOptions().input().alpha == data::Alpha::white);
  CHECK(DataOptions().alpha(data::Alpha::drop).folder_options().decode().alpha() == data::Alpha::drop);
}
