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
  size_t loaded_tensors() const {
    return static_cast<size_t>(std::count_if(loaded.begin(), loaded.end(), [](const std::string& k) {
      return k.find("num_batches_tracked") == std::string::npos;
    }));
  }

  /// Counts, then the missing, unexpected and mismatched keys (at most `max_keys` of each list,
  /// with the number left out; 0 = all).
  std::string to_string(size_t max_keys = 0) const {
    std::ostringstream os;
    os << loaded.size() << " tensors loaded";
    if (renamed) os << " (" << renamed << " keys translated)";
    auto more = [&os, max_keys](size_t total) {
      if (max_keys > 0 && total > max_keys) os << " ... and " << total - max_keys << " more";
    };
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      os << "; " << keys.size() << " " << what << ":";
      for (size_t i = 0; i < keys.size() && (max_keys == 0 || i < max_keys); ++i) os << " " << keys[i];
      more(keys.size());
    };
    list("missing from the file (left as initialised)", missing);
    list("unexpected in the file (ignored)", unexpected);
    if (!mismatched.empty()) {
      os << "; " << mismatched.size() << " with another shape (left as initialised):";
      for (size_t i = 0; i < mismatched.size() && (max_keys == 0 || i < max_keys); ++i) {
        const auto& m = mismatched[i];
        os << " " << m.key << " file " << c10::IntArrayRef(m.file_shape) << " model "
           << c10::IntArrayRef(m.model_shape);
      }
      more(mismatched.size());
    }
    return os.str();
  }
};

/// Translates a file key to SEDenseNet's name: drops a DataParallel "module." prefix, maps
/// torchvision's legacy `denselayerJ.norm.1.weight` to `denselayerJ.norm1.weight` (as torchvision
/// does on load), and the reference's `features.norm_final` and `SE_Block.fc.0` / `SE_Block.fc.2`
/// to `features.norm5` and `se.fc1` / `se.fc2`.
inline std::string canonical_key(std::string key) {
  if (key.rfind("module.", 0) == 0) key = key.substr(7);
  static const std::regex legacy(
      R"(^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$)");
  std::smatch m;
  if (std::regex_match(key, m, legacy)) key = std::string(m[1]) + std::string(m[2]);  // norm.1.x -> norm1.x
  auto replace = [&key](const std::string& from, const std::string& to) {
    const auto at = key.find(from);
    if (at != std::string::npos) key.replace(at, from.size(), to);
  };
  replace("features.norm_final.", "features.norm5.");
  replace(".SE_Block.fc.0.", ".se.fc1.");
  replace(".SE_Block.fc.2.", ".se.fc2.");
  return key;
}

/// The key a file in `naming` uses for SEDenseNet key `key`.
inline std::string external_key(std::string key, KeyNaming naming) {
  if (naming == KeyNaming::sedensenet) return key;
  auto replace = [&key](const std::string& from, const std::string& to) {
    const auto at = key.find(from);
    if (at != std::string::npos) key.replace(at, from.size(), to);
  };
  replace("features.norm5.", "features.norm_final.");
  replace(".se.fc1.", ".SE_Block.fc.0.");
  replace(".se.fc2.", ".SE_Block.fc.2.");
  return key;
}

/// The state dict in the object of a torch.save file: the object itself, or a checkpoint dict
/// holding one under "state_dict", "model_state_dict" or "model". `name` is the file the
/// messages name.
inline std::map<std::string, torch::Tensor> state_dict_from(const pickle::ValuePtr& root,
                                                            const std::string& name) {
  using pickle::Value;
  auto as_state_dict = [&](const pickle::ValuePtr& v) -> const Value::Dict* {
    if (!v->is<Value::Dict>()) return nullptr;
    const auto& dict = std::get<Value::Dict>(v->data);
    for (const auto& [k, t] : dict) {
      if (!k->is<std::string>() || !t->is<torch::Tensor>()) return nullptr;
    }
    return &dict;
  };
  const Value::Dict* dict = as_state_dict(root);
  if (dict == nullptr && root->is<Value::Dict>()) {
    for (const auto& [k, v] : std::get<Value::Dict>(root->data)) {
      if (k->is<std::string>()) {
        const auto& name = std::get<std::string>(k->data);
        if (name == "state_dict" || name == "model_state_dict" || name == "model") {
          if ((dict = as_state_dict(v))) break;
        }
      }
    }
  }
  if (dict == nullptr) {
    throw PickleError(name + ": not a state dict (expected a mapping of parameter names "
                      "to tensors, as torch.save(model.state_dict(), path) writes)");
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& [k, t] : *dict) out[std::get<std::string>(k->data)] = std::get<torch::Tensor>(t->data);
  return out;
}

/// The tensors of a file written by Python's `torch.save`: a state dict, or a checkpoint dict
/// holding one under "state_dict", "model_state_dict" or "model". Keys as in the file. The file's
/// checksums are verified first.
inline std::map<std::string, torch::Tensor> read_state_dict(const std::filesystem::path& path) {
  return state_dict_from(read_torch_save(path), path.string());
}

/// `read_state_dict` on the bytes of such a file; `name` is what the messages call it.
inline std::map<std::string, torch::Tensor> read_state_dict_bytes(const std::string& bytes,
                                                                  const std::string& name) {
  return state_dict_from(read_torch_save_bytes(bytes, name), name);
}

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
inline LoadReport load_state_dict(torch::nn::Module& module,
                                  const std::map<std::string, torch::Tensor>& file,
                                  const std::string& name, const LoadOptions& options = {}) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters()) targets[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) targets[b.key()] = b.value();

  LoadReport report;
  std::map<std::string, torch::Tensor> matched;
  for (const auto& [raw, tensor] : file) {
    const auto key = canonical_key(raw);
    if (key != raw) ++report.renamed;
    auto it = targets.find(key);
    if (it == targets.end()) {
      report.unexpected.push_back(raw);
    } else if (it->second.sizes() != tensor.sizes()) {
      report.mismatched.push_back({key, tensor.sizes().vec(), it->second.sizes().vec()});
    } else {
      matched[key] = tensor;
    }
  }
  for (const auto& target : targets) {
    const std::string& key = target.first;  // (a lambda cannot capture a structured binding in C++17)
    const bool optional = key.size() > 20 && key.rfind("num_batches_tracked") == key.size() - 19;
    const bool mismatched = std::any_of(report.mismatched.begin(), report.mismatched.end(),
                                        [&](const ShapeMismatch& m) { return m.key == key; });
    if (!matched.count(key) && !optional && !mismatched) report.missing.push_back(key);
  }
  if (options.strict() && !report.complete()) {
    throw std::runtime_error(name + " does not match the model (strict load): " +
                             report.to_string() +
                             ". Use a non-strict load to take what fits.");
  }
  torch::NoGradGuard no_grad;
  for (const auto& [key, tensor] : matched) {
    targets[key].copy_(tensor);
    report.loaded.push_back(key);
  }
  return report;
}

/// `load_state_dict` from a file (see above); errors name the file.
inline LoadReport load_state_dict(torch::nn::Module& module, const std::filesystem::path& path,
                                  const LoadOptions& options = {}) {
  return load_state_dict(module, read_state_dict(path), path.string(), options);
}

/// Writes `module`'s parameters and buffers as a state dict that Python reads with
/// `torch.load(path)` and loads with `model.load_state_dict(...)`: SEDenseNet's own names (the
/// Python twin, and torchvision's DenseNet when the model has no SE), or the reference's. Written
/// atomically.
inline void save_state_dict(const torch::nn::Module& module, const std::filesystem::path& path,
                            KeyNaming naming = KeyNaming::sedensenet) {
  NamedTensors tensors;
  for (const auto& p : module.named_parameters()) {
    tensors.emplace_back(external_key(p.key(), naming), p.value().detach().cpu().contiguous());
  }
  for (const auto& b : module.named_buffers()) {
    tensors.emplace_back(external_key(b.key(), naming), b.value().detach().cpu().contiguous());
  }
  write_file_atomically(path, encode_state_dict(tensors));
}

}  // namespace sedensenet::io
