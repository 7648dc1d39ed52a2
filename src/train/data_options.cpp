#include "sedensenet/train/data_options.hpp"

#include <algorithm>

namespace sedensenet {

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
