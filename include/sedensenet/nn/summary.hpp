#pragma once
/// \file
/// `summary(model, input_shape)`: parameters, each stage's output shape and forward MACs.

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "sedensenet/nn/densenet.hpp"

namespace sedensenet {

/// One row of a `ModelSummary`: a direct child of `features`, or the head.
struct StageSummary {
  std::string name;                   ///< e.g. "conv0", "denseblock1", "transition1", "head"
  std::vector<int64_t> output_shape;  ///< output of the stage for the summarised input
  int64_t parameters = 0;             ///< parameters in the stage
  int64_t macs = 0;                   ///< multiply-accumulates of its convolutions and linear layers
};

/// What `summary` reports. MACs count convolutions and fully connected layers (SE included) for
/// the whole input batch; batch norm, activations and pooling are not counted (they are a few
/// percent and memory-bound).
struct ModelSummary {
  std::vector<int64_t> input_shape;
  std::vector<StageSummary> stages;
  int64_t parameters = 0;            ///< all parameters
  int64_t trainable_parameters = 0;  ///< parameters with requires_grad
  int64_t macs = 0;                  ///< total forward MACs for `input_shape`

  /// A printable table, one line per stage, then the totals.
  std::string to_string() const;
};

std::ostream& operator<<(std::ostream& os, const ModelSummary& s);

/// Summarises `model` for an input of `input_shape`, (N, 3, H, W) or (3, H, W) for one image:
/// runs one forward in eval mode without gradients (the model's mode is restored) and records
/// each stage's output shape, parameters and MACs.
///
/// Example:
/// ```
/// sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet121());
/// std::cout << sedensenet::summary(net, {3, 224, 224});
/// ```
ModelSummary summary(DenseNet& model, std::vector<int64_t> input_shape);

}  // namespace sedensenet
