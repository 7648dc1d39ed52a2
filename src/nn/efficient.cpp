// The efficient dense layer's autograd functions (see sedensenet/nn/efficient.hpp for what they
// keep and why they are exact).
#include "sedensenet/nn/efficient.hpp"

#include <torch/autograd.h>

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <variant>
#include <vector>

#include "sedensenet/nn/batch_norm_relu.hpp"

namespace sedensenet {
namespace detail {

inline std::vector<int64_t> conv_attribute(const torch::ExpandingArray<2>& value) {
  return {(*value)[0], (*value)[1]};
}

/// Saves what the backward needs to call convolution_backward with the conv's own geometry.
inline void save_conv_geometry(torch::autograd::AutogradContext* ctx,
                               const torch::nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  ctx->saved_data["stride"] = conv_attribute(o.stride());
  ctx->saved_data["padding"] = conv_attribute(explicit_padding(o.padding()));
  ctx->saved_data["dilation"] = conv_attribute(o.dilation());
  ctx->saved_data["groups"] = o.groups();
}

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

/// Back-propagates `grad_out` through conv(relu(batch_norm(x))), recomputing the activation from
/// the saved statistics and applying the convolution's backward directly (no second forward of
/// the convolution). `packed_mask`: the forward's ReLU mask (`NormReLUStep::mask`), undefined on
/// the fused path. Returns {grad_x, grad_norm_weight, grad_norm_bias, grad_conv_weight};
/// entries not asked for in `needs` ({x, norm weight, norm bias, conv weight}) are undefined.
inline std::array<torch::Tensor, 4> norm_relu_conv_backward(
    torch::autograd::AutogradContext* ctx, const torch::Tensor& grad_out, const torch::Tensor& x,
    const torch::Tensor& norm_weight, const torch::Tensor& norm_bias, const torch::Tensor& mean,
    const torch::Tensor& invstd, const torch::Tensor& packed_mask, const torch::Tensor& conv_weight,
    std::array<bool, 4> needs) {
  const double eps = ctx->saved_data["eps"].toDouble();
  const auto stride = ctx->saved_data["stride"].toIntVector();
  const auto padding = ctx->saved_data["padding"].toIntVector();
  const auto dilation = ctx->saved_data["dilation"].toIntVector();
  const int64_t groups = ctx->saved_data["groups"].toInt();
  const bool fused = !packed_mask.defined();

  // The activation, for the convolution's weight gradient: on the fused path bit for bit the
  // forward's; elsewhere equal to it up to rounding (the ReLU's mask comes from `packed_mask`).
  auto activated = fused ? fused_norm_relu_recompute(x, norm_weight, norm_bias, mean, invstd)
                         : normalize_relu(x, norm_weight, norm_bias, mean, invstd);

  const bool need_activation_grad = needs[0] || needs[1] || needs[2];
  // Under autocast the forward's convolution ran in a lower precision: its output's type, which
  // the incoming gradient has. The backward runs it in that type too (the same rounded input and
  // weight), as autograd would through autocast's casts, and hands back gradients in the types of
  // the batch norm's output (x's) and of the weight.
  const auto conv_type = grad_out.scalar_type();
  const bool cast = conv_type != activated.scalar_type() || conv_type != conv_weight.scalar_type();
  auto [grad_activated, grad_conv_weight, unused_bias_grad] = at::convolution_backward(
      grad_out, cast ? activated.to(conv_type) : activated,
      cast ? conv_weight.to(conv_type) : conv_weight, /*bias_sizes=*/c10::nullopt, stride,
      padding, dilation, /*transposed=*/false, /*output_padding=*/{0, 0}, groups,
      {need_activation_grad, needs[3], false});
  (void)unused_bias_grad;
  if (cast && grad_activated.defined()) grad_activated = grad_activated.to(x.scalar_type());
  if (cast && grad_conv_weight.defined()) {
    grad_conv_weight = grad_conv_weight.to(conv_weight.scalar_type());
  }

  std::array<torch::Tensor, 4> grads;
  grads[3] = needs[3] ? grad_conv_weight : torch::Tensor();
  if (need_activation_grad && fused) {
    // The fused backward applies the forward's ReLU mask (recomputed from x) itself.
    activated = torch::Tensor();
    auto [grad_x, grad_weight, grad_bias] = fused_norm_relu_backward(
        grad_activated, x, norm_weight, norm_bias, mean, invstd, needs[0]);
    grads[0] = needs[0] ? grad_x : torch::Tensor();
    grads[1] = needs[1] ? grad_weight : torch::Tensor();
    grads[2] = needs[2] ? grad_bias : torch::Tensor();
  } else if (need_activation_grad) {
    // The ReLU's backward in place with the forward's mask (the activation's gradient is not
    // needed afterwards), after releasing the activation, before the batch-norm backward
    // allocates: the backward's transient peak is three tensors of the layer input's size.
    activated = torch::Tensor();
    auto& grad_normalized =
        grad_activated.masked_fill_(unpack_relu_mask(packed_mask, grad_activated).logical_not(), 0);
    auto [grad_x, grad_weight, grad_bias] = at::native_batch_norm_backward(
        grad_normalized, x, norm_weight, /*running_mean=*/{}, /*running_var=*/{}, mean, invstd,
        /*train=*/true, eps, {needs[0], needs[1], needs[2]});
    grads[0] = needs[0] ? grad_x : torch::Tensor();
    grads[1] = needs[1] ? grad_weight : torch::Tensor();
    grads[2] = needs[2] ? grad_bias : torch::Tensor();
  }
  return grads;
}

inline void check_no_double_backward() {
  TORCH_CHECK(!torch::GradMode::is_enabled(),
              "the efficient dense layer (MemoryMode::efficient*) does not support double "
              "backward (create_graph=true); build the model with MemoryMode::standard for "
              "higher-order gradients");
}

/// cat(features) -> norm1 -> relu1 -> conv1, recomputing all but the output in backward.
struct BottleneckInputFunction : public torch::autograd::Function<BottleneckInputFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               torch::TensorList features, const torch::Tensor& norm_weight,
                               const torch::Tensor& norm_bias, const torch::Tensor& conv_weight,
                               NormConvModules modules) {
    std::vector<int64_t> channels;
    channels.reserve(features.size());
    for (const auto& f : features) channels.push_back(f.size(1));
    torch::Tensor out, mean, invstd, mask;
    {
      // Temporaries die at the end of this scope: only `out` and the statistics survive.
      auto x = features.size() == 1 ? features[0] : torch::cat(features, 1);
      auto step = norm_relu_training_forward(*modules.norm, x);  // running statistics: once
      mean = step.mean;
      invstd = step.invstd;
      mask = step.mask;
      out = modules.conv->forward(step.output);
    }
    std::vector<torch::Tensor> saved(features.begin(), features.end());
    saved.push_back(norm_weight);
    saved.push_back(norm_bias);
    saved.push_back(conv_weight);
    saved.push_back(mean);
    saved.push_back(invstd);
    saved.push_back(mask);
    ctx->save_for_backward(saved);
    ctx->saved_data["channels"] = channels;
    ctx->saved_data["eps"] = modules.norm->options.eps();
    save_conv_geometry(ctx, *modules.conv);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    check_no_double_backward();
    auto saved = ctx->get_saved_variables();
    const auto channels = ctx->saved_data["channels"].toIntVector();
    const size_t n = channels.size();
    std::vector<torch::Tensor> features(saved.begin(), saved.begin() + static_cast<long>(n));
    const auto& norm_weight = saved[n];
    const auto& norm_bias = saved[n + 1];
    const auto& conv_weight = saved[n + 2];

    bool need_features = false;
    for (size_t i = 0; i < n; ++i) need_features = need_features || ctx->needs_input_grad(i);
    const std::array<bool, 4> needs = {need_features, ctx->needs_input_grad(n),
                                       ctx->needs_input_grad(n + 1), ctx->needs_input_grad(n + 2)};

    auto x = n == 1 ? features[0] : torch::cat(features, 1);
    auto grads = norm_relu_conv_backward(ctx, grad_outputs[0], x, norm_weight, norm_bias,
                                         saved[n + 3], saved[n + 4], saved[n + 5], conv_weight,
                                         needs);
    x = torch::Tensor();

    // One slot per forward argument; the last (the modules) is not a tensor and gets none.
    torch::autograd::variable_list result(n + 4);
    if (need_features) {
      auto pieces = n == 1 ? std::vector<torch::Tensor>{grads[0]}
                           : grads[0].split_with_sizes(channels, 1);
      for (size_t i = 0; i < n; ++i) {
        if (ctx->needs_input_grad(i)) result[i] = pieces[i];
      }
    }
    result[n] = grads[1];
    result[n + 1] = grads[2];
    result[n + 2] = grads[3];
    return result;
  }
};

/// bottleneck -> norm2 -> relu2 -> conv2, recomputing norm2 and relu2 in backward.
struct BottleneckOutputFunction : public torch::autograd::Function<BottleneckOutputFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               const torch::Tensor& bottleneck, const torch::Tensor& norm_weight,
                               const torch::Tensor& norm_bias, const torch::Tensor& conv_weight,
                               NormConvModules modules) {
    auto step = norm_relu_training_forward(*modules.norm, bottleneck);  // running stats: once
    auto out = modules.conv->forward(step.output);
    ctx->save_for_backward(
        {bottleneck, norm_weight, norm_bias, conv_weight, step.mean, step.invstd, step.mask});
    ctx->saved_data["eps"] = modules.norm->options.eps();
    save_conv_geometry(ctx, *modules.conv);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    check_no_double_backward();
    auto saved = ctx->get_saved_variables();
    const std::array<bool, 4> needs = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                       ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
    auto grads = norm_relu_conv_backward(ctx, grad_outputs[0], saved[0], saved[1], saved[2],
                                         saved[4], saved[5], saved[6], saved[3], needs);
    return {grads[0], grads[1], grads[2], grads[3], /*modules=*/torch::Tensor()};
  }
};

torch::Tensor efficient_bottleneck_input(torch::TensorList features,
                                         const torch::Tensor& norm_weight,
                                         const torch::Tensor& norm_bias,
                                         const torch::Tensor& conv_weight,
                                         NormConvModules modules) {
  return BottleneckInputFunction::apply(features, norm_weight, norm_bias, conv_weight, modules);
}

torch::Tensor efficient_bottleneck_output(const torch::Tensor& bottleneck,
                                          const torch::Tensor& norm_weight,
                                          const torch::Tensor& norm_bias,
                                          const torch::Tensor& conv_weight,
                                          NormConvModules modules) {
  return BottleneckOutputFunction::apply(bottleneck, norm_weight, norm_bias, conv_weight, modules);
}

}  // namespace detail
}  // namespace sedensenet

