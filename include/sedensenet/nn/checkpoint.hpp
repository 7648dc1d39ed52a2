#pragma once
/// \file
/// `checkpoint(function, inputs)`: run a function without keeping its intermediates and run it
/// again during backward. The generic tool for users' own modules; the dense layers use the
/// specialised, cheaper functions of efficient.hpp.

#include <ATen/core/Generator.h>
#include <ATen/Context.h>
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include "sedensenet/util/torch_compat.hpp"

#include <functional>
#include <type_traits>
#include <memory>
#include <utility>
#include <vector>

namespace sedensenet {

/// What `checkpoint` runs: tensors in, tensors out.
using CheckpointFunction =
    std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

namespace detail {

/// The random-number and autocast state at the first run, restored for the second run so that
/// dropout masks and mixed-precision casts come out the same.
struct ExecutionState {
  torch::Tensor cpu_rng;
  std::vector<torch::Tensor> cuda_rng;  // one per device, when CUDA is initialised
  bool autocast_cuda = false;
  bool autocast_cpu = false;
  at::ScalarType autocast_cuda_dtype = at::kHalf;
  at::ScalarType autocast_cpu_dtype = at::kBFloat16;

  static ExecutionState capture() {
    ExecutionState s;
    at::Generator cpu = at::detail::getDefaultCPUGenerator();  // a handle to the global one
    s.cpu_rng = cpu.get_state();
    if (at::globalContext().hasCUDA()) {
      const auto devices = static_cast<int>(torch::cuda::device_count());
      for (int i = 0; i < devices; ++i) {
        at::Generator cuda =
            at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
        s.cuda_rng.push_back(cuda.get_state());
      }
    }
    s.autocast_cuda = compat::autocast_enabled(at::kCUDA);
    s.autocast_cpu = compat::autocast_enabled(at::kCPU);
    s.autocast_cuda_dtype = compat::autocast_dtype(at::kCUDA);
    s.autocast_cpu_dtype = compat::autocast_dtype(at::kCPU);
    return s;
  }

  void apply() const {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    cpu.set_state(cpu_rng);
    for (size_t i = 0; i < cuda_rng.size(); ++i) {
      at::Generator cuda = at::globalContext().defaultGenerator(
          at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      cuda.set_state(cuda_rng[i]);
    }
    compat::set_autocast_enabled(at::kCUDA, autocast_cuda);
    compat::set_autocast_enabled(at::kCPU, autocast_cpu);
    compat::set_autocast_dtype(at::kCUDA, autocast_cuda_dtype);
    compat::set_autocast_dtype(at::kCPU, autocast_cpu_dtype);
  }
};

/// Restores the state that was current when it was made, whatever happens in between.
class ExecutionStateGuard {
 public:
  explicit ExecutionStateGuard(const ExecutionState& replay) : saved_(ExecutionState::capture()) {
    replay.apply();
  }
  ~ExecutionStateGuard() { saved_.apply(); }
  ExecutionStateGuard(const ExecutionStateGuard&) = delete;
  ExecutionStateGuard& operator=(const ExecutionStateGuard&) = delete;

 private:
  ExecutionState saved_;
};

struct CheckpointCapsule : torch::CustomClassHolder {
  CheckpointFunction function;
  ExecutionState state;
  size_t num_inputs = 0;
  std::vector<torch::Tensor> parameters;
};

struct CheckpointAutogradFunction : public torch::autograd::Function<CheckpointAutogradFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                torch::TensorList inputs_and_parameters,
                                                c10::intrusive_ptr<CheckpointCapsule> capsule) {
    const auto split = static_cast<long>(capsule->num_inputs);
    std::vector<torch::Tensor> inputs(inputs_and_parameters.begin(),
                                      inputs_and_parameters.begin() + split);
    capsule->parameters.assign(inputs_and_parameters.begin() + split, inputs_and_parameters.end());
    capsule->state = ExecutionState::capture();
    auto outputs = capsule->function(inputs);  // grad mode is off here: nothing is kept
    ctx->save_for_backward(inputs);
    ctx->saved_data["capsule"] = c10::IValue::make_capsule(
        c10::static_intrusive_pointer_cast<torch::CustomClassHolder>(capsule));
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "checkpoint: double backward (create_graph=true) is not supported");
    auto capsule = c10::static_intrusive_pointer_cast<CheckpointCapsule>(
        ctx->saved_data["capsule"].toCapsule());
    auto saved = ctx->get_saved_variables();
    const auto& parameters = capsule->parameters;

    // Re-run with the recorded random-number and autocast state, this time keeping the graph.
    std::vector<torch::Tensor> inputs;
    inputs.reserve(saved.size());
    for (size_t i = 0; i < saved.size(); ++i) {
      auto detached = saved[i].detach();
      if (ctx->needs_input_grad(i) && detached.is_floating_point()) detached.requires_grad_(true);
      inputs.push_back(detached);
    }
    std::vector<torch::Tensor> outputs;
    {
      ExecutionStateGuard replay(capsule->state);
      torch::AutoGradMode enable_grad(true);
      outputs = capsule->function(inputs);
    }

    // Differentiate the re-run outputs with respect to the inputs and the parameters.
    std::vector<torch::Tensor> roots, root_grads;
    for (size_t i = 0; i < outputs.size() && i < grad_outputs.size(); ++i) {
      if (outputs[i].defined() && outputs[i].requires_grad() && grad_outputs[i].defined()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grad_outputs[i]);
      }
    }
    std::vector<torch::Tensor> wrt;
    std::vector<size_t> wrt_index;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].requires_grad()) {
        wrt.push_back(inputs[i]);
        wrt_index.push_back(i);
      }
    }
    for (size_t j = 0; j < parameters.size(); ++j) {
      if (ctx->needs_input_grad(inputs.size() + j)) {
        wrt.push_back(parameters[j]);
        wrt_index.push_back(inputs.size() + j);
      }
    }
    // One slot per forward argument: every tensor, then the capsule (no gradient).
    torch::autograd::variable_list result(inputs.size() + parameters.size() + 1);
    if (roots.empty() || wrt.empty()) return result;
    auto grads = torch::autograd::grad(roots, wrt, root_grads, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < wrt.size(); ++k) result[wrt_index[k]] = grads[k];
    return result;
  }
};

}  // namespace detail

/// Runs `function(inputs)` without keeping intermediate results for the backward pass, and runs
/// it again during backward to compute gradients: memory of the function's activations traded for
/// one more forward. Gradients flow to `inputs` and to `parameters` (the tensors the function uses
/// internally, such as a module's weights; pass them so that they get gradients even when no
/// input requires one).
///
/// The CPU and CUDA random-number states and the autocast state of the first run are restored for
/// the second, so dropout and mixed precision give the same results. Caveats: a function with
/// side effects (such as a BatchNorm in training mode, which updates running statistics) performs
/// them twice; use the dense layers' built-in efficient mode for those. Double backward is not
/// supported.
///
/// Example:
/// ```
/// auto outputs = sedensenet::checkpoint(
///     [&](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{mlp(in[0])}; },
///     {x}, mlp->parameters());
/// outputs[0].sum().backward();
/// ```
template <typename Function,
          typename = std::enable_if_t<!std::is_base_of_v<
              torch::detail::ModuleHolderIndicator, std::decay_t<Function>>>>
std::vector<torch::Tensor> checkpoint(Function&& callable,
                                      const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& parameters = {}) {
  CheckpointFunction function(std::forward<Function>(callable));
  TORCH_CHECK(function, "checkpoint: the function is empty");
  if (!torch::GradMode::is_enabled()) return function(inputs);
  auto capsule = c10::make_intrusive<detail::CheckpointCapsule>();
  capsule->function = std::move(function);
  capsule->num_inputs = inputs.size();
  std::vector<torch::Tensor> all(inputs);
  all.insert(all.end(), parameters.begin(), parameters.end());
  return detail::CheckpointAutogradFunction::apply(torch::TensorList(all), capsule);
}

/// `checkpoint` for a module with `Tensor forward(Tensor)`; its parameters receive gradients.
///
/// Example:
/// ```
/// torch::nn::Sequential mlp(torch::nn::Linear(8, 8), torch::nn::Tanh());
/// auto y = sedensenet::checkpoint(mlp, x);
/// ```
template <typename ModuleType>
torch::Tensor checkpoint(torch::nn::ModuleHolder<ModuleType>& module, const torch::Tensor& input) {
  auto impl = module.ptr();
  auto outputs = checkpoint(
      [impl](const std::vector<torch::Tensor>& in) {
        return std::vector<torch::Tensor>{impl->forward(in[0])};
      },
      {input}, impl->parameters());
  return outputs[0];
}

}  // namespace sedensenet
