#pragma once
/// \file
/// A trained model and everything needed to use it: the checkpoint metadata the command-line
/// tool and the examples write, and `load_trained_model` to read it back.

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "sedensenet/util/json.hpp"
#include "sedensenet/data/transforms.hpp"
#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/io/model_config.hpp"
#include "sedensenet/io/state_dict.hpp"
#include "sedensenet/util/errors.hpp"
#include "sedensenet/nn/densenet.hpp"

namespace sedensenet::io {

/// How images were prepared for the model: the evaluation pipeline is Resize(size, size),
/// ToTensor, Normalize(mean, std).
struct InputSpec {
  int64_t size = 32;
  std::vector<double> mean = data::imagenet_mean();
  std::vector<double> std = data::imagenet_std();

  nlohmann::json to_json() const { return {{"size", size}, {"mean", mean}, {"std", std}}; }
  static InputSpec from_json(const nlohmann::json& j) {
    InputSpec s;
    s.size = util::json_integer<int64_t>(j.at("size"), "input spec 'size'");
    s.mean = j.at("mean").get<std::vector<double>>();
    s.std = j.at("std").get<std::vector<double>>();
    return s;
  }
  /// The evaluation pipeline for this input.
  data::TransformPtr eval_transform() const {
    return data::compose({std::make_shared<data::Resize>(size, size),
                          std::make_shared<data::ToTensor>(),
                          std::make_shared<data::Normalize>(mean, std)});
  }
  /// The training pipeline for this input with augmentation `policy` (one of
  /// `augmentation_policies()`): Resize(size, size), then none: nothing; flip: random
  /// horizontal flip; reference: flip and a random crop padded by size / 8; strong: also a
  /// rotation of up to 10 degrees and colour jitter 0.2; then ToTensor and Normalize.
  data::TransformPtr train_transform(const std::string& policy) const;
  /// The names `train_transform` accepts.
  static std::vector<std::string> augmentation_policies() { return {"none", "flip", "reference", "strong"}; }
};

/// The metadata `Trainer::set_metadata` should receive for a DenseNet so that checkpoints are
/// self-describing: {"model": options, "input": {size, mean, std}}, plus anything in `extra`.
inline nlohmann::json densenet_metadata(const DenseNetOptions& options, const InputSpec& input,
                                        nlohmann::json extra = nlohmann::json::object()) {
  extra["model"] = to_json(options);
  extra["input"] = input.to_json();
  return extra;
}

/// A model read back from a checkpoint (best.pt or last.pt).
struct TrainedModel {
  DenseNet model{nullptr};
  DenseNetOptions options;
  InputSpec input;
  std::vector<std::string> classes;
  nlohmann::json state;  ///< the checkpoint's run state (epoch, history, metadata, ...)
};

/// The model of a checkpoint written by `Trainer` with `densenet_metadata`
/// (io/checkpoint_file.hpp; `path` names it in errors): rebuilds the network from its recorded options and loads the weights, in eval mode. Errors name
/// the file and what is missing. The recorded model is checked against `check_model_size` before
/// anything is built.
inline TrainedModel trained_model_from(CheckpointFile file, const std::filesystem::path& path,
                                       torch::Device device = torch::kCPU) {
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
  result.model = DenseNet(result.options);
  load_module_tensors(*result.model, file.model, path.string());
  result.model->to(device);
  result.model->eval();
  return result;
}

/// `trained_model_from` the checkpoint at `path` (see above).
inline TrainedModel load_trained_model(const std::filesystem::path& path,
                                       torch::Device device = torch::kCPU) {
  return trained_model_from(read_checkpoint_file(path), path, device);
}

/// Whether `path` is a checkpoint written by `Trainer` (best.pt, last.pt; `is_checkpoint_file`),
/// as opposed to a Python state dict file.
inline bool is_trainer_checkpoint(const std::filesystem::path& path) {
  return is_checkpoint_file(path);
}

/// A DenseNet of `options` with the weights of a PyTorch state dict file (strict load, names
/// translated as `load_state_dict` does). `options.num_classes() == 0` takes the class count from
/// the file's classifier.
inline TrainedModel load_state_dict_model(const std::filesystem::path& path, DenseNetOptions options,
                                          InputSpec input, std::vector<std::string> classes = {},
                                          torch::Device device = torch::kCPU) {
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

/// Warm start: copies into `module` every tensor of `path` (a PyTorch state dict file, or a
/// checkpoint's weights) whose name and shape fit, leaving the rest as initialised. Throws,
/// naming the file, when nothing fits; the report lists what was loaded and what was not.
LoadReport warm_start(torch::nn::Module& module, const std::filesystem::path& path);

}  // namespace sedensenet::io
