#pragma once
// Private to the library: the training-mode batch norm + ReLU + convolution steps that the
// recomputing layers share (nn/efficient.cpp, per layer; nn/shared_block.cpp, per block). Each
// forward keeps the batch statistics (and, off the fused kernels, the ReLU mask); each backward
// rebuilds the activation from those and applies the convolution's backward directly.
#include <torch/autograd.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

#include <ATen/ATen.h>
#include <c10/util/strides.h>

#include <array>
#include <cstdint>
#include <variant>
#include <vector>

#include "sedensenet/nn/batch_norm_relu.hpp"
#include "sedensenet/nn/efficient.hpp"

namespace sedensenet {
namespace detail {

inline std::vector<int64_t> conv_attribute(const torch::ExpandingArray<2>& value) {
  return {(*value)[0], (*value)[1]};
}

/// What `convolution_backward` needs of a convolution besides its tensors, and the epsilon of the
/// batch norm before it.
struct NormConvGeometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  double eps = 1e-5;

  NormConvGeometry() = default;
  NormConvGeometry(const torch::nn::BatchNorm2dImpl& norm, const torch::nn::Conv2dImpl& conv)
      : stride(conv_attribute(conv.options.stride())),
        padding(conv_attribute(explicit_padding(conv.options.padding()))),
        dilation(conv_attribute(conv.options.dilation())),
        groups(conv.options.groups()),
        eps(norm.options.eps()) {}

  void save(torch::autograd::AutogradContext* ctx) const {
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["eps"] = eps;
  }
  static NormConvGeometry load(torch::autograd::AutogradContext* ctx) {
    NormConvGeometry g;
    g.stride = ctx->saved_data["stride"].toIntVector();
    g.padding = ctx->saved_data["padding"].toIntVector();
    g.dilation = ctx->saved_data["dilation"].toIntVector();
    g.groups = ctx->saved_data["groups"].toInt();
    g.eps = ctx->saved_data["eps"].toDouble();
    return g;
  }
};

/// A training-mode batch norm forward that also returns the batch statistics it used.
struct BatchNormStep {
  torch::Tensor output;
  torch::Tensor mean;    ///< per-channel batch mean
  torch::Tensor invstd;  ///< per-channel 1 / sqrt(batch variance + eps)
};

/// Exactly what `BatchNorm2dImpl::forward` does in training mode (the same kernel, through
/// `_batch_norm_impl_index`, which `torch::batch_norm` calls, so outputs and running statistics
/// are identical), but keeping the batch statistics for the backward pass.
inline BatchNormStep batch_norm_training_forward(torch::nn::BatchNorm2dImpl& bn,
                                                 const torch::Tensor& x) {
  const auto& o = bn.options;
  TORCH_CHECK(x.size(0) * x.size(2) * x.size(3) > 1,
              "Expected more than 1 value per channel when training, got input size ", x.sizes());
  double factor = o.momentum().value_or(0.0);
  if (o.track_running_stats() && bn.num_batches_tracked.defined()) {
    bn.num_batches_tracked += 1;
    if (!o.momentum().has_value()) factor = 1.0 / bn.num_batches_tracked.item<double>();
  }
  auto result = at::_batch_norm_impl_index(
      x, bn.weight, bn.bias, o.track_running_stats() ? bn.running_mean : torch::Tensor(),
      o.track_running_stats() ? bn.running_var : torch::Tensor(), /*training=*/true, factor,
      o.eps(), at::globalContext().userEnabledCuDNN());
  return {std::get<0>(result), std::get<1>(result), std::get<2>(result)};
}

/// relu(batch_norm(x)) recomputed from saved batch statistics: x * scale + shift (the CPU
/// batch-norm kernel's own formula) and an in-place ReLU. No reduction over the
/// batch and no running statistics involved.
inline torch::Tensor normalize_relu(const torch::Tensor& x, const torch::Tensor& weight,
                                    const torch::Tensor& bias, const torch::Tensor& mean,
                                    const torch::Tensor& invstd) {
  auto scale = weight.defined() ? invstd * weight : invstd;
  auto shift = bias.defined() ? bias - mean * scale : -(mean * scale);
  const std::vector<int64_t> per_channel = {1, x.size(1), 1, 1};
  // Two simple passes beat one broadcasting addcmul here (measured: 2.3 ms against 5.1 ms for a
  // 64x120x32x32 float tensor on 2 threads).
  auto normalized = x * scale.view(per_channel);
  normalized.add_(shift.view(per_channel));
  return at::relu_(normalized);
}

torch::Tensor pack_relu_mask(const torch::Tensor& activated) {
  auto bits = activated.gt(0).flatten();
  const int64_t n = bits.numel();
  if (n % 8 != 0) bits = torch::cat({bits, torch::zeros({8 - n % 8}, bits.options())});
  const auto place = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, torch::kUInt8).to(bits.device());
  return bits.view({-1, 8}).to(torch::kUInt8).mul_(place).sum(1, false, torch::kUInt8);
}

torch::Tensor unpack_relu_mask(const torch::Tensor& packed, const torch::Tensor& like) {
  const auto place = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, torch::kUInt8).to(packed.device());
  return packed.unsqueeze(1).bitwise_and(place).ne(0).flatten().narrow(0, 0, like.numel())
      .view(like.sizes());
}

/// relu(norm(x)) in training mode, with the statistics it used and the running statistics
/// updated once (as `norm->forward`). How the backward gets the forward's ReLU mask exactly:
/// - fused kernels (`uses_fused_batch_norm`: float32 CPU training): the same kernels as a standard
///   layer; the backward recomputes the mask with the forward's arithmetic. `mask` is undefined.
/// - elsewhere (LibTorch's batch norm, whose rounding depends on how LibTorch was built, so a
///   recomputation cannot be trusted to land on the same side of zero): the output is LibTorch's,
///   as in a standard layer, and `mask` keeps its ReLU mask, one bit per element.
struct NormReLUStep {
  torch::Tensor output;
  torch::Tensor mean;
  torch::Tensor invstd;
  torch::Tensor mask;  ///< packed ReLU mask (`pack_relu_mask`); undefined on the fused path
};

inline NormReLUStep norm_relu_training_forward(torch::nn::BatchNorm2dImpl& norm,
                                               const torch::Tensor& x) {
  if (uses_fused_batch_norm(x, norm)) {
    auto step = fused_norm_relu_forward(x, norm.weight, norm.bias, norm.options.eps());
    update_running_statistics(norm, step.mean, step.var, x.numel() / x.size(1));
    return {step.output, step.mean, step.invstd, torch::Tensor()};
  }
  auto bn = batch_norm_training_forward(norm, x);
  auto activated = torch::relu_(bn.output);
  auto mask = pack_relu_mask(activated);
  return {activated, bn.mean, bn.invstd, mask};
}

/// The forward's relu(norm(x)) rebuilt from the saved statistics: on the fused path (no
/// `packed_mask`) bit for bit the forward's; elsewhere equal to it up to rounding (the ReLU's mask
/// for the backward comes from `packed_mask`).
inline torch::Tensor recompute_norm_relu(const torch::Tensor& x, const torch::Tensor& weight,
                                         const torch::Tensor& bias, const torch::Tensor& mean,
                                         const torch::Tensor& invstd,
                                         const torch::Tensor& packed_mask) {
  return packed_mask.defined() ? normalize_relu(x, weight, bias, mean, invstd)
                               : fused_norm_relu_recompute(x, weight, bias, mean, invstd);
}

/// A contiguous tensor with x's sizes and type for `convolution_backward`'s input argument when
/// it computes only the input's gradient, which reads the input's sizes, not its values: x itself
/// when contiguous, else an alias over x's own memory when it is large enough (the channels
/// `buffer[:, :C]` of a shared block), else undefined.
inline torch::Tensor input_shape_of(const torch::Tensor& x) {
  if (x.is_contiguous()) return x;
  const auto needed = (x.storage_offset() + x.numel()) * static_cast<int64_t>(x.element_size());
  if (!x.has_storage() || static_cast<int64_t>(x.storage().nbytes()) < needed) return {};
  return at::empty({0}, x.options())
      .set_(x.storage(), x.storage_offset(), x.sizes(), c10::contiguous_strides(x.sizes()));
}

/// Back-propagates `grad_out` through conv(relu(batch_norm(x))), recomputing the activation from
/// the saved statistics and applying the convolution's backward directly (no second forward of
/// the convolution). `packed_mask`: the forward's ReLU mask (`NormReLUStep::mask`), undefined on
/// the fused path. Returns {grad_x, grad_norm_weight, grad_norm_bias, grad_conv_weight};
/// entries not asked for in `needs` ({x, norm weight, norm bias, conv weight}) are undefined.
/// With `grad_x_into` defined (x's sizes and layout), x's gradient is added to it in place (by
/// the fused kernel itself where it applies) and grads[0] is undefined.
inline std::array<torch::Tensor, 4> norm_relu_conv_backward(
    const NormConvGeometry& geometry, const torch::Tensor& grad_out, const torch::Tensor& x,
    const torch::Tensor& norm_weight, const torch::Tensor& norm_bias, const torch::Tensor& mean,
    const torch::Tensor& invstd, const torch::Tensor& packed_mask, const torch::Tensor& conv_weight,
    std::array<bool, 4> needs, const torch::Tensor& grad_x_into = torch::Tensor()) {
  const double eps = geometry.eps;
  const bool fused = !packed_mask.defined();
  const bool need_activation_grad = needs[0] || needs[1] || needs[2];
  // Under autocast the forward's convolution ran in a lower precision: its output's type, which
  // the incoming gradient has. The backward runs it in that type too (the same rounded input and
  // weight), as autograd would through autocast's casts, and hands back gradients in the types of
  // the batch norm's output (x's) and of the weight.
  const auto conv_type = grad_out.scalar_type();
  const bool cast = conv_type != x.scalar_type() || conv_type != conv_weight.scalar_type();
  auto convolution_backward = [&](const torch::Tensor& input, std::array<bool, 3> mask) {
    return at::convolution_backward(grad_out, input, cast ? conv_weight.to(conv_type) : conv_weight,
                                    /*bias_sizes=*/c10::nullopt, geometry.stride,
                                    geometry.padding, geometry.dilation, /*transposed=*/false,
                                    /*output_padding=*/{0, 0}, geometry.groups, mask);
  };

  // The weight's gradient first, from the recomputed activation, which is then released: the
  // input's gradient does not read it. So a layer's backward never holds the activation, its
  // gradient and the convolution's own copy of either at once (one input-sized tensor less at
  // the peak); the convolution's two products are computed by the same kernels as in one call.
  torch::Tensor grad_activated, grad_conv_weight;
  torch::Tensor activated;
  if (needs[3]) {
    activated = recompute_norm_relu(x, norm_weight, norm_bias, mean, invstd, packed_mask);
    grad_conv_weight =
        std::get<1>(convolution_backward(cast ? activated.to(conv_type) : activated,
                                         {false, true, false}));
    if (cast) grad_conv_weight = grad_conv_weight.to(conv_weight.scalar_type());
  }
  if (need_activation_grad) {
    // Only the input's sizes matter here: x when it is contiguous (no copy), else a contiguous
    // alias of x's own memory, else the activation.
    auto shape = input_shape_of(x);
    if (!shape.defined()) {
      if (!activated.defined()) {
        activated = recompute_norm_relu(x, norm_weight, norm_bias, mean, invstd, packed_mask);
      }
      shape = activated;
    }
    activated = torch::Tensor();
    grad_activated = std::get<0>(convolution_backward(
        cast ? shape.to(conv_type) : shape, {true, false, false}));
    shape = torch::Tensor();
    if (cast) grad_activated = grad_activated.to(x.scalar_type());
  }
  activated = torch::Tensor();

  std::array<torch::Tensor, 4> grads;
  grads[3] = needs[3] ? grad_conv_weight : torch::Tensor();
  if (need_activation_grad && fused) {
    // The fused backward applies the forward's ReLU mask (recomputed from x) itself.
    auto [grad_x, grad_weight, grad_bias] = fused_norm_relu_backward(
        grad_activated, x, norm_weight, norm_bias, mean, invstd, needs[0], grad_x_into);
    grads[0] = needs[0] ? grad_x : torch::Tensor();
    grads[1] = needs[1] ? grad_weight : torch::Tensor();
    grads[2] = needs[2] ? grad_bias : torch::Tensor();
  } else if (need_activation_grad) {
    // The ReLU's backward in place with the forward's mask (the activation's gradient is not
    // needed afterwards), before the batch-norm backward allocates.
    auto& grad_normalized =
        grad_activated.masked_fill_(unpack_relu_mask(packed_mask, grad_activated).logical_not(), 0);
    auto [grad_x, grad_weight, grad_bias] = at::native_batch_norm_backward(
        grad_normalized, x, norm_weight, /*running_mean=*/{}, /*running_var=*/{}, mean, invstd,
        /*train=*/true, eps, {needs[0], needs[1], needs[2]});
    if (needs[0] && grad_x_into.defined()) {
      grad_x_into.add_(grad_x);
      grad_x = torch::Tensor();
    }
    grads[0] = needs[0] ? grad_x : torch::Tensor();
    grads[1] = needs[1] ? grad_weight : torch::Tensor();
    grads[2] = needs[2] ? grad_bias : torch::Tensor();
  }
  return grads;
}

inline void check_no_double_backward() {
  TORCH_CHECK(!torch::GradMode::is_enabled(),
              "the recomputing dense layers (MemoryMode efficient, efficient_input_only, shared "
              "and shared_ultra) do not support double backward (create_graph=true); build the model with MemoryMode::standard for "
              "higher-order gradients");
}

}  // namespace detail
}  // namespace sedensenet
