#include "sedensenet/data/batch_mix.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "sedensenet/data/rng.hpp"

namespace sedensenet::data {

BatchMix::BatchMix(double mixup_alpha, double cutmix_alpha, uint64_t seed)
    : mixup_alpha_(mixup_alpha), cutmix_alpha_(cutmix_alpha), seed_(seed) {
  TORCH_CHECK(std::isfinite(mixup_alpha) && mixup_alpha >= 0, "mixup_alpha must be >= 0, got ", mixup_alpha);
  TORCH_CHECK(std::isfinite(cutmix_alpha) && cutmix_alpha >= 0, "cutmix_alpha must be >= 0, got ", cutmix_alpha);
}

MixedBatch BatchMix::operator()(const torch::Tensor& images, int64_t epoch, int64_t batch) const {
  if (!enabled() || images.size(0) < 2) return {images, {}, 1.0};
  TORCH_CHECK(images.dim() == 4, "BatchMix: expected images of shape (N, C, H, W), got ", images.sizes());
  const uint64_t stream = Rng::for_item(seed_, static_cast<uint64_t>(epoch),
                                        static_cast<uint64_t>(batch) + 0x9e37).next();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(stream);
  const auto cpu_double = torch::TensorOptions().dtype(torch::kDouble);
  const bool use_cutmix = cutmix_alpha_ > 0 &&
      (mixup_alpha_ <= 0 || torch::rand({1}, generator, cpu_double).item<double>() < 0.5);
  const double alpha = use_cutmix ? cutmix_alpha_ : mixup_alpha_;
  // Beta(alpha, alpha) as G1 / (G1 + G2) with two Gamma(alpha) draws.
  const auto gammas = at::_standard_gamma(torch::full({2}, alpha, cpu_double), generator);
  const double g1 = gammas[0].item<double>(), g2 = gammas[1].item<double>();
  double lambda = g1 + g2 > 0 ? g1 / (g1 + g2) : 0.5;
  auto permutation = torch::randperm(images.size(0), generator, torch::kLong).to(images.device());
  auto shuffled = images.index_select(0, permutation);
  if (!use_cutmix) return {images * lambda + shuffled * (1 - lambda), permutation, lambda};

  const int64_t h = images.size(2), w = images.size(3);
  const double ratio = std::sqrt(1 - lambda);
  const auto cut_h = static_cast<int64_t>(h * ratio), cut_w = static_cast<int64_t>(w * ratio);
  const auto centre = torch::rand({2}, generator, cpu_double);
  const auto cy = std::min(h - 1, static_cast<int64_t>(centre[0].item<double>() * h));
  const auto cx = std::min(w - 1, static_cast<int64_t>(centre[1].item<double>() * w));
  const int64_t y0 = std::clamp<int64_t>(cy - cut_h / 2, 0, h), y1 = std::clamp<int64_t>(cy + cut_h / 2, 0, h);
  const int64_t x0 = std::clamp<int64_t>(cx - cut_w / 2, 0, w), x1 = std::clamp<int64_t>(cx + cut_w / 2, 0, w);
  auto mixed = images.clone();
  if (y1 > y0 && x1 > x0) {
    mixed.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0)
        .copy_(shuffled.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0));
  }
  lambda = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  return {mixed, permutation, lambda};
}

}  // namespace sedensenet::data
