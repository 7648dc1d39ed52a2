#pragma once
/// \file
/// `WeightAverage`: an exponential moving average (EMA) of a module's weights, kept beside the
/// module while it trains; `Trainer` evaluates and keeps it when `TrainerOptions::ema_decay` is set.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sedensenet/io/checkpoint_file.hpp"

namespace sedensenet {

/// An exponential moving average of a module's parameters and floating-point buffers (BatchNorm's
/// running statistics, so that the averaged model needs no re-estimation of them). After the n-th
/// optimizer step (n = 1, 2, ...), `update` moves every averaged tensor a towards the module's w:
///
///     a = d a + (1 - d) w,   d = min(decay, n / (n + 9))
///
/// as `torch.lerp(a, w, 1 - d)`, the operation of PyTorch's `AveragedModel` EMA. The ramp n / (n + 9)
/// (TensorFlow's `ExponentialMovingAverage` with `num_updates`) lets the first steps forget the random
/// initialisation: without it the average of a short run would still hold some of it. Integer
/// buffers (BatchNorm's `num_batches_tracked`) are copied, not averaged.
///
/// The averaged tensors live on the module's device, in its memory format.
///
/// Example:
/// ```
/// sedensenet::WeightAverage average(*net, 0.999);
/// // after every optimizer step:
/// average.update(*net);
/// // evaluate the averaged weights, then go on training the module's own:
/// {
///   auto applied = average.apply_to(*net);
///   evaluate(net);
/// }
/// ```
class WeightAverage {
 public:
  /// Starts the average at `module`'s current weights. `decay` in [0, 1).
  WeightAverage(const torch::nn::Module& module, double decay);

  /// One step of the average towards `module`'s weights (the module it was made from: its tensors
  /// are looked up once, at construction; another module's are looked up and checked every time).
  void update(const torch::nn::Module& module);
  /// The decay d of update number `n` (1-based): min(decay, n / (n + 9)).
  double decay_at(int64_t n) const;
  double decay() const { return decay_; }
  /// Updates made so far (restored by `load`).
  int64_t updates() const { return updates_; }

  /// The averaged tensors by the module's names (parameters, then buffers), as CPU copies: what a
  /// checkpoint stores.
  io::NamedTensors tensors() const;
  /// Restores an average saved by `tensors()` after `updates` updates. Every name of the module must
  /// be there with its shape, else the error names `name` (the file) and what differs.
  void load(const io::NamedTensors& tensors, int64_t updates, const std::string& name);
  /// Makes the module's current weights the average (for example after averaging BatchNorm
  /// statistics over the ranks of a distributed run); the update count stays.
  void assign(const torch::nn::Module& module);

  /// While alive, the module holds the averaged weights; its own come back when it is destroyed.
  class Applied {
   public:
    Applied(Applied&& other) noexcept;
    Applied(const Applied&) = delete;
    Applied& operator=(const Applied&) = delete;
    Applied& operator=(Applied&&) = delete;
    ~Applied();

   private:
    friend class WeightAverage;
    Applied(std::vector<torch::Tensor> targets, std::vector<torch::Tensor> saved)
        : targets_(std::move(targets)), saved_(std::move(saved)) {}
    std::vector<torch::Tensor> targets_;  // the module's tensors
    std::vector<torch::Tensor> saved_;    // their own values
  };
  /// Copies the average into `module` until the returned guard goes away.
  [[nodiscard]] Applied apply_to(torch::nn::Module& module) const;

 private:
  /// `module`'s parameters and buffers in `names_`' order, checked against the average's shapes.
  std::vector<torch::Tensor> weights_of(const torch::nn::Module& module) const;

  double decay_;
  int64_t updates_ = 0;
  // The module the average was made from and its parameters and buffers (the module's own tensor
  // handles: `Module::to` and `set_data` change their data, not them). Looking them up by name
  // every step cost 10% of a small model's step.
  const torch::nn::Module* source_;
  std::vector<torch::Tensor> source_tensors_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> average_;
  std::vector<torch::Tensor> averaged_;  // the floating-point entries of average_ (lerp)
  std::vector<size_t> averaged_index_;   // their positions in average_
  std::vector<size_t> copied_index_;     // the others' (integer buffers)
};

}  // namespace sedensenet
