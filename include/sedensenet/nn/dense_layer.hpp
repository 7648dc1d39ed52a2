#pragma once
/// \file
/// `DenseLayer<Attention>`: one DenseNet-BC layer with a pluggable attention module.

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "sedensenet/nn/attention.hpp"
#include "sedensenet/nn/batch_norm_relu.hpp"
#include "sedensenet/nn/efficient.hpp"
#include "sedensenet/nn/options.hpp"

namespace sedensenet {

namespace init {
/// The reference initialisation of a convolution: weight ~ N(0, sqrt(2 / n)) with
/// n = out_channels * kh * kw (He initialisation, fan-out mode); no bias is used in DenseNet.
inline void reference_conv_(torch::nn::Conv2dImpl& conv) {
  torch::NoGradGuard no_grad;
  const auto& w = conv.weight;
  const double n = static_cast<double>(w.size(0) * w.size(2) * w.size(3));
  w.normal_(0.0, std::sqrt(2.0 / n));
}
}  // namespace init

/// One dense layer:
///   cat(inputs) -> norm1 (BN) -> relu1 -> conv1 (1x1, C_in -> bn_size*k) -> norm2 (BN) -> relu2
///   -> conv2 (3x3 pad 1, bn_size*k -> k) -> attention -> dropout (if drop_rate > 0)
/// (each norm + ReLU pair is one fused kernel in training on CPU: see `batch_norm_relu`).
///
/// Requires: inputs (N, C_i, H, W) whose channels sum to options.in_channels().
/// Guarantees: output (N, growth_rate, H, W); parameters named as PyTorch's `_DenseLayer`
/// (`norm1`, `conv1`, `norm2`, `conv2`) plus the attention module's under
/// `attention_traits<Attention>::name` ("se" for `SEBlock`; nothing for `NoAttention`).
///
/// `Attention` is `SEBlock<Gate>`, `NoAttention`, or any module holder whose module has
/// `Tensor forward(Tensor)` and that `attention_traits<Attention>::make` can build from the
/// channel count (by default `Attention(int64_t channels)`).
///
/// Example:
/// ```
/// sedensenet::DenseLayer<sedensenet::SEBlock<>> layer(sedensenet::DenseLayerOptions(64, 32));
/// auto y = layer->forward({x});   // x: (N, 64, H, W) -> y: (N, 32, H, W)
/// ```
template <typename Attention = SEBlock<Sigmoid>>
class DenseLayerImpl : public torch::nn::Cloneable<DenseLayerImpl<Attention>>,
                       public MemoryConfigurable {
  static_assert(detail::is_module_holder<Attention>::value,
                "DenseLayer<Attention>: Attention must be a module holder (the type TORCH_MODULE "
                "declares, such as sedensenet::SEBlock<> or sedensenet::NoAttention)");
  static_assert(detail::has_tensor_forward<Attention>::value,
                "DenseLayer<Attention>: the attention module must have "
                "`torch::Tensor forward(torch::Tensor)`");
  static_assert(std::is_same_v<decltype(attention_traits<Attention>::make(
                                   int64_t{}, std::declval<const AttentionSettings&>())),
                               Attention>,
                "DenseLayer<Attention>: Attention must be constructible from the channel count "
                "(Attention(int64_t)), or specialise sedensenet::attention_traits<Attention>");

 public:
  using AttentionType = Attention;

  explicit DenseLayerImpl(DenseLayerOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.in_channels() >= 1, "DenseLayerOptions: in_channels must be >= 1, got ",
                o.in_channels());
    TORCH_CHECK(o.growth_rate() >= 1, "DenseLayerOptions: growth_rate must be >= 1, got ",
                o.growth_rate());
    TORCH_CHECK(o.bn_size() >= 1, "DenseLayerOptions: bn_size must be >= 1, got ", o.bn_size());
    TORCH_CHECK(o.drop_rate() >= 0.0 && o.drop_rate() < 1.0,
                "DenseLayerOptions: drop_rate must be in [0, 1), got ", o.drop_rate());
    const int64_t bottleneck = o.bn_size() * o.growth_rate();
    norm1 = this->register_module("norm1", torch::nn::BatchNorm2d(o.in_channels()));
    conv1 = this->register_module(
        "conv1", torch::nn::Conv2d(
                     torch::nn::Conv2dOptions(o.in_channels(), bottleneck, 1).stride(1).bias(false)));
    norm2 = this->register_module("norm2", torch::nn::BatchNorm2d(bottleneck));
    conv2 = this->register_module(
        "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(bottleneck, o.growth_rate(), 3)
                                       .stride(1)
                                       .padding(1)
                                       .bias(false)));
    init::reference_conv_(*conv1);
    init::reference_conv_(*conv2);
    attention = attention_traits<Attention>::make(o.growth_rate(), o.attention());
    if constexpr (!attention_traits<Attention>::is_identity) {
      attention = this->register_module(attention_traits<Attention>::name, attention);
    }
  }

  /// inputs: the block input and every earlier layer's output -> (N, growth_rate, H, W).
  torch::Tensor forward(torch::TensorList inputs) {
    TORCH_CHECK(!inputs.empty(), "DenseLayer::forward: no input tensors");
    int64_t channels = 0;
    for (const auto& t : inputs) {
      TORCH_CHECK(t.dim() == 4, "DenseLayer::forward: expected 4-d inputs (N, C, H, W), got ",
                  t.sizes());
      channels += t.size(1);
    }
    TORCH_CHECK(channels == options.in_channels(), "DenseLayer::forward: inputs have ", channels,
                " channels in total, the layer was built for in_channels = ",
                options.in_channels());

    torch::Tensor new_features = uses_efficient_path(inputs) ? efficient_bottleneck(inputs)
                                                             : standard_bottleneck(inputs);
    new_features = attention->forward(new_features);
    if (options.drop_rate() > 0.0) {
      new_features = torch::dropout(new_features, options.drop_rate(), this->is_training());
    }
    return new_features;
  }

  /// Convenience for a single input tensor.
  torch::Tensor forward(const torch::Tensor& input) { return forward(torch::TensorList(input)); }

  /// Whether a forward with these inputs will use the recomputing path: efficient mode, training,
  /// gradients enabled and something that needs them.
  bool uses_efficient_path(torch::TensorList inputs) const {
    return options.memory() != MemoryMode::standard && detail::records_for_backward(*this, inputs);
  }

  void set_memory(MemoryMode mode) override { options.memory(mode); }

  void pretty_print(std::ostream& stream) const override {
    stream << "sedensenet::DenseLayer(in_channels=" << options.in_channels()
           << ", growth_rate=" << options.growth_rate() << ", bn_size=" << options.bn_size()
           << ", drop_rate=" << options.drop_rate() << ", memory=" << options.memory() << ")";
  }

  DenseLayerOptions options;
  torch::nn::BatchNorm2d norm1{nullptr};
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d norm2{nullptr};
  torch::nn::Conv2d conv2{nullptr};
  Attention attention{nullptr};

 private:
  torch::Tensor standard_bottleneck(torch::TensorList inputs) {
    auto x = inputs.size() == 1 ? inputs[0] : torch::cat(inputs, 1);
    // batch_norm_relu: one fused kernel in training on CPU, else norm then in-place ReLU as the
    // reference (batch norm's backward needs its input, not its output).
    auto bottleneck = conv1->forward(batch_norm_relu(x, *norm1));
    return conv2->forward(batch_norm_relu(bottleneck, *norm2));
  }

  torch::Tensor efficient_bottleneck(torch::TensorList inputs) {
    auto bottleneck = detail::efficient_bottleneck_input(
        inputs, norm1->weight, norm1->bias, conv1->weight,
        detail::NormConvModules{norm1.get(), conv1.get()});
    if (options.memory() == MemoryMode::efficient_input_only) {
      return conv2->forward(batch_norm_relu(bottleneck, *norm2));
    }
    return detail::efficient_bottleneck_output(
        bottleneck, norm2->weight, norm2->bias, conv2->weight,
        detail::NormConvModules{norm2.get(), conv2.get()});
  }
};

/// Module holder for `DenseLayerImpl<Attention>`.
template <typename Attention = SEBlock<Sigmoid>>
class DenseLayer : public torch::nn::ModuleHolder<DenseLayerImpl<Attention>> {
 public:
  using torch::nn::ModuleHolder<DenseLayerImpl<Attention>>::ModuleHolder;
  using Impl = DenseLayerImpl<Attention>;
};

}  // namespace sedensenet
