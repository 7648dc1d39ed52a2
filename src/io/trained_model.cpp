#include "sedensenet/io/trained_model.hpp"

#include <algorithm>
#include <map>

namespace sedensenet::io {

data::TransformPtr InputSpec::train_transform(const std::string& policy) const {
  const auto policies = augmentation_policies();
  TORCH_CHECK(std::find(policies.begin(), policies.end(), policy) != policies.end(),
              "unknown augmentation '", policy, "': expected none, flip, reference or strong");
  std::vector<data::TransformPtr> steps = {std::make_shared<data::Resize>(size, size)};
  if (policy != "none") steps.push_back(std::make_shared<data::RandomHorizontalFlip>());
  if (policy == "reference" || policy == "strong") {
    steps.push_back(std::make_shared<data::RandomCrop>(size, std::max<int64_t>(1, size / 8)));
  }
  if (policy == "strong") {
    steps.push_back(std::make_shared<data::RandomRotation>(10.0));
    steps.push_back(std::make_shared<data::ColorJitter>(0.2, 0.2, 0.2));
  }
  steps.push_back(std::make_shared<data::ToTensor>());
  steps.push_back(std::make_shared<data::Normalize>(mean, std));
  return data::compose(steps);
}

LoadReport warm_start(torch::nn::Module& module, const std::filesystem::path& path) {
  TORCH_CHECK(std::filesystem::exists(path), "weights file ", path.string(), " not found");
  LoadReport report;
  if (is_checkpoint_file(path)) {
    auto trained = load_trained_model(path);
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : trained.model->named_parameters()) tensors[p.key()] = p.value();
    for (const auto& b : trained.model->named_buffers()) tensors[b.key()] = b.value();
    report = load_state_dict(module, tensors, path.string(), LoadOptions().strict(false));
  } else {
    report = load_state_dict(module, path, LoadOptions().strict(false));
  }
  TORCH_CHECK(report.loaded_tensors() > 0, path.string(), ": none of its tensors fit the model (",
              report.to_string(5), "); is it the architecture the weights were trained with?");
  return report;
}

}  // namespace sedensenet::io
