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
#include "sedensenet/data/image.hpp"
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
  /// Transparent images: alpha dropped (torchvision's) or composited over white. Checkpoints
  /// without it ("alpha" absent) were trained with alpha dropped.
  data::Alpha alpha = data::Alpha::drop;

  nlohmann::json to_json() const { return {{"size", size}, {"mean", mean}, {"std", std}, {"alpha", to_string(alpha)}}; }
  /// How images are decoded for this input (the alpha policy).
  data::DecodeOptions decode_options() const { return data::DecodeOptions().alpha(alpha); }
  static InputSpec from_json(const nlohmann::json& j);
  /// The evaluation pipeline for this input.
  data::TransformPtr eval_transform() const;
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
nlohmann::json densenet_metadata(const DenseNetOptions& options, const InputSpec& input,
                                 nlohmann::json extra = nlohmann::json::object());

/// `densenet_metadata` for `model`: its options, and, when it was built with your own dense blocks
/// (`DenseNet(options, builder, name)`), their name, so that loading the checkpoint asks for them.
nlohmann::json densenet_metadata(const DenseNet& model, const InputSpec& input,
                                 nlohmann::json extra = nlohmann::json::object());

/// A model read back from a checkpoint (best.pt or last.pt).
struct TrainedModel {
  DenseNet model{nullptr};
  DenseNetOptions options;
  InputSpec input;
  std::vector<std::string> classes;
  nlohmann::json state;  ///< the checkpoint's run state (epoch, history, metadata, ...)
};

/// The model of a checkpoint written by `Trainer` with `densenet_metadata`, or by
/// `save_trained_model` (io/checkpoint_file.hpp; `path` names it in errors): rebuilds the network
/// from its recorded options and loads the weights, in eval mode. Errors name the file and what is
/// missing. The recorded model is checked against `check_model_size` before anything is built.
///
/// Models with your own dense blocks (e.g. a user-written attention module): pass the builder they
/// were built with, `block_builder<DenseLayer<MyAttention>>()`. A checkpoint that records such
/// blocks is refused without one (the library cannot rebuild code it does not have), and the
/// weights must then fit the rebuilt network exactly.
TrainedModel trained_model_from(CheckpointFile file, const std::filesystem::path& path,
                                torch::Device device = torch::kCPU, BlockBuilder blocks = {});

/// `trained_model_from` the checkpoint at `path` (see above).
TrainedModel load_trained_model(const std::filesystem::path& path,
                                torch::Device device = torch::kCPU, BlockBuilder blocks = {});

/// Writes `model` (its weights, `densenet_metadata(model, input)` and `classes`) as a checkpoint
/// that `load_trained_model` and the tool's `evaluate`/`predict` read: a model trained with your
/// own loop. Refuses to replace an existing file.
void save_trained_model(const std::filesystem::path& path, const DenseNet& model,
                        const InputSpec& input, const std::vector<std::string>& classes = {});

/// Whether `path` is a checkpoint written by `Trainer` (best.pt, last.pt; `is_checkpoint_file`),
/// as opposed to a Python state dict file.
bool is_trainer_checkpoint(const std::filesystem::path& path);

/// A DenseNet of `options` with the weights of a PyTorch state dict file (strict load, names
/// translated as `load_state_dict` does). `options.num_classes() == 0` takes the class count from
/// the file's classifier.
TrainedModel load_state_dict_model(const std::filesystem::path& path, DenseNetOptions options,
                                   InputSpec input, std::vector<std::string> classes = {},
                                   torch::Device device = torch::kCPU);

/// Warm start: copies into `module` every tensor of `path` (a PyTorch state dict file, or a
/// checkpoint's weights) whose name and shape fit, leaving the rest as initialised. Throws,
/// naming the file, when nothing fits; the report lists what was loaded and what was not.
LoadReport warm_start(torch::nn::Module& module, const std::filesystem::path& path);

}  // namespace sedensenet::io
