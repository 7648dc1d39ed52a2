#include "sedensenet/serve/inference_graph.hpp"

#include <torch/nn/modules/batchnorm.h>
#include <ATen/Context.h>
#include <torch/nn/modules/conv.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "sedensenet/nn/attention.hpp"
#include "sedensenet/nn/dense_block.hpp"
#include "sedensenet/nn/dense_layer.hpp"
#include "sedensenet/nn/transition.hpp"
#include "onednn_convolution.hpp"

namespace sedensenet::serve {
namespace {

using torch::nn::BatchNorm2dImpl;
using torch::nn::Conv2dImpl;
using torch::nn::Module;

[[noreturn]] void unsupported(const std::string& what) {
  throw std::invalid_argument(
      "InferenceGraph: cannot lower " + what +
      "; the inference path knows DenseNet's own layers (SE or no attention). Serve this model "
      "with its own forward in eval mode (model->eval(); torch::NoGradGuard)");
}

template <typename T>
const T& child(const Module& parent, const std::string& name, const std::string& where) {
  for (const auto& item : parent.named_children()) {
    if (item.key() == name) {
      if (const auto* typed = dynamic_cast<const T*>(item.value().get())) return *typed;
      unsupported(where + "." + name + " (an unexpected module type)");
    }
  }
  unsupported(where + " (it has no " + name + ")");
}

/// Batch norm's eval-mode affine, computed in float64: scale = gamma / sqrt(var + eps),
/// shift = beta - mean * scale.
ScaleShiftReLU fold(const BatchNorm2dImpl& norm) {
  torch::NoGradGuard no_grad;
  const auto var = norm.running_var.to(torch::kFloat64);
  const auto mean = norm.running_mean.to(torch::kFloat64);
  auto scale = torch::rsqrt(var + norm.options.eps());
  auto shift = -mean * scale;
  if (norm.options.affine()) {
    scale = scale * norm.weight.to(torch::kFloat64);
    shift = shift * norm.weight.to(torch::kFloat64) + norm.bias.to(torch::kFloat64);
  }
  return {scale, shift};
}

/// The numbers of a convolution's padding (null for 'same'/'valid'). LibTorch 1.13 keeps it in a
/// c10::variant, 2.x in a std::variant: unqualified get_if finds whichever applies.
template <typename Padding>
const torch::ExpandingArray<2>* explicit_padding(const Padding& padding) {
  using namespace c10;  // NOLINT(google-build-using-namespace)
  using namespace std;  // NOLINT(google-build-using-namespace)
  return get_if<torch::ExpandingArray<2>>(&padding);
}

Convolution convolution(const Conv2dImpl& conv) {
  const auto& o = conv.options;
  Convolution out;
  out.weight = conv.weight.detach().to(torch::kFloat32).contiguous(torch::MemoryFormat::ChannelsLast);
  if (conv.bias.defined()) out.bias = conv.bias.detach().to(torch::kFloat32).clone();
  out.plans = detail::make_convolution_plans();
  out.stride = (*o.stride())[0];
  const auto* padding = explicit_padding(o.padding());
  if (padding == nullptr) unsupported("a convolution with 'same' or 'valid' padding");
  out.padding = (**padding)[0];
  return out;
}

/// conv followed directly by a batch norm: one convolution with a bias.
Convolution fold_into(const Conv2dImpl& conv, const BatchNorm2dImpl& norm) {
  torch::NoGradGuard no_grad;
  const auto folded = fold(norm);
  Convolution out = convolution(conv);
  auto weight = conv.weight.detach().to(torch::kFloat64) * folded.scale.view({-1, 1, 1, 1});
  auto bias = folded.shift;
  if (conv.bias.defined()) bias = bias + conv.bias.detach().to(torch::kFloat64) * folded.scale;
  out.weight = weight.to(torch::kFloat32).contiguous(torch::MemoryFormat::ChannelsLast);
  out.bias = bias.to(torch::kFloat32);
  return out;
}

ScaleShiftReLU norm_relu(const BatchNorm2dImpl& norm) {
  auto folded = fold(norm);
  return {folded.scale.to(torch::kFloat32), folded.shift.to(torch::kFloat32)};
}

template <typename Gate>
bool lower_se(const Module& layer, SEGate gate, DenseLayerGraph& out) {
  const auto* typed = dynamic_cast<const DenseLayerImpl<SEBlock<Gate>>*>(&layer);
  if (typed == nullptr) return false;
  out.has_se = true;
  out.se.fc1 = typed->attention->fc1->weight.detach().to(torch::kFloat32).clone();
  out.se.fc2 = typed->attention->fc2->weight.detach().to(torch::kFloat32).clone();
  out.se.gate = gate;
  return true;
}

DenseLayerGraph lower_layer(const Module& layer, const std::string& where) {
  DenseLayerGraph out;
  const bool known = lower_se<Sigmoid>(layer, SEGate::sigmoid, out) ||
                     lower_se<ScaledSigmoid>(layer, SEGate::scaled_sigmoid, out) ||
                     dynamic_cast<const DenseLayerImpl<NoAttention>*>(&layer) != nullptr;
  if (!known) unsupported(where + " (" + layer.name() + ")");
  out.norm1 = norm_relu(child<BatchNorm2dImpl>(layer, "norm1", where));
  out.conv1 = fold_into(child<Conv2dImpl>(layer, "conv1", where),
                        child<BatchNorm2dImpl>(layer, "norm2", where));
  out.conv2 = convolution(child<Conv2dImpl>(layer, "conv2", where));
  return out;
}

/// Visits every tensor of the graph with its name (`named_tensors`, `to`).
template <typename Graph, typename Visit>
void for_each_tensor(Graph& g, Visit&& visit) {
  auto conv = [&](const std::string& name, auto& c) {
    visit(name + ".weight", c.weight);
    if (c.bias.defined()) visit(name + ".bias", c.bias);
  };
  auto norm = [&](const std::string& name, auto& n) {
    visit(name + ".scale", n.scale);
    visit(name + ".shift", n.shift);
  };
  conv("stem", g.stem);
  for (size_t b = 0; b < g.blocks.size(); ++b) {
    for (size_t l = 0; l < g.blocks[b].layers.size(); ++l) {
      auto& layer = g.blocks[b].layers[l];
      const std::string name = "blocks." + std::to_string(b) + ".layers." + std::to_string(l);
      norm(name + ".norm1", layer.norm1);
      conv(name + ".conv1", layer.conv1);
      conv(name + ".conv2", layer.conv2);
      if (layer.has_se) {
        visit(name + ".se.fc1", layer.se.fc1);
        visit(name + ".se.fc2", layer.se.fc2);
      }
    }
    if (b < g.transitions.size()) {
      const std::string name = "transitions." + std::to_string(b);
      norm(name + ".norm", g.transitions[b].norm);
      conv(name + ".conv", g.transitions[b].conv);
    }
  }
  norm("norm5", g.norm5);
  visit("classifier.weight", g.classifier_weight);
  visit("classifier.bias", g.classifier_bias);
}

torch::Tensor channel_view(const torch::Tensor& t) { return t.view({1, -1, 1, 1}); }

/// shift + x * scale, then ReLU in place: one pass and one allocation, in `format` (a channel
/// slice of a channels-last block output would otherwise come out contiguous, and the next
/// convolution would convert it back).
torch::Tensor apply(const ScaleShiftReLU& n, const torch::Tensor& x,
                    torch::MemoryFormat format = torch::MemoryFormat::Contiguous) {
  auto out = torch::empty(x.sizes(), x.options().memory_format(format));
  torch::addcmul_out(out, channel_view(n.shift), x, channel_view(n.scale));
  return out.relu_();
}

/// How the convolutions run. On a CPU with oneDNN (MKLDNN): channels-last tensors and oneDNN's
/// convolution. LibTorch's conv2d sends small inputs (batch 1, late blocks) to a slow im2col path
/// and converts NCHW inputs for oneDNN at every call; LibTorch's mkldnn_convolution avoids that
/// (1.4x to 2.4x on 2 cores), and the graph's own oneDNN primitives (`Convolution::plans`, made
/// once per shape, ReLU fused) avoid rebuilding the primitive and reordering the weights at every
/// call as well (docs/benchmarks.md). Elsewhere (CUDA, builds without oneDNN): conv2d on
/// contiguous tensors.
struct Backend {
  bool onednn = false;
  torch::MemoryFormat format = torch::MemoryFormat::Contiguous;
  explicit Backend(const torch::Tensor& x) {
    onednn = x.device().is_cpu() && at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
    if (onednn) format = torch::MemoryFormat::ChannelsLast;
  }
  /// c(x), then ReLU when `relu`.
  torch::Tensor conv(const Convolution& c, const torch::Tensor& x, bool relu = false) const {
    if (onednn && c.plans) {
      auto y = detail::run_convolution(*c.plans, c, x, relu);
      if (y.defined()) return y;
    }
    auto y = onednn ? torch::mkldnn_convolution(x, c.weight, c.bias, {c.padding, c.padding},
                                                {c.stride, c.stride}, {1, 1}, 1)
                    : torch::conv2d(x, c.weight, c.bias, c.stride, c.padding);
    return relu ? y.relu_() : y;
  }
};

/// Writes layer `layer`'s new channels into `slot` (a channel slice of the block output).
void run_layer(const Backend& backend, const DenseLayerGraph& layer, const torch::Tensor& input,
               torch::Tensor slot) {
  auto bottleneck = backend.conv(layer.conv1, apply(layer.norm1, input, backend.format), /*relu=*/true);
  auto fresh = backend.conv(layer.conv2, bottleneck);
  if (!layer.has_se) {
    slot.copy_(fresh);
    return;
  }
  // gate = sigmoid(fc2 relu(fc1 mean)). ReLU commutes with a positive factor, so the mean's
  // 1 / (H W) moves to the C-element result: a sum and two small products, no division pass
  // over the map.
  const double area = static_cast<double>(fresh.size(2) * fresh.size(3));
  auto hidden = torch::mm(fresh.sum({2, 3}), layer.se.fc1.t()).relu_();
  auto gate = torch::mm(hidden, layer.se.fc2.t()).mul_(1.0 / area).sigmoid_();
  if (layer.se.gate == SEGate::scaled_sigmoid) gate.mul_(2.0);
  torch::mul_out(slot, fresh, gate.view({fresh.size(0), fresh.size(1), 1, 1}));
}

}  // namespace

InferenceGraph InferenceGraph::lower(const DenseNet& model) {
  torch::NoGradGuard no_grad;
  InferenceGraph g;
  const auto& features = *model->features;
  const auto children = features.named_children();
  const Conv2dImpl* conv0 = nullptr;
  const BatchNorm2dImpl* norm0 = nullptr;
  for (const auto& item : children) {
    const std::string& name = item.key();
    const Module& module = *item.value();
    const std::string where = "features." + name;
    if (name == "conv0") {
      conv0 = dynamic_cast<const Conv2dImpl*>(&module);
      if (conv0 == nullptr) unsupported(where);
    } else if (name == "norm0") {
      norm0 = dynamic_cast<const BatchNorm2dImpl*>(&module);
      if (norm0 == nullptr) unsupported(where);
    } else if (name == "relu0" || name == "pool0") {
      g.imagenet_stem = true;
    } else if (name.rfind("denseblock", 0) == 0) {
      DenseBlockGraph block;
      for (const auto& layer : module.named_children()) {
        block.layers.push_back(lower_layer(*layer.value(), where + "." + layer.key()));
      }
      if (block.layers.empty()) unsupported(where + " (no layers)");
      block.in_channels = block.layers.front().conv1.weight.size(1);
      block.growth_rate = block.layers.front().conv2.weight.size(0);
      g.blocks.push_back(std::move(block));
    } else if (name.rfind("transition", 0) == 0) {
      const auto* t = dynamic_cast<const TransitionImpl*>(&module);
      if (t == nullptr) unsupported(where);
      g.transitions.push_back({norm_relu(*t->norm), convolution(*t->conv)});
    } else if (name == "norm5") {
      const auto* n = dynamic_cast<const BatchNorm2dImpl*>(&module);
      if (n == nullptr) unsupported(where);
      g.norm5 = norm_relu(*n);
    } else {
      unsupported(where);
    }
  }
  if (conv0 == nullptr || g.blocks.empty() || !g.norm5.scale.defined()) {
    unsupported("a network without conv0, dense blocks or norm5");
  }
  if (g.imagenet_stem && norm0 == nullptr) unsupported("an ImageNet stem without norm0");
  g.stem = norm0 != nullptr ? fold_into(*conv0, *norm0) : convolution(*conv0);
  g.classifier_weight = model->classifier->weight.detach().to(torch::kFloat32).clone();
  g.classifier_bias = model->classifier->bias.detach().to(torch::kFloat32).clone();
  return g;
}

torch::Tensor InferenceGraph::forward(const torch::Tensor& images) const {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3,
              "InferenceGraph::forward expects images (N, 3, H, W), got ", images.sizes());
  c10::InferenceMode inference;
  const Backend backend(images);
  auto x = backend.conv(stem, images.to(torch::kFloat32).contiguous(backend.format), imagenet_stem);
  if (imagenet_stem) x = torch::max_pool2d(x, 3, 2, 1);
  for (size_t b = 0; b < blocks.size(); ++b) {
    const auto& block = blocks[b];
    TORCH_CHECK(x.size(1) == block.in_channels, "InferenceGraph: block ", b, " expects ",
                block.in_channels, " channels, got ", x.size(1));
    auto out = torch::empty({x.size(0), block.out_channels(), x.size(2), x.size(3)},
                            x.options().memory_format(backend.format));
    out.narrow(1, 0, block.in_channels).copy_(x);
    int64_t channels = block.in_channels;
    for (const auto& layer : block.layers) {
      run_layer(backend, layer, out.narrow(1, 0, channels),
                out.narrow(1, channels, block.growth_rate));
      channels += block.growth_rate;
    }
    x = out;
    if (b < transitions.size()) {
      const auto& t = transitions[b];
      x = backend.conv(t.conv, torch::avg_pool2d(apply(t.norm, x, backend.format), 2, 2));
    }
  }
  auto pooled = apply(norm5, x).mean({2, 3});
  return torch::linear(pooled, classifier_weight, classifier_bias);
}

InferenceGraph InferenceGraph::to(torch::Device device) const {
  InferenceGraph moved = *this;
  for_each_tensor(moved, [&](const std::string&, torch::Tensor& t) { t = t.to(device); });
  return moved;
}

InferenceGraph InferenceGraph::with_libtorch_convolutions() const {
  InferenceGraph g = *this;
  g.stem.plans = nullptr;
  for (auto& block : g.blocks) {
    for (auto& layer : block.layers) layer.conv1.plans = layer.conv2.plans = nullptr;
  }
  for (auto& t : g.transitions) t.conv.plans = nullptr;
  return g;
}

std::vector<std::pair<std::string, torch::Tensor>> InferenceGraph::named_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for_each_tensor(*this, [&](const std::string& name, const torch::Tensor& t) {
    out.emplace_back(name, t);
  });
  return out;
}

}  // namespace sedensenet::serve
