#include "sedensenet/io/state_dict.hpp"

namespace sedensenet::io {

namespace {
// The reference script's names and ours, one pair per renamed part: canonical_key maps the first
// to the second, external_key back.
constexpr std::pair<const char*, const char*> kReferenceNames[] = {
    {"features.norm_final.", "features.norm5."},
    {".SE_Block.fc.0.", ".se.fc1."},
    {".SE_Block.fc.2.", ".se.fc2."}};

void replace_first(std::string& key, const std::string& from, const std::string& to) {
  const auto at = key.find(from);
  if (at != std::string::npos) key.replace(at, from.size(), to);
}
}  // namespace

std::string canonical_key(std::string key) {
  if (key.rfind("module.", 0) == 0) key = key.substr(7);
  static const std::regex legacy(
      R"(^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$)");
  std::smatch m;
  if (std::regex_match(key, m, legacy)) key = std::string(m[1]) + std::string(m[2]);  // norm.1.x -> norm1.x
  for (const auto& [reference, ours] : kReferenceNames) replace_first(key, reference, ours);
  return key;
}

std::string external_key(std::string key, KeyNaming naming) {
  if (naming == KeyNaming::sedensenet) return key;
  for (const auto& [reference, ours] : kReferenceNames) replace_first(key, ours, reference);
  return key;
}

std::map<std::string, torch::Tensor> state_dict_from(const pickle::ValuePtr& root,
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

std::map<std::string, torch::Tensor> read_state_dict(const std::filesystem::path& path) {
  return state_dict_from(read_torch_save(path), path.string());
}

std::map<std::string, torch::Tensor> read_state_dict_bytes(const std::string& bytes,
                                                           const std::string& name) {
  return state_dict_from(read_torch_save_bytes(bytes, name), name);
}

LoadReport load_state_dict(torch::nn::Module& module,
                           const std::map<std::string, torch::Tensor>& file,
                           const std::string& name, const LoadOptions& options) {
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
                             report.to_string(5) +
                             ". Use a non-strict load to take what fits");
  }
  torch::NoGradGuard no_grad;
  for (const auto& [key, tensor] : matched) {
    targets[key].copy_(tensor);
    report.loaded.push_back(key);
  }
  return report;
}

LoadReport load_state_dict(torch::nn::Module& module, const std::filesystem::path& path,
                           const LoadOptions& options) {
  return load_state_dict(module, read_state_dict(path), path.string(), options);
}

void save_state_dict(const torch::nn::Module& module, const std::filesystem::path& path,
                     KeyNaming naming) {
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

namespace sedensenet::io {

auto LoadReport::loaded_tensors() const -> size_t {
  return static_cast<size_t>(std::count_if(loaded.begin(), loaded.end(), [](const std::string& k) {
    return k.find("num_batches_tracked") == std::string::npos;
  }));
}

auto LoadReport::to_string(size_t max_keys) const -> std::string {
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

}  // namespace sedensenet::io
