#include "sedensenet/io/trained_model.hpp"

#include <algorithm>
#include <map>

#include "sedensenet/util/option_schema.hpp"

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

namespace sedensenet::io {

nlohmann::json densenet_metadata(const DenseNetOptions& options, const InputSpec& input,
                                 nlohmann::json extra) {
  extra["model"] = to_json(options);
  extra["input"] = input.to_json();
  return extra;
}

nlohmann::json densenet_metadata(const DenseNet& model, const InputSpec& input,
                                 nlohmann::json extra) {
  auto metadata = densenet_metadata(model->options, input, std::move(extra));
  if (model->blocks() != "default") metadata["blocks"] = model->blocks();
  return metadata;
}

TrainedModel trained_model_from(CheckpointFile file, const std::filesystem::path& path,
                                torch::Device device, BlockBuilder blocks) {
  TrainedModel result;
  result.state = std::move(file.state);
  const auto& metadata = result.state.value("metadata", nlohmann::json());
  TORCH_CHECK(metadata.is_object() && metadata.contains("model") && metadata.contains("input"),
              path.string(), " does not record the model and input it was trained with (metadata "
              "\"model\" and \"input\"; see sedensenet::io::densenet_metadata)");
  try {
    result.options = densenet_options_from_json(metadata.at("model"));
    check_model_size(result.options);
    result.input = InputSpec::from_json(metadata.at("input"));
    result.classes = result.state.value("classes", std::vector<std::string>{});
  } catch (const std::exception& e) {
    TORCH_CHECK(false, path.string(), ": the recorded model or input is invalid (",
                error_message(e), ")");
  }
  const auto recorded = metadata.value("blocks", std::string("default"));
  TORCH_CHECK(blocks || recorded == "default", path.string(), ": the model was built with your own "
              "dense blocks ('", recorded, "'), which this program cannot rebuild; load it in C++ "
              "with the builder it was built with: sedensenet::io::load_trained_model(path, "
              "device, sedensenet::block_builder<YourLayer>())");
  result.model = blocks ? DenseNet(result.options, std::move(blocks), recorded)
                        : DenseNet(result.options);
  load_module_tensors(*result.model, file.model, path.string());
  result.model->to(device);
  result.model->eval();
  return result;
}

TrainedModel load_trained_model(const std::filesystem::path& path,
                                torch::Device device, BlockBuilder blocks) {
  return trained_model_from(read_checkpoint_file(path), path, device, std::move(blocks));
}

void save_trained_model(const std::filesystem::path& path, const DenseNet& model,
                        const InputSpec& input, const std::vector<std::string>& classes) {
  TORCH_CHECK(!std::filesystem::exists(path), path.string(), " already exists; remove it or "
              "choose another path (save_trained_model never replaces a file)");
  if (!classes.empty()) {
    TORCH_CHECK(static_cast<int64_t>(classes.size()) == model->options.num_classes(),
                "save_trained_model: ", classes.size(), " class names for a model with ",
                model->options.num_classes(), " classes");
  }
  CheckpointFile file;
  file.state["metadata"] = densenet_metadata(model, input);
  file.state["classes"] = classes;
  file.model = module_tensors(*model);
  write_checkpoint_file(path, file);
}

bool is_trainer_checkpoint(const std::filesystem::path& path) {
  return is_checkpoint_file(path);
}

TrainedModel load_state_dict_model(const std::filesystem::path& path, DenseNetOptions options,
                                   InputSpec input, std::vector<std::string> classes,
                                   torch::Device device) {
  if (options.num_classes() == 0) {
    const auto tensors = read_state_dict(path);
    auto it = tensors.find("classifier.weight");
    if (it == tensors.end()) it = tensors.find("module.classifier.weight");
    TORCH_CHECK(it != tensors.end(), path.string(), " has no classifier.weight to take the number "
                "of classes from; give the classes explicitly");
    options.num_classes(it->second.size(0));
  }
  TrainedModel result;
  result.options = options;
  result.input = input;
  result.classes = std::move(classes);
  result.model = DenseNet(options);
  const auto report = load_state_dict(*result.model, path);
  result.state = {{"source", "state dict"}, {"report", report.to_string()}};
  result.model->to(device);
  result.model->eval();
  return result;
}

}  // namespace sedensenet::io

namespace sedensenet::io {

auto InputSpec::from_json(const nlohmann::json& j) -> InputSpec {
  InputSpec s;
  s.size = util::json_integer<int64_t>(j.at("size"), "input spec 'size'");
  s.mean = j.at("mean").get<std::vector<double>>();
  s.std = j.at("std").get<std::vector<double>>();
  if (j.contains("alpha")) s.alpha = schema::decode<data::Alpha>(j.at("alpha"), "input spec 'alpha'");
  return s;
}

auto InputSpec::eval_transform() const -> data::TransformPtr {
  return data::compose({std::make_shared<data::Resize>(size, size),
                        std::make_shared<data::ToTensor>(),
                        std::make_shared<data::Normalize>(mean, std)});
}

}  // namespace sedensenet::io
