#pragma once
/// \file
/// Image transforms with torchvision's semantics on its PIL path, so that a model trained in
/// Python and served in C++ sees the same pixels.
///
/// Until `ToTensor`, an image is a uint8 tensor (C, H, W) with C = 1 (grey) or 3 (RGB), and every
/// transform rounds to 8 bits as PIL does. `ToTensor` gives float (3, H, W) in [0, 1] (grey
/// repeated to RGB), `Normalize` works on that. Random transforms draw from the `Rng` they are
/// given, so a pipeline is deterministic for a given seed.
///
/// | here | torchvision 0.14 | agreement (tests/test_transforms.cpp) |
/// | --- | --- | --- |
/// | Resize(size) / Resize(h, w) | Resize(size), bilinear (PIL, antialiased) | exact (PIL's fixed-point arithmetic) |
/// | CenterCrop | CenterCrop | exact |
/// | RandomCrop(size, padding, pad_if_needed, fill, mode) | RandomCrop | exact for the same offsets |
/// | RandomResizedCrop | RandomResizedCrop | crop exact, resize as Resize |
/// | RandomHorizontalFlip(p) | RandomHorizontalFlip | exact |
/// | RandomRotation(degrees, fill) | RandomRotation (NEAREST, no expand) | exact for the same angle |
/// | ColorJitter(b, c, s, h) | ColorJitter | exact for the same factors |
/// | ToTensor | ToTensor | exact |
/// | Normalize(mean, std) | Normalize | exact |

#include <torch/types.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "sedensenet/data/rng.hpp"

namespace sedensenet::data {

/// A step of an image pipeline. Implement `apply` to write your own.
class Transform {
 public:
  virtual ~Transform() = default;
  /// Transforms `image`; random choices come from `rng`.
  virtual torch::Tensor apply(const torch::Tensor& image, Rng& rng) const = 0;
  /// Human-readable description, e.g. "Resize(224)".
  virtual std::string describe() const = 0;
  /// Like `apply`, writing the result into `out` (a preallocated slot of a batch, of the result's
  /// shape and dtype) when the transform can do so without a temporary. Returns false when it
  /// cannot (the default); the caller then uses `apply` and copies. The values are the same.
  virtual bool apply_into(const torch::Tensor& image, Rng& rng, torch::Tensor& out) const;
  torch::Tensor operator()(const torch::Tensor& image, Rng& rng) const { return apply(image, rng); }
  /// The shorter side an input needs for this transform to lose no detail: an image decoded
  /// smaller than it was stored, down to this size, gives (nearly) the same result. The loader's
  /// decode-time downscaling (`LoaderOptions::decode_downscale`) stops there. 0, the default:
  /// the full image.
  virtual int64_t min_input_size() const { return 0; }
};

using TransformPtr = std::shared_ptr<const Transform>;

namespace detail {
void check_uint8_image(const torch::Tensor& image, const char* who);

void check_float_image(const torch::Tensor& image, const char* who);

/// Python's round() (ties to even), as torchvision uses it for crop offsets.
inline int64_t python_round(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

/// PIL's 8-bit arithmetic: compute in float32, truncate toward zero, clamp to [0, 255].
torch::Tensor truncate_to_uint8(const torch::Tensor& values);

/// PIL's blend (ImageEnhance): a + alpha * (b - a) in float32, truncated and clamped.
torch::Tensor pil_blend(const torch::Tensor& degenerate, const torch::Tensor& image,
                        double alpha);

/// PIL's convert("L"): (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16, as (1, H, W) uint8.
torch::Tensor pil_grey(const torch::Tensor& image);
}  // namespace detail

/// Applies its steps in order.
class Compose : public Transform {
 public:
  explicit Compose(std::vector<TransformPtr> steps);
  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override;
  /// Runs every step but the last, then lets the last write into `out` if it can; ToTensor
  /// followed by Normalize at the end write into `out` together, in one pass.
  bool apply_into(const torch::Tensor& image, Rng& rng, torch::Tensor& out) const override;
  std::string describe() const override;
  /// The first step's.
  int64_t min_input_size() const override;
  const std::vector<TransformPtr>& steps() const { return steps_; }

 private:
  std::vector<TransformPtr> steps_;
};

// ---------------------------------------------------------------------------------------------
// Functional forms (deterministic): what the random transforms call with their drawn parameters.
// ---------------------------------------------------------------------------------------------
namespace functional {

/// Bilinear resize with antialiasing to exactly (height, width), in PIL's 8-bit fixed-point
/// arithmetic (src/data/resample.cpp): the same pixels as torchvision's
/// F.resize(pil_image, [h, w], InterpolationMode.BILINEAR).
torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width);

/// torchvision's output size for Resize(int): the shorter side becomes `size`, the longer one
/// int(size * long / short).
std::pair<int64_t, int64_t> resized_size(int64_t height, int64_t width, int64_t size);

/// Crops rows [top, top + height) and columns [left, left + width); parts outside the image are
/// filled with 0 (as PIL's crop). torchvision: F.crop.
torch::Tensor crop(const torch::Tensor& image, int64_t top, int64_t left, int64_t height,
                   int64_t width);

/// Centre crop, padding with 0 first if the image is smaller. torchvision: F.center_crop.
torch::Tensor center_crop(const torch::Tensor& image, int64_t height, int64_t width);

/// How `pad` fills the border.
enum class PaddingMode { constant, edge, reflect, symmetric };

/// Pads left, top, right, bottom. torchvision: F.pad(img, [left, top, right, bottom], fill, mode).
torch::Tensor pad(const torch::Tensor& image, int64_t left, int64_t top, int64_t right,
                  int64_t bottom, int64_t fill = 0,
                  PaddingMode mode = PaddingMode::constant);

/// Mirrors left-right. torchvision: F.hflip.
torch::Tensor hflip(const torch::Tensor& image);

/// Crops and resizes (bilinear, antialiased). torchvision: F.resized_crop.
torch::Tensor resized_crop(const torch::Tensor& image, int64_t top, int64_t left,
                           int64_t height, int64_t width, int64_t out_height,
                           int64_t out_width);

/// Rotates counter-clockwise by `angle` degrees about the centre, nearest-neighbour sampling,
/// same size, uncovered pixels set to `fill`. Reproduces PIL's Image.rotate (which torchvision's
/// F.rotate calls for PIL images) pixel for pixel.
torch::Tensor rotate(const torch::Tensor& image, double angle, int64_t fill = 0);

/// PIL ImageEnhance.Brightness: blend with black. torchvision: F.adjust_brightness.
torch::Tensor adjust_brightness(const torch::Tensor& image, double factor);

/// PIL ImageEnhance.Contrast: blend with the mean grey level. torchvision: F.adjust_contrast.
torch::Tensor adjust_contrast(const torch::Tensor& image, double factor);

/// PIL ImageEnhance.Color: blend with the grey version. torchvision: F.adjust_saturation.
torch::Tensor adjust_saturation(const torch::Tensor& image, double factor);

/// Shifts the hue in PIL's 8-bit HSV space. torchvision: F.adjust_hue (PIL path). PIL's
/// conversions mix float and double arithmetic; the same mix here reproduces them for all 2^24
/// colours (checked against Pillow 9.4).
torch::Tensor adjust_hue(const torch::Tensor& image, double hue_factor);

/// uint8 (C, H, W) -> float (3, H, W) in [0, 1]; grey is repeated to RGB. torchvision: ToTensor
/// on an RGB PIL image.
torch::Tensor to_tensor(const torch::Tensor& image);

/// ToTensor then Normalize in one pass over a uint8 (1 or 3, H, W) image, written into `out`
/// (float32 (3, H, W), contiguous): per value x / 255, then - mean, then / std, in float32 as the
/// two steps compute them, so the values are the same. `mirror`: hflip first, in the same pass.
/// Returns false (writing nothing) when the image or `out` is not of that kind.
bool to_normalized_tensor_into(const torch::Tensor& image, const std::vector<double>& mean,
                               const std::vector<double>& std, torch::Tensor& out,
                               bool mirror = false);

/// (x - mean) / std per channel, as torchvision's Normalize (sub, then div).
torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean,
                        const std::vector<double>& std);
}  // namespace functional

// ---------------------------------------------------------------------------------------------
// Transform objects
// ---------------------------------------------------------------------------------------------

/// torchvision Resize: an int resizes the shorter side (keeping the aspect ratio); (h, w) resizes
/// to exactly that. Bilinear with antialiasing, as PIL.
class Resize : public Transform {
 public:
  explicit Resize(int64_t size);
  Resize(int64_t height, int64_t width);
  torch::Tensor apply(const torch::Tensor& image, Rng&) const override;
  std::string describe() const override;
  /// `size` (or the larger of height and width): the output is never enlarged from there.
  int64_t min_input_size() const override;

 private:
  int64_t size_ = 0, height_ = 0, width_ = 0;
};

/// torchvision CenterCrop.
class CenterCrop : public Transform {
 public:
  explicit CenterCrop(int64_t size) : CenterCrop(size, size) {}
  CenterCrop(int64_t height, int64_t width);
  torch::Tensor apply(const torch::Tensor& image, Rng&) const override;
  std::string describe() const override;

 private:
  int64_t height_, width_;
};

/// torchvision RandomCrop(size, padding, pad_if_needed, fill, padding_mode).
class RandomCrop : public Transform {
 public:
  explicit RandomCrop(int64_t size, int64_t padding = 0, bool pad_if_needed = false,
                      int64_t fill = 0,
                      functional::PaddingMode mode = functional::PaddingMode::constant);
  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override;
  std::string describe() const override;

 private:
  int64_t height_, width_, padding_;
  bool pad_if_needed_;
  int64_t fill_;
  functional::PaddingMode mode_;
};

/// torchvision RandomResizedCrop(size, scale, ratio): a random area and aspect ratio, resized.
class RandomResizedCrop : public Transform {
 public:
  explicit RandomResizedCrop(int64_t size, std::pair<double, double> scale = {0.08, 1.0},
                             std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0});

  /// torchvision's get_params: (top, left, height, width) of the crop.
  std::array<int64_t, 4> parameters(int64_t height, int64_t width, Rng& rng) const;

  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override;
  std::string describe() const override;
  /// The shorter side at which even the smallest crop (area `scale.first`, the most extreme
  /// aspect ratio) is still `size` pixels on each side.
  int64_t min_input_size() const override;

 private:
  int64_t size_;
  std::pair<double, double> scale_, ratio_;
};

/// torchvision RandomHorizontalFlip(p).
class RandomHorizontalFlip : public Transform {
 public:
  explicit RandomHorizontalFlip(double p = 0.5);
  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override;
  std::string describe() const override;
  /// Draws whether this image is flipped, as apply() does (one Bernoulli(p) from `rng`).
  bool draw(Rng& rng) const { return rng.bernoulli(p_); }

 private:
  double p_;
};

/// torchvision RandomRotation(degrees) with NEAREST interpolation, no expansion, centre pivot:
/// an angle uniform in [-degrees, degrees].
class RandomRotation : public Transform {
 public:
  explicit RandomRotation(double degrees, int64_t fill = 0);
  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override;
  std::string describe() const override;

 private:
  double degrees_;
  int64_t fill_;
};

/// torchvision ColorJitter(brightness, contrast, saturation, hue): factors uniform in
/// [max(0, 1 - b), 1 + b] (hue in [-h, h]), applied in a random order.
class ColorJitter : public Transform {
 public:
  explicit ColorJitter(double brightness = 0, double contrast = 0, double saturation = 0,
                       double hue = 0);
  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override;
  std::string describe() const override;

 private:
  double brightness_, contrast_, saturation_, hue_;
};

/// torchvision ToTensor: uint8 -> float in [0, 1], (3, H, W).
class ToTensor : public Transform {
 public:
  torch::Tensor apply(const torch::Tensor& image, Rng&) const override;
  /// Writes x / 255 straight into `out` (a batch slot).
  bool apply_into(const torch::Tensor& image, Rng&, torch::Tensor& out) const override;
  std::string describe() const override { return "ToTensor()"; }
};

/// torchvision Normalize(mean, std).
class Normalize : public Transform {
 public:
  Normalize(std::vector<double> mean, std::vector<double> std);
  torch::Tensor apply(const torch::Tensor& image, Rng&) const override;
  /// Writes (x - mean) / std per channel into `out` without temporaries; with a grey image that
  /// ToTensor expanded, each channel is computed from the single stored channel.
  bool apply_into(const torch::Tensor& image, Rng&, torch::Tensor& out) const override;
  std::string describe() const override;
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& std() const { return std_; }

 private:
  std::vector<double> mean_, std_;
  torch::Tensor mean_f_, std_f_;
};

/// ImageNet statistics, the reference's normalisation.
const std::vector<double>& imagenet_mean();
const std::vector<double>& imagenet_std();

/// Shorthand: a pipeline from its steps.
TransformPtr compose(std::vector<TransformPtr> steps);

/// The reference's training pipeline: Resize(size, size), RandomHorizontalFlip, RandomCrop(size,
/// padding = size / 8), ToTensor, Normalize(ImageNet). Default size 224 as the reference.
TransformPtr train_transform(int64_t size = 224);

/// The reference's evaluation pipeline: Resize(size, size), ToTensor, Normalize(ImageNet).
TransformPtr eval_transform(int64_t size = 224);

}  // namespace sedensenet::data
