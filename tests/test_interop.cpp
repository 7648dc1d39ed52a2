// Weights between PyTorch and SEDenseNet: torchvision's DenseNets and the reference SE-DenseNet
// load here with the same logits (eval and train mode), SEDenseNet's files load in Python (the
// reference model and the Python twin), strict-mode reports, warm starts, bad files.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "sedensenet/io/state_dict.hpp"
#include "sedensenet/nn.hpp"
#include "support/bundle.hpp"
#include "support/python.hpp"
#include "support/tensor_matchers.hpp"

using namespace sedensenet;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
double max_relative(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / std::max(scale, 1e-12);
}

DenseNetOptions reference_shape() {
  return DenseNetOptions().growth_rate(32).block_config({2, 2, 2}).num_init_features(64).num_classes(7);
}
}  // namespace

TEST_CASE("torchvision DenseNets load with torchvision's logits, eval and train mode",
          "[interop][torchvision][python]") {
  auto arch = GENERATE(as<std::string>{}, "densenet121", "densenet169", "densenet201", "densenet161");
  test::TempDir dir;
  test::run_python("interop_reference.py", "make torchvision " + arch + " " + dir.path().string());
  auto expected = test::load_bundle(dir / "expected");
  DenseNet net(DenseNetOptions::preset(arch).num_classes(1000).se_reduction(0));
  auto report = io::load_state_dict(*net, dir / "weights.pth");
  CHECK(report.complete());
  INFO(arch << ": " << report.to_string());
  torch::NoGradGuard no_grad;
  net->eval();
  const double eval_difference = max_relative(net->forward(expected.at("x")), expected.at("eval"));
  net->train();
  const double train_difference = max_relative(net->forward(expected.at("x")), expected.at("train"));
  INFO("max relative difference: eval " << eval_difference << ", train " << train_difference);
  CHECK(eval_difference <= 1e-5);
  CHECK(train_difference <= 1e-5);
}

TEST_CASE("The reference SE-DenseNet's weights load here, and ours load there",
          "[interop][reference][python]") {
  test::TempDir dir;
  test::run_python("interop_reference.py", "make reference " + dir.path().string());
  auto expected = test::load_bundle(dir / "expected");
  DenseNet net(reference_shape());
  auto report = io::load_state_dict(*net, dir / "weights.pth");
  CHECK(report.complete());
  CHECK(report.renamed > 0);  // norm_final and SE_Block.fc.* were translated
  torch::NoGradGuard no_grad;
  net->eval();
  CHECK(max_relative(net->forward(expected.at("x")), expected.at("eval")) <= 1e-5);
  net->train();
  CHECK(max_relative(net->forward(expected.at("x")), expected.at("train")) <= 1e-5);

  // The other way: new random weights saved in the reference's naming, loaded there strictly.
  torch::manual_seed(5);
  DenseNet ours(reference_shape());
  ours->train();
  ours->forward(torch::randn({4, 3, 32, 32}));  // non-trivial running statistics
  ours->eval();
  io::save_state_dict(*ours, dir / "ours_reference.pt", io::KeyNaming::reference);
  test::run_python("interop_reference.py",
                   "logits reference " + (dir / "ours_reference.pt").string() + " " + dir.path().string());
  auto python = test::load_bundle(dir / "python_reference");
  CHECK(max_relative(ours->forward(expected.at("x")), python.at("eval")) <= 1e-5);
}

TEST_CASE("Weights saved here load strictly into the Python twin with the same logits",
          "[interop][twin][python]") {
  test::TempDir dir;
  test::run_python("interop_reference.py", "make twin " + dir.path().string());  // for the input
  auto expected = test::load_bundle(dir / "expected");
  torch::manual_seed(6);
  DenseNet net(reference_shape());
  net->train();
  net->forward(torch::randn({4, 3, 32, 32}));
  net->eval();
  io::save_state_dict(*net, dir / "ours.pt");
  test::run_python("interop_reference.py",
                   "logits twin " + (dir / "ours.pt").string() + " " + dir.path().string());
  auto python = test::load_bundle(dir / "python_twin");
  torch::NoGradGuard no_grad;
  CHECK(max_relative(net->forward(expected.at("x")), python.at("eval")) <= 1e-5);
  // And the twin's own file loads back here.
  DenseNet again(reference_shape());
  CHECK(io::load_state_dict(*again, dir / "weights.pth").complete());
}

TEST_CASE("Strict loading names every missing, unexpected and mismatched key",
          "[interop][errors][python]") {
  test::TempDir dir;
  test::run_python("interop_reference.py", "make reference " + dir.path().string());
  // The file has SE and 7 classes; this model has no SE and 4 classes.
  DenseNet net(reference_shape().se_reduction(0).num_classes(4));
  const auto before = net->classifier->weight.clone();
  try {
    io::load_state_dict(*net, dir / "weights.pth");
    FAIL("a strict load of a mismatched file must throw");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CHECK_THAT(message, Contains("weights.pth does not match the model"));
    CHECK_THAT(message, Contains("features.denseblock1.denselayer1.SE_Block.fc.0.weight"));
    CHECK_THAT(message, Contains("classifier.weight file [7, 128] model [4, 128]"));
    CHECK_THAT(message, Contains("12 unexpected"));
  }
  CHECK(torch::equal(before, net->classifier->weight));  // nothing changed
  auto report = io::load_state_dict(*net, dir / "weights.pth", io::LoadOptions().strict(false));
  CHECK(report.unexpected.size() == 12);  // 6 layers x 2 SE matrices
  REQUIRE(report.mismatched.size() == 2);
  CHECK(report.mismatched[0].key == "classifier.bias");
  CHECK(report.missing.empty());
  // What fits was loaded; the classifier kept its initial weights.
  CHECK(std::find(report.loaded.begin(), report.loaded.end(), "features.conv0.weight") != report.loaded.end());
  CHECK(torch::equal(before, net->classifier->weight));
}

TEST_CASE("A ScaledSigmoid SE-DenseNet warm-started from torchvision weights gives torchvision's "
          "logits", "[interop][warm_start][python]") {
  test::TempDir dir;
  test::run_python("interop_reference.py", "make torchvision densenet121 " + dir.path().string());
  auto expected = test::load_bundle(dir / "expected");
  DenseNet net(DenseNetOptions::densenet121().num_classes(1000).se_gate(SEGate::scaled_sigmoid));
  auto report = io::load_state_dict(*net, dir / "weights.pth", io::LoadOptions().strict(false));
  CHECK(report.unexpected.empty());
  CHECK(report.mismatched.empty());
  CHECK(report.missing.size() == 2 * 58);  // the SE matrices of the 58 dense layers
  torch::NoGradGuard no_grad;
  net->eval();
  CHECK(max_relative(net->forward(expected.at("x")), expected.at("eval")) <= 1e-5);
}

TEST_CASE("Files that are not state dicts give clear errors", "[interop][errors]") {
  test::TempDir dir;
  DenseNet net(reference_shape());
  REQUIRE_THROWS_WITH(io::load_state_dict(*net, dir / "nope.pt"), Contains("nope.pt: file not found"));
  std::ofstream(dir / "text.pt") << "hello";
  REQUIRE_THROWS_WITH(io::load_state_dict(*net, dir / "text.pt"), Contains("text.pt") && Contains("not a PyTorch archive"));
  io::save_state_dict(*net, dir / "good.pt");
  std::ifstream in(dir / "good.pt", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(dir / "cut.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  REQUIRE_THROWS_WITH(io::load_state_dict(*net, dir / "cut.pt"), Contains("cut.pt") && Contains("damaged"));
  // A LibTorch archive (TorchScript: SEDenseNet 0.1's checkpoints) is not a PyTorch state dict.
  torch::serialize::OutputArchive archive;
  net->save(archive);
  archive.save_to((dir / "archive.pt").string());
  REQUIRE_THROWS_WITH(io::load_state_dict(*net, dir / "archive.pt"), Contains("archive.pt"));
  // Round trip through our own file.
  DenseNet copy(reference_shape());
  CHECK(io::load_state_dict(*copy, dir / "good.pt").complete());
  for (const auto& p : net->named_parameters()) CHECK(torch::equal(p.value(), copy->named_parameters()[p.key()]));
}

TEST_CASE("Key translation covers torchvision's legacy names and the reference's",
          "[interop][names]") {
  CHECK(io::canonical_key("features.denseblock1.denselayer1.norm.1.weight") ==
        "features.denseblock1.denselayer1.norm1.weight");
  CHECK(io::canonical_key("features.denseblock2.denselayer7.conv.2.weight") ==
        "features.denseblock2.denselayer7.conv2.weight");
  CHECK(io::canonical_key("module.features.norm_final.running_var") == "features.norm5.running_var");
  CHECK(io::canonical_key("features.denseblock1.denselayer3.SE_Block.fc.2.weight") ==
        "features.denseblock1.denselayer3.se.fc2.weight");
  CHECK(io::external_key("features.denseblock1.denselayer3.se.fc1.weight", io::KeyNaming::reference) ==
        "features.denseblock1.denselayer3.SE_Block.fc.0.weight");
  CHECK(io::canonical_key("classifier.weight") == "classifier.weight");
}
