#include "sedensenet/train/data_options.hpp"

#include <torch/torch.h>

#include <algorithm>

namespace sedensenet {

torch::Tensor class_balance_weights(const std::vector<int64_t>& counts) {
  TORCH_CHECK(!counts.empty(), "class_balance_weights: no classes");
  double total = 0;
  for (const auto n : counts) {
    TORCH_CHECK(n > 0, "class_balance_weights: every class needs images, got a count of ", n);
    total += static_cast<double>(n);
  }
  auto weights = torch::empty({static_cast<int64_t>(counts.size())}, torch::kFloat);
  for (size_t c = 0; c < counts.size(); ++c) {
    weights[static_cast<int64_t>(c)] = total / (static_cast<double>(counts.size()) * static_cast<double>(counts[c]));
  }
  return weights;
}

void DataOptions::validate() const {
  schema::check_ranges(*this, "DataOptions");
  const auto policies = io::InputSpec::augmentation_policies();
  if (std::find(policies.begin(), policies.end(), augment_) == policies.end()) {
    std::string names;
    for (const auto& p : policies) names += (names.empty() ? "" : ", ") + p;
    TORCH_CHECK(false, "DataOptions: augment must be one of ", names, ", got '", augment_, "'");
  }
}

}  // namespace sedensenet
