// The functional forms of the transforms (deterministic, PIL's arithmetic), and the image checks
// and PIL helpers they share. The transform classes that draw parameters and call them are in
// transforms.cpp.
#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <tmmintrin.h>
#endif

#include "sedensenet/data/transforms.hpp"

namespace sedensenet::data::detail {

void check_uint8_image(const torch::Tensor& image, const char* who) {
  TORCH_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3) &&
                  image.scalar_type() == torch::kUInt8,
              who, " expects a uint8 image (1 or 3, H, W), i.e. a step before ToTensor; got ",
              image.sizes(), " ", image.scalar_type());
}

void check_float_image(const torch::Tensor& image, const char* who) {
  TORCH_CHECK(image.dim() == 3 && image.is_floating_point(), who,
              " expects a float image (C, H, W), i.e. a step after ToTensor; got ", image.sizes(),
              " ", image.scalar_type());
}

torch::Tensor truncate_to_uint8(const torch::Tensor& values) {
  return values.clamp(0, 255).to(torch::kUInt8);
}

torch::Tensor pil_blend(const torch::Tensor& degenerate, const torch::Tensor& image,
                        double alpha) {
  auto a = degenerate.to(torch::kFloat32);
  auto b = image.to(torch::kFloat32);
  return truncate_to_uint8(a + static_cast<float>(alpha) * (b - a));
}

torch::Tensor pil_grey(const torch::Tensor& image) {
  if (image.size(0) == 1) return image;
  auto c = image.to(torch::kInt32);
  auto l = (c[0] * 19595 + c[1] * 38470 + c[2] * 7471 + 0x8000).bitwise_right_shift(16);
  return l.to(torch::kUInt8).unsqueeze(0);
}

}  // namespace sedensenet::data::detail

namespace sedensenet::data::functional {

std::pair<int64_t, int64_t> resized_size(int64_t height, int64_t width, int64_t size) {
  const bool width_is_short = width <= height;
  const int64_t shorter = width_is_short ? width : height;
  const int64_t longer = width_is_short ? height : width;
  const auto new_long =
      static_cast<int64_t>(static_cast<double>(size * longer) / static_cast<double>(shorter));
  return width_is_short ? std::make_pair(new_long, size) : std::make_pair(size, new_long);
}

torch::Tensor crop(const torch::Tensor& image, int64_t top, int64_t left, int64_t height,
                   int64_t width) {
  TORCH_CHECK(height >= 1 && width >= 1, "crop: size must be positive, got ", height, "x", width);
  const int64_t h = image.size(1), w = image.size(2);
  if (top >= 0 && left >= 0 && top + height <= h && left + width <= w) {
    return image.narrow(1, top, height).narrow(2, left, width).contiguous();
  }
  auto out = torch::zeros({image.size(0), height, width}, image.options());
  const int64_t y0 = std::max<int64_t>(top, 0), y1 = std::min(top + height, h);
  const int64_t x0 = std::max<int64_t>(left, 0), x1 = std::min(left + width, w);
  if (y1 > y0 && x1 > x0) {
    out.narrow(1, y0 - top, y1 - y0)
        .narrow(2, x0 - left, x1 - x0)
        .copy_(image.narrow(1, y0, y1 - y0).narrow(2, x0, x1 - x0));
  }
  return out;
}

torch::Tensor center_crop(const torch::Tensor& image, int64_t height, int64_t width) {
  const int64_t h = image.size(1), w = image.size(2);
  const int64_t top = detail::python_round(static_cast<double>(h - height) / 2.0);
  const int64_t left = detail::python_round(static_cast<double>(w - width) / 2.0);
  return crop(image, top, left, height, width);
}

torch::Tensor pad(const torch::Tensor& image, int64_t left, int64_t top, int64_t right,
                  int64_t bottom, int64_t fill,
                  PaddingMode mode) {
  TORCH_CHECK(left >= 0 && top >= 0 && right >= 0 && bottom >= 0,
              "pad: padding must be >= 0, got ", left, ", ", top, ", ", right, ", ", bottom);
  if (mode == PaddingMode::constant) {
    return torch::constant_pad_nd(image, {left, right, top, bottom}, fill);
  }
  // Other modes: gather rows and columns by index (exact for any dtype).
  auto indices = [mode](int64_t n, int64_t before, int64_t after) {
    std::vector<int64_t> idx;
    idx.reserve(static_cast<size_t>(n + before + after));
    for (int64_t i = -before; i < n + after; ++i) {
      int64_t j = i;
      if (mode == PaddingMode::edge) {
        j = std::clamp<int64_t>(i, 0, n - 1);
      } else {
        const bool symmetric = mode == PaddingMode::symmetric;
        const int64_t period = symmetric ? 2 * n : 2 * (n - 1);
        if (period == 0) {
          j = 0;
        } else {
          j = ((i % period) + period) % period;
          if (symmetric) {
            j = j < n ? j : period - 1 - j;
          } else {
            j = j < n ? j : period - j;
          }
        }
      }
      idx.push_back(j);
    }
    return torch::tensor(idx, torch::kLong);
  };
  TORCH_CHECK(mode != PaddingMode::reflect || (top < image.size(1) && bottom < image.size(1) &&
                                               left < image.size(2) && right < image.size(2)),
              "pad: reflect padding must be smaller than the image");
  return image.index_select(1, indices(image.size(1), top, bottom))
      .index_select(2, indices(image.size(2), left, right));
}

torch::Tensor resized_crop(const torch::Tensor& image, int64_t top, int64_t left,
                           int64_t height, int64_t width, int64_t out_height,
                           int64_t out_width) {
  return resize(crop(image, top, left, height, width), out_height, out_width);
}

torch::Tensor rotate(const torch::Tensor& image, double angle, int64_t fill) {
  detail::check_uint8_image(image, "rotate");
  const int64_t channels = image.size(0), h = image.size(1), w = image.size(2);
  angle = std::fmod(angle, 360.0);
  if (angle < 0) angle += 360.0;
  if (angle == 0.0) return image.clone();
  if (angle == 180.0) return image.flip({1, 2});
  if ((angle == 90.0 || angle == 270.0) && w == h) {
    // PIL transposes: ROTATE_90 (counter-clockwise) and ROTATE_270.
    return angle == 90.0 ? image.transpose(1, 2).flip({1}).contiguous()
                         : image.transpose(1, 2).flip({2}).contiguous();
  }
  // PIL: matrix rounded to 15 decimals, inverse mapping from output (x + 0.5, y + 0.5).
  const double radians = -angle * M_PI / 180.0;
  auto round15 = [](double v) { return std::round(v * 1e15) / 1e15; };
  const double a = round15(std::cos(radians)), b = round15(std::sin(radians));
  const double d = round15(-std::sin(radians)), e = round15(std::cos(radians));
  const double cx = static_cast<double>(w) / 2.0, cy = static_cast<double>(h) / 2.0;
  const double c = a * (-cx) + b * (-cy) + cx;
  const double f = d * (-cx) + e * (-cy) + cy;
  // PIL's nearest-neighbour affine path works in 16.16 fixed point: the source position of output
  // pixel (x, y) is FIX(c + b/2 + a/2) + y * FIX(b) + x * FIX(a), then >> 16 (and likewise for
  // y). Doing the same in integers reproduces its choices at exact ties, where floating point
  // would pick the neighbouring pixel.
  auto fix = [](double v) { return static_cast<int64_t>(std::floor(v * 65536.0 + 0.5)); };
  const int64_t x0 = fix(c + b * 0.5 + a * 0.5), y0 = fix(f + e * 0.5 + d * 0.5);
  auto xs = torch::arange(w, torch::kLong).view({1, w});
  auto ys = torch::arange(h, torch::kLong).view({h, 1});
  auto x_fixed = ys * fix(b) + xs * fix(a) + x0;
  auto y_fixed = ys * fix(e) + xs * fix(d) + y0;
  auto xi = torch::where(x_fixed < 0, torch::full_like(x_fixed, -1), x_fixed.div(65536, "floor"));
  auto yi = torch::where(y_fixed < 0, torch::full_like(y_fixed, -1), y_fixed.div(65536, "floor"));
  auto inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h);
  auto flat_index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).view({-1});
  auto gathered = image.reshape({channels, h * w}).index_select(1, flat_index).view({channels, h, w});
  return torch::where(inside.unsqueeze(0), gathered,
                      torch::full({1, 1, 1}, fill, image.options()));
}

torch::Tensor adjust_brightness(const torch::Tensor& image, double factor) {
  detail::check_uint8_image(image, "adjust_brightness");
  return detail::pil_blend(torch::zeros_like(image), image, factor);
}

torch::Tensor adjust_contrast(const torch::Tensor& image, double factor) {
  detail::check_uint8_image(image, "adjust_contrast");
  const double mean = detail::pil_grey(image).to(torch::kFloat64).mean().item<double>();
  const auto level = static_cast<int64_t>(mean + 0.5);
  return detail::pil_blend(torch::full_like(image, level), image, factor);
}

torch::Tensor adjust_saturation(const torch::Tensor& image, double factor) {
  detail::check_uint8_image(image, "adjust_saturation");
  if (image.size(0) == 1) return image;  // grey: its own degenerate image
  return detail::pil_blend(detail::pil_grey(image).expand_as(image), image, factor);
}

torch::Tensor adjust_hue(const torch::Tensor& image, double hue_factor) {
  detail::check_uint8_image(image, "adjust_hue");
  TORCH_CHECK(hue_factor >= -0.5 && hue_factor <= 0.5, "adjust_hue: hue_factor must be in "
              "[-0.5, 0.5], got ", hue_factor);
  if (image.size(0) == 1) return image;  // grey has no hue
  const auto f32 = torch::kFloat32, f64 = torch::kFloat64;
  auto rgb = image.to(torch::kInt32);
  auto r = rgb[0], g = rgb[1], b = rgb[2];
  auto maxc = torch::max(r, torch::max(g, b));
  auto minc = torch::min(r, torch::min(g, b));
  auto gray = maxc == minc;
  // rgb2hsv: float ratios, hue offsets and the wrap in double, stored back to float.
  auto cr = (maxc - minc).to(f32);
  auto safe_cr = torch::where(gray, torch::ones_like(cr), cr);
  auto rc = (maxc - r).to(f32) / safe_cr;
  auto gc = (maxc - g).to(f32) / safe_cr;
  auto bc = (maxc - b).to(f32) / safe_cr;
  auto hue = torch::where(r == maxc, (bc - gc).to(f64),
                          torch::where(g == maxc, rc.to(f64).add(2.0) - bc.to(f64),
                                       gc.to(f64).add(4.0) - rc.to(f64)))
                 .to(f32);
  hue = torch::fmod(hue.to(f64) / 6.0 + 1.0, 1.0).to(f32);
  auto sat = cr / maxc.clamp_min(1).to(f32);
  auto h8 = torch::where(gray, torch::zeros_like(maxc), (hue.to(f64) * 255.0).to(torch::kInt32).clamp(0, 255));
  auto s8 = torch::where(gray, torch::zeros_like(maxc), (sat.to(f64) * 255.0).to(torch::kInt32).clamp(0, 255));
  auto v8 = maxc;
  // torchvision: np_h += np.uint8(hue_factor * 255), wrapping modulo 256.
  const auto shift =
      static_cast<int64_t>(static_cast<uint8_t>(static_cast<int64_t>(hue_factor * 255)));
  h8 = (h8 + shift).remainder(256);
  // hsv2rgb.
  auto h6 = h8.to(f32).to(f64) * 6.0 / 255.0;
  auto sector_f = h6.floor();
  auto frac = (h6 - sector_f.to(f32).to(f64)).to(f32);
  auto fs = (s8.to(f32).to(f64) / 255.0).to(f32);
  auto vf = v8.to(f32).to(f64);
  auto c_round = [](const torch::Tensor& x) {  // C's round(): halves away from zero
    return torch::where(x >= 0, (x + 0.5).floor(), (x - 0.5).ceil());
  };
  auto p = c_round(vf * (1.0 - fs.to(f64))).clamp(0, 255).to(torch::kInt32);
  auto q = c_round(vf * (1.0 - (fs * frac).to(f64))).clamp(0, 255).to(torch::kInt32);
  auto t = c_round(vf * (1.0 - fs.to(f64) * (1.0 - frac.to(f64)))).clamp(0, 255).to(torch::kInt32);
  auto sector = sector_f.to(torch::kInt32).remainder(6);
  auto pick = [&](const torch::Tensor& c0, const torch::Tensor& c1, const torch::Tensor& c2,
                  const torch::Tensor& c3, const torch::Tensor& c4, const torch::Tensor& c5) {
    return torch::where(sector == 0, c0, torch::where(sector == 1, c1, torch::where(sector == 2, c2,
           torch::where(sector == 3, c3, torch::where(sector == 4, c4, c5)))));
  };
  auto zero_sat = s8 == 0;
  auto out_r = torch::where(zero_sat, v8, pick(v8, q, p, p, t, v8));
  auto out_g = torch::where(zero_sat, v8, pick(t, v8, v8, q, p, p));
  auto out_b = torch::where(zero_sat, v8, pick(p, p, t, v8, v8, q));
  return torch::stack({out_r, out_g, out_b}).to(torch::kUInt8);
}

namespace {

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/// Reverses whole 16-byte blocks from the ends inward with SSSE3; returns how many bytes it did
/// from each end (the caller does the middle).
__attribute__((target("ssse3"))) int64_t reverse_blocks_ssse3(const uint8_t* in, uint8_t* out,
                                                              int64_t n) {
  const __m128i reverse = _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + n - 16 - i), _mm_shuffle_epi8(v, reverse));
  }
  return i;
}
#endif

/// out[i] = in[n - 1 - i] (`in` and `out` do not overlap).
void reverse_bytes(const uint8_t* in, uint8_t* out, int64_t n) {
  int64_t done = 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if (__builtin_cpu_supports("ssse3")) done = reverse_blocks_ssse3(in, out, n);
#endif
  for (int64_t i = done; i < n; ++i) out[n - 1 - i] = in[i];
}

/// ToTensor + Normalize of one run of values: (x / 255 - m) / s in float32.
/// Blocks of 16, the last one overlapping the one before when n is not a multiple: short runs
/// (rows) then need no value-by-value tail, whose scalar divisions would cost more than the rest.
void normalize_run(const uint8_t* __restrict in, float* __restrict out, int64_t n, float m,
                   float s) {
  constexpr int64_t kBlock = 16;
  auto value = [m, s](uint8_t x) { return (static_cast<float>(x) / 255.0f - m) / s; };
  if (n < kBlock) {
    for (int64_t i = 0; i < n; ++i) out[i] = value(in[i]);
    return;
  }
  for (int64_t i = 0; i < n; i += kBlock) {
    i = std::min(i, n - kBlock);
    for (int64_t j = 0; j < kBlock; ++j) out[i + j] = value(in[i + j]);
  }
}

}  // namespace

torch::Tensor to_tensor(const torch::Tensor& image) {
  detail::check_uint8_image(image, "ToTensor");
  auto x = image.to(torch::kFloat32).div_(255);
  // Grey: three views of one channel (copied when written into a batch, or by the next step).
  return image.size(0) == 1 ? x.expand({3, x.size(1), x.size(2)}) : x;
}

bool to_normalized_tensor_into(const torch::Tensor& image, const std::vector<double>& mean,
                               const std::vector<double>& std, torch::Tensor& out,
                               bool mirror) {
  if (image.dim() != 3 || image.scalar_type() != torch::kUInt8 || !image.is_contiguous() ||
      (image.size(0) != 1 && image.size(0) != 3) || out.scalar_type() != torch::kFloat32 ||
      !out.is_contiguous() || out.dim() != 3 || out.size(0) != 3 ||
      out.size(1) != image.size(1) || out.size(2) != image.size(2) || mean.size() != 3 ||
      std.size() != 3) {
    return false;
  }
  const int64_t width = image.size(2), pixels = image.size(1) * width;
  const uint8_t* source = image.data_ptr<uint8_t>();
  float* target = out.data_ptr<float>();
  std::vector<uint8_t> reversed(mirror ? static_cast<size_t>(width) : 0);
  for (int64_t c = 0; c < 3; ++c) {
    const uint8_t* x = source + (image.size(0) == 1 ? 0 : c * pixels);
    float* y = target + c * pixels;
    const auto m = static_cast<float>(mean[static_cast<size_t>(c)]);
    const auto s = static_cast<float>(std[static_cast<size_t>(c)]);
    if (!mirror) {
      normalize_run(x, y, pixels, m, s);
    } else {
      // Each row reversed into a small buffer first: the conversion stays vectorised.
      for (int64_t row = 0; row < pixels; row += width) {
        reverse_bytes(x + row, reversed.data(), width);
        normalize_run(reversed.data(), y + row, width, m, s);
      }
    }
  }
  return true;
}

torch::Tensor hflip(const torch::Tensor& image) {
  if (image.scalar_type() != torch::kUInt8 || image.dim() != 3 || !image.is_contiguous()) {
    return image.flip({2});
  }
  auto out = torch::empty_like(image);
  const int64_t rows = image.size(0) * image.size(1), width = image.size(2);
  const uint8_t* in = image.data_ptr<uint8_t>();
  uint8_t* flipped = out.data_ptr<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) reverse_bytes(in + r * width, flipped + r * width, width);
  return out;
}

torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean,
                        const std::vector<double>& std) {
  detail::check_float_image(image, "Normalize");
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == image.size(0) &&
                  static_cast<int64_t>(std.size()) == image.size(0),
              "Normalize: mean and std need one value per channel (", image.size(0), "), got ",
              mean.size(), " and ", std.size());
  auto m = torch::tensor(mean, image.options()).view({-1, 1, 1});
  auto s = torch::tensor(std, image.options()).view({-1, 1, 1});
  return image.sub(m).div_(s);
}

}  // namespace sedensenet::data::functional
