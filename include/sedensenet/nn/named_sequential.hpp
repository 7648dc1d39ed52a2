#pragma once
/// \file
/// `NamedSequential`: a sequence of named modules whose `clone()` keeps the names.
///
/// `torch::nn::Sequential` renames its children "0", "1", ... when cloned, which would change a
/// cloned DenseNet's parameter keys (`features.denseblock1...` -> `features.1...`) and break
/// weight exchange with PyTorch. This container keeps them.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

namespace sedensenet {

/// Runs its modules in order; each must have `Tensor forward(const Tensor&)` (or by value).
///
/// Example:
/// ```
/// sedensenet::NamedSequential seq;
/// seq->push_back("conv0", torch::nn::Conv2d(3, 8, 3));
/// seq->push_back("relu0", torch::nn::ReLU());
/// auto y = seq->forward(x);
/// ```
class NamedSequentialImpl : public torch::nn::Cloneable<NamedSequentialImpl> {
 public:
  NamedSequentialImpl() = default;

  /// Children are added with `push_back`, so there is nothing to rebuild.
  void reset() override {}

  /// Appends `module` under `name` (its parameters become "<name>.<parameter>").
  template <typename ModuleHolderType>
  void push_back(const std::string& name, ModuleHolderType module) {
    push_back(name, torch::nn::AnyModule(std::move(module)));
  }

  void push_back(const std::string& name, torch::nn::AnyModule module) {
    register_module(name, module.ptr());
    entries_.emplace_back(name, std::move(module));
  }

  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor x = input;
    for (auto& entry : entries_) x = entry.second.forward<torch::Tensor>(x);
    return x;
  }

  /// Deep copy that keeps every child's name (see the file comment).
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    auto copy = std::make_shared<NamedSequentialImpl>();
    for (const auto& entry : entries_) copy->push_back(entry.first, entry.second.clone(device));
    copy->train(is_training());
    return copy;
  }

  /// Number of modules.
  size_t size() const { return entries_.size(); }
  /// Name of module `index`.
  const std::string& name(size_t index) const { return entries_.at(index).first; }
  /// Module `index`, type-erased (call `.forward<torch::Tensor>(x)` or `.ptr()`).
  torch::nn::AnyModule& operator[](size_t index) { return entries_.at(index).second; }

  void pretty_print(std::ostream& stream) const override { stream << "sedensenet::NamedSequential"; }

 private:
  std::vector<std::pair<std::string, torch::nn::AnyModule>> entries_;
};
TORCH_MODULE(NamedSequential);

}  // namespace sedensenet
