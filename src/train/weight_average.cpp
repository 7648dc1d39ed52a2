#include "sedensenet/train/weight_average.hpp"

#include <algorithm>
#include <map>
#include <sstream>

namespace sedensenet {

namespace {

std::vector<std::pair<std::string, torch::Tensor>> named_weights(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

}  // namespace

WeightAverage::WeightAverage(const torch::nn::Module& module, double decay)
    : decay_(decay), source_(&module) {
  TORCH_CHECK(decay >= 0 && decay < 1, "WeightAverage: decay must be in [0, 1), got ", decay);
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : named_weights(module)) {
    names_.push_back(name);
    source_tensors_.push_back(tensor);
    average_.push_back(tensor.detach().clone());
    (tensor.is_floating_point() ? averaged_index_ : copied_index_).push_back(average_.size() - 1);
  }
  for (size_t i : averaged_index_) averaged_.push_back(average_[i]);
}

double WeightAverage::decay_at(int64_t n) const {
  return std::min(decay_, static_cast<double>(n) / static_cast<double>(n + 9));
}

std::vector<torch::Tensor> WeightAverage::weights_of(const torch::nn::Module& module) const {
  auto named = named_weights(module);
  TORCH_CHECK(named.size() == names_.size(), "WeightAverage: the module has ", named.size(),
              " parameters and buffers, the average ", names_.size(), ": not the module it was made from");
  std::vector<torch::Tensor> out;
  out.reserve(named.size());
  for (size_t i = 0; i < named.size(); ++i) {
    TORCH_CHECK(named[i].first == names_[i] && named[i].second.sizes() == average_[i].sizes(),
                "WeightAverage: the module's ", named[i].first, " ", named[i].second.sizes(),
                " does not match the average's ", names_[i], " ", average_[i].sizes(),
                ": not the module it was made from");
    out.push_back(named[i].second.detach());
  }
  return out;
}

void WeightAverage::update(const torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  const auto looked_up = &module == source_ ? std::vector<torch::Tensor>() : weights_of(module);
  const auto& weights = &module == source_ ? source_tensors_ : looked_up;
  ++updates_;
  const double step = 1.0 - decay_at(updates_);
  for (size_t k = 0; k < averaged_index_.size(); ++k) {
    averaged_[k].lerp_(weights[averaged_index_[k]], step);
  }
  for (size_t i : copied_index_) average_[i].copy_(weights[i]);
}

io::NamedTensors WeightAverage::tensors() const {
  io::NamedTensors out;
  for (size_t i = 0; i < names_.size(); ++i) out.emplace_back(names_[i], average_[i].cpu().clone());
  return out;
}

void WeightAverage::load(const io::NamedTensors& tensors, int64_t updates, const std::string& name) {
  TORCH_CHECK(updates >= 0, name, ": a negative count of weight-average updates (", updates, ")");
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  std::ostringstream problems;
  for (size_t i = 0; i < names_.size(); ++i) {
    const auto it = by_name.find(names_[i]);
    if (it == by_name.end()) {
      problems << "; " << names_[i] << " is missing";
    } else if (it->second.sizes() != average_[i].sizes() ||
               it->second.is_floating_point() != average_[i].is_floating_point()) {
      problems << "; " << names_[i] << " is " << it->second.sizes() << " " << it->second.scalar_type()
               << ", the model's " << average_[i].sizes() << " " << average_[i].scalar_type();
    }
  }
  if (by_name.size() != names_.size()) {
    problems << "; it holds " << by_name.size() << " tensors, the model " << names_.size();
  }
  TORCH_CHECK(problems.str().empty(), name, ": the weight average does not fit the model",
              problems.str());
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < names_.size(); ++i) average_[i].copy_(by_name.at(names_[i]));
  updates_ = updates;
}

void WeightAverage::assign(const torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  const auto weights = weights_of(module);
  for (size_t i = 0; i < weights.size(); ++i) average_[i].copy_(weights[i]);
}

WeightAverage::Applied WeightAverage::apply_to(torch::nn::Module& module) const {
  torch::NoGradGuard no_grad;
  auto targets = weights_of(module);
  std::vector<torch::Tensor> saved;
  saved.reserve(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    saved.push_back(targets[i].clone());
    targets[i].copy_(average_[i]);
  }
  return Applied(std::move(targets), std::move(saved));
}

WeightAverage::Applied::Applied(Applied&& other) noexcept
    : targets_(std::move(other.targets_)), saved_(std::move(other.saved_)) {
  other.targets_.clear();
  other.saved_.clear();
}

WeightAverage::Applied::~Applied() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < targets_.size(); ++i) targets_[i].copy_(saved_[i]);
}

}  // namespace sedensenet
