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
class TransitionImpl : public torch::nn::Cloneable<TransitionImpl> {
 public:
  /// Side of the square average-pooling window, and its stride.
  static constexpr int64_t kPoolSize = 2;

  explicit TransitionImpl(TransitionOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.in_channels() >= 1, "TransitionOptions: in_channels must be >= 1, got ",
                options.in_channels());
    TORCH_CHECK(options.out_channels() >= 1, "TransitionOptions: out_channels must be >= 1, got ",
                options.out_channels());
    norm = register_module("norm", torch::nn::BatchNorm2d(options.in_channels()));
    conv = register_module(
        "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(),
                                                           options.out_channels(), 1)
                                      .stride(1)
                                      .bias(false)));
    init::reference_conv_(*conv);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto compressed = conv->forward(batch_norm_relu(x, *norm));
    return torch::avg_pool2d(compressed, kPoolSize, kPoolSize);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "sedensenet::Transition(in_channels=" << options.in_channels()
           << ", out_channels=" << options.out_channels() << ")";
  }

  TransitionOptions options;
  torch::nn::BatchNorm2d norm{nullptr};
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Transition);

}  // namespace sedensenet
