// Fused batch norm (training) + ReLU kernels for float32 CPU tensors: see
// include/sedensenet/nn/batch_norm_relu.hpp. Compiled with OpenMP (at::parallel_for splits the
// channels between LibTorch's threads only in a translation unit built with it) and, on x86,
// with an AVX2 + FMA variant of each per-channel body chosen at run time.
//
// Exactness: the pre-activation z = x * scale + shift decides the ReLU mask. The forward, the
// recomputation of the efficient layers and the backward each evaluate it, and the backward must
// differentiate exactly the function the forward computed, so all three call `preactivation`,
// and this file is compiled with -ffp-contract=off (src/CMakeLists.txt): the compiler may not
// fuse the multiply and the add in one place and not in another. With every product and sum
// rounded on its own, z is bit for bit the same in all three, in the generic and the AVX2
// variant, on any number of threads.
#include "sedensenet/nn/batch_norm_relu.hpp"

#include <ATen/Parallel.h>

#include "batch_norm_relu_math.hpp"

#include <cmath>
#include <array>
#include <cstdint>
#include <utility>

namespace sedensenet::detail {

#if defined(__GNUC__) || defined(__clang__)
#define SEDENSENET_HAVE_VECTOR_EXTENSIONS 1
// Passing 32-byte vectors between functions compiled for different ISAs changes the ABI; every
// helper here is inlined into its caller, so nothing crosses that boundary.
#pragma GCC diagnostic ignored "-Wpsabi"
#else
#define SEDENSENET_HAVE_VECTOR_EXTENSIONS 0
#endif

namespace {

#if SEDENSENET_HAVE_VECTOR_EXTENSIONS
// Eight floats as one value (GCC/Clang vector extensions: one AVX register, two SSE or NEON
// registers). Comparisons give all-ones/zero lanes, so the ReLU and its mask are bit masks.
typedef float float8 __attribute__((vector_size(32)));
typedef std::int32_t int8x32 __attribute__((vector_size(32)));
constexpr int64_t kWidth = 8;

#define SEDENSENET_SIMD_INLINE inline __attribute__((always_inline))
SEDENSENET_SIMD_INLINE float8 load8(const float* p) {
  float8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
SEDENSENET_SIMD_INLINE void store8(float* p, float8 v) { __builtin_memcpy(p, &v, sizeof v); }
SEDENSENET_SIMD_INLINE float8 splat8(float s) { return float8{} + s; }
// z where z > 0, else 0 (g masked by z > 0 with `keep_where_positive(g, z)`).
SEDENSENET_SIMD_INLINE float8 keep_where_positive(float8 g, float8 z) {
  return reinterpret_cast<float8>(reinterpret_cast<int8x32>(g) & (z > float8{}));
}
// The pre-activation of the ReLU; the one expression every kernel uses for it (see the top).
SEDENSENET_SIMD_INLINE float8 preactivation(float8 x, float8 scale, float8 shift) {
  return x * scale + shift;
}
using detail::preactivation;  // the scalar one (batch_norm_relu_math.hpp)
SEDENSENET_SIMD_INLINE double sum8(float8 v) {
  double total = 0.0;
  for (int64_t j = 0; j < kWidth; ++j) total += v[j];
  return total;
}

// One channel, recomputation from saved statistics (the efficient layers' backward):
// y = max(preactivation(x), 0), bit for bit the forward's output.
SEDENSENET_SIMD_INLINE void apply_channel_body(const float* x, const float* w, const float* b,
                                               const float* mean, const float* invstd, float* y,
                                               const ChannelLayout& l, int64_t ch) {
  const auto [scale, shift] = affine_of(w, b, ch, mean[ch], invstd[ch]);
  const float8 scale8 = splat8(scale), shift8 = splat8(shift);
  for (int64_t n = 0; n < l.n; ++n) {
    const float* p = x + l.x_offset(n, ch);
    float* q = y + l.y_offset(n, ch);
    int64_t i = 0;
    for (; i + kWidth <= l.hw; i += kWidth) {
      const float8 z = preactivation(load8(p + i), scale8, shift8);
      store8(q + i, keep_where_positive(z, z));
    }
    for (; i < l.hw; ++i) {
      const float z = preactivation(p[i], scale, shift);
      q[i] = z > 0.f ? z : 0.f;
    }
  }
}

// One channel, forward: mean, biased variance (two passes, float lanes per row, double across
// rows), then y = max(x * scale + shift, 0).
SEDENSENET_SIMD_INLINE void forward_channel_body(const float* x, const float* w, const float* b,
                                                 float* y, float* mean, float* invstd, float* var,
                                                 const ChannelLayout& l, int64_t ch, double eps) {
  const double count = static_cast<double>(l.n * l.hw);
  double total = 0.0;
  for (int64_t n = 0; n < l.n; ++n) {
    const float* p = x + l.x_offset(n, ch);
    float8 acc{};
    int64_t i = 0;
    for (; i + kWidth <= l.hw; i += kWidth) acc += load8(p + i);
    double row = sum8(acc);
    for (; i < l.hw; ++i) row += p[i];
    total += row;
  }
  const float m = static_cast<float>(total / count);
  const float8 m8 = splat8(m);
  double squares = 0.0;
  for (int64_t n = 0; n < l.n; ++n) {
    const float* p = x + l.x_offset(n, ch);
    float8 acc{};
    int64_t i = 0;
    for (; i + kWidth <= l.hw; i += kWidth) {
      const float8 d = load8(p + i) - m8;
      acc += d * d;
    }
    double row = sum8(acc);
    for (; i < l.hw; ++i) row += static_cast<double>(p[i] - m) * (p[i] - m);
    squares += row;
  }
  const double v = squares / count;
  mean[ch] = m;
  invstd[ch] = static_cast<float>(1.0 / std::sqrt(v + eps));
  var[ch] = static_cast<float>(v);
  apply_channel_body(x, w, b, mean, invstd, y, l, ch);
}

// One channel, backward: g = dy where preactivation(x) > 0 (the forward's ReLU mask, recomputed
// with its arithmetic), then
// dbias = sum(g), dweight = sum(g * (x - mean)) * invstd and
// dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat)).
SEDENSENET_SIMD_INLINE void backward_channel_body(const float* dy, const float* x, const float* w,
                                                  const float* b, const float* mean,
                                                  const float* invstd, float* dx, float* dw,
                                                  float* db, const ChannelLayout& l, int64_t ch) {
  const double count = static_cast<double>(l.n * l.hw);
  const float m = mean[ch];
  const double is = invstd[ch];
  const double wv = w[ch];
  const auto [scale, shift] = affine_of(w, b, ch, m, invstd[ch]);
  const float8 scale8 = splat8(scale), shift8 = splat8(shift), m8 = splat8(m);
  double sum_g = 0.0, sum_gx = 0.0;
  for (int64_t n = 0; n < l.n; ++n) {
    const float* g = dy + l.y_offset(n, ch);
    const float* p = x + l.x_offset(n, ch);
    float8 a{}, c{};
    int64_t i = 0;
    for (; i + kWidth <= l.hw; i += kWidth) {
      const float8 xv = load8(p + i);
      const float8 gv = keep_where_positive(load8(g + i), preactivation(xv, scale8, shift8));
      a += gv;
      c += gv * (xv - m8);
    }
    double ra = sum8(a), rc = sum8(c);
    for (; i < l.hw; ++i) {
      const float gv = preactivation(p[i], scale, shift) > 0.f ? g[i] : 0.f;
      ra += gv;
      rc += static_cast<double>(gv) * (p[i] - m);
    }
    sum_g += ra;
    sum_gx += rc;
  }
  dw[ch] = static_cast<float>(sum_gx * is);
  db[ch] = static_cast<float>(sum_g);
  if (!dx) return;
  const float k1 = static_cast<float>(wv * is);
  const float k2 = static_cast<float>(-wv * is * is * is * sum_gx / count);
  const float k3 = static_cast<float>(-wv * is * sum_g / count - k2 * static_cast<double>(m));
  const float8 k1v = splat8(k1), k2v = splat8(k2), k3v = splat8(k3);
  for (int64_t n = 0; n < l.n; ++n) {
    const float* g = dy + l.y_offset(n, ch);
    const float* p = x + l.x_offset(n, ch);
    float* out = dx + l.x_offset(n, ch);
    int64_t i = 0;
    // Accumulating: out + dx, the sum autograd forms when it adds this gradient to the others.
    if (l.accumulate_dx) {
      for (; i + kWidth <= l.hw; i += kWidth) {
        const float8 xv = load8(p + i);
        const float8 gv = keep_where_positive(load8(g + i), preactivation(xv, scale8, shift8));
        const float8 v = gv * k1v + xv * k2v + k3v;
        store8(out + i, load8(out + i) + v);
      }
      for (; i < l.hw; ++i) {
        const float gv = preactivation(p[i], scale, shift) > 0.f ? g[i] : 0.f;
        const float v = gv * k1 + p[i] * k2 + k3;
        out[i] = out[i] + v;
      }
      continue;
    }
    for (; i + kWidth <= l.hw; i += kWidth) {
      const float8 xv = load8(p + i);
      const float8 gv = keep_where_positive(load8(g + i), preactivation(xv, scale8, shift8));
      store8(out + i, gv * k1v + xv * k2v + k3v);
    }
    for (; i < l.hw; ++i) {
      const float gv = preactivation(p[i], scale, shift) > 0.f ? g[i] : 0.f;
      out[i] = gv * k1 + p[i] * k2 + k3;
    }
  }
}

using ForwardChannelFn = void (*)(const float*, const float*, const float*, float*, float*,
                                  float*, float*, const ChannelLayout&, int64_t, double);
using ApplyChannelFn = void (*)(const float*, const float*, const float*, const float*,
                                const float*, float*, const ChannelLayout&, int64_t);
using BackwardChannelFn = void (*)(const float*, const float*, const float*, const float*,
                                   const float*, const float*, float*, float*, float*,
                                   const ChannelLayout&, int64_t);

struct ChannelKernels {
  ForwardChannelFn forward;
  ApplyChannelFn apply;
  BackwardChannelFn backward;
};

void forward_channel_generic(const float* x, const float* w, const float* b, float* y,
                             float* mean, float* invstd, float* var, const ChannelLayout& l,
                             int64_t ch, double eps) {
  forward_channel_body(x, w, b, y, mean, invstd, var, l, ch, eps);
}
void apply_channel_generic(const float* x, const float* w, const float* b, const float* mean,
                           const float* invstd, float* y, const ChannelLayout& l, int64_t ch) {
  apply_channel_body(x, w, b, mean, invstd, y, l, ch);
}
void backward_channel_generic(const float* dy, const float* x, const float* w, const float* b,
                              const float* mean, const float* invstd, float* dx, float* dw,
                              float* db, const ChannelLayout& l, int64_t ch) {
  backward_channel_body(dy, x, w, b, mean, invstd, dx, dw, db, l, ch);
}

#if defined(__x86_64__) || defined(__i386__)
// The same bodies compiled for AVX2 + FMA, chosen at run time when the CPU has them. Without
// contraction (see the top) they round exactly as the generic variant does.
__attribute__((target("avx2,fma"))) void forward_channel_avx2(
    const float* x, const float* w, const float* b, float* y, float* mean, float* invstd,
    float* var, const ChannelLayout& l, int64_t ch, double eps) {
  forward_channel_body(x, w, b, y, mean, invstd, var, l, ch, eps);
}
__attribute__((target("avx2,fma"))) void apply_channel_avx2(
    const float* x, const float* w, const float* b, const float* mean, const float* invstd,
    float* y, const ChannelLayout& l, int64_t ch) {
  apply_channel_body(x, w, b, mean, invstd, y, l, ch);
}
__attribute__((target("avx2,fma"))) void backward_channel_avx2(
    const float* dy, const float* x, const float* w, const float* b, const float* mean,
    const float* invstd, float* dx, float* dw, float* db, const ChannelLayout& l, int64_t ch) {
  backward_channel_body(dy, x, w, b, mean, invstd, dx, dw, db, l, ch);
}
const ChannelKernels& channel_kernels() {
  static const ChannelKernels kernels =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
          ? ChannelKernels{forward_channel_avx2, apply_channel_avx2, backward_channel_avx2}
          : ChannelKernels{forward_channel_generic, apply_channel_generic,
                           backward_channel_generic};
  return kernels;
}
#else
const ChannelKernels& channel_kernels() {
  static const ChannelKernels kernels{forward_channel_generic, apply_channel_generic,
                                      backward_channel_generic};
  return kernels;
}
#endif
#undef SEDENSENET_SIMD_INLINE
#endif  // SEDENSENET_HAVE_VECTOR_EXTENSIONS

// Runs body(channel) for every channel on LibTorch's threads (one channel per task).
template <typename Body>
void for_each_channel(const ChannelLayout& l, const Body& body) {
#if SEDENSENET_HAVE_VECTOR_EXTENSIONS
  at::parallel_for(0, l.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) body(ch);
  });
#else
  (void)l;
  (void)body;
  TORCH_CHECK(false, "batch_norm_relu: this build has no fused kernels (see "
              "batch_norm_relu_kernels_available)");
#endif
}

}  // namespace

bool batch_norm_relu_kernels_available() { return SEDENSENET_HAVE_VECTOR_EXTENSIONS != 0; }

void batch_norm_relu_forward_cpu(const float* x, const float* w, const float* b, float* y,
                                 float* mean, float* invstd, float* var, const ChannelLayout& l,
                                 double eps) {
#if SEDENSENET_HAVE_VECTOR_EXTENSIONS
  const auto kernel = channel_kernels().forward;
  for_each_channel(l, [&](int64_t ch) { kernel(x, w, b, y, mean, invstd, var, l, ch, eps); });
#else
  for_each_channel(l, [](int64_t) {});
#endif
}

void batch_norm_relu_apply_cpu(const float* x, const float* w, const float* b, const float* mean,
                               const float* invstd, float* y, const ChannelLayout& l) {
#if SEDENSENET_HAVE_VECTOR_EXTENSIONS
  const auto kernel = channel_kernels().apply;
  for_each_channel(l, [&](int64_t ch) { kernel(x, w, b, mean, invstd, y, l, ch); });
#else
  for_each_channel(l, [](int64_t) {});
#endif
}

void batch_norm_relu_backward_cpu(const float* dy, const float* x, const float* w,
                                  const float* b, const float* mean, const float* invstd,
                                  float* dx, float* dw, float* db, const ChannelLayout& l) {
#if SEDENSENET_HAVE_VECTOR_EXTENSIONS
  const auto kernel = channel_kernels().backward;
  for_each_channel(l, [&](int64_t ch) { kernel(dy, x, w, b, mean, invstd, dx, dw, db, l, ch); });
#else
  for_each_channel(l, [](int64_t) {});
#endif
}

// ---- Tensor-level entry points (the header documents them) ----

namespace {
/// x itself when the kernels can read it in place (contiguous or a channel slice), else a
/// contiguous copy; and its layout.
std::pair<torch::Tensor, ChannelLayout> kernel_input(const torch::Tensor& input) {
  auto x = channel_slice_layout(input) ? input : input.contiguous();
  auto layout = channel_layout(x);
  if (!x.is_contiguous()) layout.x_batch = x.stride(0);
  return {x, layout};
}

/// The gradient the backward adds to must be laid out as the input it reads.
void check_accumulation_target(const torch::Tensor& accumulate_into, const torch::Tensor& x) {
  TORCH_CHECK(accumulate_into.sizes() == x.sizes() && accumulate_into.strides() == x.strides() &&
                  accumulate_into.scalar_type() == torch::kFloat32,
              "fused_norm_relu_backward: the gradient to accumulate into must have the input's "
              "sizes and strides, got ", accumulate_into.sizes(), " / ", accumulate_into.strides(),
              " for ", x.sizes(), " / ", x.strides());
}

/// The channels-last kernels' view of x (`channels_last_rows_layout`), read in place.
RowLayout row_layout(const torch::Tensor& x) {
  return {x.size(0) * x.size(2) * x.size(3), x.size(1), x.stride(3)};
}
torch::Tensor empty_channels_last(const torch::Tensor& like) {
  return torch::empty(like.sizes(), like.options().memory_format(torch::MemoryFormat::ChannelsLast));
}

/// fused_norm_relu_backward for a channels-last x (w, b, m, is contiguous).
std::array<torch::Tensor, 3> rows_backward(const torch::Tensor& grad_output, torch::Tensor x,
                                           const torch::Tensor& w, const torch::Tensor& b,
                                           const torch::Tensor& m, const torch::Tensor& is,
                                           bool need_input_grad, const torch::Tensor& accumulate_into) {
  const auto dy = grad_output.contiguous(torch::MemoryFormat::ChannelsLast);
  const bool accumulate = need_input_grad && accumulate_into.defined();
  if (accumulate) {
    check_accumulation_target(accumulate_into, x);
  }
  torch::Tensor dx;
  if (need_input_grad && !accumulate) {
    // dx is a channels-last tensor of its own; a slice x is read as a copy with the same layout.
    if (x.stride(3) != x.size(1)) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    dx = empty_channels_last(x);
  }
  auto l = row_layout(x);
  l.accumulate_dx = accumulate;
  auto dw = torch::empty_like(w);
  auto db = torch::empty_like(b);
  float* dx_data = accumulate ? accumulate_into.data_ptr<float>() : (dx.defined() ? dx.data_ptr<float>() : nullptr);
  batch_norm_relu_backward_rows(dy.data_ptr<float>(), x.data_ptr<float>(), w.data_ptr<float>(),
                                b.data_ptr<float>(), m.data_ptr<float>(), is.data_ptr<float>(),
                                dx_data, dw.data_ptr<float>(), db.data_ptr<float>(), l);
  return {dx, dw, db};
}
}  // namespace

FusedNormReLU fused_norm_relu_forward(const torch::Tensor& input, const torch::Tensor& weight,
                                      const torch::Tensor& bias, double eps) {
  const auto w = weight.contiguous();
  const auto b = bias.contiguous();
  if (channels_last_rows_layout(input)) {
    const auto l = row_layout(input);
    auto y = empty_channels_last(input);
    auto stats = torch::empty({3, l.c}, input.options().requires_grad(false));
    float* s = stats.data_ptr<float>();
    batch_norm_relu_forward_rows(input.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                                 y.data_ptr<float>(), s, s + l.c, s + 2 * l.c, l, eps);
    return {y, stats[0], stats[1], stats[2]};
  }
  const auto [x, layout] = kernel_input(input);
  auto y = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous));
  auto stats = torch::empty({3, layout.c}, x.options().requires_grad(false));
  float* s = stats.data_ptr<float>();
  batch_norm_relu_forward_cpu(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                              y.data_ptr<float>(), s, s + layout.c, s + 2 * layout.c, layout,
                              eps);
  return {y, stats[0], stats[1], stats[2]};
}

torch::Tensor fused_norm_relu_recompute(const torch::Tensor& input, const torch::Tensor& weight,
                                        const torch::Tensor& bias, const torch::Tensor& mean,
                                        const torch::Tensor& invstd) {
  const auto w = weight.contiguous();
  const auto b = bias.contiguous();
  const auto m = mean.contiguous();
  const auto is = invstd.contiguous();
  if (channels_last_rows_layout(input)) {
    auto y = empty_channels_last(input);
    batch_norm_relu_apply_rows(input.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                               m.data_ptr<float>(), is.data_ptr<float>(), y.data_ptr<float>(),
                               row_layout(input));
    return y;
  }
  const auto [x, layout] = kernel_input(input);
  auto y = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous));
  batch_norm_relu_apply_cpu(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                            m.data_ptr<float>(), is.data_ptr<float>(), y.data_ptr<float>(),
                            layout);
  return y;
}

std::array<torch::Tensor, 3> fused_norm_relu_backward(
    const torch::Tensor& grad_output, const torch::Tensor& input, const torch::Tensor& weight,
    const torch::Tensor& bias, const torch::Tensor& mean, const torch::Tensor& invstd,
    bool need_input_grad, const torch::Tensor& accumulate_into) {
  const auto w = weight.contiguous();
  const auto b = bias.contiguous();
  const auto m = mean.contiguous();
  const auto is = invstd.contiguous();
  const bool accumulate = need_input_grad && accumulate_into.defined();
  if (channels_last_rows_layout(input)) {
    return rows_backward(grad_output, input, w, b, m, is, need_input_grad, accumulate_into);
  }
  auto [x, layout] = kernel_input(input);
  const auto dy = grad_output.contiguous();
  if (accumulate) {
    check_accumulation_target(accumulate_into, x);
    layout.accumulate_dx = true;
  }
  auto dx = need_input_grad && !accumulate
                ? torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous))
                : torch::Tensor();
  if (dx.defined() && !x.is_contiguous()) {
    // dx is contiguous but x is a slice: give the kernel one layout by reading a contiguous x.
    x = x.contiguous();
    layout = channel_layout(x);
  }
  auto dw = torch::empty_like(w);
  auto db = torch::empty_like(b);
  float* dx_data = accumulate ? accumulate_into.data_ptr<float>()
                              : (need_input_grad ? dx.data_ptr<float>() : nullptr);
  batch_norm_relu_backward_cpu(dy.data_ptr<float>(), x.data_ptr<float>(), w.data_ptr<float>(),
                               b.data_ptr<float>(), m.data_ptr<float>(), is.data_ptr<float>(),
                               dx_data, dw.data_ptr<float>(), db.data_ptr<float>(), layout);
  return {dx, dw, db};
}

void update_running_statistics(torch::nn::BatchNorm2dImpl& norm, const torch::Tensor& mean,
                               const torch::Tensor& var, int64_t values_per_channel) {
  torch::NoGradGuard no_grad;
  const auto& o = norm.options;
  norm.num_batches_tracked += 1;
  const double momentum = o.momentum().has_value()
                              ? *o.momentum()
                              : 1.0 / norm.num_batches_tracked.item<double>();
  const double count = static_cast<double>(values_per_channel);
  norm.running_mean.mul_(1.0 - momentum).add_(mean, momentum);
  norm.running_var.mul_(1.0 - momentum).add_(var, momentum * count / (count - 1.0));
}

torch::Tensor BatchNormReLUFunction::forward(torch::autograd::AutogradContext* ctx,
                                             const torch::Tensor& input,
                                             const torch::Tensor& weight,
                                             const torch::Tensor& bias, double eps,
                                             BatchNormReLUStatistics* statistics) {
  auto step = fused_norm_relu_forward(input, weight, bias, eps);
  ctx->save_for_backward({input, weight, bias, step.mean, step.invstd});
  ctx->saved_data["eps"] = eps;
  statistics->mean = step.mean;
  statistics->var = step.var;
  return step.output;
}

torch::autograd::variable_list BatchNormReLUFunction::backward(
    torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
  const auto saved = ctx->get_saved_variables();
  const auto& input = saved[0];
  const auto& weight = saved[1];
  const auto& bias = saved[2];
  torch::autograd::variable_list out(5);
  if (!grads[0].defined()) return out;
  if (torch::GradMode::is_enabled()) {
    // create_graph: differentiate the same computation written with LibTorch's own ops, so that
    // higher derivatives (gradient penalties) are right.
    const double eps = ctx->saved_data["eps"].toDouble();
    auto again =
        torch::relu(torch::batch_norm(input, weight, bias, {}, {}, true, 0.0, eps, false));
    torch::autograd::variable_list wrt;
    std::vector<size_t> index;
    for (size_t i = 0; i < 3; ++i) {
      if (ctx->needs_input_grad(i) && saved[i].requires_grad()) {
        wrt.push_back(saved[i]);
        index.push_back(i);
      }
    }
    if (wrt.empty()) return out;
    auto g = torch::autograd::grad({again}, wrt, {grads[0]}, true, true, true);
    for (size_t k = 0; k < index.size(); ++k) out[index[k]] = g[k];
    return out;
  }
  auto [dx, dw, db] = fused_norm_relu_backward(grads[0], input, weight, bias, saved[3], saved[4],
                                               ctx->needs_input_grad(0));
  out[0] = dx;
  if (ctx->needs_input_grad(1)) out[1] = dw;
  if (ctx->needs_input_grad(2)) out[2] = db;
  return out;
}

}  // namespace sedensenet::detail

namespace sedensenet {

torch::Tensor batch_norm_relu(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& norm) {
  if (!uses_fused_batch_norm(x, norm)) {
    auto normalized = norm.forward(x);
    return torch::relu_(normalized);
  }
  detail::BatchNormReLUStatistics statistics;
  auto y = detail::BatchNormReLUFunction::apply(x, norm.weight, norm.bias, norm.options.eps(),
                                        &statistics);
  detail::update_running_statistics(norm, statistics.mean, statistics.var, x.numel() / x.size(1));
  return y;
}

}  // namespace sedensenet
