#pragma once
/// \file
/// The memory-efficient dense layer: two custom autograd functions that keep only what grows
/// linearly with depth and recompute the rest in the backward pass.
///
///   BottleneckInputFunction:  features... -> cat -> norm1 -> relu1 -> conv1   (keeps: nothing new)
///   BottleneckOutputFunction: bottleneck  -> norm2 -> relu2 -> conv2          (keeps: nothing new)
///
/// In a standard layer autograd keeps the concatenation and relu1's output (C_in channels each,
/// growing with depth, hence quadratic memory over a block; the ReLUs run in place, as the
/// reference's, so norm1's output is not kept separately), conv1's output (bn_size * k) and
/// relu2's output (bn_size * k). Here the forward pass runs
/// without recording, keeping only references to tensors that live anyway: the earlier layers'
/// outputs (they are part of the block's output) and conv1's output (the output of the first
/// function, needed by the second). The backward pass recomputes the rest from those.
///
/// Exactness: the forward keeps the per-channel batch mean and inverse standard deviation (a few
/// floats per channel) and updates the BatchNorm running statistics once. The backward recomputes
/// the activation from those (no reduction, no running statistics, so the statistics are never
/// touched twice, unlike the Python reference's checkpoint) and applies the convolution's
/// backward directly with `convolution_backward`, without running the convolution again.
/// The recomputed activation, and so the ReLU mask the backward uses, is bit for bit the one the
/// forward produced: where the fused kernels apply (float32 CPU training) forward, recompute and
/// backward are the fused kernels of the standard layer (`batch_norm_relu`), so efficient and
/// standard layers compute the same function with the same rounding; elsewhere (LibTorch's batch
/// norm: fused kernels off, float64, CUDA) the forward keeps its ReLU mask, one bit per element.
///
/// These are implementation details of `DenseLayer`; use `DenseLayerOptions::memory` or
/// `DenseNetOptions::memory` to turn them on.

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <variant>

namespace sedensenet {
namespace detail {

/// Whether a training forward of `module` on `inputs` records anything for backward: the module
/// is training, gradients are enabled, and an input or one of its parameters needs a gradient.
/// Where it does not, the recomputing layers run their plain path (there is nothing to save).
inline bool records_for_backward(const torch::nn::Module& module, torch::TensorList inputs) {
  if (!module.is_training() || !torch::GradMode::is_enabled()) return false;
  for (const auto& t : inputs) {
    if (t.requires_grad()) return true;
  }
  for (const auto& p : module.parameters()) {
    if (p.requires_grad()) return true;
  }
  return false;
}

/// Non-tensor arguments of the efficient functions (not traversed by autograd).
struct NormConvModules {
  torch::nn::BatchNorm2dImpl* norm;
  torch::nn::Conv2dImpl* conv;
};

/// The explicit padding of a convolution. LibTorch 1.x keeps the padding in a c10::variant and
/// 2.x in a std::variant; `using std::get` plus argument-dependent lookup serves both.
template <typename PaddingVariant>
const torch::ExpandingArray<2>& explicit_padding(const PaddingVariant& padding) {
  using std::get;
  using std::holds_alternative;
  TORCH_CHECK(holds_alternative<torch::ExpandingArray<2>>(padding),
              "expected a convolution with explicit padding (not 'same' or 'valid')");
  return get<torch::ExpandingArray<2>>(padding);
}

/// cat(features) -> norm1 -> relu1 -> conv1 in training mode, recording one autograd node
/// (`BottleneckInputFunction`) that recomputes all but the output in backward. The weights are
/// `modules`' own, passed as tensors so that autograd sees them.
torch::Tensor efficient_bottleneck_input(torch::TensorList features,
                                         const torch::Tensor& norm_weight,
                                         const torch::Tensor& norm_bias,
                                         const torch::Tensor& conv_weight,
                                         NormConvModules modules);

/// bottleneck -> norm2 -> relu2 -> conv2 in training mode, recording one autograd node
/// (`BottleneckOutputFunction`) that recomputes norm2 and relu2 in backward.
torch::Tensor efficient_bottleneck_output(const torch::Tensor& bottleneck,
                                          const torch::Tensor& norm_weight,
                                          const torch::Tensor& norm_bias,
                                          const torch::Tensor& conv_weight,
                                          NormConvModules modules);

/// The ReLU mask `activated > 0` packed eight elements to a byte, with LibTorch's ops (any
/// device): 1/32 of the activation's float32 bytes.
torch::Tensor pack_relu_mask(const torch::Tensor& activated);

/// The boolean mask, of `like`'s shape, that `pack_relu_mask` packed.
torch::Tensor unpack_relu_mask(const torch::Tensor& packed, const torch::Tensor& like);

}  // namespace detail
}  // namespace sedensenet
