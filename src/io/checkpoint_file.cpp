#include "sedensenet/io/checkpoint_file.hpp"
// SEDenseNet's checkpoint files: see include/sedensenet/io/checkpoint_file.hpp.
#include "sedensenet/io/checkpoint_file.hpp"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "sedensenet/io/archive.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/io/pickle.hpp"
#include "sedensenet/io/state_dict.hpp"
#include "sedensenet/util/errors.hpp"
#include "sedensenet/util/json.hpp"

namespace sedensenet::io {

namespace {

// ---- Writing: a protocol-2 pickle of dicts, strings, integers and tensors, as torch.save writes
// them (and as `torch.load(..., weights_only=True)` accepts). ----

class Pickler {
 public:
  explicit Pickler(std::vector<std::pair<std::string, torch::Tensor>>& storages)
      : storages_(storages) {
    out_ += "\x80\x02";  // PROTO 2
  }

  std::string finish() {
    out_ += '.';  // STOP
    return std::move(out_);
  }

  void none() { out_ += 'N'; }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      out_ += 'K';
      out_ += static_cast<char>(v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out_ += 'J';
      append_le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      out_ += '\x8a';  // LONG1, 8 bytes two's complement
      out_ += '\x08';
      append_le(static_cast<uint64_t>(v), 8);
    }
  }
  void boolean(bool v) { out_ += v ? '\x88' : '\x89'; }
  void string(const std::string& s) {
    out_ += 'X';  // BINUNICODE
    append_le(s.size(), 4);
    out_ += s;
  }
  void mark() { out_ += '('; }
  void tuple_end() { out_ += 't'; }
  void empty_dict() { out_ += '}'; }
  void setitems() { out_ += 'u'; }
  void global(const char* module, const char* name) {
    out_ += 'c';
    out_ += module;
    out_ += '\n';
    out_ += name;
    out_ += '\n';
  }
  void reduce() { out_ += 'R'; }
  void ordered_dict() {
    global("collections", "OrderedDict");
    out_ += ')';  // EMPTY_TUPLE
    reduce();
  }

  // torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()), the tensor's
  // bytes going to a storage record of their own.
  void tensor(const torch::Tensor& t) {
    auto cpu = t.detach().to(torch::kCPU).contiguous();
    const std::string key = std::to_string(storages_.size());
    storages_.emplace_back(key, cpu);
    global("torch._utils", "_rebuild_tensor_v2");
    mark();
    mark();  // the persistent id: ('storage', torch.<Type>Storage, key, 'cpu', numel)
    string("storage");
    global("torch", storage_type(cpu.scalar_type()));
    string(key);
    string("cpu");
    integer(cpu.numel());
    tuple_end();
    out_ += 'Q';  // BINPERSID
    integer(0);
    ints(cpu.sizes());
    ints(cpu.strides());
    boolean(false);
    ordered_dict();
    tuple_end();
    reduce();
  }

  void named_tensors(const NamedTensors& tensors) {
    ordered_dict();
    if (tensors.empty()) return;
    mark();
    for (const auto& [name, t] : tensors) {
      string(name);
      tensor(t);
    }
    setitems();
  }

 private:
  static const char* storage_type(torch::ScalarType type) {
    switch (type) {
      case torch::kFloat32: return "FloatStorage";
      case torch::kFloat64: return "DoubleStorage";
      case torch::kFloat16: return "HalfStorage";
      case torch::kBFloat16: return "BFloat16Storage";
      case torch::kInt64: return "LongStorage";
      case torch::kInt32: return "IntStorage";
      case torch::kInt16: return "ShortStorage";
      case torch::kInt8: return "CharStorage";
      case torch::kUInt8: return "ByteStorage";
      case torch::kBool: return "BoolStorage";
      default:
        throw std::runtime_error(std::string("checkpoint: cannot save a tensor of type ") +
                                 c10::toString(type));
    }
  }
  void ints(c10::IntArrayRef values) {
    mark();
    for (auto v : values) integer(v);
    tuple_end();
  }
  void append_le(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xFF);
  }

  std::string out_;
  std::vector<std::pair<std::string, torch::Tensor>>& storages_;
};

// ---- Reading ----

using pickle::Value;
using pickle::ValuePtr;

[[noreturn]] void fail(const std::filesystem::path& name, const std::string& what) {
  throw std::runtime_error(name.string() + ": " + what);
}

const Value::Dict& dict_of(const ValuePtr& v, const std::filesystem::path& name,
                           const char* what) {
  if (!v->is<Value::Dict>()) fail(name, std::string("damaged checkpoint: ") + what + " is not a dict");
  return std::get<Value::Dict>(v->data);
}

NamedTensors tensors_of(const ValuePtr& v, const std::filesystem::path& name, const char* what) {
  NamedTensors out;
  std::set<std::string> seen;
  for (const auto& [k, t] : dict_of(v, name, what)) {
    if (!k->is<std::string>() || !t->is<torch::Tensor>()) {
      fail(name, std::string("damaged checkpoint: ") + what + " holds something other than named tensors");
    }
    const auto& key = std::get<std::string>(k->data);
    if (!seen.insert(key).second) fail(name, std::string("damaged checkpoint: ") + what + " names " + key + " twice");
    out.emplace_back(key, std::get<torch::Tensor>(t->data));
  }
  return out;
}

nlohmann::json json_field(const ValuePtr& v, const std::filesystem::path& name, const char* what) {
  if (v->is<pickle::None>()) return nullptr;
  if (!v->is<std::string>()) fail(name, std::string("damaged checkpoint: ") + what + " is not text");
  try {
    return util::parse_json(std::get<std::string>(v->data), what);
  } catch (const std::exception& e) {
    fail(name, std::string("damaged checkpoint: ") + error_message(e));
  }
}

std::string old_format_message(const std::filesystem::path& name) {
  return name.string() + ": a checkpoint in the old format (SEDenseNet 0.1, format version 1). "
         "That format is read through LibTorch's TorchScript loader, which can run code stored "
         "in the file, so it is no longer opened. If the file is yours or you trust its source, "
         "convert it once with: sedensenet convert-checkpoint --trust-old-format " +
         name.string() + " NEW.pt";
}

// Whether the archive holds TorchScript's constants.pkl: a version-1 checkpoint (LibTorch's
// OutputArchive). Throws FileError for a damaged or foreign file.
bool has_old_format_records(const std::string& bytes, const std::filesystem::path& name) {
  const auto records =
      list_archive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
  for (const auto& r : records) {
    const auto slash = r.name.find('/');
    if (slash != std::string::npos &&
        r.name.compare(slash, std::string::npos, "/constants.pkl") == 0) {
      return true;
    }
  }
  return false;
}

// The zip archive torch.save writes: data.pkl and one record per storage.
std::string zip_archive(const std::string& pickled,
                        const std::vector<std::pair<std::string, torch::Tensor>>& storages);

}  // namespace

torch::Tensor CheckpointFile::extra_tensor(const std::string& name) const {
  for (const auto& [key, t] : extra) {
    if (key == name) return t;
  }
  return torch::Tensor();
}

std::string encode_checkpoint(const CheckpointFile& checkpoint) {
  std::vector<std::pair<std::string, torch::Tensor>> storages;
  Pickler p(storages);
  p.empty_dict();
  p.mark();
  p.string("format");
  p.string(kCheckpointFormat);
  p.string("version");
  p.integer(kCheckpointVersion);
  p.string("state");
  p.string(checkpoint.state.dump());
  p.string("model");
  p.named_tensors(checkpoint.model);
  p.string("optimizer");
  if (checkpoint.optimizer.is_null()) {
    p.none();
  } else {
    p.string(checkpoint.optimizer.dump());
  }
  p.string("optimizer_tensors");
  p.named_tensors(checkpoint.optimizer_tensors);
  p.string("extra");
  p.named_tensors(checkpoint.extra);
  p.setitems();
  return zip_archive(p.finish(), storages);
}

std::string encode_state_dict(const NamedTensors& tensors) {
  std::vector<std::pair<std::string, torch::Tensor>> storages;
  Pickler p(storages);
  p.named_tensors(tensors);
  return zip_archive(p.finish(), storages);
}

namespace {
std::string zip_archive(const std::string& pickled,
                        const std::vector<std::pair<std::string, torch::Tensor>>& storages) {
  std::ostringstream out;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&out](const void* data, size_t size) {
      out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
      return size;
    });
    writer.writeRecord("data.pkl", pickled.data(), pickled.size());
    for (const auto& [key, t] : storages) {
      writer.writeRecord("data/" + key, t.data_ptr(), t.numel() * t.element_size());
    }
    writer.writeEndOfFile();
  }
  return out.str();
}
}  // namespace

void write_checkpoint_file(const std::filesystem::path& path, const CheckpointFile& checkpoint) {
  write_file_atomically(path, encode_checkpoint(checkpoint));
}

CheckpointFile decode_checkpoint(const std::string& bytes, const std::filesystem::path& name) {
  // The table of contents first: an old-format checkpoint (a TorchScript archive) is recognised
  // by its records, before any of its content is parsed.
  try {
    if (has_old_format_records(bytes, name)) throw std::runtime_error(old_format_message(name));
  } catch (const FileError& e) {
    throw std::runtime_error(e.what());
  }
  ValuePtr root;
  try {
    root = read_torch_save_bytes(bytes, name);
  } catch (const PickleError& e) {
    throw std::runtime_error(e.what());
  }
  if (!root->is<Value::Dict>()) fail(name, "not a SEDenseNet checkpoint (a torch.save file of something else)");
  std::map<std::string, ValuePtr> fields;
  for (const auto& [k, v] : std::get<Value::Dict>(root->data)) {
    if (k->is<std::string>()) fields[std::get<std::string>(k->data)] = v;
  }
  auto format = fields.find("format");
  if (format == fields.end() || !format->second->is<std::string>() ||
      std::get<std::string>(format->second->data) != kCheckpointFormat) {
    fail(name, "not a SEDenseNet checkpoint (a torch.save file without the \"format\": \"" +
                   std::string(kCheckpointFormat) +
                   "\" field; for a state dict use --weights or --init-weights with a .pth file)");
  }
  auto version = fields.find("version");
  if (version == fields.end() || !version->second->is<int64_t>()) {
    fail(name, "damaged checkpoint: no format version");
  }
  const int64_t v = std::get<int64_t>(version->second->data);
  if (v > kCheckpointVersion) {
    fail(name, "written by a newer SEDenseNet (checkpoint format version " + std::to_string(v) +
                   "; this build reads versions up to " + std::to_string(kCheckpointVersion) +
                   "): upgrade SEDenseNet to read it");
  }
  if (v < 2) throw std::runtime_error(old_format_message(name));
  for (const char* required : {"state", "model", "optimizer", "optimizer_tensors", "extra"}) {
    if (!fields.count(required)) fail(name, std::string("damaged checkpoint: no \"") + required + "\" field");
  }
  CheckpointFile out;
  out.state = json_field(fields["state"], name, "the run state");
  if (!out.state.is_object()) fail(name, "damaged checkpoint: the run state is not a JSON object");
  out.model = tensors_of(fields["model"], name, "the model weights");
  out.optimizer = json_field(fields["optimizer"], name, "the optimizer state");
  out.optimizer_tensors = tensors_of(fields["optimizer_tensors"], name, "the optimizer tensors");
  out.extra = tensors_of(fields["extra"], name, "the extra tensors");
  return out;
}

CheckpointFile read_checkpoint_file(const std::filesystem::path& path) {
  std::string bytes;
  try {
    bytes = read_regular_file(path);
  } catch (const FileError& e) {
    throw std::runtime_error(e.what());
  }
  return decode_checkpoint(bytes, path);
}

bool is_checkpoint_file(const std::filesystem::path& path) {
  try {
    const auto bytes = read_regular_file(path);
    if (has_old_format_records(bytes, path)) return true;  // refused when read, with the way out
    const auto root = read_torch_save_bytes(bytes, path);
    if (!root->is<Value::Dict>()) return false;
    for (const auto& [k, v] : std::get<Value::Dict>(root->data)) {
      if (k->is<std::string>() && std::get<std::string>(k->data) == "format") {
        return v->is<std::string>() && std::get<std::string>(v->data) == kCheckpointFormat;
      }
    }
    return false;
  } catch (const std::exception&) {
    return false;  // unreadable: whoever reads it as a state dict reports why
  }
}

NamedTensors module_tensors(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value().detach().cpu().clone());
  for (const auto& b : module.named_buffers()) out.emplace_back(b.key(), b.value().detach().cpu().clone());
  return out;
}

void load_module_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                         const std::string& name) {
  std::map<std::string, torch::Tensor> by_name;
  for (const auto& [key, t] : tensors) {
    if (!by_name.emplace(key, t).second) {
      throw std::runtime_error(name + ": damaged checkpoint: the weights name " + key + " twice");
    }
  }
  load_state_dict(module, by_name, name, LoadOptions().strict(true));
}

}  // namespace sedensenet::io




