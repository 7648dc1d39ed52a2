// Fused batch norm (training) + ReLU kernels for float32 CPU tensors: see
// include/sedensenet/nn/batch_norm_relu.hpp. Compiled with OpenMP (at::parallel_for splits the
// channels between LibTorch's threads only in a translation unit built with it) and, on x86,
// with an AVX2 + FMA variant of each per-channel body chosen at run time.
#include "sedensenet/nn/batch_norm_relu.hpp"

#include <ATen/Parallel.h>

#include <cmath>
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

// The per-channel scale and shift of the normalisation, computed the same way in forward and
// backward (the backward recomputes the ReLU mask from them).
std::pair<float, float> affine_of(const float* w, const float* b, int64_t ch, float mean,
                                         float invstd) {
  const double wv = w[ch];
  return {static_cast<float>(wv * invstd), static_cast<float>(b[ch] - mean * wv * invstd)};
}

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
SEDENSENET_SIMD_INLINE double sum8(float8 v) {
  double total = 0.0;
  for (int64_t j = 0; j < kWidth; ++j) total += v[j];
  return total;
}

// One channel, forward: mean, biased variance (two passes, float lanes per row, double across
// rows), then y = max(x * scale + shift, 0).
SEDENSENET_SIMD_INLINE void forward_channel_body(const float* x, const float* w, const float* b,
                                                 float* y, float* mean, float* invstd, float* var,
                                                 const ChannelLayout& l, int64_t ch, double eps) {
  const double count = static_cast<double>(l.n * l.hw);
  double total = 0.0;
  for (int64_t n = 0; n < l.n; ++n) {
    const float* p = x + (n * l.c + ch) * l.hw;
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
    const float* p = x + (n * l.c + ch) * l.hw;
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
  const auto [scale, shift] = affine_of(w, b, ch, m, invstd[ch]);
  const float8 scale8 = splat8(scale), shift8 = splat8(shift);
  for (int64_t n = 0; n < l.n; ++n) {
    const int64_t offset = (n * l.c + ch) * l.hw;
    const float* p = x + offset;
    float* q = y + offset;
    int64_t i = 0;
    for (; i + kWidth <= l.hw; i += kWidth) {
      const float8 z = load8(p + i) * scale8 + shift8;
      store8(q + i, keep_where_positive(z, z));
    }
    for (; i < l.hw; ++i) {
      const float z = p[i] * scale + shift;
      q[i] = z > 0.f ? z : 0.f;
    }
  }
}

// One channel, backward: g = dy where x * scale + shift > 0 (the ReLU mask, recomputed), then
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
    const int64_t offset = (n * l.c + ch) * l.hw;
    const float* g = dy + offset;
    const float* p = x + offset;
    float8 a{}, c{};
    int64_t i = 0;
    for (; i + kWidth <= l.hw; i += kWidth) {
      const float8 xv = load8(p + i);
      const float8 gv = keep_where_positive(load8(g + i), xv * scale8 + shift8);
      a += gv;
      c += gv * (xv - m8);
    }
    double ra = sum8(a), rc = sum8(c);
    for (; i < l.hw; ++i) {
      const float gv = p[i] * scale + shift > 0.f ? g[i] : 0.f;
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
    const int64_t offset = (n * l.c + ch) * l.hw;
    const float* g = dy + offset;
    const float* p = x + offset;
    float* out = dx + offset;
    int64_t i = 0;
    for (; i + kWidth <= l.hw; i += kWidth) {
      const float8 xv = load8(p + i);
      const float8 gv = keep_where_positive(load8(g + i), xv * scale8 + shift8);
      store8(out + i, gv * k1v + xv * k2v + k3v);
    }
    for (; i < l.hw; ++i) {
      const float gv = p[i] * scale + shift > 0.f ? g[i] : 0.f;
      out[i] = gv * k1 + p[i] * k2 + k3;
    }
  }
}

using ForwardChannelFn = void (*)(const float*, const float*, const float*, float*, float*,
                                  float*, float*, const ChannelLayout&, int64_t, double);
using BackwardChannelFn = void (*)(const float*, const float*, const float*, const float*,
                                   const float*, const float*, float*, float*, float*,
                                   const ChannelLayout&, int64_t);

void forward_channel_generic(const float* x, const float* w, const float* b, float* y,
                                    float* mean, float* invstd, float* var,
                                    const ChannelLayout& l, int64_t ch, double eps) {
  forward_channel_body(x, w, b, y, mean, invstd, var, l, ch, eps);
}
void backward_channel_generic(const float* dy, const float* x, const float* w,
                                     const float* b, const float* mean, const float* invstd,
                                     float* dx, float* dw, float* db, const ChannelLayout& l,
                                     int64_t ch) {
  backward_channel_body(dy, x, w, b, mean, invstd, dx, dw, db, l, ch);
}

#if defined(__x86_64__) || defined(__i386__)
// The same bodies compiled for AVX2 + FMA, chosen at run time when the CPU has them.
__attribute__((target("avx2,fma"))) void forward_channel_avx2(
    const float* x, const float* w, const float* b, float* y, float* mean, float* invstd,
    float* var, const ChannelLayout& l, int64_t ch, double eps) {
  forward_channel_body(x, w, b, y, mean, invstd, var, l, ch, eps);
}
__attribute__((target("avx2,fma"))) void backward_channel_avx2(
    const float* dy, const float* x, const float* w, const float* b, const float* mean,
    const float* invstd, float* dx, float* dw, float* db, const ChannelLayout& l, int64_t ch) {
  backward_channel_body(dy, x, w, b, mean, invstd, dx, dw, db, l, ch);
}
bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
ForwardChannelFn forward_channel_kernel() {
  return cpu_has_avx2() ? forward_channel_avx2 : forward_channel_generic;
}
BackwardChannelFn backward_channel_kernel() {
  return cpu_has_avx2() ? backward_channel_avx2 : backward_channel_generic;
}
#else
ForwardChannelFn forward_channel_kernel() { return forward_channel_generic; }
BackwardChannelFn backward_channel_kernel() { return backward_channel_generic; }
#endif
#undef SEDENSENET_SIMD_INLINE
#endif  // SEDENSENET_HAVE_VECTOR_EXTENSIONS

}  // namespace

bool batch_norm_relu_kernels_available() { return SEDENSENET_HAVE_VECTOR_EXTENSIONS != 0; }

void batch_norm_relu_forward_cpu(const float* x, const float* w, const float* b, float* y,
                                 float* mean, float* invstd, float* var, const ChannelLayout& l,
                                 double eps) {
#if SEDENSENET_HAVE_VECTOR_EXTENSIONS
  const auto kernel = forward_channel_kernel();
  at::parallel_for(0, l.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) kernel(x, w, b, y, mean, invstd, var, l, ch, eps);
  });
#else
  TORCH_CHECK(false, "batch_norm_relu: this build has no fused kernels (see "
              "batch_norm_relu_kernels_available)");
#endif
}

void batch_norm_relu_backward_cpu(const float* dy, const float* x, const float* w,
                                  const float* b, const float* mean, const float* invstd,
                                  float* dx, float* dw, float* db, const ChannelLayout& l) {
#if SEDENSENET_HAVE_VECTOR_EXTENSIONS
  const auto kernel = backward_channel_kernel();
  at::parallel_for(0, l.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      kernel(dy, x, w, b, mean, invstd, dx, dw, db, l, ch);
    }
  });
#else
  TORCH_CHECK(false, "batch_norm_relu: this build has no fused kernels (see "
              "batch_norm_relu_kernels_available)");
#endif
}

}  // namespace sedensenet::detail
