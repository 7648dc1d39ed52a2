#pragma once
/// \file
/// Channel attention for dense layers: the Squeeze-and-Excitation block with a gate policy chosen
/// at compile time, the do-nothing `NoAttention`, and the traits that let `DenseLayer` build any
/// attention module from a channel count.

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace sedensenet {

// ---------------------------------------------------------------------------------------------
// Gate policies
// ---------------------------------------------------------------------------------------------

/// The reference gate: w = sigmoid(z), in (0, 1). An SE block with this gate can only attenuate.
struct Sigmoid {
  static torch::Tensor apply(const torch::Tensor& z) { return torch::sigmoid(z); }
  static constexpr const char* name() { return "sigmoid"; }
};

/// w = 2 * sigmoid(z), in (0, 2). With the second fully connected layer at zero, z = 0 and the
/// gate is exactly 1: the block is the identity. That is what makes warm starts possible: an
/// SE-DenseNet initialised from weights trained without SE computes the same function until
/// training moves the gate.
struct ScaledSigmoid {
  static torch::Tensor apply(const torch::Tensor& z) { return torch::sigmoid(z).mul(2.0); }
  static constexpr const char* name() { return "scaled_sigmoid"; }
};

namespace detail {
template <typename Gate, typename = void>
struct is_gate : std::false_type {};
template <typename Gate>
struct is_gate<Gate, std::void_t<decltype(Gate::apply(std::declval<const torch::Tensor&>()))>>
    : std::is_convertible<decltype(Gate::apply(std::declval<const torch::Tensor&>())),
                          torch::Tensor> {};
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// SEBlock
// ---------------------------------------------------------------------------------------------

/// Options for `SEBlock`.
///
/// Example:
/// ```
/// sedensenet::SEBlock<> se(sedensenet::SEBlockOptions(64).reduction(16));
/// ```
struct SEBlockOptions {
  /* implicit */ SEBlockOptions(int64_t channels) : channels_(channels) {}  // NOLINT

  /// Number of channels C of the input (and output). Fixed at construction.
  TORCH_ARG(int64_t, channels);
  /// Reduction ratio r: the hidden layer has max(min_hidden, C / r) units (integer division).
  /// The reference uses C / r alone, which is 0 for C < r (k = 12, r = 16) and leaves a dead
  /// gate; the floor `min_hidden` fixes that. Fixed at construction.
  TORCH_ARG(int64_t, reduction) = 16;
  /// Smallest hidden width, >= 1. Fixed at construction.
  TORCH_ARG(int64_t, min_hidden) = 1;
  /// Start the second fully connected layer at zero. With `ScaledSigmoid` this makes the block
  /// the identity at initialisation. Takes effect in `reset()`.
  TORCH_ARG(bool, zero_init_last) = false;

 public:
  /// The hidden width these options produce: max(min_hidden, channels / reduction).
  int64_t hidden() const { return std::max(min_hidden_, channels_ / reduction_); }
};

/// Squeeze-and-Excitation on C channels:
///   s = global average pool(x)            (N, C)
///   w = Gate(fc2(relu(fc1(s))))            fc1: C -> hidden, fc2: hidden -> C, no biases
///   out = x * w                            broadcast over H and W
///
/// Requires: input of shape (N, C, H, W) with C == options.channels().
/// Guarantees: output has the input's shape; parameters are `fc1.weight` (hidden x C) and
/// `fc2.weight` (C x hidden), as PyTorch's `nn.Linear(bias=False)` stores them.
///
/// `Gate` is a policy with `static Tensor apply(const Tensor&)`: `Sigmoid` (the reference) or
/// `ScaledSigmoid` (identity at zero, for warm starts), or your own.
template <typename Gate = Sigmoid>
class SEBlockImpl : public torch::nn::Cloneable<SEBlockImpl<Gate>> {
  static_assert(detail::is_gate<Gate>::value,
                "SEBlock<Gate>: Gate must provide `static torch::Tensor apply(const torch::Tensor&)`, "
                "like sedensenet::Sigmoid or sedensenet::ScaledSigmoid");

 public:
  explicit SEBlockImpl(SEBlockOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.channels() >= 1, "SEBlockOptions: channels must be >= 1, got ",
                options.channels());
    TORCH_CHECK(options.reduction() >= 1, "SEBlockOptions: reduction must be >= 1, got ",
                options.reduction());
    TORCH_CHECK(options.min_hidden() >= 1, "SEBlockOptions: min_hidden must be >= 1, got ",
                options.min_hidden());
    const int64_t hidden = options.hidden();
    fc1 = this->register_module(
        "fc1", torch::nn::Linear(torch::nn::LinearOptions(options.channels(), hidden).bias(false)));
    fc2 = this->register_module(
        "fc2", torch::nn::Linear(torch::nn::LinearOptions(hidden, options.channels()).bias(false)));
    if (options.zero_init_last()) {
      torch::NoGradGuard no_grad;
      fc2->weight.zero_();
    }
  }

  /// x: (N, C, H, W) -> (N, C, H, W), each channel scaled by its gate.
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == options.channels(), "SEBlock expects input (N, ",
                options.channels(), ", H, W), got ", x.sizes());
    auto squeezed = x.mean({2, 3});
    auto gate = Gate::apply(fc2->forward(torch::relu(fc1->forward(squeezed))));
    return x * gate.view({x.size(0), x.size(1), 1, 1});
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "sedensenet::SEBlock<" << Gate::name() << ">(channels=" << options.channels()
           << ", hidden=" << options.hidden() << ")";
  }

  SEBlockOptions options;
  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
};

/// Module holder for `SEBlockImpl<Gate>` (what `TORCH_MODULE` generates, for a template).
template <typename Gate = Sigmoid>
class SEBlock : public torch::nn::ModuleHolder<SEBlockImpl<Gate>> {
 public:
  using torch::nn::ModuleHolder<SEBlockImpl<Gate>>::ModuleHolder;
  using Impl = SEBlockImpl<Gate>;
};

// ---------------------------------------------------------------------------------------------
// NoAttention
// ---------------------------------------------------------------------------------------------

/// The identity: a dense layer without attention (plain DenseNet-BC). Has no parameters and is
/// not registered as a submodule, so the state dict is exactly torchvision's.
class NoAttentionImpl : public torch::nn::Cloneable<NoAttentionImpl> {
 public:
  explicit NoAttentionImpl(int64_t /*channels*/ = 0) {}
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& x) { return x; }
  void pretty_print(std::ostream& stream) const override { stream << "sedensenet::NoAttention"; }
};
TORCH_MODULE(NoAttention);

// ---------------------------------------------------------------------------------------------
// attention_traits: how DenseLayer builds and names its attention module
// ---------------------------------------------------------------------------------------------

/// Settings a dense layer passes to the attention module it builds. The SE block reads
/// `reduction` and `min_hidden`; your own attention module may read them or ignore them.
struct AttentionSettings {
  int64_t reduction = 16;
  int64_t min_hidden = 1;
  bool zero_init_last = false;
};

/// Customisation point. The primary template builds `Attention(channels)` and registers it as
/// `attention`; specialise it for modules that need more than the channel count.
template <typename Attention>
struct attention_traits {
  static constexpr const char* name = "attention";
  static constexpr bool is_identity = false;
  static Attention make(int64_t channels, const AttentionSettings& /*settings*/) {
    return Attention(channels);
  }
};

template <typename Gate>
struct attention_traits<SEBlock<Gate>> {
  static constexpr const char* name = "se";
  static constexpr bool is_identity = false;
  static SEBlock<Gate> make(int64_t channels, const AttentionSettings& settings) {
    return SEBlock<Gate>(SEBlockOptions(channels)
                             .reduction(settings.reduction)
                             .min_hidden(settings.min_hidden)
                             .zero_init_last(settings.zero_init_last));
  }
};

template <>
struct attention_traits<NoAttention> {
  static constexpr const char* name = "attention";
  static constexpr bool is_identity = true;
  static NoAttention make(int64_t channels, const AttentionSettings&) {
    return NoAttention(channels);
  }
};

namespace detail {
template <typename A, typename = void>
struct has_tensor_forward : std::false_type {};
template <typename A>
struct has_tensor_forward<
    A, std::void_t<decltype(std::declval<A&>()->forward(std::declval<torch::Tensor>()))>>
    : std::is_convertible<decltype(std::declval<A&>()->forward(std::declval<torch::Tensor>())),
                          torch::Tensor> {};

template <typename A, typename = void>
struct is_module_holder : std::false_type {};
template <typename A>
struct is_module_holder<A, std::void_t<typename A::ContainedType>>
    : std::is_base_of<torch::nn::Module, typename A::ContainedType> {};
}  // namespace detail

}  // namespace sedensenet
