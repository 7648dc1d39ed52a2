// Bring your own attention: a dense block whose layers use a user-written module instead of SE,
// through the DenseLayer<Attention> / DenseBlock<Layer> templates, trained on a toy task.
//
//   custom_attention [STEPS]
#include <sedensenet/sedensenet.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <string>

// 1. The attention module. DenseLayer needs two things: it is a module holder (TORCH_MODULE),
//    and its module has `Tensor forward(Tensor)`. It is built from the channel count.
//    This one is ECA-style: a 1-D convolution across the channel descriptors, then a sigmoid gate.
struct ChannelConvGateImpl : torch::nn::Module {
  explicit ChannelConvGateImpl(int64_t channels)
      : conv(register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(1, 1, 3).padding(1).bias(false)))) {
    (void)channels;  // the gate works for any channel count
  }
  torch::Tensor forward(torch::Tensor x) {
    auto descriptor = x.mean({2, 3}).unsqueeze(1);            // (N, 1, C)
    auto gate = torch::sigmoid(conv->forward(descriptor));    // (N, 1, C)
    return x * gate.squeeze(1).unsqueeze(-1).unsqueeze(-1);
  }
  torch::nn::Conv1d conv;
};
TORCH_MODULE(ChannelConvGate);

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::stoi(argv[1]) : 30;
  sedensenet::set_num_threads(0);
  torch::manual_seed(0);

  // 2. Plug it in: a dense layer type, then a dense block of six such layers.
  using Layer = sedensenet::DenseLayer<ChannelConvGate>;
  sedensenet::DenseBlock<Layer> block(
      sedensenet::DenseBlockOptions(6, sedensenet::DenseLayerOptions(/*in_channels=*/16, /*growth_rate=*/8)));
  std::cout << "block parameters:\n";
  for (const auto& p : block->named_parameters()) {
    if (p.key().rfind("denselayer1.", 0) == 0) std::cout << "  " << p.key() << " " << p.value().sizes() << "\n";
  }

  // 3. A whole network with those layers: DenseNet takes a block builder, and a name for the
  //    blocks that checkpoints record.
  sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet_bc(16, 8).num_classes(2),
                           sedensenet::block_builder<Layer>(), "channel-conv-gate");

  // 4. Train it to tell bright-left from bright-right images.
  auto images = torch::randn({64, 3, 16, 16});
  auto labels = torch::randint(0, 2, {64}, torch::kLong);
  images.narrow(3, 0, 8).add_((labels == 0).to(torch::kFloat).view({-1, 1, 1, 1}));
  images.narrow(3, 8, 8).add_((labels == 1).to(torch::kFloat).view({-1, 1, 1, 1}));
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(3e-3));
  net->train();
  double first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(images), labels);
    loss.backward();
    optimizer.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  net->eval();
  torch::NoGradGuard no_grad;
  const double accuracy = (net->forward(images).argmax(1) == labels).to(torch::kFloat).mean().item<double>();
  std::cout << "loss " << first << " -> " << last << ", training accuracy " << 100 * accuracy << "%\n";

  // 5. Save and reload. The checkpoint records "channel-conv-gate"; loading it needs the same
  //    builder (without one, load_trained_model refuses and says what to pass).
  const auto dir = std::filesystem::temp_directory_path() /
                   ("sedensenet-custom-attention-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "model.pt";
  sedensenet::io::InputSpec input;
  input.size = 16;
  sedensenet::io::save_trained_model(path, net, input, {"bright-left", "bright-right"});
  auto reloaded = sedensenet::io::load_trained_model(path, torch::kCPU, sedensenet::block_builder<Layer>());
  const bool same = torch::equal(reloaded.model->forward(images), net->forward(images));
  std::cout << "reloaded from " << path.filename().string() << " (blocks: " << reloaded.model->blocks()
            << "): " << (same ? "same logits" : "DIFFERENT logits") << "\n";
  std::filesystem::remove_all(dir);
  return last < first && same ? 0 : 1;
}
