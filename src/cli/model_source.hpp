#pragma once
// Where evaluate and predict take a model from: a run's checkpoint (self-describing) or a
// PyTorch state dict file plus the architecture given on the command line.

#include <sedensenet/io/trained_model.hpp>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace sedensenet::cli {

struct ModelSource {
  std::string weights;
  std::string preset;
  int64_t image_size = 0;
  int64_t se_reduction = 16;
  std::string se_gate = "sigmoid";
  std::vector<std::string> class_names;
  std::string device = "cpu";

  /// --weights (or a first positional argument, `weights_positional`), --preset, --image-size,
  /// --se-reduction, --se-gate, --class-names, --device.
  void add_options(CLI::App* command, bool weights_positional = false);
  /// The model, on --device; `folder_classes` name a state dict's classes when --class-names
  /// does not.
  io::TrainedModel load(const std::vector<std::string>& folder_classes = {}) const;
};

}  // namespace sedensenet::cli
