// The transform classes: each draws its parameters from the sample's Rng and calls the functional
// form (transforms_functional.cpp); composition and the standard pipelines.
#include "sedensenet/data/transforms.hpp"

#include <sstream>

namespace sedensenet::data {

const std::vector<double>& imagenet_mean() {
  static const std::vector<double> v = {0.485, 0.456, 0.406};
  return v;
}

const std::vector<double>& imagenet_std() {
  static const std::vector<double> v = {0.229, 0.224, 0.225};
  return v;
}

TransformPtr compose(std::vector<TransformPtr> steps) {
  return std::make_shared<Compose>(std::move(steps));
}

TransformPtr train_transform(int64_t size) {
  return compose({std::make_shared<Resize>(size, size), std::make_shared<RandomHorizontalFlip>(),
                  std::make_shared<RandomCrop>(size, size / 8), std::make_shared<ToTensor>(),
                  std::make_shared<Normalize>(imagenet_mean(), imagenet_std())});
}

TransformPtr eval_transform(int64_t size) {
  return compose({std::make_shared<Resize>(size, size), std::make_shared<ToTensor>(),
                  std::make_shared<Normalize>(imagenet_mean(), imagenet_std())});
}

bool Transform::apply_into(const torch::Tensor& image, Rng& rng, torch::Tensor& out) const {
  (void)image;
  (void)rng;
  (void)out;
  return false;
}

Compose::Compose(std::vector<TransformPtr> steps) : steps_(std::move(steps)) {
  for (const auto& s : steps_) TORCH_CHECK(s != nullptr, "Compose: a step is null");
}

torch::Tensor Compose::apply(const torch::Tensor& image, Rng& rng) const {
  torch::Tensor x = image;
  for (const auto& step : steps_) x = step->apply(x, rng);
  return x;
}

bool Compose::apply_into(const torch::Tensor& image, Rng& rng, torch::Tensor& out) const {
  if (steps_.empty()) return false;
  torch::Tensor x = image;
  const size_t n = steps_.size();
  const auto* normalize = n >= 2 ? dynamic_cast<const Normalize*>(steps_[n - 1].get()) : nullptr;
  if (normalize != nullptr && dynamic_cast<const ToTensor*>(steps_[n - 2].get()) != nullptr) {
    // [..., RandomHorizontalFlip,] ToTensor, Normalize: one pass (the flip's draw in its turn).
    const auto* flip =
        n >= 3 ? dynamic_cast<const RandomHorizontalFlip*>(steps_[n - 3].get()) : nullptr;
    const size_t before = flip != nullptr ? n - 3 : n - 2;
    for (size_t i = 0; i < before; ++i) x = steps_[i]->apply(x, rng);
    const bool mirror = flip != nullptr && flip->draw(rng);
    if (functional::to_normalized_tensor_into(x, normalize->mean(), normalize->std(), out,
                                              mirror)) {
      return true;
    }
    if (mirror) x = functional::hflip(x);
    x = steps_[n - 2]->apply(x, rng);
  } else {
    for (size_t i = 0; i + 1 < n; ++i) x = steps_[i]->apply(x, rng);
  }
  if (steps_.back()->apply_into(x, rng, out)) return true;
  auto result = steps_.back()->apply(x, rng);
  if (result.sizes() != out.sizes()) return false;  // the caller reports the mismatch
  out.copy_(result);
  return true;
}

std::string Compose::describe() const {
  std::ostringstream os;
  os << "Compose(";
  for (size_t i = 0; i < steps_.size(); ++i) os << (i ? ", " : "") << steps_[i]->describe();
  os << ")";
  return os.str();
}

int64_t Compose::min_input_size() const {
  return steps_.empty() ? 0 : steps_.front()->min_input_size();
}

Resize::Resize(int64_t size) : size_(size) {
  TORCH_CHECK(size >= 1, "Resize: size must be >= 1, got ", size);
}

Resize::Resize(int64_t height, int64_t width) : height_(height), width_(width) {
  TORCH_CHECK(height >= 1 && width >= 1, "Resize: size must be >= 1, got ", height, "x", width);
}

torch::Tensor Resize::apply(const torch::Tensor& image, Rng&) const {
  detail::check_uint8_image(image, "Resize");
  if (size_ > 0) {
    const auto [h, w] = functional::resized_size(image.size(1), image.size(2), size_);
    return functional::resize(image, h, w);
  }
  return functional::resize(image, height_, width_);
}

int64_t Resize::min_input_size() const { return size_ > 0 ? size_ : std::max(height_, width_); }

std::string Resize::describe() const {
  return size_ > 0 ? "Resize(" + std::to_string(size_) + ")"
                   : "Resize(" + std::to_string(height_) + ", " + std::to_string(width_) + ")";
}

CenterCrop::CenterCrop(int64_t height, int64_t width) : height_(height), width_(width) {
  TORCH_CHECK(height >= 1 && width >= 1, "CenterCrop: size must be >= 1, got ", height, "x",
              width);
}

torch::Tensor CenterCrop::apply(const torch::Tensor& image, Rng&) const {
  return functional::center_crop(image, height_, width_);
}

std::string CenterCrop::describe() const {
  return "CenterCrop(" + std::to_string(height_) + ", " + std::to_string(width_) + ")";
}

RandomCrop::RandomCrop(int64_t size, int64_t padding, bool pad_if_needed,
                    int64_t fill,
                    functional::PaddingMode mode)
    : height_(size), width_(size), padding_(padding), pad_if_needed_(pad_if_needed),
      fill_(fill), mode_(mode) {
  TORCH_CHECK(size >= 1, "RandomCrop: size must be >= 1, got ", size);
  TORCH_CHECK(padding >= 0, "RandomCrop: padding must be >= 0, got ", padding);
}

torch::Tensor RandomCrop::apply(const torch::Tensor& image, Rng& rng) const {
  detail::check_uint8_image(image, "RandomCrop");
  torch::Tensor x = image;
  if (padding_ > 0) x = functional::pad(x, padding_, padding_, padding_, padding_, fill_, mode_);
  // torchvision pads by the whole difference on both sides when pad_if_needed.
  if (pad_if_needed_ && x.size(2) < width_) {
    const int64_t p = width_ - x.size(2);
    x = functional::pad(x, p, 0, p, 0, fill_, mode_);
  }
  if (pad_if_needed_ && x.size(1) < height_) {
    const int64_t p = height_ - x.size(1);
    x = functional::pad(x, 0, p, 0, p, fill_, mode_);
  }
  const int64_t h = x.size(1), w = x.size(2);
  TORCH_CHECK(h >= height_ && w >= width_, "RandomCrop: crop ", height_, "x", width_,
              " is larger than the (padded) image ", h, "x", w, "; use pad_if_needed");
  if (h == height_ && w == width_) return x;
  const int64_t top = rng.randint(0, h - height_ + 1);
  const int64_t left = rng.randint(0, w - width_ + 1);
  return functional::crop(x, top, left, height_, width_);
}

std::string RandomCrop::describe() const {
  return "RandomCrop(" + std::to_string(height_) + ", padding=" + std::to_string(padding_) + ")";
}

RandomResizedCrop::RandomResizedCrop(int64_t size, std::pair<double, double> scale,
                           std::pair<double, double> ratio)
    : size_(size), scale_(scale), ratio_(ratio) {
  TORCH_CHECK(size >= 1, "RandomResizedCrop: size must be >= 1, got ", size);
  TORCH_CHECK(scale.first > 0 && scale.first <= scale.second && scale.second <= 1.0,
              "RandomResizedCrop: scale must satisfy 0 < min <= max <= 1, got (", scale.first,
              ", ", scale.second, ")");
  TORCH_CHECK(ratio.first > 0 && ratio.first <= ratio.second,
              "RandomResizedCrop: ratio must satisfy 0 < min <= max, got (", ratio.first, ", ",
              ratio.second, ")");
}

std::array<int64_t, 4> RandomResizedCrop::parameters(int64_t height, int64_t width, Rng& rng) const {
  const double area = static_cast<double>(height * width);
  const double log_low = std::log(ratio_.first), log_high = std::log(ratio_.second);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale_.first, scale_.second);
    const double aspect = std::exp(rng.uniform(log_low, log_high));
    const int64_t w = detail::python_round(std::sqrt(target_area * aspect));
    const int64_t h = detail::python_round(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int64_t top = rng.randint(0, height - h + 1);
      const int64_t left = rng.randint(0, width - w + 1);
      return {top, left, h, w};
    }
  }
  // Fallback: the central crop with the ratio clamped into range.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio_.first) {
    h = detail::python_round(static_cast<double>(w) / ratio_.first);
  } else if (in_ratio > ratio_.second) {
    w = detail::python_round(static_cast<double>(h) * ratio_.second);
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

torch::Tensor RandomResizedCrop::apply(const torch::Tensor& image, Rng& rng) const {
  detail::check_uint8_image(image, "RandomResizedCrop");
  const auto p = parameters(image.size(1), image.size(2), rng);
  return functional::resized_crop(image, p[0], p[1], p[2], p[3], size_, size_);
}

int64_t RandomResizedCrop::min_input_size() const {
  // A crop of area a * H * W (H * W >= S * S for shorter side S) with aspect ratio r has sides
  // sqrt(a H W r) and sqrt(a H W / r): both >= size when S >= size / sqrt(a * min(r, 1/r)).
  const double narrowest = std::min(ratio_.first, 1.0 / ratio_.second);
  return static_cast<int64_t>(
      std::ceil(static_cast<double>(size_) / std::sqrt(scale_.first * std::min(narrowest, 1.0))));
}

std::string RandomResizedCrop::describe() const {
  return "RandomResizedCrop(" + std::to_string(size_) + ")";
}

RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  TORCH_CHECK(p >= 0 && p <= 1, "RandomHorizontalFlip: p must be in [0, 1], got ", p);
}

torch::Tensor RandomHorizontalFlip::apply(const torch::Tensor& image, Rng& rng) const {
  return draw(rng) ? functional::hflip(image) : image;
}

std::string RandomHorizontalFlip::describe() const {
  std::ostringstream os;
  os << "RandomHorizontalFlip(" << p_ << ")";
  return os.str();
}

RandomRotation::RandomRotation(double degrees, int64_t fill) : degrees_(degrees), fill_(fill) {
  TORCH_CHECK(degrees >= 0, "RandomRotation: degrees must be >= 0, got ", degrees);
}

torch::Tensor RandomRotation::apply(const torch::Tensor& image, Rng& rng) const {
  return functional::rotate(image, rng.uniform(-degrees_, degrees_), fill_);
}

std::string RandomRotation::describe() const {
  std::ostringstream os;
  os << "RandomRotation(" << degrees_ << ")";
  return os.str();
}

ColorJitter::ColorJitter(double brightness, double contrast, double saturation,
                     double hue)
    : brightness_(brightness), contrast_(contrast), saturation_(saturation), hue_(hue) {
  TORCH_CHECK(brightness >= 0 && contrast >= 0 && saturation >= 0,
              "ColorJitter: brightness, contrast and saturation must be >= 0");
  TORCH_CHECK(hue >= 0 && hue <= 0.5, "ColorJitter: hue must be in [0, 0.5], got ", hue);
}

torch::Tensor ColorJitter::apply(const torch::Tensor& image, Rng& rng) const {
  detail::check_uint8_image(image, "ColorJitter");
  const auto order = rng.permutation(4);
  auto factor = [&rng](double amount) {
    return amount > 0 ? rng.uniform(std::max(0.0, 1 - amount), 1 + amount) : 1.0;
  };
  const double b = factor(brightness_), c = factor(contrast_), s = factor(saturation_);
  const double h = hue_ > 0 ? rng.uniform(-hue_, hue_) : 0.0;
  torch::Tensor x = image;
  for (auto op : order) {
    if (op == 0 && brightness_ > 0) x = functional::adjust_brightness(x, b);
    if (op == 1 && contrast_ > 0) x = functional::adjust_contrast(x, c);
    if (op == 2 && saturation_ > 0) x = functional::adjust_saturation(x, s);
    if (op == 3 && hue_ > 0) x = functional::adjust_hue(x, h);
  }
  return x;
}

std::string ColorJitter::describe() const {
  std::ostringstream os;
  os << "ColorJitter(" << brightness_ << ", " << contrast_ << ", " << saturation_ << ", "
     << hue_ << ")";
  return os.str();
}

torch::Tensor ToTensor::apply(const torch::Tensor& image, Rng&) const {
  return functional::to_tensor(image);
}

bool ToTensor::apply_into(const torch::Tensor& image, Rng&, torch::Tensor& out) const {
  // (x / 255 - 0) / 1 is x / 255 exactly.
  static const std::vector<double> zeros(3, 0.0), ones(3, 1.0);
  return functional::to_normalized_tensor_into(image, zeros, ones, out);
}

Normalize::Normalize(std::vector<double> mean, std::vector<double> std)
    : mean_(std::move(mean)), std_(std::move(std)) {
  for (double s : std_) TORCH_CHECK(s > 0, "Normalize: std values must be > 0, got ", s);
  TORCH_CHECK(mean_.size() == std_.size(), "Normalize: ", mean_.size(), " means but ",
              std_.size(), " standard deviations");
  mean_f_ = torch::tensor(mean_, torch::kFloat32).view({-1, 1, 1});
  std_f_ = torch::tensor(std_, torch::kFloat32).view({-1, 1, 1});
}

torch::Tensor Normalize::apply(const torch::Tensor& image, Rng&) const {
  if (image.scalar_type() == torch::kFloat32 && image.dim() == 3 &&
      image.size(0) == static_cast<int64_t>(mean_.size())) {
    return image.sub(mean_f_).div_(std_f_);  // torchvision: sub, then div
  }
  return functional::normalize(image, mean_, std_);
}

bool Normalize::apply_into(const torch::Tensor& image, Rng&, torch::Tensor& out) const {
  if (image.scalar_type() != torch::kFloat32 || out.scalar_type() != torch::kFloat32 ||
      image.dim() != 3 || image.sizes() != out.sizes() ||
      image.size(0) != static_cast<int64_t>(mean_.size())) {
    return false;
  }
  for (int64_t c = 0; c < image.size(0); ++c) {
    auto channel = out[c];
    // (1, 1) tensors, not scalars: the same element-wise kernels as the (3, 1, 1) broadcast.
    torch::sub_out(channel, image[c], mean_f_[c]);
    channel.div_(std_f_[c]);
  }
  return true;
}

std::string Normalize::describe() const {
  std::ostringstream os;
  os << "Normalize(mean=[";
  for (size_t i = 0; i < mean_.size(); ++i) os << (i ? ", " : "") << mean_[i];
  os << "], std=[";
  for (size_t i = 0; i < std_.size(); ++i) os << (i ? ", " : "") << std_[i];
  os << "])";
  return os.str();
}

}  // namespace sedensenet::data
