#pragma once
// The inference graph's convolutions on the system's oneDNN directly (onednn_primitive.hpp): one
// primitive per input shape, made at first use with the weights reordered into the layout the
// primitive chose, then only executed. LibTorch's mkldnn_convolution builds (or looks up) the
// primitive and reorders the weights at every call, which at batch 1 costs more than the
// arithmetic of a small layer (docs/benchmarks.md, "Inference").
#include <torch/types.h>

#include <memory>

#include "sedensenet/serve/inference_graph.hpp"

namespace sedensenet::serve::detail {

/// A cache of primitives for one convolution, keyed by the input's shape and the weights'
/// identity; safe to use from several threads at once (every calling thread has its own
/// scratchpad). Null when this build has no direct oneDNN path (SEDENSENET_WITH_ONEDNN unset).
std::shared_ptr<ConvolutionPlans> make_convolution_plans();

/// `c` applied to `x`, followed by ReLU when `relu` (fused into the primitive), as a new
/// channels-last tensor; an undefined tensor when the plans cannot run it (x not float32
/// channels-last on the CPU, an empty batch, or a shape oneDNN refused): the caller falls back.
torch::Tensor run_convolution(ConvolutionPlans& plans, const Convolution& c, const torch::Tensor& x,
                              bool relu);

}  // namespace sedensenet::serve::detail
