#pragma once
// Tensor comparisons for Catch2 that say where and by how much two tensors differ.

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <sstream>
#include <string>

namespace sedensenet::test {

/// Largest |a - b| / max(|b|, floor) over all elements (floor keeps near-zeros meaningful).
inline double max_relative_difference(const torch::Tensor& a, const torch::Tensor& b,
                                      double floor = 1e-6) {
  auto ad = a.detach().to(torch::kDouble).cpu();
  auto bd = b.detach().to(torch::kDouble).cpu();
  auto denom = bd.abs().clamp_min(floor);
  return ((ad - bd).abs() / denom).max().item<double>();
}

/// max |a - b| / max |b|: the difference relative to the tensor's own scale (element-wise relative
/// differences are meaningless for gradients that happen to be ~0). Any device and type.
inline double scaled_difference(const torch::Tensor& a, const torch::Tensor& b) {
  auto ad = a.detach().to(torch::kCPU, torch::kDouble);
  auto bd = b.detach().to(torch::kCPU, torch::kDouble);
  const double scale = std::max(bd.abs().max().item<double>(), 1e-30);
  return (ad - bd).abs().max().item<double>() / scale;
}

/// Passes when shapes match and every element satisfies |a - b| <= atol + rtol * |b|; on failure
/// the message names the worst element, both values and the differences.
class AllCloseMatcher : public Catch::MatcherBase<torch::Tensor> {
 public:
  AllCloseMatcher(torch::Tensor expected, double rtol, double atol)
      : expected_(expected.detach().to(torch::kDouble).cpu()), rtol_(rtol), atol_(atol) {}

  bool match(const torch::Tensor& actual_in) const override {
    auto actual = actual_in.detach().to(torch::kDouble).cpu();
    std::ostringstream why;
    if (actual.sizes() != expected_.sizes()) {
      why << "shape " << actual.sizes() << " != expected " << expected_.sizes();
      detail_ = why.str();
      return false;
    }
    if (actual.numel() == 0) return true;
    auto excess = (actual - expected_).abs() - (atol_ + rtol_ * expected_.abs());
    auto flat = excess.flatten();
    const auto worst = flat.argmax().item<int64_t>();
    if (flat[worst].item<double>() <= 0.0 && !actual.isnan().any().item<bool>()) return true;
    const double a = actual.flatten()[worst].item<double>();
    const double e = expected_.flatten()[worst].item<double>();
    why << "worst element at flat index " << worst << ": actual " << a << ", expected " << e
        << " (abs diff " << std::abs(a - e) << ", max rel diff over all "
        << max_relative_difference(actual, expected_) << ")";
    if (actual.isnan().any().item<bool>()) why << "; actual has NaN";
    detail_ = why.str();
    return false;
  }

  std::string describe() const override {
    std::ostringstream os;
    os << "is close to the expected tensor (rtol " << rtol_ << ", atol " << atol_ << "): "
       << detail_;
    return os.str();
  }

 private:
  torch::Tensor expected_;
  double rtol_, atol_;
  mutable std::string detail_;
};

inline AllCloseMatcher AllClose(const torch::Tensor& expected, double rtol = 1e-5,
                                double atol = 1e-7) {
  return AllCloseMatcher(expected, rtol, atol);
}

/// Exact equality (same shape, same values, NaN never equal).
inline AllCloseMatcher Equals(const torch::Tensor& expected) {
  return AllCloseMatcher(expected, 0.0, 0.0);
}

}  // namespace sedensenet::test

// Catch2 prints the actual value; keep it short for big tensors.
namespace Catch {
template <>
struct StringMaker<torch::Tensor> {
  static std::string convert(const torch::Tensor& t) {
    std::ostringstream os;
    os << "tensor of shape " << t.sizes() << " (" << t.dtype() << ")";
    return os.str();
  }
};
}  // namespace Catch
