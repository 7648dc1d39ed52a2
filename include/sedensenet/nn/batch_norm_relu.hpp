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
#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

namespace sedensenet {

namespace detail {

inline std::atomic<bool>& fused_batch_norm_flag() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

/// Where a (N, C, H, W) float32 tensor's values are: sample n, channel ch starts at
/// n * batch + ch * hw. `x_batch` is x's (and dx's) distance between samples: c * hw for a
/// contiguous tensor, more for a channel slice of a wider one (the shared dense block's buffer);
/// y and dy are always contiguous. `accumulate_dx`: the backward adds to dx instead of writing.
struct ChannelLayout {
  int64_t n, c, hw;
  int64_t x_batch = 0;  ///< 0: contiguous (c * hw)
  bool accumulate_dx = false;
  int64_t x_offset(int64_t sample, int64_t ch) const {
    return sample * (x_batch != 0 ? x_batch : c * hw) + ch * hw;
  }
  int64_t y_offset(int64_t sample, int64_t ch) const { return (sample * c + ch) * hw; }
};

/// Where a channels-last (N, C, H, W) float32 tensor's values are: each of the rows = N x H x W
/// positions holds its C values next to each other, row r of x starting at r * x_row (x_row = c
/// for a channels-last tensor, more for a channel slice of a wider one); y and dy have x_row = c;
/// dx has x's. `accumulate_dx`: the backward adds to dx instead of writing.
struct RowLayout {
  int64_t rows, c;
  int64_t x_row;
  bool accumulate_dx = false;
};

/// Fused kernels, compiled in the library (src/nn/batch_norm_relu.cpp, with OpenMP and an AVX2
/// variant chosen at run time). x, y, dy, dx: contiguous (N, C, H, W) float32; w, b: (C).
///
/// Forward: y = max((x - mean) * invstd * w + b, 0), with the batch mean, 1/sqrt(var + eps) and
/// the biased variance written per channel.
void batch_norm_relu_forward_cpu(const float* x, const float* w, const float* b, float* y,
                                 float* mean, float* invstd, float* var, const ChannelLayout& l,
                                 double eps);
/// Recomputes the forward's output from saved statistics: y = max(x * scale + shift, 0) with
/// the forward's own arithmetic, so y is bit for bit what the forward returned.
void batch_norm_relu_apply_cpu(const float* x, const float* w, const float* b, const float* mean,
                               const float* invstd, float* y, const ChannelLayout& l);
/// Backward from the output gradient and the input. The ReLU mask is recomputed from x with the
/// forward's arithmetic (the same pre-activation, bit for bit), so it is the forward's mask; dw
/// and db are always written, dx may be null when the input needs no gradient.
void batch_norm_relu_backward_cpu(const float* dy, const float* x, const float* w,
                                  const float* b, const float* mean, const float* invstd,
                                  float* dx, float* dw, float* db, const ChannelLayout& l);
/// The same three kernels for channels-last tensors (src/nn/batch_norm_relu_rows.cpp): the same
/// two-pass statistics and pre-activation arithmetic, whole rows in chunks of 128 rows per task.
void batch_norm_relu_forward_rows(const float* x, const float* w, const float* b, float* y,
                                  float* mean, float* invstd, float* var, const RowLayout& l,
                                  double eps);
void batch_norm_relu_apply_rows(const float* x, const float* w, const float* b, const float* mean,
                                const float* invstd, float* y, const RowLayout& l);
void batch_norm_relu_backward_rows(const float* dy, const float* x, const float* w, const float* b,
                                   const float* mean, const float* invstd, float* dx, float* dw,
                                   float* db, const RowLayout& l);
/// False where the library was built without the kernels (a compiler without GCC/Clang vector
/// extensions): `batch_norm_relu` then uses LibTorch's ops.
bool batch_norm_relu_kernels_available();

inline ChannelLayout channel_layout(const torch::Tensor& x) {
  return {x.size(0), x.size(1), x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1))};
}

/// Whether the kernels can read x in place: contiguous, or a channel slice of a contiguous
/// (N, C', H, W) tensor (each sample's C x H x W values contiguous, samples further apart).
inline bool channel_slice_layout(const torch::Tensor& x) {
  return x.dim() == 4 && x.stride(3) == 1 && x.stride(2) == x.size(3) &&
         x.stride(1) == x.size(2) * x.size(3) && x.stride(0) >= x.size(1) * x.stride(1);
}

/// Whether x is channels-last, or a channel slice of a channels-last tensor, and not also in the
/// NCHW layout `channel_slice_layout` takes (which wins where both hold: C or H x W of 1).
inline bool channels_last_rows_layout(const torch::Tensor& x) {
  if (x.dim() != 4 || channel_slice_layout(x)) return false;
  const int64_t row = x.stride(3);
  return x.stride(1) == 1 && row >= x.size(1) && x.stride(2) == x.size(3) * row &&
         x.stride(0) == x.size(2) * x.size(3) * row;
}

/// One fused training-mode forward: the output and the per-channel batch statistics, (C) each.
struct FusedNormReLU {
  torch::Tensor output;
  torch::Tensor mean;    ///< batch mean
  torch::Tensor invstd;  ///< 1 / sqrt(biased batch variance + eps)
  torch::Tensor var;     ///< biased batch variance
};

/// The kernels on tensors (float32 CPU; any layout, made contiguous). These are what both the
/// standard path (`batch_norm_relu`) and the efficient dense layers (nn/efficient.hpp) call, so
/// the two compute the same function with the same rounding.
FusedNormReLU fused_norm_relu_forward(const torch::Tensor& x, const torch::Tensor& weight,
                                      const torch::Tensor& bias, double eps);
torch::Tensor fused_norm_relu_recompute(const torch::Tensor& x, const torch::Tensor& weight,
                                        const torch::Tensor& bias, const torch::Tensor& mean,
                                        const torch::Tensor& invstd);
/// {dx (undefined unless need_input_grad), dweight, dbias}. With `accumulate_into` defined (x's
/// sizes and layout, `channel_slice_layout`), dx is added to it in place and returned undefined.
/// x may be a channel slice (`channel_slice_layout`) in all three functions: it is read in place.
std::array<torch::Tensor, 3> fused_norm_relu_backward(
    const torch::Tensor& grad_output, const torch::Tensor& x, const torch::Tensor& weight,
    const torch::Tensor& bias, const torch::Tensor& mean, const torch::Tensor& invstd,
    bool need_input_grad, const torch::Tensor& accumulate_into = torch::Tensor());

/// Updates `norm`'s running statistics and num_batches_tracked from one batch's mean and biased
/// variance, exactly as `norm->forward` does in training (momentum, or the cumulative average when
/// the momentum is unset; the running variance takes the unbiased variance).
void update_running_statistics(torch::nn::BatchNorm2dImpl& norm, const torch::Tensor& mean,
                               const torch::Tensor& var, int64_t values_per_channel);

/// Where `BatchNormReLUFunction` leaves the batch statistics for the running-statistics update.
struct BatchNormReLUStatistics {
  torch::Tensor mean, var;
};

/// Autograd function over the fused kernels: inputs x, weight, bias. Double backward (a graph
/// built during backward) differentiates the same computation written with LibTorch's ops.
class BatchNormReLUFunction : public torch::autograd::Function<BatchNormReLUFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                               BatchNormReLUStatistics* statistics);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads);
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
torch::Tensor batch_norm_relu(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& norm);

}  // namespace sedensenet
