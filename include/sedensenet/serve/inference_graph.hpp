#pragma once
/// \file
/// A trained `DenseNet` lowered for inference: batch norm folded into the adjacent convolutions
/// where the order allows, no autograd, no modules. One lowering, three uses: `Classifier` runs
/// it with LibTorch, `export_torchscript` and `export_onnx` write it for other runtimes, so every
/// way of shipping a model computes the same graph.
///
/// What the lowering changes (each is exact in real arithmetic; float32 results differ from the
/// training model's eval-mode forward by rounding only, about 1e-6 relative):
/// - the stem's norm0 (ImageNet stem) is folded into conv0's weight and a bias;
/// - each dense layer's norm2 follows conv1 directly and is folded into it;
/// - norm1, the transitions' norm and norm5 follow a concatenation or a block, whose channels
///   other layers read unnormalised: they stay, as a per-channel scale and shift fused with ReLU;
/// - a transition pools before its 1x1 convolution instead of after (both are linear and act per
///   pixel, so they commute), which is a quarter of the convolution's work;
/// - a dense block writes each layer's new channels into one preallocated block output instead of
///   concatenating all earlier maps again for every layer.
/// Dropout is the identity in inference and disappears. Standard and efficient (`MemoryMode`)
/// models have the same parameters and lower to the same graph.
///
/// On a CPU with oneDNN, `forward` keeps every map channels-last and calls oneDNN's convolution
/// directly (convolution weights are stored channels-last for it); elsewhere it uses conv2d.

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sedensenet/nn/densenet.hpp"

namespace sedensenet::serve {

/// y = max(0, x * scale + shift), per channel: a batch norm in eval mode followed by ReLU.
struct ScaleShiftReLU {
  torch::Tensor scale;  ///< (C)
  torch::Tensor shift;  ///< (C)
};

/// oneDNN primitives of one convolution, made at first use for each input shape (builds whose
/// LibTorch links the system's oneDNN; see `Convolution::plans`).
class ConvolutionPlans;

/// A 2-d convolution: weight (out, in, kh, kw), optional bias (out), square stride and padding.
struct Convolution {
  torch::Tensor weight;
  torch::Tensor bias;  ///< undefined: no bias
  int64_t stride = 1;
  int64_t padding = 0;
  /// Set by `InferenceGraph::lower` where the build runs convolutions on oneDNN directly: the
  /// primitives and reordered weights `forward` reuses (copies of the graph share them). A plan is
  /// keyed by the weight's and bias's storage and version, so weights replaced or changed in place
  /// are picked up. Null: LibTorch's convolution.
  std::shared_ptr<ConvolutionPlans> plans;
};

/// Squeeze-and-excitation: gate = G(fc2 relu(fc1 mean_hw(x))), out = x * gate.
struct SqueezeExcitation {
  torch::Tensor fc1;  ///< (hidden, C), as nn.Linear stores it
  torch::Tensor fc2;  ///< (C, hidden)
  SEGate gate = SEGate::sigmoid;
};

/// One dense layer: relu(norm1) -> conv1 (norm2 folded in: has a bias) -> relu -> conv2 -> SE.
struct DenseLayerGraph {
  ScaleShiftReLU norm1;
  Convolution conv1;
  Convolution conv2;
  bool has_se = false;
  SqueezeExcitation se;
};

/// A dense block: layers appending `growth_rate` channels each to `in_channels`.
struct DenseBlockGraph {
  int64_t in_channels = 0;
  int64_t growth_rate = 0;
  std::vector<DenseLayerGraph> layers;
  int64_t out_channels() const {
    return in_channels + static_cast<int64_t>(layers.size()) * growth_rate;
  }
};

/// A transition: relu(norm) -> 2x2 average pool -> 1x1 conv (pool first; see the file comment).
struct TransitionGraph {
  ScaleShiftReLU norm;
  Convolution conv;
};

/// The whole network. Build it with `InferenceGraph::lower`; run it with `forward`.
struct InferenceGraph {
  /// conv0, with norm0 folded in for the ImageNet stem (which is then followed by ReLU and a
  /// 3x3 stride-2 max pool).
  Convolution stem;
  bool imagenet_stem = false;
  std::vector<DenseBlockGraph> blocks;
  std::vector<TransitionGraph> transitions;  ///< one between each pair of blocks
  ScaleShiftReLU norm5;
  torch::Tensor classifier_weight;  ///< (classes, features)
  torch::Tensor classifier_bias;    ///< (classes)

  /// Lowers a trained model (its parameters and batch-norm running statistics; the model's
  /// train/eval mode does not matter and the model is not changed). The result is float32 on the
  /// model's device. Throws `std::invalid_argument` naming the module when the model holds a
  /// module the lowering does not know (a user-written attention module, a custom block); serve
  /// such models with their own `forward` in eval mode.
  static InferenceGraph lower(const DenseNet& model);

  /// Logits (N, classes) of normalised images (N, 3, H, W), float32 on the graph's device. Runs
  /// without autograd; safe to call from several threads at once (it only reads the graph).
  torch::Tensor forward(const torch::Tensor& images) const;

  /// The same graph with every tensor moved to `device`.
  InferenceGraph to(torch::Device device) const;
  /// The same graph (sharing its tensors) with every convolution on LibTorch's
  /// `mkldnn_convolution` / `conv2d` instead of the graph's own oneDNN primitives: the reference
  /// the tests and the benchmark's ablation compare against.
  InferenceGraph with_libtorch_convolutions() const;

  int64_t num_classes() const { return classifier_weight.size(0); }
  /// Every tensor with a stable, unique name (`blocks.0.layers.3.conv1.weight`, ...), in the order
  /// the graph uses them: what the exporters write.
  std::vector<std::pair<std::string, torch::Tensor>> named_tensors() const;
};

}  // namespace sedensenet::serve
