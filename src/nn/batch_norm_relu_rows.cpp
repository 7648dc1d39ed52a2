// Fused batch norm (training) + ReLU kernels for channels-last float32 maps: see
// include/sedensenet/nn/batch_norm_relu.hpp (`RowLayout`). Each of the N x H x W positions (rows)
// holds its C values next to each other, so every pass walks whole rows, all channels at once, in
// chunks of 128 rows shared out between LibTorch's threads. The per-channel sums of a chunk are
// formed in float and stored; the chunks' sums are then added in double in chunk order. The chunk
// size does not depend on the thread count, so neither do the results. As in the NCHW kernels
// (batch_norm_relu.cpp): two-pass statistics and the pre-activation of batch_norm_relu_math.hpp
// (this file too compiles without floating-point contraction).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "batch_norm_relu_math.hpp"
#include "sedensenet/nn/batch_norm_relu.hpp"

namespace sedensenet::detail {

namespace {

constexpr int64_t kRows = 128;  // rows per chunk

#define SEDENSENET_ROWS_INLINE inline __attribute__((always_inline))

// acc[j] += x[r][j] over rows [r0, r1).
SEDENSENET_ROWS_INLINE void sum_body(const float* __restrict x, const RowLayout& l, int64_t r0, int64_t r1,
                                     float* __restrict acc) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = x + r * l.x_row;
    for (int64_t j = 0; j < l.c; ++j) acc[j] += p[j];
  }
}
// acc[j] += (x[r][j] - m[j])^2 over rows [r0, r1).
SEDENSENET_ROWS_INLINE void squares_body(const float* __restrict x, const float* __restrict m, const RowLayout& l,
                                         int64_t r0, int64_t r1, float* __restrict acc) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = x + r * l.x_row;
    for (int64_t j = 0; j < l.c; ++j) {
      const float d = p[j] - m[j];
      acc[j] += d * d;
    }
  }
}
// y[r][j] = max(preactivation(x[r][j]), 0) over rows [r0, r1).
SEDENSENET_ROWS_INLINE void apply_body(const float* __restrict x, const float* __restrict scale, const float* __restrict shift,
                                       float* __restrict y, const RowLayout& l, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = x + r * l.x_row;
    float* q = y + r * l.c;
    for (int64_t j = 0; j < l.c; ++j) {
      const float z = preactivation(p[j], scale[j], shift[j]);
      q[j] = z > 0.f ? z : 0.f;
    }
  }
}
// With g = dy where the pre-activation is positive (the forward's ReLU mask, recomputed):
// a[j] += g, c[j] += g (x - m) over rows [r0, r1).
SEDENSENET_ROWS_INLINE void gradient_sums_body(const float* __restrict dy, const float* __restrict x, const float* __restrict scale,
                                               const float* __restrict shift, const float* __restrict m,
                                               const RowLayout& l, int64_t r0, int64_t r1, float* __restrict a,
                                               float* __restrict c) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = x + r * l.x_row;
    const float* g = dy + r * l.c;
    for (int64_t j = 0; j < l.c; ++j) {
      const float gv = preactivation(p[j], scale[j], shift[j]) > 0.f ? g[j] : 0.f;
      a[j] += gv;
      c[j] += gv * (p[j] - m[j]);
    }
  }
}
// dx = g k1 + x k2 + k3 (added to dx with `accumulate_dx`) over rows [r0, r1).
SEDENSENET_ROWS_INLINE void input_gradient_body(const float* __restrict dy, const float* __restrict x, const float* __restrict scale,
                                                const float* __restrict shift, const float* __restrict k1, const float* __restrict k2,
                                                const float* __restrict k3, float* __restrict dx, const RowLayout& l,
                                                int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = x + r * l.x_row;
    const float* g = dy + r * l.c;
    float* out = dx + r * l.x_row;
    if (l.accumulate_dx) {
      for (int64_t j = 0; j < l.c; ++j) {
        const float gv = preactivation(p[j], scale[j], shift[j]) > 0.f ? g[j] : 0.f;
        out[j] = out[j] + (gv * k1[j] + p[j] * k2[j] + k3[j]);
      }
    } else {
      for (int64_t j = 0; j < l.c; ++j) {
        const float gv = preactivation(p[j], scale[j], shift[j]) > 0.f ? g[j] : 0.f;
        out[j] = gv * k1[j] + p[j] * k2[j] + k3[j];
      }
    }
  }
}

struct RowKernels {
  void (*sum)(const float*, const RowLayout&, int64_t, int64_t, float*);
  void (*squares)(const float*, const float*, const RowLayout&, int64_t, int64_t, float*);
  void (*apply)(const float*, const float*, const float*, float*, const RowLayout&, int64_t, int64_t);
  void (*gradient_sums)(const float*, const float*, const float*, const float*, const float*,
                        const RowLayout&, int64_t, int64_t, float*, float*);
  void (*input_gradient)(const float*, const float*, const float*, const float*, const float*,
                         const float*, const float*, float*, const RowLayout&, int64_t, int64_t);
};

// The bodies compiled generic and for AVX2 + FMA (inlined into each), chosen once at run time.
#define SEDENSENET_ROWS_VARIANT(name, target)                                                       \
  target void name##_sum(const float* x, const RowLayout& l, int64_t r0, int64_t r1, float* acc) { \
    sum_body(x, l, r0, r1, acc);                                                                    \
  }                                                                                                 \
  target void name##_squares(const float* x, const float* m, const RowLayout& l, int64_t r0,        \
                             int64_t r1, float* acc) {                                              \
    squares_body(x, m, l, r0, r1, acc);                                                             \
  }                                                                                                 \
  target void name##_apply(const float* x, const float* scale, const float* shift, float* y,        \
                           const RowLayout& l, int64_t r0, int64_t r1) {                            \
    apply_body(x, scale, shift, y, l, r0, r1);                                                      \
  }                                                                                                 \
  target void name##_gradient_sums(const float* dy, const float* x, const float* scale,            \
                                   const float* shift, const float* m, const RowLayout& l,         \
                                   int64_t r0, int64_t r1, float* a, float* c) {                    \
    gradient_sums_body(dy, x, scale, shift, m, l, r0, r1, a, c);                                    \
  }                                                                                                 \
  target void name##_input_gradient(const float* dy, const float* x, const float* scale,           \
                                    const float* shift, const float* k1, const float* k2,          \
                                    const float* k3, float* dx, const RowLayout& l, int64_t r0,    \
                                    int64_t r1) {                                                   \
    input_gradient_body(dy, x, scale, shift, k1, k2, k3, dx, l, r0, r1);                            \
  }

SEDENSENET_ROWS_VARIANT(generic, )
#if defined(__x86_64__) || defined(__i386__)
SEDENSENET_ROWS_VARIANT(avx2, __attribute__((target("avx2,fma"))))
#endif
#undef SEDENSENET_ROWS_VARIANT
#undef SEDENSENET_ROWS_INLINE

const RowKernels& row_kernels() {
#if defined(__x86_64__) || defined(__i386__)
  static const RowKernels kernels =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
          ? RowKernels{avx2_sum, avx2_squares, avx2_apply, avx2_gradient_sums, avx2_input_gradient}
          : RowKernels{generic_sum, generic_squares, generic_apply, generic_gradient_sums,
                       generic_input_gradient};
#else
  static const RowKernels kernels{generic_sum, generic_squares, generic_apply,
                                  generic_gradient_sums, generic_input_gradient};
#endif
  return kernels;
}

int64_t chunks(const RowLayout& l) { return (l.rows + kRows - 1) / kRows; }

// body(r0, r1) for every chunk of rows, on LibTorch's threads.
template <typename Body>
void for_each_chunk(const RowLayout& l, const Body& body) {
  at::parallel_for(0, chunks(l), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) body(k, k * kRows, std::min(l.rows, (k + 1) * kRows));
  });
}

// Per-channel sums over all rows: each chunk's float sums from `chunk_sum(r0, r1, acc)` (acc
// zeroed, width `width` = c or 2c), then added in double in chunk order.
template <typename ChunkSum>
std::vector<double> channel_sums(const RowLayout& l, int64_t width, const ChunkSum& chunk_sum) {
  std::vector<float> partial(static_cast<size_t>(chunks(l) * width), 0.f);
  for_each_chunk(l, [&](int64_t k, int64_t r0, int64_t r1) {
    chunk_sum(r0, r1, partial.data() + k * width);
  });
  std::vector<double> total(static_cast<size_t>(width), 0.0);
  for (int64_t k = 0; k < chunks(l); ++k) {
    const float* part = partial.data() + k * width;
    for (int64_t j = 0; j < width; ++j) total[j] += part[j];
  }
  return total;
}

// The per-channel scale and shift from the statistics (affine_of, as the NCHW kernels).
void scale_and_shift(const float* w, const float* b, const float* mean, const float* invstd,
                     int64_t c, std::vector<float>& scale, std::vector<float>& shift) {
  scale.resize(static_cast<size_t>(c));
  shift.resize(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; ++j) std::tie(scale[j], shift[j]) = affine_of(w, b, j, mean[j], invstd[j]);
}

}  // namespace

void batch_norm_relu_forward_rows(const float* x, const float* w, const float* b, float* y,
                                  float* mean, float* invstd, float* var, const RowLayout& l,
                                  double eps) {
  const auto& kernels = row_kernels();
  const double count = static_cast<double>(l.rows);
  const auto total = channel_sums(l, l.c, [&](int64_t r0, int64_t r1, float* acc) {
    kernels.sum(x, l, r0, r1, acc);
  });
  for (int64_t j = 0; j < l.c; ++j) mean[j] = static_cast<float>(total[j] / count);
  const auto squares = channel_sums(l, l.c, [&](int64_t r0, int64_t r1, float* acc) {
    kernels.squares(x, mean, l, r0, r1, acc);
  });
  for (int64_t j = 0; j < l.c; ++j) {
    const double v = squares[j] / count;
    invstd[j] = static_cast<float>(1.0 / std::sqrt(v + eps));
    var[j] = static_cast<float>(v);
  }
  batch_norm_relu_apply_rows(x, w, b, mean, invstd, y, l);
}

void batch_norm_relu_apply_rows(const float* x, const float* w, const float* b, const float* mean,
                                const float* invstd, float* y, const RowLayout& l) {
  const auto& kernels = row_kernels();
  std::vector<float> scale, shift;
  scale_and_shift(w, b, mean, invstd, l.c, scale, shift);
  for_each_chunk(l, [&](int64_t, int64_t r0, int64_t r1) {
    kernels.apply(x, scale.data(), shift.data(), y, l, r0, r1);
  });
}

void batch_norm_relu_backward_rows(const float* dy, const float* x, const float* w, const float* b,
                                   const float* mean, const float* invstd, float* dx, float* dw,
                                   float* db, const RowLayout& l) {
  const auto& kernels = row_kernels();
  const double count = static_cast<double>(l.rows);
  std::vector<float> scale, shift;
  scale_and_shift(w, b, mean, invstd, l.c, scale, shift);
  // sums[j] = sum(g), sums[c + j] = sum(g (x - mean)).
  const auto sums = channel_sums(l, 2 * l.c, [&](int64_t r0, int64_t r1, float* acc) {
    kernels.gradient_sums(dy, x, scale.data(), shift.data(), mean, l, r0, r1, acc, acc + l.c);
  });
  std::vector<float> k1(static_cast<size_t>(l.c)), k2(k1.size()), k3(k1.size());
  for (int64_t j = 0; j < l.c; ++j) {
    const double is = invstd[j], wv = w[j], sum_g = sums[j], sum_gx = sums[l.c + j];
    dw[j] = static_cast<float>(sum_gx * is);
    db[j] = static_cast<float>(sum_g);
    k1[j] = static_cast<float>(wv * is);
    k2[j] = static_cast<float>(-wv * is * is * is * sum_gx / count);
    k3[j] = static_cast<float>(-wv * is * sum_g / count - k2[j] * static_cast<double>(mean[j]));
  }
  if (dx == nullptr) return;
  for_each_chunk(l, [&](int64_t, int64_t r0, int64_t r1) {
    kernels.input_gradient(dy, x, scale.data(), shift.data(), k1.data(), k2.data(), k3.data(), dx,
                           l, r0, r1);
  });
}

}  // namespace sedensenet::detail
