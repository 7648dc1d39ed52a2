#pragma once
// Finite-difference gradient check in double precision (torch.autograd.gradcheck's idea; LibTorch
// has no C++ gradcheck). Compares autograd's gradient of a random projection of the output with
// central differences, for the inputs and for every parameter given.

#include <torch/torch.h>

#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace sedensenet::test {

struct GradcheckResult {
  bool ok = true;
  double worst_abs_error = 0.0;
  std::string report;  // which tensor and element failed, with both values
};

/// f maps the inputs to one output; `tensors` are the leaves to check (inputs and/or parameters,
/// all double, requires_grad). Each element of each tensor is perturbed by +-eps.
inline GradcheckResult gradcheck(const std::function<torch::Tensor()>& f,
                                 const std::vector<torch::Tensor>& tensors, double eps = 1e-6,
                                 double atol = 1e-5, double rtol = 1e-3) {
  GradcheckResult result;
  torch::manual_seed(1234);
  auto probe_out = f();
  const auto projection = torch::randn_like(probe_out);
  auto loss_of = [&] { return (f() * projection).sum(); };

  for (const auto& t : tensors) {
    if (t.grad().defined()) t.grad().zero_();
  }
  auto loss = loss_of();
  auto analytic = torch::autograd::grad({loss}, tensors, {}, false, false, true);

  for (size_t k = 0; k < tensors.size(); ++k) {
    auto leaf = tensors[k];
    auto flat = leaf.detach().view(-1);  // shares storage: perturbs the leaf in place
    auto grad = analytic[k].defined() ? analytic[k].reshape(-1) : torch::zeros_like(flat);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double original = flat[i].item<double>();
      double plus, minus;
      {
        torch::NoGradGuard no_grad;
        flat[i] = original + eps;
        plus = loss_of().item<double>();
        flat[i] = original - eps;
        minus = loss_of().item<double>();
        flat[i] = original;
      }
      const double numeric = (plus - minus) / (2 * eps);
      const double autograd = grad[i].item<double>();
      const double error = std::abs(numeric - autograd);
      result.worst_abs_error = std::max(result.worst_abs_error, error);
      if (error > atol + rtol * std::abs(numeric) && result.ok) {
        result.ok = false;
        std::ostringstream os;
        os << "tensor " << k << " element " << i << ": numeric " << numeric << ", autograd "
           << autograd;
        result.report = os.str();
      }
    }
  }
  return result;
}

}  // namespace sedensenet::test
