#pragma once
/// \file
/// Fused batch normalisation (training mode) + ReLU for float32 CPU tensors, channel by channel.
///
/// LibTorch computes a training-mode batch norm followed by a ReLU as separate passes over the
/// whole tensor: the mean, the variance, the normalisation, then the ReLU (and in backward the
/// ReLU mask, two reductions and the input gradient). Every pass streams the full activation from
/// memory. Here each channel is handled by one thread from start to end: its N x H x W values
/// (200 KB for a batch of 64 at 28x28) are read from memory once and stay in the core's cache
/// for the following passes. The statistics are the same two-pass ones (mean, then the sum of
/// squared deviations), accumulated in double across rows, so the result matches LibTorch to
/// float rounding; it is also independent of the number of threads.
///
/// `batch_norm_relu(x, norm)` is used by the dense layers (standard memory mode, and norm2 in
/// `efficient_input_only`) and the transitions. It falls back to `relu(norm(x))` wherever the
/// fused kernels do not apply: not float32, not CPU, evaluation mode, no affine parameters or
/// running statistics, or `set_fused_batch_norm(false)`. Double backward goes through LibTorch's
/// ops. Speed: docs/benchmarks.md ("Fused batch norm + ReLU").

#include <torch/autograd.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace sedensenet {

namespace detail {

inline std::atomic<bool>& fused_batch_norm_flag() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

struct ChannelLayout {
  int64_t n, c, hw;
};

/// Fused kernels, compiled in the library (src/batch_norm_relu.cpp, with OpenMP and an AVX2
/// variant chosen at run time). x, y, dy, dx: contiguous (N, C, H, W) float32; w, b: (C).
///
/// Forward: y = max((x - mean) * invstd * w + b, 0), with the batch mean, 1/sqrt(var + eps) and
/// the biased variance written per channel.
void batch_norm_relu_forward_cpu(const float* x, const float* w, const float* b, float* y,
                                 float* mean, float* invstd, float* var, const ChannelLayout& l,
                                 double eps);
/// Backward from the output gradient and the input (the ReLU mask is recomputed from x); dw and
/// db are always written, dx may be null when the input needs no gradient.
void batch_norm_relu_backward_cpu(const float* dy, const float* x, const float* w,
                                  const float* b, const float* mean, const float* invstd,
                                  float* dx, float* dw, float* db, const ChannelLayout& l);
/// False where the library was built without the kernels (a compiler without GCC/Clang vector
/// extensions): `batch_norm_relu` then uses LibTorch's ops.
bool batch_norm_relu_kernels_available();

inline ChannelLayout channel_layout(const torch::Tensor& x) {
  return {x.size(0), x.size(1), x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1))};
}

/// Autograd function: inputs x, weight, bias; `stats` (3, C) receives the batch mean, 1/sqrt(var
/// + eps) and the biased variance, from which the caller updates the running statistics.
class BatchNormReLUFunction : public torch::autograd::Function<BatchNormReLUFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                               torch::Tensor stats) {
    const auto x = input.contiguous();
    const auto w = weight.contiguous();
    const auto b = bias.contiguous();
    auto y = torch::empty_like(x, torch::MemoryFormat::Contiguous);
    const auto layout = channel_layout(x);
    float* s = stats.data_ptr<float>();
    batch_norm_relu_forward_cpu(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                                y.data_ptr<float>(), s, s + layout.c, s + 2 * layout.c, layout,
                                eps);
    ctx->save_for_backward({input, weight, bias, stats});
    ctx->saved_data["eps"] = eps;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& input = saved[0];
    const auto& weight = saved[1];
    const auto& bias = saved[2];
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor(),
                                     torch::Tensor(), torch::Tensor()};
    if (torch::GradMode::is_enabled()) {
      // create_graph: differentiate the same computation written with LibTorch's own ops, so
      // that higher derivatives (gradient penalties) are right.
      const double eps = ctx->saved_data["eps"].toDouble();
      auto again =
          torch::relu(torch::batch_norm(input, weight, bias, {}, {}, true, 0.0, eps, false));
      torch::autograd::variable_list wrt;
      std::vector<size_t> index;
      for (size_t i = 0; i < 3; ++i) {
        const auto& t = saved[i];
        if (ctx->needs_input_grad(i) && t.requires_grad()) {
          wrt.push_back(t);
          index.push_back(i);
        }
      }
      torch::autograd::variable_list out(5);
      if (wrt.empty()) return out;
      auto g = torch::autograd::grad({again}, wrt, {grads[0]}, true, true, true);
      for (size_t k = 0; k < index.size(); ++k) out[index[k]] = g[k];
      return out;
    }
    const auto x = input.contiguous();
    const auto w = weight.contiguous();
    const auto b = bias.contiguous();
    const auto layout = channel_layout(x);
    const float* stats = saved[3].data_ptr<float>();
    auto dy = grads[0].contiguous();
    const bool need_x = ctx->needs_input_grad(0);
    auto dx = need_x ? torch::empty_like(x) : torch::Tensor();
    auto dw = torch::empty_like(w);
    auto db = torch::empty_like(b);
    batch_norm_relu_backward_cpu(dy.data_ptr<float>(), x.data_ptr<float>(), w.data_ptr<float>(),
                                 b.data_ptr<float>(), stats, stats + layout.c,
                                 need_x ? dx.data_ptr<float>() : nullptr, dw.data_ptr<float>(),
                                 db.data_ptr<float>(), layout);
    return {dx, ctx->needs_input_grad(1) ? dw : torch::Tensor(),
            ctx->needs_input_grad(2) ? db : torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace detail

/// Turns the fused batch norm + ReLU kernel on or off for the whole process (on by default).
/// Off, `batch_norm_relu` is exactly `relu(norm(x))` with LibTorch's kernels.
inline void set_fused_batch_norm(bool enabled) { detail::fused_batch_norm_flag() = enabled; }
/// Whether the fused batch norm + ReLU kernel is on (see `set_fused_batch_norm`).
inline bool fused_batch_norm() { return detail::fused_batch_norm_flag(); }

/// Whether `batch_norm_relu(x, norm)` takes the fused path: the switch is on, `norm` is in
/// training mode with affine parameters and running statistics, and x is a float32 CPU tensor
/// with at least two values per channel.
inline bool uses_fused_batch_norm(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& norm) {
  const auto& o = norm.options;
  return fused_batch_norm() && detail::batch_norm_relu_kernels_available() && norm.is_training() && o.affine() && o.track_running_stats() &&
         x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
         norm.weight.scalar_type() == torch::kFloat32 && x.size(0) * x.size(2) * x.size(3) > 1 &&
         x.size(1) == o.num_features();
}

/// relu(norm(x)) for a `BatchNorm2d` `norm`, with the running statistics and num_batches_tracked
/// updated exactly as `norm->forward(x)` does (momentum, or the cumulative average when the
/// momentum is unset; the running variance uses the unbiased batch variance).
inline torch::Tensor batch_norm_relu(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& norm) {
  if (!uses_fused_batch_norm(x, norm)) {
    auto normalized = norm.forward(x);
    return torch::relu_(normalized);
  }
  const auto& o = norm.options;
  const int64_t channels = x.size(1);
  auto stats = torch::empty({3, channels}, x.options().requires_grad(false));
  auto y = detail::BatchNormReLUFunction::apply(x, norm.weight, norm.bias, o.eps(), stats);
  torch::NoGradGuard no_grad;
  norm.num_batches_tracked += 1;
  const double momentum = o.momentum().has_value()
                              ? *o.momentum()
                              : 1.0 / norm.num_batches_tracked.item<double>();
  const double count = static_cast<double>(x.numel() / channels);
  norm.running_mean.mul_(1.0 - momentum).add_(stats[0], momentum);
  norm.running_var.mul_(1.0 - momentum).add_(stats[2], momentum * count / (count - 1.0));
  return y;
}

}  // namespace sedensenet
