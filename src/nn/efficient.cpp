// The efficient dense layer's autograd functions (see sedensenet/nn/efficient.hpp for what they
// keep and why they are exact).
#include "sedensenet/nn/efficient.hpp"

#include <torch/autograd.h>

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <variant>
#include <vector>

#include "recompute.hpp"

namespace sedensenet {
namespace detail {

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
    NormConvGeometry(*modules.norm, *modules.conv).save(ctx);
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
    auto grads = norm_relu_conv_backward(NormConvGeometry::load(ctx), grad_outputs[0], x, norm_weight, norm_bias,
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
    NormConvGeometry(*modules.norm, *modules.conv).save(ctx);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    check_no_double_backward();
    auto saved = ctx->get_saved_variables();
    const std::array<bool, 4> needs = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                       ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
    auto grads = norm_relu_conv_backward(NormConvGeometry::load(ctx), grad_outputs[0], saved[0], saved[1], saved[2],
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

