#pragma once
/// \file
/// `DenseNet`: the whole (SE-)DenseNet-BC classifier, named exactly as PyTorch's models.

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "sedensenet/nn/attention.hpp"
#include "sedensenet/nn/dense_block.hpp"
#include "sedensenet/nn/dense_layer.hpp"
#include "sedensenet/nn/named_sequential.hpp"
#include "sedensenet/nn/options.hpp"
#include "sedensenet/nn/transition.hpp"

namespace sedensenet {

/// Builds one dense block of a `DenseNet` from its options; returns it wrapped in an AnyModule
/// (any module with `Tensor forward(const Tensor&)` that outputs `options.out_channels()`).
using BlockBuilder = std::function<torch::nn::AnyModule(const DenseBlockOptions&)>;

/// A `BlockBuilder` that builds `DenseBlock<Layer>`: how a `DenseNet` gets user-defined layers.
///
/// Example:
/// ```
/// using Layer = sedensenet::DenseLayer<MyAttention>;
/// sedensenet::DenseNet net(sedensenet::DenseNetOptions(), sedensenet::block_builder<Layer>());
/// ```
template <typename Layer>
BlockBuilder block_builder() {
  return [](const DenseBlockOptions& options) {
    return torch::nn::AnyModule(DenseBlock<Layer>(options));
  };
}

/// The most layers (all dense blocks together) and parameters a `DenseNet` may have. Far above
/// any published DenseNet (DenseNet-BC-250: 243 layers; DenseNet-161: 29M parameters), low enough
/// that options from a file or a preset name can never ask for an allocation without bound.
inline constexpr int64_t kMaxDenseLayers = 10000;
inline constexpr double kMaxParameters = 1e9;

/// The number of parameters a DenseNet of `o` has (computed in double: no overflow for any
/// option values), with SE blocks at their nominal width.
double estimated_parameters(const DenseNetOptions& o);

/// Throws, naming the options, when a DenseNet of `o` would exceed `kMaxDenseLayers` or
/// `kMaxParameters`: a check made before anything is allocated (e.g. for options read from a
/// checkpoint, a config file or a preset name such as densenet_bc_1000006).
void check_model_size(const DenseNetOptions& o);

namespace detail {
/// Throws, naming the option and its value, for options no DenseNet can be built from.
void check_densenet_options(const DenseNetOptions& o);

/// The default builder: SE with the chosen gate, or no attention when se_reduction == 0.
BlockBuilder default_block_builder(const DenseNetOptions& o);
}  // namespace detail

/// The SE-DenseNet-BC classifier.
///
///   features: conv0 [norm0 relu0 pool0] denseblock1 transition1 ... denseblockB norm5
///   head:     relu -> adaptive average pool to 1x1 -> flatten -> classifier (Linear)
///
/// Requires: input (N, 3, H, W) float; H, W >= 1 after the stem and every 2x2 pooling (32x32 for
/// the CIFAR-style presets, 224x224 for the ImageNet-style ones; smaller works where it divides).
/// Guarantees: output logits (N, num_classes); `named_parameters()` / `named_buffers()` give the
/// keys of torchvision's DenseNet (`features.conv0.weight`,
/// `features.denseblock1.denselayer1.norm1.running_mean`, `features.transition1.conv.weight`,
/// `features.norm5.weight`, `classifier.bias`, ...) plus, with SE,
/// `features.denseblockI.denselayerJ.se.fc1.weight` and `.se.fc2.weight`.
///
/// Example:
/// ```
/// sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet121().num_classes(5));
/// auto logits = net->forward(torch::randn({2, 3, 224, 224}));  // (2, 5)
/// ```
class DenseNetImpl : public torch::nn::Cloneable<DenseNetImpl>, public MemoryConfigurable {
 public:
  explicit DenseNetImpl(DenseNetOptions options = {});

  /// Builds the network with your own dense blocks (see `block_builder<Layer>()`). `blocks` names
  /// them in the checkpoints `io::densenet_metadata(model, ...)` describes, so that loading one
  /// asks for the same builder (`io::load_trained_model(path, device, builder)`) instead of
  /// rebuilding the library's own layers.
  DenseNetImpl(DenseNetOptions options, BlockBuilder builder, std::string blocks = "custom");

  void reset() override;

  /// x: (N, 3, H, W) -> logits (N, num_classes).
  torch::Tensor forward(const torch::Tensor& x);

  /// Switches every dense layer between standard and efficient backward passes; takes effect at
  /// the next forward. Also updates `options.memory()`.
  void set_memory(MemoryMode mode) override;

  /// Lays the convolution weights out in `format` (ChannelsLast or Contiguous) and makes `forward`
  /// give its input that layout too, so the activations follow. On the CPU, channels-last maps
  /// spare oneDNN the conversion to and from its blocked layout at every convolution
  /// (docs/benchmarks.md, "Training throughput"); the values are the same either way. The
  /// parameters stay the same objects (their data is relaid), so an optimizer made before still
  /// holds them. `Trainer` sets ChannelsLast on the CPU (`TrainerOptions::channels_last`).
  void set_memory_format(torch::MemoryFormat format);
  /// The layout `forward` runs in (Contiguous unless set).
  torch::MemoryFormat memory_format() const { return memory_format_; }

  /// Channels entering the classifier.
  int64_t num_features() const { return num_features_; }

  /// What the dense blocks are: "default" for the library's own layers (SE or none, as the
  /// options say), else the name given with the builder.
  const std::string& blocks() const { return blocks_; }

  void pretty_print(std::ostream& stream) const override;

  DenseNetOptions options;
  NamedSequential features{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  BlockBuilder builder_;
  std::string blocks_;
  torch::MemoryFormat memory_format_ = torch::MemoryFormat::Contiguous;
  int64_t num_features_ = 0;
};
TORCH_MODULE(DenseNet);

}  // namespace sedensenet
