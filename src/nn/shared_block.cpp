// The shared-storage dense block's autograd function (see sedensenet/nn/shared_block.hpp for the
// buffer layout, what is kept and why the result is exact).
#include "sedensenet/nn/shared_block.hpp"

#include <torch/autograd.h>
#include <torch/nn/functional/dropout.h>

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "recompute.hpp"

namespace sedensenet {
namespace detail {
namespace {

// Per layer, the saved tensors, in this order.
enum Saved : size_t {
  kBottleneck,   // conv1's output (undefined in shared_ultra)
  kConvOutput,   // conv2's output, the attention's input (undefined without attention)
  kNoise,        // dropout's scaled mask (undefined without dropout)
  kMean1,
  kInvstd1,
  kMask1,
  kMean2,
  kInvstd2,
  kMask2,
  kSavedPerLayer
};

// Per layer, the parameters passed to the function, in this order, then the attention's.
enum Parameter : size_t { kNorm1Weight, kNorm1Bias, kConv1Weight, kNorm2Weight, kNorm2Bias,
                          kConv2Weight, kBodyParameters };

struct Offsets {
  std::vector<int64_t> channels;    // C_i: channels of layer i's input
  std::vector<int64_t> growth;      // k_i: channels layer i writes
  std::vector<size_t> parameter;    // index of layer i's first parameter in the parameter list
  size_t parameters = 0;
};

Offsets offsets_of(const SharedBlockPlan& plan, int64_t in_channels) {
  Offsets o;
  int64_t c = in_channels;
  size_t p = 0;
  for (const auto& layer : plan.layers) {
    o.channels.push_back(c);
    o.growth.push_back(layer.conv2->options.out_channels());
    o.parameter.push_back(p);
    c += o.growth.back();
    p += kBodyParameters + layer.attention_parameters.size();
  }
  o.parameters = p;
  return o;
}

// How many references to the incoming gradient a custom function's backward sees when nothing
// but the autograd engine holds it (the engine's own copies plus the argument): measured once,
// since LibTorch versions differ. A gradient with exactly this many, and no other tensor on its
// memory, is one no one else can see: the backward may accumulate into it.
struct ReferenceProbe : public torch::autograd::Function<ReferenceProbe> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) {
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grad_outputs) {
    seen() = static_cast<int64_t>(grad_outputs[0].use_count());
    return {grad_outputs[0]};
  }
  static int64_t& seen() {
    static int64_t references = -1;
    return references;
  }
};

}  // namespace

int64_t engine_gradient_references() {
  static const int64_t references = [] {
    torch::AutoGradMode enable_grad(true);
    auto x = torch::zeros({2}).requires_grad_(true);
    // The gradient reaching the probe is MulBackward's product: fresh and held by nothing else.
    (ReferenceProbe::apply(x) * 2.0).sum().backward();
    // LibTorch 1.13 to 2.x: the engine's list, the list built for the call and the argument. A
    // count above that means something else held the probe's gradient: never accumulate in place.
    const int64_t seen = ReferenceProbe::seen();
    return seen >= 1 && seen <= 3 ? seen : -1;  // -1: the incoming gradient is always copied
  }();
  return references;
}

namespace {

// Whether the block's backward may accumulate into the incoming gradient `g` in place rather than
// into a copy: the block output's own shape and layout, and referred to by no one but the engine
// (no hook, no retained or captured gradient, no other view of its memory).
bool owns_incoming_gradient(const torch::Tensor& g, const torch::Tensor& buffer) {
  return g.defined() && !g.requires_grad() && g.is_contiguous() && g.sizes() == buffer.sizes() &&
         g.dtype() == buffer.dtype() && g.device() == buffer.device() && g.has_storage() &&
         g.storage().use_count() == 1 &&
         static_cast<int64_t>(g.use_count()) == engine_gradient_references();
}

c10::intrusive_ptr<SharedBlockPlan> plan_of(torch::autograd::AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<SharedBlockPlan>(ctx->saved_data["plan"].toCapsule());
}

struct SharedBlockFunction : public torch::autograd::Function<SharedBlockFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               torch::TensorList parameters,
                               c10::intrusive_ptr<SharedBlockPlan> plan) {
    const auto offsets = offsets_of(*plan, x.size(1));
    const size_t n = plan->layers.size();
    const int64_t total = offsets.channels.back() + offsets.growth.back();
    auto buffer = at::empty({x.size(0), total, x.size(2), x.size(3)},
                            x.options().memory_format(at::MemoryFormat::Contiguous));
    buffer.narrow(1, 0, x.size(1)).copy_(x);

    std::vector<torch::Tensor> saved;
    saved.reserve(n * kSavedPerLayer + 1);
    for (size_t i = 0; i < n; ++i) {
      const auto& layer = plan->layers[i];
      // The fused kernels read the slice in place. LibTorch's batch norm gets a contiguous copy,
      // as the standard layer's concatenation: it rounds differently on a strided view, and a
      // different rounding near zero is another ReLU mask. The copy lives only for this step.
      auto in = buffer.narrow(1, 0, offsets.channels[i]);
      if (!uses_fused_batch_norm(in, *layer.norm1)) in = in.contiguous();
      auto step1 = norm_relu_training_forward(*layer.norm1, in);  // running statistics: once
      in = torch::Tensor();
      auto bottleneck = layer.conv1->forward(step1.output);
      step1.output = torch::Tensor();
      auto step2 = norm_relu_training_forward(*layer.norm2, bottleneck);
      auto conv_output = layer.conv2->forward(step2.output);
      step2.output = torch::Tensor();
      auto y = layer.attention ? layer.attention(conv_output) : conv_output;
      torch::Tensor noise;
      if (layer.drop_rate > 0.0) {
        // The standard layer's call on a tensor of the same shape: the same random draws, so the
        // same mask under the same seed; ones * noise is the noise exactly.
        noise = torch::dropout(torch::ones_like(y), layer.drop_rate, /*train=*/true);
        y = y * noise;
      }
      buffer.narrow(1, offsets.channels[i], offsets.growth[i]).copy_(y);
      saved.push_back(plan->recompute_bottleneck ? torch::Tensor() : bottleneck);
      saved.push_back(layer.attention ? conv_output : torch::Tensor());
      saved.push_back(noise);
      saved.push_back(step1.mean);
      saved.push_back(step1.invstd);
      saved.push_back(step1.mask);
      saved.push_back(step2.mean);
      saved.push_back(step2.invstd);
      saved.push_back(step2.mask);
    }
    saved.push_back(buffer);  // the output: saved without a copy
    ctx->save_for_backward(saved);
    ctx->saved_data["plan"] = c10::IValue::make_capsule(plan);
    ctx->saved_data["in_channels"] = x.size(1);
    return buffer;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    check_no_double_backward();
    const auto plan = plan_of(ctx);
    const auto saved = ctx->get_saved_variables();
    const auto& buffer = saved.back();
    const int64_t in_channels = ctx->saved_data["in_channels"].toInt();
    const auto offsets = offsets_of(*plan, in_channels);
    const size_t n = plan->layers.size();

    // Slot 0: x; then one per parameter; the plan (not a tensor) gets none.
    torch::autograd::variable_list result(offsets.parameters + 2);
    auto needs_parameter = [&](size_t index) { return ctx->needs_input_grad(1 + index); };
    // needs_before[i]: whether anything feeding layer i's input needs a gradient (the block's
    // input, or any parameter of the layers before i).
    std::vector<bool> needs_before(n + 1, ctx->needs_input_grad(0));
    for (size_t i = 0; i < n; ++i) {
      bool any = needs_before[i];
      const size_t end = i + 1 < n ? offsets.parameter[i + 1] : offsets.parameters;
      for (size_t p = offsets.parameter[i]; p < end; ++p) any = any || needs_parameter(p);
      needs_before[i + 1] = any;
    }

    // The gradient of every feature map, accumulated in place: the layers' contributions to
    // their inputs are added to its first C_i channels. That is the incoming gradient itself
    // when no one else can see it (one block-sized tensor less at the backward's peak), else a
    // copy.
    torch::Tensor grad;
    if (owns_incoming_gradient(grad_outputs[0], buffer)) {
      grad = std::move(grad_outputs[0]);
    } else {
      grad = grad_outputs[0].defined() ? grad_outputs[0].clone(at::MemoryFormat::Contiguous)
                                       : torch::zeros_like(buffer, at::MemoryFormat::Contiguous);
      grad_outputs[0] = torch::Tensor();
    }

    for (size_t r = n; r-- > 0;) {
      if (!needs_before[r + 1]) continue;  // nothing up to this layer needs a gradient
      const auto& layer = plan->layers[r];
      const size_t p = offsets.parameter[r];
      const auto* s = &saved[r * kSavedPerLayer];
      const bool needs_body_below =
          needs_before[r] || needs_parameter(p + kNorm1Weight) ||
          needs_parameter(p + kNorm1Bias) || needs_parameter(p + kConv1Weight);
      const bool needs_conv_output = needs_body_below || needs_parameter(p + kNorm2Weight) ||
                                     needs_parameter(p + kNorm2Bias) ||
                                     needs_parameter(p + kConv2Weight);
      auto grad_y = grad.narrow(1, offsets.channels[r], offsets.growth[r]);

      // Attention and dropout: re-run the (small) attention with autograd on conv2's output.
      torch::Tensor grad_conv_output;
      if (layer.attention) {
        torch::AutoGradMode enable_grad(true);
        auto input = s[kConvOutput].detach().requires_grad_(true);
        auto y = layer.attention(input);
        if (s[kNoise].defined()) y = y * s[kNoise];
        std::vector<torch::Tensor> inputs;
        std::vector<size_t> slots;
        if (needs_conv_output) inputs.push_back(input);
        for (size_t a = 0; a < layer.attention_parameters.size(); ++a) {
          if (needs_parameter(p + kBodyParameters + a)) {
            inputs.push_back(layer.attention_parameters[a]);
            slots.push_back(1 + p + kBodyParameters + a);
          }
        }
        if (!inputs.empty()) {
          auto grads = torch::autograd::grad({y}, inputs, {grad_y}, /*retain_graph=*/false,
                                             /*create_graph=*/false, /*allow_unused=*/true);
          size_t g = 0;
          if (needs_conv_output) grad_conv_output = grads[g++];
          for (size_t slot : slots) result[slot] = grads[g++];
        }
      } else if (needs_conv_output) {
        grad_conv_output = s[kNoise].defined() ? grad_y * s[kNoise] : grad_y.contiguous();
      }
      if (!needs_conv_output) continue;

      // As in the forward: the slice itself for the fused kernels (the mask is kept otherwise).
      auto in = buffer.narrow(1, 0, offsets.channels[r]);
      if (s[kMask1].defined()) in = in.contiguous();
      torch::Tensor bottleneck = s[kBottleneck];
      if (plan->recompute_bottleneck) {
        // shared_ultra: conv1's output again, from the same activation (bit for bit on the fused
        // path) with the same convolution.
        torch::NoGradGuard no_grad;
        bottleneck = layer.conv1->forward(recompute_norm_relu(
            in, layer.norm1->weight, layer.norm1->bias, s[kMean1], s[kInvstd1], s[kMask1]));
      }
      const auto second = norm_relu_conv_backward(
          NormConvGeometry(*layer.norm2, *layer.conv2), grad_conv_output, bottleneck,
          layer.norm2->weight, layer.norm2->bias, s[kMean2], s[kInvstd2], s[kMask2],
          layer.conv2->weight,
          {needs_body_below, needs_parameter(p + kNorm2Weight), needs_parameter(p + kNorm2Bias),
           needs_parameter(p + kConv2Weight)});
      result[1 + p + kNorm2Weight] = second[1];
      result[1 + p + kNorm2Bias] = second[2];
      result[1 + p + kConv2Weight] = second[3];
      grad_conv_output = torch::Tensor();
      bottleneck = torch::Tensor();
      if (!needs_body_below) continue;

      const auto first = norm_relu_conv_backward(
          NormConvGeometry(*layer.norm1, *layer.conv1), second[0], in, layer.norm1->weight,
          layer.norm1->bias, s[kMean1], s[kInvstd1], s[kMask1], layer.conv1->weight,
          {needs_before[r], needs_parameter(p + kNorm1Weight), needs_parameter(p + kNorm1Bias),
           needs_parameter(p + kConv1Weight)},
          // The input's gradient goes straight into the accumulator's first C_i channels.
          needs_before[r] ? grad.narrow(1, 0, offsets.channels[r]) : torch::Tensor());
      result[1 + p + kNorm1Weight] = first[1];
      result[1 + p + kNorm1Bias] = first[2];
      result[1 + p + kConv1Weight] = first[3];
    }
    if (ctx->needs_input_grad(0)) result[0] = grad.narrow(1, 0, in_channels);
    return result;
  }
};

}  // namespace

torch::Tensor shared_block_forward(const torch::Tensor& x,
                                   c10::intrusive_ptr<SharedBlockPlan> plan) {
  TORCH_CHECK(!plan->layers.empty(), "shared_block_forward: a block needs at least one layer");
  const int64_t expected = plan->layers.front().norm1->options.num_features();
  TORCH_CHECK(x.dim() == 4 && x.size(1) == expected,
              "DenseBlock::forward: expected input (N, ", expected, ", H, W) for the block's "
              "in_channels = ", expected, ", got ", x.sizes());
  torch::autograd::variable_list parameters;
  for (const auto& layer : plan->layers) {
    parameters.push_back(layer.norm1->weight);
    parameters.push_back(layer.norm1->bias);
    parameters.push_back(layer.conv1->weight);
    parameters.push_back(layer.norm2->weight);
    parameters.push_back(layer.norm2->bias);
    parameters.push_back(layer.conv2->weight);
    for (const auto& a : layer.attention_parameters) parameters.push_back(a);
  }
  engine_gradient_references();  // measured here, outside any backward pass, once
  // As a TensorList, so that autograd sees each parameter (a vector would be one opaque argument).
  return SharedBlockFunction::apply(x, torch::TensorList(parameters), std::move(plan));
}

}  // namespace detail
}  // namespace sedensenet
