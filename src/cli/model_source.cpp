#include "model_source.hpp"

#include "command.hpp"

namespace sedensenet::cli {

void ModelSource::add_options(CLI::App* command, bool weights_positional) {
  command->add_option(weights_positional ? "weights" : "--weights", weights, "best.pt or last.pt of a run folder, or a PyTorch "
                      "state dict file (torch.save(model.state_dict()); then give --preset)")->required();
  command->add_option("--preset", preset, "architecture of a PyTorch state dict file");
  command->add_option("--image-size", image_size, "input size for a PyTorch state dict file (default: 32 CIFAR style, 224 ImageNet style)")->check(CLI::Range(int64_t{0}, int64_t{4096}));
  command->add_option("--se-reduction", se_reduction, "SE reduction of a PyTorch state dict file's model (0 = no SE, e.g. torchvision)")->check(CLI::Range(int64_t{0}, int64_t{65536}))->capture_default_str();
  command->add_option("--se-gate", se_gate, "SE gate of a PyTorch state dict file's model")
      ->check(CLI::IsMember({"sigmoid", "scaled_sigmoid"}))->capture_default_str();
  command->add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  command->add_option("--class-names", class_names, "class names of a PyTorch state dict file's model, in label order")->delimiter(',');
}

io::TrainedModel ModelSource::load(const std::vector<std::string>& folder_classes) const {
  const auto on_device = [&](io::TrainedModel trained) {
    trained.model->to(checked_device(device, "--device"));
    return trained;
  };
  if (is_checkpoint_weights(weights)) return on_device(sedensenet::io::load_trained_model(weights));
  if (preset.empty()) {
    throw UsageError(weights + " is not a SEDenseNet checkpoint; for a PyTorch state dict file "
                     "give its architecture with --preset (and --se-reduction 0 for torchvision)");
  }
  auto options = sedensenet::DenseNetOptions::preset(preset)
                     .se_reduction(se_reduction)
                     .se_gate(se_gate == "sigmoid" ? sedensenet::SEGate::sigmoid : sedensenet::SEGate::scaled_sigmoid)
                     .num_classes(0);
  sedensenet::io::InputSpec input;
  input.size = image_size > 0 ? image_size : (options.small_inputs() ? 32 : 224);
  auto classes = class_names.empty() ? folder_classes : class_names;
  auto trained = sedensenet::io::load_state_dict_model(weights, options, input, classes);
  if (!trained.classes.empty() && static_cast<int64_t>(trained.classes.size()) != trained.options.num_classes()) {
    throw UsageError(weights + " has " + std::to_string(trained.options.num_classes()) +
                     " classes but " + std::to_string(trained.classes.size()) + " class names were given");
  }
  return on_device(std::move(trained));
}

}  // namespace sedensenet::cli
