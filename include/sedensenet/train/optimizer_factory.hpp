#pragma once
/// \file
/// The Trainer's optimizer, built from `TrainerOptions`, and its learning-rate setter.

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <memory>
#include <vector>

#include "sedensenet/train/options.hpp"

namespace sedensenet {

/// An optimizer of `options.optimizer()` kind over `parameters` (those that require gradients):
/// learning rate, momentum, Nesterov and weight decay from `options`. With
/// `no_decay_norm_and_bias()`, one-dimensional parameters (biases, normalization scales) go into a
/// second parameter group without weight decay. Throws when no parameter is trainable.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const TrainerOptions& options);

/// Sets the learning rate of every parameter group of `optimizer`.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace sedensenet
