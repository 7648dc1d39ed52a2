#pragma once
/// \file
/// PyTorch state dicts in and out: `load_state_dict` reads what `torch.save(model.state_dict())`
/// writes (and mapped names from torchvision and the reference implementation), with a report of
/// what matched; `save_state_dict` writes a file Python's `torch.load` returns as a state dict.

#include <torch/nn/module.h>
#include <torch/serialize.h>
#include <torch/types.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/io/pickle.hpp"

namespace sedensenet::io {

/// Key names a saved file uses.
enum class KeyNaming {
  /// SEDenseNet's (and torchvision's, for the parts torchvision has): features.norm5,
  /// features.denseblockI.denselayerJ.se.fc1.weight. The Python twin (python/sedensenet.py) too.
  sedensenet,
  /// The reference SE-DenseNet's: features.norm_final, ...denselayerJ.SE_Block.fc.0.weight and
  /// SE_Block.fc.2.weight.
  reference,
};

/// Options of `load_state_dict`.
struct LoadOptions {
  /// Require every model key to be loaded and every file key to be used, with matching shapes;
  /// otherwise throw with the lists. false: load what fits and report the rest.
  TORCH_ARG(bool, strict) = true;
};

/// A file key whose tensor does not have the model's shape.
struct ShapeMismatch {
  std::string key;
  std::vector<int64_t> file_shape, model_shape;
};

/// What `load_state_dict` did, key by key (model names).
struct LoadReport {
  std::vector<std::string> loaded;      ///< copied into the model
  std::vector<std::string> missing;     ///< in the model, not in the file (left as they were)
  std::vector<std::string> unexpected;  ///< in the file, not in the model (ignored)
  std::vector<ShapeMismatch> mismatched;  ///< in both, different shapes (left as they were)
  int64_t renamed = 0;  ///< file keys translated (torchvision legacy, reference, "module.")

  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }

  /// Parameters and running statistics loaded (BatchNorm step counters, which any two models
  /// share, not counted).
  size_t loaded_tensors() const;

  /// Counts, then the missing, unexpected and mismatched keys (at most `max_keys` of each list,
  /// with the number left out; 0 = all).
  std::string to_string(size_t max_keys = 0) const;
};

/// Translates a file key to SEDenseNet's name: drops a DataParallel "module." prefix, maps
/// torchvision's legacy `denselayerJ.norm.1.weight` to `denselayerJ.norm1.weight` (as torchvision
/// does on load), and the reference's `features.norm_final` and `SE_Block.fc.0` / `SE_Block.fc.2`
/// to `features.norm5` and `se.fc1` / `se.fc2`.
std::string canonical_key(std::string key);

/// The key a file in `naming` uses for SEDenseNet key `key`.
std::string external_key(std::string key, KeyNaming naming);

/// The state dict in the object of a torch.save file: the object itself, or a checkpoint dict
/// holding one under "state_dict", "model_state_dict" or "model". `name` is the file the
/// messages name.
std::map<std::string, torch::Tensor> state_dict_from(const pickle::ValuePtr& root,
                                                     const std::string& name);

/// The tensors of a file written by Python's `torch.save`: a state dict, or a checkpoint dict
/// holding one under "state_dict", "model_state_dict" or "model". Keys as in the file. The file's
/// checksums are verified first.
std::map<std::string, torch::Tensor> read_state_dict(const std::filesystem::path& path);

/// `read_state_dict` on the bytes of such a file; `name` is what the messages call it.
std::map<std::string, torch::Tensor> read_state_dict_bytes(const std::string& bytes,
                                                           const std::string& name);

/// Loads a PyTorch state dict file into `module` (parameters and buffers, by name; see
/// `canonical_key` for the names translated). Strict (default): throws, listing every missing,
/// unexpected and shape-mismatched key, and changes nothing. Non-strict: loads what fits and
/// returns the report (e.g. a classifier for another number of classes stays as initialised).
/// BatchNorm `num_batches_tracked` buffers absent from older files are not required.
///
/// Example:
/// ```
/// sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet121().num_classes(1000).se_reduction(0));
/// auto report = sedensenet::io::load_state_dict(*net, "densenet121.pth");
/// ```
LoadReport load_state_dict(torch::nn::Module& module,
                           const std::map<std::string, torch::Tensor>& file,
                           const std::string& name, const LoadOptions& options = {});

/// `load_state_dict` from a file (see above); errors name the file.
LoadReport load_state_dict(torch::nn::Module& module, const std::filesystem::path& path,
                           const LoadOptions& options = {});

/// Writes `module`'s parameters and buffers as a state dict that Python reads with
/// `torch.load(path)` and loads with `model.load_state_dict(...)`: SEDenseNet's own names (the
/// Python twin, and torchvision's DenseNet when the model has no SE), or the reference's. Written
/// atomically.
void save_state_dict(const torch::nn::Module& module, const std::filesystem::path& path,
                     KeyNaming naming = KeyNaming::sedensenet);

}  // namespace sedensenet::io
