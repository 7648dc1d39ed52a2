#pragma once
/// \file
/// Options for the dense layer, dense block, transition and the whole network, with the presets.

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "sedensenet/nn/attention.hpp"
#include "sedensenet/util/option_schema.hpp"

namespace sedensenet {

/// How a dense layer trades compute for memory while training.
///
/// The standard layer keeps every intermediate for the backward pass; since each layer's input is
/// the concatenation of all earlier outputs, the kept feature maps grow quadratically with depth.
/// The efficient modes keep only what grows linearly and recompute the rest in backward; outputs,
/// gradients and BatchNorm running statistics are the same as the standard layer's. Eval mode and
/// inference without gradients always take the standard path (nothing to save).
enum class MemoryMode {
  /// Keep every intermediate (plain autograd). Fastest per step, memory quadratic in depth.
  standard,
  /// Keep conv1's output only. Recompute concatenation, norm1 and relu1 (input side) and norm2 and
  /// relu2 (bottleneck side) in backward. The recommended efficient mode (see docs/benchmarks.md).
  efficient,
  /// Keep conv1's output and norm2/relu2's outputs; recompute only concatenation, norm1 and relu1.
  /// Slightly more memory than `efficient`; the form the Python reference checkpoints.
  efficient_input_only,
  /// Block-level: the block's feature maps live in one preallocated tensor, each layer writes its
  /// new channels into its slice and reads its input as a view (no concatenation is ever copied);
  /// the gradient accumulates in one block-sized buffer. Keeps conv1's and conv2's outputs per
  /// layer and recomputes batch norm, ReLU and the attention's scale. Layers used outside a
  /// `DenseBlock` (or under autocast) fall back to `efficient`. See docs/efficient-memory.md.
  shared,
  /// `shared` that also recomputes conv1 in backward (conv2 never runs twice): the least memory,
  /// for the largest batches, at the cost of one more 1x1 convolution per layer.
  shared_ultra,
};

/// Human-readable name of a memory mode ("standard", "efficient", "efficient_input_only",
/// "shared", "shared_ultra").
inline const char* to_string(MemoryMode mode) {
  switch (mode) {
    case MemoryMode::standard: return "standard";
    case MemoryMode::efficient: return "efficient";
    case MemoryMode::efficient_input_only: return "efficient_input_only";
    case MemoryMode::shared: return "shared";
    case MemoryMode::shared_ultra: return "shared_ultra";
  }
  return "unknown";
}

/// Every memory mode (for option schemas).
inline std::vector<MemoryMode> enum_values(MemoryMode) {
  return {MemoryMode::standard, MemoryMode::efficient, MemoryMode::efficient_input_only,
          MemoryMode::shared, MemoryMode::shared_ultra};
}

/// Parses a mode's name (`to_string`); throws naming the value otherwise.
inline MemoryMode memory_mode_from_string(const std::string& name) {
  return schema::enum_from_string<MemoryMode>(name, "memory mode");
}

inline std::ostream& operator<<(std::ostream& os, MemoryMode mode) { return os << to_string(mode); }

/// Implemented by modules whose memory mode can change after construction (the dense layers and
/// the blocks that contain them). `DenseNetImpl::set_memory` reaches them through this.
class MemoryConfigurable {
 public:
  virtual ~MemoryConfigurable() = default;
  /// Switches between standard and recomputing backward passes; takes effect at the next forward.
  virtual void set_memory(MemoryMode mode) = 0;
};

/// The gate of the SE blocks a `DenseNet` builds (the runtime mirror of `SEBlock<Gate>`).
enum class SEGate {
  sigmoid,         ///< `Sigmoid`, the reference.
  scaled_sigmoid,  ///< `ScaledSigmoid`: 2*sigmoid, with fc2 starting at zero (identity gate).
};

inline const char* to_string(SEGate gate) {
  return gate == SEGate::sigmoid ? "sigmoid" : "scaled_sigmoid";
}
inline std::vector<SEGate> enum_values(SEGate) { return {SEGate::sigmoid, SEGate::scaled_sigmoid}; }

/// Options of one dense layer. `in_channels` is the number of channels of the concatenated input.
///
/// Example:
/// ```
/// sedensenet::DenseLayer<sedensenet::SEBlock<>> layer(
///     sedensenet::DenseLayerOptions(/*in_channels=*/64, /*growth_rate=*/32));
/// ```
struct DenseLayerOptions {
  DenseLayerOptions(int64_t in_channels, int64_t growth_rate)
      : in_channels_(in_channels), growth_rate_(growth_rate) {}

  /// Channels of the layer's (concatenated) input. Fixed at construction.
  TORCH_ARG(int64_t, in_channels);
  /// k: channels the layer adds. Fixed at construction.
  TORCH_ARG(int64_t, growth_rate);
  /// Bottleneck width factor: conv1 outputs bn_size * k channels. Fixed at construction.
  TORCH_ARG(int64_t, bn_size) = 4;
  /// Dropout probability after the attention module, in [0, 1). Read at every forward.
  TORCH_ARG(double, drop_rate) = 0.0;
  /// Standard or efficient (recomputing) backward. Read at every forward, so it can be changed
  /// on a built model.
  TORCH_ARG(MemoryMode, memory) = MemoryMode::standard;
  /// Passed to the attention module's builder (`attention_traits`). Fixed at construction.
  TORCH_ARG(AttentionSettings, attention) = {};
};

/// Options of a dense block: `num_layers` layers, the first built from `layer` and each next one
/// with `growth_rate` more input channels.
struct DenseBlockOptions {
  DenseBlockOptions(int64_t num_layers, DenseLayerOptions layer)
      : num_layers_(num_layers), layer_(std::move(layer)) {}
  /// Number of dense layers. Fixed at construction.
  TORCH_ARG(int64_t, num_layers);
  /// Options of the first layer (its `in_channels` is the block's input channels).
  TORCH_ARG(DenseLayerOptions, layer);

 public:
  /// Channels of the block's output: in_channels + num_layers * growth_rate.
  int64_t out_channels() const {
    return layer_.in_channels() + num_layers_ * layer_.growth_rate();
  }
};

/// Options of a transition: BN -> ReLU -> 1x1 conv (in -> out channels) -> 2x2 average pool.
struct TransitionOptions {
  TransitionOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  /// Input channels. Fixed at construction.
  TORCH_ARG(int64_t, in_channels);
  /// Output channels (the reference uses floor(in_channels * compression)). Fixed at construction.
  TORCH_ARG(int64_t, out_channels);
  /// `standard`: autograd keeps the ReLU's output (as large as the input). Any other mode: the
  /// norm and ReLU are recomputed from the input in backward (the input is the dense block's
  /// output, which lives anyway), as in an efficient dense layer. Same results either way.
  TORCH_ARG(MemoryMode, memory) = MemoryMode::standard;
};

/// Options of a whole `DenseNet`. Defaults are the reference's: SE-DenseNet-BC-100 for 32x32
/// inputs (k = 12, blocks 16/16/16, 24 initial features, compression 0.5, bottleneck 4, no
/// dropout, 10 classes, SE with r = 16). All options are validated when the network is built; an
/// invalid one raises an error naming the option, its value and the valid range. Changing an
/// option of a built network has no effect until `reset()`.
///
/// Example:
/// ```
/// sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet121().num_classes(5));
/// sedensenet::DenseNet small(sedensenet::DenseNetOptions::densenet_bc(40, 12)
///                                .memory(sedensenet::MemoryMode::efficient));
/// ```
struct DenseNetOptions {
  DenseNetOptions() = default;

  /// k: channels each dense layer adds, >= 1.
  TORCH_ARG(int64_t, growth_rate) = 12;
  /// Layers per dense block (one entry per block, each >= 1).
  TORCH_ARG(std::vector<int64_t>, block_config) = std::vector<int64_t>{16, 16, 16};
  /// Channels after the stem, >= 1.
  TORCH_ARG(int64_t, num_init_features) = 24;
  /// Transition width factor c in (0, 1]: a transition outputs floor(C * c) channels.
  TORCH_ARG(double, compression) = 0.5;
  /// Bottleneck width factor (conv1 outputs bn_size * k channels), >= 1.
  TORCH_ARG(int64_t, bn_size) = 4;
  /// Dropout after each dense layer's attention, in [0, 1).
  TORCH_ARG(double, drop_rate) = 0.0;
  /// Outputs of the classifier, >= 1.
  TORCH_ARG(int64_t, num_classes) = 10;
  /// true: 3x3 stem of stride `stem_stride` for small images (CIFAR style). false: 7x7 stride-2
  /// stem, BN, ReLU and 3x3 stride-2 max-pool (ImageNet style, as torchvision).
  TORCH_ARG(bool, small_inputs) = true;
  /// Stride of the small-input 3x3 stem: 1 keeps the resolution (CIFAR style); 2 halves it, so
  /// that the first dense block of a 28x28 or 32x32 network runs on 14x14 or 16x16 maps, about a
  /// quarter of the cost (the `small_images()` preset, "densenet_small"). Must be 1 with the
  /// ImageNet stem.
  TORCH_ARG(int64_t, stem_stride) = 1;
  /// SE reduction ratio r, >= 0; 0 builds dense layers without SE (torchvision's DenseNet).
  TORCH_ARG(int64_t, se_reduction) = 16;
  /// Smallest SE hidden width, >= 1 (the reference's C / r alone can be 0; see SEBlockOptions).
  TORCH_ARG(int64_t, se_min_hidden) = 1;
  /// SE gate. `scaled_sigmoid` starts every SE block as the identity (for warm starts).
  TORCH_ARG(SEGate, se_gate) = SEGate::sigmoid;
  /// Standard or memory-efficient dense layers (see `MemoryMode`). Can also be changed on a built
  /// network with `DenseNetImpl::set_memory`.
  TORCH_ARG(MemoryMode, memory) = MemoryMode::standard;

 public:
  /// Every option once: its key (JSON in checkpoints and config files; the tool's flag with '-'
  /// for '_'), member, help and range. JSON and the tool's flags come from this list; `DenseNet`
  /// checks the options when it is built.
  template <typename Visitor>
  static void fields(Visitor&& visit) {
    using schema::any;
    using schema::at_least;
    using schema::between;
    using T = DenseNetOptions;
    visit("growth_rate", &T::growth_rate_, "k: channels each dense layer adds", at_least(1));
    visit("block_config", &T::block_config_, "layers per dense block, comma-separated (e.g. 16,16,16)", any());
    visit("num_init_features", &T::num_init_features_, "channels after the stem", at_least(1));
    visit("compression", &T::compression_, "transition width factor", between(0, 1, true, false));
    visit("bn_size", &T::bn_size_, "bottleneck width factor (conv1 outputs bn_size * k channels)", at_least(1));
    visit("drop_rate", &T::drop_rate_, "dropout after each dense layer", between(0, 1, false, true));
    visit("num_classes", &T::num_classes_, "outputs of the classifier", at_least(1));
    visit("small_inputs", &T::small_inputs_, "3x3 stem for small images (CIFAR style); false: 7x7/2 stem and max-pool (ImageNet style)", any());
    visit("stem_stride", &T::stem_stride_, "stride of the small-input 3x3 stem (2: the first block on half-size maps)", between(1, 2));
    visit("se_reduction", &T::se_reduction_, "SE reduction ratio (0 = no SE)", at_least(0));
    visit("se_min_hidden", &T::se_min_hidden_, "smallest SE hidden width", at_least(1));
    visit("se_gate", &T::se_gate_, "SE gate: sigmoid or scaled_sigmoid (starts as the identity)", any());
    visit("memory", &T::memory_, "dense layers: standard, efficient, efficient_input_only, shared or shared_ultra", any());
  }

  /// DenseNet-BC for 32x32 inputs (CIFAR style): three blocks of (depth - 4) / 6 layers each,
  /// 2k initial features. `depth` must be 6n + 4 (40, 100, 190, 250...). Sets the shape only.
  static DenseNetOptions densenet_bc(int64_t depth = 100, int64_t growth_rate = 12) {
    TORCH_CHECK(depth >= 10 && (depth - 4) % 6 == 0,
                "DenseNetOptions::densenet_bc: depth must be 6n + 4 with n >= 1 (10, 16, 40, 100, "
                "190, 250, ...), got ",
                depth);
    TORCH_CHECK(growth_rate >= 1, "DenseNetOptions::densenet_bc: growth_rate must be >= 1, got ",
                growth_rate);
    const int64_t n = (depth - 4) / 6;
    return DenseNetOptions()
        .growth_rate(growth_rate)
        .block_config({n, n, n})
        .num_init_features(2 * growth_rate)
        .small_inputs(true);
  }
  /// SE-DenseNet-BC for small images such as 28x28 clothes or digits (the demo's model): a 3x3
  /// stride-2 stem to 32 channels, then two dense blocks of 6 layers (k = 16) on 14x14 and 7x7
  /// maps for 28x28 inputs. 193k parameters and 23 M MACs per 28x28 image: about the cost of
  /// DenseNet-BC-22 (k = 12), which runs its first block at full resolution, with 2.7x the
  /// parameters. docs/results.md has the comparison. Sets the shape only.
  static DenseNetOptions small_images() {
    return DenseNetOptions()
        .growth_rate(16)
        .block_config({6, 6})
        .num_init_features(32)
        .small_inputs(true)
        .stem_stride(2);
  }
  /// torchvision's DenseNet-121 shape (k = 32, 64 initial features, blocks 6/12/24/16, ImageNet
  /// stem). Sets the shape only: SE, classes and memory mode keep their values.
  static DenseNetOptions densenet121() { return imagenet_shape(32, 64, {6, 12, 24, 16}); }
  /// torchvision's DenseNet-169 shape (k = 32, 64 initial features, blocks 6/12/32/32).
  static DenseNetOptions densenet169() { return imagenet_shape(32, 64, {6, 12, 32, 32}); }
  /// torchvision's DenseNet-201 shape (k = 32, 64 initial features, blocks 6/12/48/32).
  static DenseNetOptions densenet201() { return imagenet_shape(32, 64, {6, 12, 48, 32}); }
  /// torchvision's DenseNet-161 shape (k = 48, 96 initial features, blocks 6/12/36/24).
  static DenseNetOptions densenet161() { return imagenet_shape(48, 96, {6, 12, 36, 24}); }

  /// A preset by name: "densenet121", "densenet169", "densenet201", "densenet161",
  /// "densenet_small" (`small_images()`), or "densenet_bc_<depth>[_k<growth>]" such as
  /// "densenet_bc_100" or "densenet_bc_40_k12".
  static DenseNetOptions preset(const std::string& name) {
    if (name == "densenet_small") return small_images();
    if (name == "densenet121") return densenet121();
    if (name == "densenet169") return densenet169();
    if (name == "densenet201") return densenet201();
    if (name == "densenet161") return densenet161();
    const std::string prefix = "densenet_bc_";
    if (name.rfind(prefix, 0) == 0) {
      const std::string rest = name.substr(prefix.size());
      const auto k_pos = rest.find("_k");
      try {
        size_t used = 0;
        const std::string depth_text = rest.substr(0, k_pos);
        const int64_t depth = std::stoll(depth_text, &used);
        if (used != depth_text.size()) throw std::invalid_argument(depth_text);
        int64_t growth = 12;
        if (k_pos != std::string::npos) {
          const std::string growth_text = rest.substr(k_pos + 2);
          growth = std::stoll(growth_text, &used);
          if (used != growth_text.size()) throw std::invalid_argument(growth_text);
        }
        return densenet_bc(depth, growth);
      } catch (const std::logic_error&) {
        // fall through to the error below (std::invalid_argument / std::out_of_range)
      }
    }
    TORCH_CHECK(false, "unknown preset '", name,
                "': expected densenet121, densenet169, densenet201, densenet161, densenet_small or "
                "densenet_bc_<depth>[_k<growth>] (e.g. densenet_bc_100, densenet_bc_40_k12)");
  }

 private:
  static DenseNetOptions imagenet_shape(int64_t growth, int64_t init_features,
                                        std::vector<int64_t> blocks) {
    return DenseNetOptions()
        .growth_rate(growth)
        .num_init_features(init_features)
        .block_config(std::move(blocks))
        .small_inputs(false);
  }
};

}  // namespace sedensenet
