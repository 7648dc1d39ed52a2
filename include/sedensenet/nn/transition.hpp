#pragma once
/// \file
/// `Transition`: the layer between two dense blocks that compresses channels and halves the size.

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "sedensenet/nn/batch_norm_relu.hpp"
#include "sedensenet/nn/dense_layer.hpp"
#include "sedensenet/nn/options.hpp"

namespace sedensenet {

/// norm (BN) -> relu -> conv (1x1, in -> out channels, no bias) -> pool (2x2 average, stride 2).
///
/// Requires: input (N, in_channels, H, W).
/// Guarantees: output (N, out_channels, floor(H / 2), floor(W / 2)); parameters `norm.*` and
/// `conv.weight`, as PyTorch's `_Transition`.
///
/// Example:
/// ```
/// sedensenet::Transition t(sedensenet::TransitionOptions(256, 128));
/// auto y = t->forward(x);  // (N, 256, 56, 56) -> (N, 128, 28, 28)
/// ```
class TransitionImpl : public torch::nn::Cloneable<TransitionImpl>, public MemoryConfigurable {
 public:
  /// Side of the square average-pooling window, and its stride.
  static constexpr int64_t kPoolSize = 2;

  explicit TransitionImpl(TransitionOptions options);

  void reset() override;

  torch::Tensor forward(const torch::Tensor& x);

  /// Whether a forward of x recomputes the norm and ReLU in backward: a non-standard memory mode,
  /// training, gradients enabled and needed.
  bool uses_efficient_path(const torch::Tensor& x) const;

  void set_memory(MemoryMode mode) override { options.memory(mode); }

  void pretty_print(std::ostream& stream) const override;

  TransitionOptions options;
  torch::nn::BatchNorm2d norm{nullptr};
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Transition);

}  // namespace sedensenet
