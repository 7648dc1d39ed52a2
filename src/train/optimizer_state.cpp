// Optimizer state in checkpoints: see include/sedensenet/train/optimizer_state.hpp.
#include "sedensenet/train/optimizer_state.hpp"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <map>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "sedensenet/util/json.hpp"

namespace sedensenet {

namespace {

// The optimizer's state map is keyed by the parameter's TensorImpl: as a string in LibTorch 1.x,
// as a pointer in 2.x.
template <typename Map>
typename Map::key_type state_key(const Map&, const torch::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;  // as LibTorch 1.x spells it: the address, streamed
    key << static_cast<const void*>(p.unsafeGetTensorImpl());
    return key.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

std::vector<torch::Tensor> all_params(const torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> out;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) out.push_back(p);
  }
  return out;
}

template <typename AdamState>
void save_adam(const torch::optim::OptimizerParamState& base, const std::string& prefix,
               nlohmann::json& steps, io::NamedTensors& tensors) {
  const auto& s = static_cast<const AdamState&>(base);
  steps[prefix] = s.step();
  tensors.emplace_back(prefix + ".exp_avg", s.exp_avg().detach().cpu().clone());
  tensors.emplace_back(prefix + ".exp_avg_sq", s.exp_avg_sq().detach().cpu().clone());
  if (s.max_exp_avg_sq().defined() && s.max_exp_avg_sq().numel() > 0) {
    tensors.emplace_back(prefix + ".max_exp_avg_sq", s.max_exp_avg_sq().detach().cpu().clone());
  }
}

}  // namespace

std::pair<nlohmann::json, io::NamedTensors> optimizer_state(const torch::optim::Optimizer& optimizer,
                                                            OptimizerKind kind) {
  nlohmann::json description = {{"kind", to_string(kind)}};
  nlohmann::json lrs = nlohmann::json::array();
  for (const auto& group : optimizer.param_groups()) lrs.push_back(group.options().get_lr());
  description["lr"] = lrs;
  nlohmann::json steps = nlohmann::json::object();
  io::NamedTensors tensors;
  const auto params = all_params(optimizer);
  description["parameters"] = params.size();
  const auto& state = optimizer.state();
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = state.find(state_key(state, params[i]));
    if (it == state.end()) continue;  // no step taken for this parameter yet
    const std::string prefix = std::to_string(i);
    switch (kind) {
      case OptimizerKind::adam:
        save_adam<torch::optim::AdamParamState>(*it->second, prefix, steps, tensors);
        break;
      case OptimizerKind::adamw:
        save_adam<torch::optim::AdamWParamState>(*it->second, prefix, steps, tensors);
        break;
      case OptimizerKind::sgd: {
        const auto& s = static_cast<const torch::optim::SGDParamState&>(*it->second);
        steps[prefix] = 0;
        if (s.momentum_buffer().defined()) {
          tensors.emplace_back(prefix + ".momentum_buffer", s.momentum_buffer().detach().cpu().clone());
        }
        break;
      }
    }
  }
  description["steps"] = steps;
  return {description, tensors};
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, OptimizerKind kind,
                          const nlohmann::json& description, const io::NamedTensors& tensors,
                          const std::string& name) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(name + ": " + what); };
  if (!description.is_object() || !description.contains("kind") || !description["kind"].is_string()) {
    fail("the optimizer state is damaged (no kind)");
  }
  const auto saved_kind = description["kind"].get<std::string>();
  if (saved_kind != to_string(kind)) {
    fail("the checkpoint's optimizer is " + saved_kind + ", this run uses " + to_string(kind) +
         " (resume with the run's own settings)");
  }
  const auto params = all_params(optimizer);
  const auto saved_params = util::json_integer<int64_t>(description.value("parameters", nlohmann::json()), name + ": optimizer 'parameters'");
  if (saved_params != static_cast<int64_t>(params.size())) {
    fail("the checkpoint's optimizer has " + std::to_string(saved_params) +
         " parameters, this model has " + std::to_string(params.size()));
  }
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  auto take = [&](const std::string& key, const torch::Tensor& like, bool required) -> torch::Tensor {
    auto it = by_name.find(key);
    if (it == by_name.end()) {
      if (required) fail("the optimizer state has no " + key);
      return torch::Tensor();
    }
    if (it->second.sizes() != like.sizes() || it->second.scalar_type() != like.scalar_type()) {
      fail("the optimizer state " + key + " does not fit its parameter");
    }
    return it->second.to(like.device()).clone();
  };
  const auto& steps = description.value("steps", nlohmann::json::object());
  if (!steps.is_object()) fail("the optimizer state is damaged (steps)");
  auto& state = optimizer.state();
  state.clear();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string prefix = std::to_string(i);
    if (!steps.contains(prefix)) continue;
    const auto step = util::json_integer<int64_t>(steps[prefix], name + ": optimizer step of parameter " + prefix);
    const auto& p = params[i];
    std::unique_ptr<torch::optim::OptimizerParamState> entry;
    if (kind == OptimizerKind::sgd) {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      auto buffer = take(prefix + ".momentum_buffer", p, false);
      if (buffer.defined()) s->momentum_buffer(buffer);
      entry = std::move(s);
    } else {
      auto fill = [&](auto s) {
        s->step(step);
        s->exp_avg(take(prefix + ".exp_avg", p, true));
        s->exp_avg_sq(take(prefix + ".exp_avg_sq", p, true));
        auto max = take(prefix + ".max_exp_avg_sq", p, false);
        if (max.defined()) s->max_exp_avg_sq(max);
        entry = std::move(s);
      };
      if (kind == OptimizerKind::adam) {
        fill(std::make_unique<torch::optim::AdamParamState>());
      } else {
        fill(std::make_unique<torch::optim::AdamWParamState>());
      }
    }
    state[state_key(state, p)] = std::move(entry);
  }
  const auto& lrs = description.value("lr", nlohmann::json::array());
  auto& groups = optimizer.param_groups();
  if (lrs.is_array() && lrs.size() == groups.size()) {
    for (size_t g = 0; g < groups.size(); ++g) {
      if (!lrs[g].is_number()) fail("the optimizer state is damaged (learning rate)");
      groups[g].options().set_lr(lrs[g].get<double>());
    }
  }
}

}  // namespace sedensenet
