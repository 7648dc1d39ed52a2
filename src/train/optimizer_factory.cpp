#include "sedensenet/train/optimizer_factory.hpp"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

namespace sedensenet {

namespace {

// One group with weight decay and, when asked, one without; `defaults` carries everything else.
template <typename Optimizer, typename Options>
std::unique_ptr<torch::optim::Optimizer> build(const std::vector<torch::Tensor>& parameters,
                                               const TrainerOptions& options, Options defaults) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : parameters) {
    if (!p.requires_grad()) continue;
    (options.no_decay_norm_and_bias() && p.dim() <= 1 ? no_decay : decay).push_back(p);
  }
  TORCH_CHECK(!decay.empty() || !no_decay.empty(), "Trainer: the model has no trainable parameters");
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto add_group = [&](std::vector<torch::Tensor> params, double weight_decay) {
    if (params.empty()) return;
    Options group = defaults;
    group.weight_decay(weight_decay);
    groups.emplace_back(std::move(params), std::make_unique<Options>(group));
  };
  add_group(std::move(decay), options.weight_decay());
  add_group(std::move(no_decay), 0.0);
  return std::make_unique<Optimizer>(std::move(groups), defaults);
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const TrainerOptions& options) {
  switch (options.optimizer()) {
    case OptimizerKind::adam:
      return build<torch::optim::Adam>(parameters, options, torch::optim::AdamOptions(options.lr()));
    case OptimizerKind::adamw:
      return build<torch::optim::AdamW>(parameters, options, torch::optim::AdamWOptions(options.lr()));
    case OptimizerKind::sgd:
      break;
  }
  return build<torch::optim::SGD>(parameters, options,
                                  torch::optim::SGDOptions(options.lr())
                                      .momentum(options.momentum())
                                      .nesterov(options.nesterov()));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace sedensenet
