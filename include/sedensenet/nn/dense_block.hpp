#pragma once
/// \file
/// `DenseBlock<Layer>`: a stack of dense layers, each fed the concatenation of all before it.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sedensenet/nn/dense_layer.hpp"
#include "sedensenet/nn/options.hpp"
#include "sedensenet/nn/shared_block.hpp"
#include "sedensenet/util/torch_compat.hpp"

namespace sedensenet {

namespace detail {
template <typename L, typename = void>
struct has_list_forward : std::false_type {};
template <typename L>
struct has_list_forward<
    L, std::void_t<decltype(std::declval<L&>()->forward(std::declval<torch::TensorList>()))>>
    : std::is_convertible<decltype(std::declval<L&>()->forward(std::declval<torch::TensorList>())),
                          torch::Tensor> {};

/// Whether L is this library's `DenseLayer<Attention>` (the layers the shared block can run).
template <typename L, typename = void>
struct is_dense_layer : std::false_type {};
template <typename L>
struct is_dense_layer<L, std::void_t<typename L::Impl::AttentionType>>
    : std::is_same<L, DenseLayer<typename L::Impl::AttentionType>> {};
}  // namespace detail

/// A dense block of `num_layers` layers named `denselayer1` ... `denselayerN` (as PyTorch's
/// `_DenseBlock`). Layer i (from 0) receives the block input and the outputs of layers 0..i-1,
/// so its input has in_channels + i * growth_rate channels.
///
/// Requires: input (N, in_channels, H, W).
/// Guarantees: output (N, in_channels + num_layers * growth_rate, H, W): the input followed by
/// every layer's new features, in order.
///
/// `Layer` is `DenseLayer<Attention>` or any module holder built from `DenseLayerOptions` whose
/// module has `Tensor forward(TensorList)` and returns growth_rate channels.
///
/// With `DenseLayer` layers and `MemoryMode::shared` or `shared_ultra`, a training forward with
/// gradients runs the whole block as one recomputing node on one preallocated feature buffer
/// (sedensenet/nn/shared_block.hpp); otherwise each layer runs its own mode.
///
/// Example:
/// ```
/// using Layer = sedensenet::DenseLayer<sedensenet::SEBlock<>>;
/// sedensenet::DenseBlock<Layer> block(
///     sedensenet::DenseBlockOptions(6, sedensenet::DenseLayerOptions(64, 32)));
/// auto y = block->forward(x);  // (N, 64, H, W) -> (N, 64 + 6 * 32, H, W)
/// ```
template <typename Layer = DenseLayer<SEBlock<Sigmoid>>>
class DenseBlockImpl : public torch::nn::Cloneable<DenseBlockImpl<Layer>>,
                       public MemoryConfigurable {
  static_assert(detail::is_module_holder<Layer>::value,
                "DenseBlock<Layer>: Layer must be a module holder such as "
                "sedensenet::DenseLayer<sedensenet::SEBlock<>>");
  static_assert(std::is_constructible_v<Layer, DenseLayerOptions>,
                "DenseBlock<Layer>: Layer must be constructible from sedensenet::DenseLayerOptions");
  static_assert(detail::has_list_forward<Layer>::value,
                "DenseBlock<Layer>: the layer module must have "
                "`torch::Tensor forward(torch::TensorList)` taking all earlier feature maps");

 public:
  using LayerType = Layer;

  explicit DenseBlockImpl(DenseBlockOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.num_layers() >= 1, "DenseBlockOptions: num_layers must be >= 1, got ",
                options.num_layers());
    layers.clear();
    for (int64_t i = 0; i < options.num_layers(); ++i) {
      DenseLayerOptions layer_options = options.layer();
      layer_options.in_channels(options.layer().in_channels() +
                                i * options.layer().growth_rate());
      layers.push_back(
          this->register_module("denselayer" + std::to_string(i + 1), Layer(layer_options)));
    }
  }

  /// x: (N, in_channels, H, W) -> (N, in_channels + num_layers * growth_rate, H, W).
  torch::Tensor forward(const torch::Tensor& x) {
    if constexpr (detail::is_dense_layer<Layer>::value) {
      if (uses_shared_path(x)) return detail::shared_block_forward(x, shared_plan());
    }
    std::vector<torch::Tensor> features;
    features.reserve(layers.size() + 1);
    features.push_back(x);
    for (auto& layer : layers) features.push_back(layer->forward(features));
    return torch::cat(features, 1);
  }

  /// Whether a forward of x runs the shared-storage block: `DenseLayer` layers, memory mode
  /// `shared` or `shared_ultra`, training, gradients enabled and needed, autocast off (under
  /// autocast the layers run as `efficient`).
  bool uses_shared_path(const torch::Tensor& x) const {
    if constexpr (!detail::is_dense_layer<Layer>::value) return false;
    const auto mode = options.layer().memory();
    return (mode == MemoryMode::shared || mode == MemoryMode::shared_ultra) &&
           !compat::autocast_enabled(c10::DeviceType::CPU) &&
           !compat::autocast_enabled(c10::DeviceType::CUDA) &&
           detail::records_for_backward(*this, x);
  }

  void set_memory(MemoryMode mode) override {
    options.layer().memory(mode);
    for (auto& layer : layers) {
      // Layers that do not implement MemoryConfigurable have no memory modes to switch.
      if (auto* configurable = dynamic_cast<MemoryConfigurable*>(layer.get())) {
        configurable->set_memory(mode);
      }
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "sedensenet::DenseBlock(num_layers=" << options.num_layers()
           << ", in_channels=" << options.layer().in_channels()
           << ", out_channels=" << options.out_channels() << ")";
  }

  DenseBlockOptions options;
  std::vector<Layer> layers;

 private:
  c10::intrusive_ptr<detail::SharedBlockPlan> shared_plan() {
    auto plan = c10::make_intrusive<detail::SharedBlockPlan>();
    plan->recompute_bottleneck = options.layer().memory() == MemoryMode::shared_ultra;
    if constexpr (detail::is_dense_layer<Layer>::value) {
      using Attention = typename Layer::Impl::AttentionType;
      for (auto& layer : layers) {
        auto impl = layer.ptr();
        detail::SharedBlockLayer s;
        s.norm1 = impl->norm1.ptr();
        s.conv1 = impl->conv1.ptr();
        s.norm2 = impl->norm2.ptr();
        s.conv2 = impl->conv2.ptr();
        if constexpr (!attention_traits<Attention>::is_identity) {
          s.attention = [impl](const torch::Tensor& t) { return impl->attention->forward(t); };
          s.attention_parameters = impl->attention->parameters();
        }
        s.drop_rate = impl->options.drop_rate();
        plan->layers.push_back(std::move(s));
      }
    }
    return plan;
  }
};

/// Module holder for `DenseBlockImpl<Layer>`.
template <typename Layer = DenseLayer<SEBlock<Sigmoid>>>
class DenseBlock : public torch::nn::ModuleHolder<DenseBlockImpl<Layer>> {
 public:
  using torch::nn::ModuleHolder<DenseBlockImpl<Layer>>::ModuleHolder;
  using Impl = DenseBlockImpl<Layer>;
};

}  // namespace sedensenet
