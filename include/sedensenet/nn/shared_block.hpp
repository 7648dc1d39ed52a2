#pragma once
/// \file
/// The shared-storage dense block (`MemoryMode::shared` and `shared_ultra`): one autograd node
/// for a whole block, whose feature maps live in one preallocated tensor.
///
/// Forward, for a block input x (N, C0, H, W) and layers 1..L of growth k:
///   buffer = empty(N, C0 + L * k, H, W); buffer[:, :C0] = x
///   layer i: in = buffer[:, :C_i] (a view, no concatenation)
///            y  = dropout(attention(conv2(relu(norm2(conv1(relu(norm1(in))))))))
///            buffer[:, C_i : C_i + k] = y
/// The buffer is the block's output. Kept for backward per layer: conv1's output (not in
/// `shared_ultra`), conv2's output (the attention's input), the dropout mask when dropping, and
/// the batch mean and 1/std of both norms (plus their ReLU masks off the fused kernels: one bit
/// per element). Everything else is recomputed from the buffer.
///
/// Backward: the gradient of the whole buffer accumulates in the incoming gradient itself when
/// only the autograd engine holds it, else in a block-sized copy of it; the
/// layers run in reverse, each reads the complete gradient of its slice, back-propagates through
/// the attention (re-run with autograd on conv2's kept output), conv2 and norm2, (in
/// `shared_ultra`: recomputes conv1's output first), conv1 and norm1, and adds the gradient of
/// its input into the accumulator's first C_i channels, in place.
///
/// Exactness: as the per-layer efficient functions (sedensenet/nn/efficient.hpp): the running
/// statistics are updated once, in the forward; the backward only reads the saved batch
/// statistics; the ReLU masks are the forward's (recomputed bit for bit by the fused kernels, or
/// kept). Dropout draws its mask with the standard layer's call on a tensor of the same shape, so
/// the same seed gives the same mask.
///
/// This is an implementation detail of `DenseBlock`: set `DenseLayerOptions::memory` or
/// `DenseNetOptions::memory` to `MemoryMode::shared` or `shared_ultra`.

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <vector>

namespace sedensenet {
namespace detail {

/// One dense layer as the shared block sees it. The modules are shared with the layer, so the
/// plan keeps them alive until the backward pass.
struct SharedBlockLayer {
  std::shared_ptr<torch::nn::BatchNorm2dImpl> norm1;
  std::shared_ptr<torch::nn::Conv2dImpl> conv1;
  std::shared_ptr<torch::nn::BatchNorm2dImpl> norm2;
  std::shared_ptr<torch::nn::Conv2dImpl> conv2;
  /// The attention module's forward (records autograd when gradients are enabled); empty for
  /// an identity (no attention).
  std::function<torch::Tensor(const torch::Tensor&)> attention;
  /// The attention module's parameters, in the order they are passed to the block function.
  std::vector<torch::Tensor> attention_parameters;
  double drop_rate = 0.0;
};

/// A block's layers and whether conv1 is recomputed (`shared_ultra`).
struct SharedBlockPlan : torch::CustomClassHolder {
  std::vector<SharedBlockLayer> layers;
  bool recompute_bottleneck = false;
};

/// How many references to its incoming gradient a custom autograd function's backward sees when
/// only the engine holds the gradient: measured once per process (LibTorch versions differ), -1
/// when the measurement is not one the shared block trusts (it then always copies the gradient).
int64_t engine_gradient_references();

/// Runs the block on the shared buffer in training mode, recording one autograd node. Returns
/// the buffer: (N, C0 + sum of the layers' growth, H, W).
torch::Tensor shared_block_forward(const torch::Tensor& x, c10::intrusive_ptr<SharedBlockPlan> plan);

}  // namespace detail
}  // namespace sedensenet
