// DenseNet: every preset's shapes, parameter counts and full key list against torchvision,
// initialisation, option validation, clone independence, memory-mode switching, summary.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "sedensenet/nn.hpp"
#include "support/python.hpp"
#include "support/tensor_matchers.hpp"

using namespace sedensenet;
using sedensenet::test::AllClose;
using Catch::Matchers::Contains;

namespace {
std::map<std::string, std::vector<int64_t>> state_shapes(const torch::nn::Module& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().sizes().vec();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value().sizes().vec();
  return out;
}

int64_t parameter_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// Channels after each block / transition, computed independently from the options.
std::vector<int64_t> expected_stage_channels(const DenseNetOptions& o) {
  std::vector<int64_t> channels;
  int64_t c = o.num_init_features();
  for (size_t i = 0; i < o.block_config().size(); ++i) {
    c += o.block_config()[i] * o.growth_rate();
    channels.push_back(c);
    if (i + 1 < o.block_config().size()) {
      c = static_cast<int64_t>(std::floor(c * o.compression()));
      channels.push_back(c);
    }
  }
  return channels;
}

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}
}  // namespace

TEST_CASE("Every preset builds, runs, and has the channel arithmetic of its options",
          "[densenet][presets]") {
  auto [name, size] = GENERATE(table<std::string, int64_t>({
      {"densenet121", 32},
      {"densenet169", 32},
      {"densenet201", 32},
      {"densenet161", 32},
      {"densenet_bc_40", 32},
      {"densenet_bc_100", 16},
      {"densenet_bc_250_k24", 8},
      {"densenet_small", 28},
  }));
  for (int64_t se : {int64_t{16}, int64_t{0}}) {
    DYNAMIC_SECTION(name << (se ? " with SE" : " without SE")) {
      auto options = DenseNetOptions::preset(name).num_classes(7).se_reduction(se);
      DenseNet net(options);
      net->eval();
      torch::NoGradGuard no_grad;
      auto logits = net->forward(torch::randn({2, 3, size, size}));
      CHECK(logits.sizes() == torch::IntArrayRef({2, 7}));

      auto s = summary(net, {2, 3, size, size});
      std::vector<int64_t> block_and_transition_channels;
      for (const auto& stage : s.stages) {
        if (stage.name.rfind("denseblock", 0) == 0 || stage.name.rfind("transition", 0) == 0) {
          block_and_transition_channels.push_back(stage.output_shape[1]);
        }
      }
      CHECK(block_and_transition_channels == expected_stage_channels(options));
      CHECK(net->num_features() == expected_stage_channels(options).back());
      CHECK(s.stages.back().output_shape == std::vector<int64_t>{2, 7});
    }
  }
}

TEST_CASE("The small-image preset's stride-2 stem runs its blocks on 14x14 and 7x7 maps of a 28x28 image",
          "[densenet][presets]") {
  const auto options = DenseNetOptions::preset("densenet_small");
  CHECK(options.stem_stride() == 2);
  DenseNet net(options);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& stage : summary(net, {1, 3, 28, 28}).stages) shapes[stage.name] = stage.output_shape;
  CHECK(shapes.at("conv0") == std::vector<int64_t>{1, 32, 14, 14});
  CHECK(shapes.at("denseblock1") == std::vector<int64_t>{1, 32 + 6 * 16, 14, 14});
  CHECK(shapes.at("transition1") == std::vector<int64_t>{1, 64, 7, 7});
  CHECK(shapes.at("denseblock2") == std::vector<int64_t>{1, 64 + 6 * 16, 7, 7});
  CHECK(parameter_count(*net) == 193450);  // the figure docs/results.md and the preset's doc quote
  // Stride 1 (the default, and every configuration written before the option) keeps 28x28.
  DenseNet full(DenseNetOptions(options).stem_stride(1));
  for (const auto& stage : summary(full, {1, 3, 28, 28}).stages) {
    if (stage.name == "conv0") CHECK(stage.output_shape == std::vector<int64_t>{1, 32, 28, 28});
  }
}

TEST_CASE("DenseNet-BC presets: (depth - 4) / 6 layers per block, 2k initial features",
          "[densenet][presets]") {
  auto o = DenseNetOptions::densenet_bc(100, 12);
  CHECK(o.block_config() == std::vector<int64_t>{16, 16, 16});
  CHECK(o.num_init_features() == 24);
  CHECK(o.small_inputs());
  auto o2 = DenseNetOptions::densenet_bc(250, 24);
  CHECK(o2.block_config() == std::vector<int64_t>{41, 41, 41});
  CHECK(o2.num_init_features() == 48);
  // The defaults are the reference's DenseNet-BC-100 with SE.
  DenseNetOptions defaults;
  CHECK(defaults.block_config() == o.block_config());
  CHECK(defaults.growth_rate() == 12);
  CHECK(defaults.se_reduction() == 16);
  CHECK(defaults.num_classes() == 10);
  CHECK(defaults.compression() == 0.5);
  CHECK(defaults.memory() == MemoryMode::standard);
}

TEST_CASE("Parameter counts equal torchvision's with SE off and 1000 classes",
          "[densenet][torchvision]") {
  auto [name, count] = GENERATE(table<std::string, int64_t>({
      {"densenet121", 7978856},
      {"densenet169", 14149480},
      {"densenet201", 20013928},
      {"densenet161", 28681000},
  }));
  DenseNet net(DenseNetOptions::preset(name).num_classes(1000).se_reduction(0));
  CHECK(parameter_count(*net) == count);
}

TEST_CASE("State-dict keys and shapes equal torchvision's (SE adds exactly fc1/fc2 per layer)",
          "[densenet][torchvision][python]") {
  auto name = GENERATE(as<std::string>{}, "densenet121", "densenet161");
  test::TempDir dir;
  test::run_python("torchvision_reference.py", "keys " + name + " " + (dir / "keys.json").string());
  const auto reference = read_json(dir / "keys.json");
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& [key, shape] : reference.at("keys").items()) {
    expected[key] = shape.get<std::vector<int64_t>>();
  }
  REQUIRE(expected.size() > 500);

  DenseNet plain(DenseNetOptions::preset(name).num_classes(1000).se_reduction(0));
  CHECK(state_shapes(*plain) == expected);
  CHECK(parameter_count(*plain) == reference.at("parameters").get<int64_t>());

  DenseNet with_se(DenseNetOptions::preset(name).num_classes(1000));
  auto se_shapes = state_shapes(*with_se);
  int64_t se_keys = 0;
  for (const auto& [key, shape] : se_shapes) {
    if (key.find(".se.fc") != std::string::npos) {
      ++se_keys;
      CHECK(shape.size() == 2);
    } else {
      CHECK(expected.count(key) == 1);
    }
  }
  const auto& blocks = with_se->options.block_config();
  CHECK(se_keys == 2 * std::accumulate(blocks.begin(), blocks.end(), int64_t{0}));
  CHECK(se_shapes.size() == expected.size() + static_cast<size_t>(se_keys));
}

TEST_CASE("summary reports torchvision's MACs and stage shapes", "[densenet][summary][python]") {
  test::TempDir dir;
  test::run_python("torchvision_reference.py", "macs densenet121 224 " + (dir / "m.json").string());
  const auto reference = read_json(dir / "m.json");
  DenseNet net(DenseNetOptions::densenet121().num_classes(1000).se_reduction(0));
  auto s = summary(net, {3, 224, 224});
  CHECK(s.macs == reference.at("macs").get<int64_t>());
  for (const auto& stage : s.stages) {
    if (stage.name == "head") continue;
    INFO(stage.name);
    CHECK(stage.output_shape == reference.at("shapes").at(stage.name).get<std::vector<int64_t>>());
  }
  CHECK(s.parameters == 7978856);
  CHECK(s.trainable_parameters == 7978856);
  const auto text = s.to_string();
  CHECK_THAT(text, Contains("denseblock4") && Contains("(1, 1024, 7, 7)") &&
                       Contains("parameters: 7978856"));
  // SE adds its two small matrices per layer to the count.
  DenseNet se(DenseNetOptions::densenet121().num_classes(1000));
  CHECK(summary(se, {3, 224, 224}).macs > s.macs);
}

TEST_CASE("Initialisation follows the reference", "[densenet][init]") {
  torch::manual_seed(0);
  DenseNet net(DenseNetOptions::densenet_bc(40, 12));
  for (const auto& p : net->named_parameters()) {
    const auto& key = p.key();
    const auto& t = p.value();
    INFO(key);
    if (key.find("conv") != std::string::npos) {
      const double n = static_cast<double>(t.size(0) * t.size(2) * t.size(3));
      const double expected_std = std::sqrt(2.0 / n);
      if (t.numel() >= 1000) {
        CHECK(t.std().item<double>() == Approx(expected_std).epsilon(0.1));
        CHECK(std::abs(t.mean().item<double>()) < 0.1 * expected_std);
      }
    } else if (key.find("norm") != std::string::npos && key.find("weight") != std::string::npos) {
      CHECK(torch::all(t == 1).item<bool>());
    } else if (key.find("norm") != std::string::npos && key.find("bias") != std::string::npos) {
      CHECK(torch::all(t == 0).item<bool>());
    } else if (key == "classifier.bias") {
      CHECK(torch::all(t == 0).item<bool>());
    }
  }
}

TEST_CASE("Every invalid option raises the documented message", "[densenet][errors]") {
  using Case = std::pair<std::function<DenseNetOptions()>, std::string>;
  auto [make, message] = GENERATE(values<Case>({
      {[] { return DenseNetOptions().growth_rate(0); }, "growth_rate must be >= 1, got 0"},
      {[] { return DenseNetOptions().block_config({}); }, "block_config must list at least one"},
      {[] { return DenseNetOptions().block_config({6, 0}); },
       "block_config[1] (layers in dense block 2) must be >= 1, got 0"},
      {[] { return DenseNetOptions().num_init_features(-1); },
       "num_init_features must be >= 1, got -1"},
      {[] { return DenseNetOptions().compression(0.0); }, "compression must be in (0, 1], got 0"},
      {[] { return DenseNetOptions().compression(1.5); },
       "compression must be in (0, 1], got 1.5"},
      {[] { return DenseNetOptions().bn_size(0); }, "bn_size must be >= 1, got 0"},
      {[] { return DenseNetOptions().drop_rate(-0.1); }, "drop_rate must be in [0, 1), got -0.1"},
      {[] { return DenseNetOptions().num_classes(0); }, "num_classes must be >= 1, got 0"},
      {[] { return DenseNetOptions().se_reduction(-4); }, "se_reduction must be >= 0"},
      {[] { return DenseNetOptions().se_min_hidden(0); }, "se_min_hidden must be >= 1, got 0"},
      {[] { return DenseNetOptions().stem_stride(3); }, "stem_stride must be 1 or 2, got 3"},
      {[] { return DenseNetOptions::densenet121().stem_stride(2); },
       "stem_stride 2 needs the small-input stem"},
      {[] { return DenseNetOptions().num_init_features(1).compression(0.001); },
       "leaves transition1 with no channels"},
  }));
  INFO(message);
  REQUIRE_THROWS_WITH(DenseNet(make()), Contains(message));
}

TEST_CASE("Presets and preset names are validated", "[densenet][errors]") {
  REQUIRE_THROWS_WITH(DenseNetOptions::densenet_bc(41), Contains("depth must be 6n + 4"));
  REQUIRE_THROWS_WITH(DenseNetOptions::densenet_bc(40, 0), Contains("growth_rate must be >= 1"));
  REQUIRE_THROWS_WITH(DenseNetOptions::preset("densenet122"),
                      Contains("unknown preset 'densenet122'"));
  REQUIRE_THROWS_WITH(DenseNetOptions::preset("densenet_bc_x"), Contains("unknown preset"));
  CHECK(DenseNetOptions::preset("densenet_bc_40_k24").growth_rate() == 24);
  REQUIRE_THROWS_WITH(memory_mode_from_string("fast"), Contains("unknown memory mode 'fast'"));
  DenseNet net(DenseNetOptions::densenet_bc(10, 4));
  REQUIRE_THROWS_WITH(net->forward(torch::randn({1, 1, 8, 8})),
                      Contains("DenseNet expects images (N, 3, H, W)"));
}

TEST_CASE("clone() gives an independent deep copy", "[densenet][clone]") {
  torch::manual_seed(0);
  DenseNet net(DenseNetOptions::densenet_bc(16, 6).memory(MemoryMode::efficient));
  net->train();
  net->forward(torch::randn({4, 3, 8, 8}));  // move the running statistics off their defaults
  auto copy = std::dynamic_pointer_cast<DenseNetImpl>(net->clone());
  REQUIRE(copy);
  CHECK(copy->options.memory() == MemoryMode::efficient);
  auto original = state_shapes(*net);
  CHECK(state_shapes(*copy) == original);
  auto x = torch::randn({2, 3, 8, 8});
  net->eval();
  copy->eval();
  CHECK_THAT(copy->forward(x), AllClose(net->forward(x), 0.0, 0.0));

  // Changing the copy leaves the original alone: parameters, buffers and submodules.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.add_(1.0);
    for (auto& b : copy->buffers()) b.add_(1);
  }
  auto original_params = net->named_parameters();
  for (const auto& p : copy->named_parameters()) {
    CHECK_FALSE(torch::equal(p.value(), original_params[p.key()]));
  }
  CHECK_FALSE(torch::allclose(copy->forward(x), net->forward(x)));
  copy->set_memory(MemoryMode::standard);
  CHECK(net->options.memory() == MemoryMode::efficient);
}

TEST_CASE("set_memory reaches every dense layer", "[densenet]") {
  DenseNet net(DenseNetOptions::densenet_bc(16, 6));
  net->set_memory(MemoryMode::efficient_input_only);
  int layers = 0;
  for (const auto& m : net->modules()) {
    if (auto* layer = dynamic_cast<DenseLayerImpl<SEBlock<Sigmoid>>*>(m.get())) {
      CHECK(layer->options.memory() == MemoryMode::efficient_input_only);
      ++layers;
    }
  }
  CHECK(layers == 6);
  CHECK(net->options.memory() == MemoryMode::efficient_input_only);
}

TEST_CASE("ScaledSigmoid SE networks start equal to the same network without SE",
          "[densenet][warm_start]") {
  torch::manual_seed(0);
  DenseNet plain(DenseNetOptions::densenet_bc(16, 6).se_reduction(0));
  DenseNet gated(DenseNetOptions::densenet_bc(16, 6).se_gate(SEGate::scaled_sigmoid));
  // Copy every shared tensor; the SE weights stay as built (fc2 = 0).
  {
    torch::NoGradGuard no_grad;
    auto source = plain->named_parameters();
    for (auto& p : gated->named_parameters()) {
      if (source.contains(p.key())) p.value().copy_(source[p.key()]);
    }
  }
  plain->eval();
  gated->eval();
  auto x = torch::randn({2, 3, 8, 8});
  CHECK_THAT(gated->forward(x), AllClose(plain->forward(x), 1e-6, 1e-6));
}
