#pragma once
/// \file
/// An optimizer's state as checkpoint content (io/checkpoint_file.hpp), without LibTorch's
/// TorchScript archives: a JSON description (kind, each group's learning rate, each parameter's
/// step count) and the per-parameter tensors, named "<index>.<field>" where the index counts the
/// parameters across the groups in order (Adam and AdamW: exp_avg, exp_avg_sq, max_exp_avg_sq;
/// SGD: momentum_buffer).

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include <string>

#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/train/options.hpp"

namespace sedensenet {

/// The state of `optimizer` (of kind `kind`) as {description, tensors}.
std::pair<nlohmann::json, io::NamedTensors> optimizer_state(const torch::optim::Optimizer& optimizer,
                                                            OptimizerKind kind);

/// Restores what `optimizer_state` saved into `optimizer`, built for the same parameters. Throws,
/// naming `name` (the file), when the kind, the number of parameters or a tensor's shape differs.
void load_optimizer_state(torch::optim::Optimizer& optimizer, OptimizerKind kind,
                          const nlohmann::json& description, const io::NamedTensors& tensors,
                          const std::string& name);

}  // namespace sedensenet
