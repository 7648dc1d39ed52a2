// The fused batch norm + ReLU (training mode, float32 CPU): against PyTorch's nn.BatchNorm2d +
// ReLU, against LibTorch's own ops, across thread counts, double backward, and the conditions
// under which LibTorch's ops are used instead.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <array>
#include <cmath>

#include "sedensenet/nn/batch_norm_relu.hpp"
#include "sedensenet/nn/dense_layer.hpp"
#include "sedensenet/nn/transition.hpp"
#include "sedensenet/util/threads.hpp"
#include "support/bundle.hpp"
#include "support/python.hpp"
#include "support/tensor_matchers.hpp"

using namespace sedensenet;
using sedensenet::test::AllClose;
using sedensenet::test::Equals;
using sedensenet::test::scaled_difference;

namespace {

// Restores the fused switch and LibTorch's thread count at the end of a test.
struct FusedGuard {
  bool fused = fused_batch_norm();
  int threads = at::get_num_threads();
  ~FusedGuard() {
    set_fused_batch_norm(fused);
    at::set_num_threads(threads);
  }
};

torch::nn::BatchNorm2d make_norm(int64_t channels, c10::optional<double> momentum, uint64_t seed) {
  torch::manual_seed(seed);
  torch::nn::BatchNorm2d norm(torch::nn::BatchNorm2dOptions(channels).momentum(momentum));
  torch::NoGradGuard no_grad;
  norm->weight.uniform_(0.5, 1.5);
  norm->bias.uniform_(-0.5, 0.5);
  return norm;
}

struct Step {
  torch::Tensor y, dx, dweight, dbias;
};

Step train_step(torch::nn::BatchNorm2d& norm, const torch::Tensor& x, const torch::Tensor& g) {
  auto input = x.clone().requires_grad_(true);
  for (auto& p : norm->parameters()) p.mutable_grad() = torch::Tensor();
  auto y = batch_norm_relu(input, *norm);
  y.backward(g);
  return {y.detach(), input.grad(), norm->weight.grad().clone(), norm->bias.grad().clone()};
}

/// Two steps of the same function (summed in different orders) agree to float rounding: outputs,
/// gradients and running statistics.
void check_same_function(const Step& a, torch::nn::BatchNorm2d& norm_a, const Step& b,
                         torch::nn::BatchNorm2d& norm_b) {
  CHECK_THAT(a.y, AllClose(b.y, 1e-5, 1e-6));
  CHECK_THAT(a.dx, AllClose(b.dx, 1e-4, 1e-6));
  CHECK_THAT(a.dweight, AllClose(b.dweight, 1e-4, 1e-5));
  CHECK_THAT(a.dbias, AllClose(b.dbias, 1e-5, 1e-5));
  CHECK_THAT(norm_a->running_mean, AllClose(norm_b->running_mean, 1e-5, 1e-7));
  CHECK_THAT(norm_a->running_var, AllClose(norm_b->running_var, 1e-5, 1e-7));
}

}  // namespace

TEST_CASE("batch_norm_relu matches PyTorch's BatchNorm2d + ReLU: output, gradients, running "
          "statistics",
          "[batch_norm_relu][pytorch]") {
  FusedGuard guard;
  set_fused_batch_norm(true);
  // Shapes with and without a remainder after the 8-wide vector loop, one image, one channel.
  // Channels-last: full blocks of 16 channels and a partial one (24, 40), a partial one alone (5,
  // 3), exactly one (16); with one channel the tensor is also NCHW and takes that path.
  auto [n, c, h, w] = GENERATE(table<int64_t, int64_t, int64_t, int64_t>(
      {{8, 24, 28, 28}, {4, 5, 7, 7}, {3, 16, 8, 8}, {1, 3, 5, 3}, {16, 1, 2, 2}, {2, 40, 6, 5}}));
  const double momentum = GENERATE(0.1, -1.0);  // -1: None, the cumulative moving average
  const bool channels_last = GENERATE(false, true);
  CAPTURE(n, c, h, w, momentum, channels_last);

  torch::manual_seed(7);
  test::TensorBundle in{{"x1", torch::randn({n, c, h, w}) * 2 + 0.3},
                        {"x2", torch::randn({n, c, h, w}) - 0.2},
                        {"g1", torch::randn({n, c, h, w})},
                        {"momentum", torch::full({1}, momentum, torch::kFloat64)}};
  auto norm = make_norm(c, momentum < 0 ? c10::optional<double>() : c10::optional<double>(momentum), 3);
  in["weight"] = norm->weight.detach().clone();
  in["bias"] = norm->bias.detach().clone();
  test::TempDir dir;
  test::save_bundle(dir / "in", in);
  test::run_python("batch_norm_relu_reference.py",
                   (dir / "in").string() + " " + (dir / "out").string());
  auto ref = test::load_bundle(dir / "out");

  const auto format = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  const auto x1 = in["x1"].contiguous(format), x2 = in["x2"].contiguous(format);
  REQUIRE(uses_fused_batch_norm(x1, *norm));
  auto step = train_step(norm, x1, in["g1"].contiguous(format));
  torch::Tensor y2;
  {
    torch::NoGradGuard no_grad;
    y2 = batch_norm_relu(x2, *norm);
  }
  // The output and the input gradient keep the input's layout.
  CHECK(step.y.is_contiguous(format));
  CHECK(step.dx.is_contiguous(format));
  CHECK(y2.is_contiguous(format));
  CHECK_THAT(step.y, AllClose(ref["y1"], 1e-5, 1e-5));
  CHECK_THAT(step.dx, AllClose(ref["dx1"], 1e-4, 1e-5));
  CHECK_THAT(step.dweight, AllClose(ref["dweight"], 1e-4, 1e-4));
  CHECK_THAT(step.dbias, AllClose(ref["dbias"], 1e-4, 1e-4));
  CHECK_THAT(y2, AllClose(ref["y2"], 1e-5, 1e-5));
  CHECK_THAT(norm->running_mean, AllClose(ref["running_mean"], 1e-5, 1e-6));
  CHECK_THAT(norm->running_var, AllClose(ref["running_var"], 1e-5, 1e-6));
  CHECK(norm->num_batches_tracked.item<int64_t>() == ref["num_batches_tracked"].item<int64_t>());
}

TEST_CASE("batch_norm_relu agrees with LibTorch's own batch norm and ReLU (the switch off)",
          "[batch_norm_relu]") {
  FusedGuard guard;
  torch::manual_seed(11);
  auto x = torch::randn({6, 13, 9, 11}) * 3 - 1;
  auto g = torch::randn({6, 13, 9, 11});
  auto fused = make_norm(13, 0.1, 5);
  auto plain = make_norm(13, 0.1, 5);
  set_fused_batch_norm(true);
  auto a = train_step(fused, x, g);
  set_fused_batch_norm(false);
  REQUIRE_FALSE(uses_fused_batch_norm(x, *plain));
  auto b = train_step(plain, x, g);
  check_same_function(a, fused, b, plain);
  // About half of the outputs are zero (the ReLU), so the mask is exercised.
  const double zeros = (a.y == 0).to(torch::kFloat64).mean().item<double>();
  CHECK(zeros > 0.2);
  CHECK(zeros < 0.8);
}

TEST_CASE("batch_norm_relu gives the same bits on 1 and 2 threads", "[batch_norm_relu]") {
  FusedGuard guard;
  set_fused_batch_norm(true);
  torch::manual_seed(12);
  auto x = torch::randn({8, 10, 14, 14});
  auto g = torch::randn({8, 10, 14, 14});
  at::set_num_threads(1);
  auto one_norm = make_norm(10, 0.1, 6);
  auto one = train_step(one_norm, x, g);
  at::set_num_threads(2);
  auto two_norm = make_norm(10, 0.1, 6);
  auto two = train_step(two_norm, x, g);
  CHECK_THAT(one.y, Equals(two.y));
  CHECK_THAT(one.dx, Equals(two.dx));
  CHECK_THAT(one.dweight, Equals(two.dweight));
  CHECK_THAT(one_norm->running_var, Equals(two_norm->running_var));
}

TEST_CASE("batch_norm_relu on channels-last maps: NCHW's results, any thread count, slices read in "
          "place",
          "[batch_norm_relu]") {
  FusedGuard guard;
  set_fused_batch_norm(true);
  torch::manual_seed(21);
  // A channels-last buffer of 40 channels; the layer reads channels 8 to 33 (a slice: rows 40 apart).
  const auto buffer = (torch::randn({6, 40, 9, 7}) * 2 - 0.3).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto slice = buffer.narrow(1, 8, 26);
  REQUIRE(sedensenet::detail::channels_last_rows_layout(slice));
  const auto dense = slice.contiguous(torch::MemoryFormat::ChannelsLast);
  const auto nchw = slice.contiguous();
  const auto g = torch::randn({6, 26, 9, 7});
  auto norm_slice = make_norm(26, 0.1, 8), norm_dense = make_norm(26, 0.1, 8), norm_nchw = make_norm(26, 0.1, 8);
  const auto a = train_step(norm_slice, slice, g);
  const auto b = train_step(norm_dense, dense, g);
  const auto c = train_step(norm_nchw, nchw, g);
  // The slice and its copy: the same kernel in the same order, so the same bits.
  CHECK_THAT(a.y, Equals(b.y));
  CHECK_THAT(a.dx, Equals(b.dx));
  CHECK_THAT(a.dweight, Equals(b.dweight));
  CHECK_THAT(norm_slice->running_var, Equals(norm_dense->running_var));
  // Against the NCHW kernels: the same function, summed in another order.
  check_same_function(b, norm_dense, c, norm_nchw);
  // One and two threads: the same bits.
  at::set_num_threads(1);
  auto norm_one = make_norm(26, 0.1, 8);
  const auto one = train_step(norm_one, dense, g);
  at::set_num_threads(2);
  CHECK_THAT(one.y, Equals(b.y));
  CHECK_THAT(one.dx, Equals(b.dx));
  CHECK_THAT(one.dweight, Equals(b.dweight));
  // The recomputation (efficient layers) gives the forward's output bit for bit, also for a slice.
  const auto forward = sedensenet::detail::fused_norm_relu_forward(slice, norm_slice->weight, norm_slice->bias, 1e-5);
  CHECK_THAT(sedensenet::detail::fused_norm_relu_recompute(slice, norm_slice->weight, norm_slice->bias,
                                               forward.mean, forward.invstd),
             Equals(forward.output));
  // Accumulating the input gradient into a channels-last slice of a gradient buffer.
  auto grad_buffer = torch::ones_like(buffer);
  const auto grad_slice = grad_buffer.narrow(1, 8, 26);
  const auto [none, dw, db] = sedensenet::detail::fused_norm_relu_backward(
      g, slice, norm_slice->weight, norm_slice->bias, forward.mean, forward.invstd, true, grad_slice);
  CHECK_FALSE(none.defined());
  const auto [dx, dw2, db2] = sedensenet::detail::fused_norm_relu_backward(
      g, slice, norm_slice->weight, norm_slice->bias, forward.mean, forward.invstd, true);
  CHECK_THAT(grad_slice, AllClose(dx + 1, 1e-6, 1e-6));
  CHECK_THAT(grad_buffer.narrow(1, 0, 8), Equals(torch::ones({6, 8, 9, 7})));
}

TEST_CASE("batch_norm_relu: parameters only, input only, and a non-contiguous gradient",
          "[batch_norm_relu]") {
  FusedGuard guard;
  set_fused_batch_norm(true);
  torch::manual_seed(13);
  auto x = torch::randn({4, 6, 5, 5});
  auto norm = make_norm(6, 0.1, 7);
  // Input without gradient: only the parameters receive one.
  auto y = batch_norm_relu(x, *norm);
  y.sum().backward();
  CHECK(norm->weight.grad().defined());
  auto plain = make_norm(6, 0.1, 7);
  set_fused_batch_norm(false);
  auto y_plain = batch_norm_relu(x, *plain);
  y_plain.sum().backward();
  CHECK_THAT(norm->weight.grad(), AllClose(plain->weight.grad(), 1e-4, 1e-5));
  CHECK_THAT(norm->bias.grad(), AllClose(plain->bias.grad(), 1e-5, 1e-5));

  // Frozen parameters: only the input receives a gradient. The incoming gradient is a
  // transposed (non-contiguous) view.
  set_fused_batch_norm(true);
  for (auto& p : norm->parameters()) p.requires_grad_(false);
  for (auto& p : plain->parameters()) p.requires_grad_(false);
  auto xa = x.clone().requires_grad_(true);
  auto xb = x.clone().requires_grad_(true);
  auto g = torch::randn({4, 6, 5, 5}).transpose(2, 3);
  batch_norm_relu(xa, *norm).backward(g);
  set_fused_batch_norm(false);
  batch_norm_relu(xb, *plain).backward(g);
  CHECK_THAT(xa.grad(), AllClose(xb.grad(), 1e-4, 1e-6));
}

TEST_CASE("batch_norm_relu supports double backward (gradient penalties)", "[batch_norm_relu]") {
  FusedGuard guard;
  torch::manual_seed(14);
  auto x = torch::randn({5, 4, 6, 6});
  auto penalty = [&](bool fused) {
    set_fused_batch_norm(fused);
    auto norm = make_norm(4, 0.1, 8);
    auto input = x.clone().requires_grad_(true);
    auto y = batch_norm_relu(input, *norm);
    auto gx = torch::autograd::grad({(y * y).sum()}, {input}, {}, true, true)[0];
    gx.pow(2).sum().backward();
    return std::make_pair(gx.detach(), norm->weight.grad().clone());
  };
  auto [gx_fused, w_fused] = penalty(true);
  auto [gx_plain, w_plain] = penalty(false);
  CHECK_THAT(gx_fused, AllClose(gx_plain, 1e-4, 1e-5));
  CHECK_THAT(w_fused, AllClose(w_plain, 1e-3, 1e-4));
}

TEST_CASE("batch_norm_relu uses LibTorch's ops outside float32 CPU training", "[batch_norm_relu]") {
  FusedGuard guard;
  set_fused_batch_norm(true);
  auto norm = make_norm(3, 0.1, 9);
  auto x = torch::randn({2, 3, 4, 4});
  CHECK(uses_fused_batch_norm(x, *norm));
  CHECK_FALSE(uses_fused_batch_norm(x.to(torch::kFloat64), *norm));
  CHECK_FALSE(uses_fused_batch_norm(torch::randn({1, 3, 1, 1}), *norm));  // one value per channel
  norm->eval();
  CHECK_FALSE(uses_fused_batch_norm(x, *norm));
  // In evaluation mode the running statistics are used and left alone.
  auto mean_before = norm->running_mean.clone();
  auto expected = torch::relu(norm->forward(x));
  CHECK_THAT(batch_norm_relu(x, *norm), AllClose(expected, 1e-6, 1e-7));
  CHECK_THAT(norm->running_mean, Equals(mean_before));
  norm->train();
  torch::nn::BatchNorm2d no_affine(torch::nn::BatchNorm2dOptions(3).affine(false));
  CHECK_FALSE(uses_fused_batch_norm(x, *no_affine));
  torch::nn::BatchNorm2d no_stats(torch::nn::BatchNorm2dOptions(3).track_running_stats(false));
  CHECK_FALSE(uses_fused_batch_norm(x, *no_stats));
  set_fused_batch_norm(false);
  CHECK_FALSE(uses_fused_batch_norm(x, *norm));
}

TEST_CASE("A dense layer and a transition train the same with the fused kernel on and off",
          "[batch_norm_relu][dense_layer]") {
  FusedGuard guard;
  torch::manual_seed(15);
  auto x = torch::randn({8, 20, 9, 9});
  auto run = [&](bool fused) {
    set_fused_batch_norm(fused);
    torch::manual_seed(16);
    DenseLayer<> layer(DenseLayerOptions(20, 6));
    Transition transition(TransitionOptions(26, 13));
    auto input = x.clone().requires_grad_(true);
    auto y = transition->forward(torch::cat({input, layer->forward(input)}, 1));
    y.pow(2).mean().backward();
    std::vector<torch::Tensor> out{y.detach(), input.grad()};
    for (const auto& p : layer->parameters()) out.push_back(p.grad());
    for (const auto& p : transition->parameters()) out.push_back(p.grad());
    for (const auto& b : layer->buffers()) out.push_back(b.to(torch::kFloat32));
    return out;
  };
  auto fused = run(true);
  auto plain = run(false);
  REQUIRE(fused.size() == plain.size());
  for (size_t i = 0; i < fused.size(); ++i) {
    CAPTURE(i);
    CHECK_THAT(fused[i], AllClose(plain[i], 1e-3, 1e-5));
  }
}

namespace {

// Values placed at and near the ReLU's kink: each channel holds many copies of one dyadic value
// v (so the batch mean is v, or within an ulp of it) and of its neighbours 1 to 3 ulps away, plus
// a symmetric spread. With bias 0 the pre-activation of those elements is zero or a few ulps from
// it, on either side depending on rounding.
torch::Tensor values_at_the_kink(int64_t n, int64_t c, int64_t hw) {
  auto x = torch::empty({n, c, hw});
  auto a = x.accessor<float, 3>();
  for (int64_t ch = 0; ch < c; ++ch) {
    const float v = static_cast<float>((ch % 13) - 6) / 16.0f + 0.03125f * static_cast<float>(ch % 3);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < hw; ++j) {
        const int64_t k = (i * hw + j) % 16;
        float value = v;
        if (k >= 8 && k < 11) {
          value = v;
          for (int64_t u = 0; u < k - 7; ++u) value = std::nextafter(value, 1e9f);
        } else if (k >= 11 && k < 14) {
          value = v;
          for (int64_t u = 0; u < k - 10; ++u) value = std::nextafter(value, -1e9f);
        } else if (k >= 14) {
          value = v + (k == 14 ? 0.25f : -0.25f);
        }
        a[i][ch][j] = value;
      }
    }
  }
  return x.view({n, c, hw / 4, 4});
}

// The exact derivative, in float64, of y = relu(batch_norm(x)) with the ReLU mask `mask` (the
// one the forward applied): {dx, dweight, dbias}.
std::array<torch::Tensor, 3> float64_backward(const torch::Tensor& x, const torch::Tensor& weight,
                                              const torch::Tensor& g, const torch::Tensor& mask,
                                              double eps) {
  auto xd = x.to(torch::kFloat64);
  const std::vector<int64_t> dims = {0, 2, 3};
  auto mean = xd.mean(dims, true);
  auto var = (xd - mean).pow(2).mean(dims, true);
  auto invstd = (var + eps).rsqrt();
  auto xhat = (xd - mean) * invstd;
  auto gm = g.to(torch::kFloat64) * mask.to(torch::kFloat64);
  auto w = weight.detach().to(torch::kFloat64).view({1, -1, 1, 1});
  auto dx = w * invstd * (gm - gm.mean(dims, true) - xhat * (gm * xhat).mean(dims, true));
  return {dx, (gm * xhat).sum(dims), gm.sum(dims)};
}

}  // namespace

TEST_CASE("batch_norm_relu: the backward's ReLU mask is the forward's, also at and near zero",
          "[batch_norm_relu][exactness]") {
  FusedGuard guard;
  set_fused_batch_norm(true);
  const int64_t n = 6, c = 40, hw = 64;
  auto x = values_at_the_kink(n, c, hw);
  auto norm = make_norm(c, 0.1, 21);
  {
    torch::NoGradGuard no_grad;
    norm->bias.zero_();
  }
  REQUIRE(uses_fused_batch_norm(x, *norm));
  auto step = sedensenet::detail::fused_norm_relu_forward(x, norm->weight, norm->bias, 1e-5);
  const auto positive = step.output > 0;

  // With an incoming gradient of ones, dbias counts the elements the backward lets through: it
  // must be exactly the number of positive outputs, channel by channel.
  auto ones = torch::ones_like(x);
  auto [dx1, dw1, db1] = sedensenet::detail::fused_norm_relu_backward(ones, x, norm->weight, norm->bias,
                                                         step.mean, step.invstd, true);
  auto counts = positive.sum({0, 2, 3}).to(torch::kFloat32);
  CHECK_THAT(db1, Equals(counts));
  // The kink is really hit: some elements sit just above zero, others at the channel mean (where
  // the exact pre-activation is zero) were cut to zero.
  auto tiny_positive = (step.output > 0) & (step.output < 1e-5);
  auto kink_zero = (step.output == 0) & ((x - step.mean.view({1, -1, 1, 1})).abs() < 1e-6);
  CHECK(tiny_positive.any().item().toBool());
  CHECK(kink_zero.any().item().toBool());

  // A random gradient: dx, dweight and dbias are the exact derivative of the computed function
  // (float64 with the forward's mask).
  torch::manual_seed(22);
  auto g = torch::randn_like(x);
  auto [dx, dw, db] = sedensenet::detail::fused_norm_relu_backward(g, x, norm->weight, norm->bias, step.mean,
                                                      step.invstd, true);
  auto ref = float64_backward(x, norm->weight, g, positive, 1e-5);
  CHECK(scaled_difference(dx, ref[0]) < 1e-5);
  CHECK(scaled_difference(dw, ref[1]) < 1e-5);
  CHECK(scaled_difference(db, ref[2]) < 1e-5);

  // The recomputation of the efficient layers gives the forward's bits.
  CHECK_THAT(sedensenet::detail::fused_norm_relu_recompute(x, norm->weight, norm->bias, step.mean,
                                               step.invstd),
             Equals(step.output));
}

TEST_CASE("batch_norm_relu at a realistic size: gradients within float32 noise of the exact "
          "derivative, no worse than LibTorch's",
          "[batch_norm_relu][exactness]") {
  FusedGuard guard;
  // A dense layer's norm1 input in block 1 of SE-DenseNet-BC-100 (k = 12) at 32x32, batch 32.
  torch::manual_seed(23);
  auto x = torch::randn({32, 96, 32, 32}) * 1.5 + 0.4;
  auto g = torch::randn({32, 96, 32, 32}) * 1e-3;
  std::array<double, 3> errors[2];
  for (int fused = 0; fused < 2; ++fused) {
    set_fused_batch_norm(fused == 1);
    auto norm = make_norm(96, 0.1, 24);
    REQUIRE(uses_fused_batch_norm(x, *norm) == (fused == 1));
    auto step = train_step(norm, x, g);
    auto ref = float64_backward(x, norm->weight, g, step.y > 0, norm->options.eps());
    errors[fused] = {scaled_difference(step.dx, ref[0]), scaled_difference(step.dweight, ref[1]),
                     scaled_difference(step.dbias, ref[2])};
  }
  for (int k = 0; k < 3; ++k) {
    INFO("gradient " << k << ": fused " << errors[1][k] << ", LibTorch " << errors[0][k]);
    CHECK(errors[1][k] < 1e-5);
    CHECK(errors[0][k] < 1e-5);
    CHECK(errors[1][k] <= std::max(2.0 * errors[0][k], 1e-6));
  }
}
