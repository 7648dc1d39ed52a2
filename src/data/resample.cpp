// Resize in 8-bit fixed point, the arithmetic of PIL's Resample.c (ImagingResample with the
// bilinear filter), so that `functional::resize` gives torchvision's PIL path bit for bit:
// separable, horizontal pass first over the rows the vertical pass needs, the filter widened by
// the scale when shrinking (antialiasing), coefficients normalised per output pixel and rounded to
// 22 fractional bits, sums started at one half and clipped to [0, 255].
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "sedensenet/data/transforms.hpp"

namespace sedensenet::data::functional {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

/// PIL's bilinear (triangle) filter, support 1.
double triangle(double x) {
  x = std::abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

/// For each output position: the first input position, the number of taps, and `taps` fixed-point
/// weights (PIL's precompute_coeffs + normalize_coeffs_8bpc).
struct Coefficients {
  int taps = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

Coefficients coefficients(int in_size, int out_size) {
  constexpr double support_of_filter = 1.0;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = support_of_filter * filter_scale;
  Coefficients c;
  c.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<size_t>(out_size));
  c.count.resize(static_cast<size_t>(out_size));
  c.weights.assign(static_cast<size_t>(out_size) * static_cast<size_t>(c.taps), 0);
  const double inverse_scale = 1.0 / filter_scale;  // PIL multiplies by it (not divides)
  std::vector<double> w(static_cast<size_t>(c.taps));
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    // PIL rounds with (int)(v + 0.5): truncation toward zero, then clamps.
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = hi - lo;
    double total = 0.0;
    for (int i = 0; i < n; ++i) {
      w[static_cast<size_t>(i)] = triangle((i + lo - center + 0.5) * inverse_scale);
      total += w[static_cast<size_t>(i)];
    }
    int32_t* fixed = c.weights.data() + static_cast<size_t>(o) * static_cast<size_t>(c.taps);
    for (int i = 0; i < n; ++i) {
      double v = w[static_cast<size_t>(i)];
      if (total != 0.0) v /= total;
      fixed[i] = static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits)
                                            : 0.5 + v * (1 << kPrecisionBits));
    }
    c.first[static_cast<size_t>(o)] = lo;
    c.count[static_cast<size_t>(o)] = n;
  }
  return c;
}

// The passes are vectorised across a row: the vertical pass directly (each output row is a
// weighted sum of whole input rows), the horizontal one on the transposed plane, where it becomes
// a vertical pass. Integer sums are exact in any order, so the result is PIL's either way. Built
// for AVX-512 and AVX2 as well as the baseline, chosen at run time (GCC's target_clones).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SEDENSENET_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SEDENSENET_VECTOR_CLONES
#endif

/// Row r of `out` (width `width`) is the weighted sum of rows first[r] ... of `in` (whose first
/// row is row `offset`), for r < `out_rows`. Columns go in chunks whose sums stay in registers
/// over all the taps.
SEDENSENET_VECTOR_CLONES
void weighted_rows(const uint8_t* in, int64_t width, uint8_t* out, int64_t out_rows, int offset,
                   const Coefficients& c) {
  constexpr int64_t kChunk = 32;
  for (int64_t y = 0; y < out_rows; ++y) {
    const int32_t* k = c.weights.data() + y * c.taps;
    const uint8_t* top = in + (c.first[static_cast<size_t>(y)] - offset) * width;
    const int n = c.count[static_cast<size_t>(y)];
    uint8_t* dst = out + y * width;
    int64_t x0 = 0;
    // The last chunk may overlap the one before it (same sums, written twice), so that only
    // rows narrower than a chunk go column by column.
    for (; x0 < width && width >= kChunk; x0 += kChunk) {
      x0 = std::min(x0, width - kChunk);
      int32_t sums[kChunk];
      for (int64_t j = 0; j < kChunk; ++j) sums[j] = 1 << (kPrecisionBits - 1);
      for (int i = 0; i < n; ++i) {
        const uint8_t* __restrict row = top + i * width + x0;
        const int32_t weight = k[i];
        for (int64_t j = 0; j < kChunk; ++j) sums[j] += row[j] * weight;
      }
      for (int64_t j = 0; j < kChunk; ++j) {
        const int32_t v = sums[j] >> kPrecisionBits;
        dst[x0 + j] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
      }
    }
    for (int64_t x = width >= kChunk ? width : 0; x < width; ++x) {
      int32_t sum = 1 << (kPrecisionBits - 1);
      for (int i = 0; i < n; ++i) sum += top[i * width + x] * k[i];
      const int32_t v = sum >> kPrecisionBits;
      dst[x] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
  }
}

#if defined(__SSE2__)
/// One 16x16 block: four rounds of interleaving (bytes, pairs, quads, octets) leave column c of
/// the block in register bit_reverse(c).
void transpose_block(const uint8_t* in, int64_t in_stride, uint8_t* out, int64_t out_stride) {
  __m128i a[16], b[16];
  for (int i = 0; i < 16; ++i) {
    a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i * in_stride));
  }
  for (int j = 0; j < 8; ++j) {
    b[j] = _mm_unpacklo_epi8(a[2 * j], a[2 * j + 1]);
    b[j + 8] = _mm_unpackhi_epi8(a[2 * j], a[2 * j + 1]);
  }
  for (int j = 0; j < 8; ++j) {
    a[j] = _mm_unpacklo_epi16(b[2 * j], b[2 * j + 1]);
    a[j + 8] = _mm_unpackhi_epi16(b[2 * j], b[2 * j + 1]);
  }
  for (int j = 0; j < 8; ++j) {
    b[j] = _mm_unpacklo_epi32(a[2 * j], a[2 * j + 1]);
    b[j + 8] = _mm_unpackhi_epi32(a[2 * j], a[2 * j + 1]);
  }
  for (int j = 0; j < 8; ++j) {
    a[j] = _mm_unpacklo_epi64(b[2 * j], b[2 * j + 1]);
    a[j + 8] = _mm_unpackhi_epi64(b[2 * j], b[2 * j + 1]);
  }
  static constexpr int kBitReversed[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  for (int k = 0; k < 16; ++k) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + kBitReversed[k] * out_stride), a[k]);
  }
}
#endif

/// (rows, cols) -> (cols, rows): 16x16 blocks with SSE2 where there is, the edges one by one.
void transpose(const uint8_t* in, int64_t rows, int64_t cols, uint8_t* out) {
  int64_t full_rows = 0, full_cols = 0;
#if defined(__SSE2__)
  full_rows = rows / 16 * 16;
  full_cols = cols / 16 * 16;
  for (int64_t r = 0; r < full_rows; r += 16) {
    for (int64_t c = 0; c < full_cols; c += 16) transpose_block(in + r * cols + c, cols, out + c * rows + r, rows);
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c0 = r < full_rows ? full_cols : 0;
    for (int64_t c = c0; c < cols; ++c) out[c * rows + r] = in[r * cols + c];
  }
}

/// Horizontal pass over `rows` rows of one plane: in (rows, in_w) -> out (rows, out_w).
void horizontal(const uint8_t* in, int64_t in_w, uint8_t* out, int64_t out_w, int64_t rows,
                const Coefficients& c, std::vector<uint8_t>& scratch) {
  scratch.resize(static_cast<size_t>(in_w * rows + out_w * rows));
  uint8_t* flipped = scratch.data();
  uint8_t* flipped_out = flipped + in_w * rows;
  transpose(in, rows, in_w, flipped);
  weighted_rows(flipped, rows, flipped_out, out_w, 0, c);
  transpose(flipped_out, out_w, rows, out);
}

/// Vertical pass of one plane: in (any rows, width) -> out (out_h, width).
void vertical(const uint8_t* in, int64_t width, uint8_t* out, int64_t out_h, int offset,
              const Coefficients& c) {
  weighted_rows(in, width, out, out_h, offset, c);
}

}  // namespace

torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width) {
  detail::check_uint8_image(image, "resize");
  TORCH_CHECK(height >= 1 && width >= 1, "resize: size must be positive, got ", height, "x", width);
  const int64_t in_h = image.size(1), in_w = image.size(2), planes = image.size(0);
  if (in_h == height && in_w == width) return image;
  TORCH_CHECK(in_h < (1 << 24) && in_w < (1 << 24) && height < (1 << 24) && width < (1 << 24),
              "resize: sizes up to 2^24 are supported, got ", image.sizes(), " to ", height, "x",
              width);
  const auto source = image.contiguous();
  auto out = torch::empty({planes, height, width}, torch::kUInt8);
  const auto columns = coefficients(static_cast<int>(in_w), static_cast<int>(width));
  const auto rows = coefficients(static_cast<int>(in_h), static_cast<int>(height));
  // The input rows the vertical pass reads: only those go through the horizontal pass.
  const int first_row = rows.first.front();
  const int last_row = rows.first.back() + rows.count.back();
  const bool need_horizontal = in_w != width;
  const bool need_vertical = in_h != height;
  std::vector<uint8_t> temporary, scratch;
  for (int64_t p = 0; p < planes; ++p) {
    const uint8_t* plane = source.data_ptr<uint8_t>() + p * in_h * in_w;
    uint8_t* target = out.data_ptr<uint8_t>() + p * height * width;
    if (!need_vertical) {
      horizontal(plane, in_w, target, width, in_h, columns, scratch);
    } else if (!need_horizontal) {
      vertical(plane, in_w, target, height, 0, rows);
    } else {
      const int64_t band = last_row - first_row;
      temporary.resize(static_cast<size_t>(band * width));
      horizontal(plane + first_row * in_w, in_w, temporary.data(), width, band, columns, scratch);
      vertical(temporary.data(), width, target, height, first_row, rows);
    }
  }
  return out;
}

}  // namespace sedensenet::data::functional
