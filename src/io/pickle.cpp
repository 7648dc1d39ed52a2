#include "sedensenet/io/pickle.hpp"

namespace sedensenet::io::pickle {

torch::Dtype storage_dtype(const std::string& type) {
  static const std::map<std::string, torch::Dtype> types = {
      {"FloatStorage", torch::kFloat32},   {"DoubleStorage", torch::kFloat64},
      {"HalfStorage", torch::kFloat16},    {"BFloat16Storage", torch::kBFloat16},
      {"LongStorage", torch::kInt64},      {"IntStorage", torch::kInt32},
      {"ShortStorage", torch::kInt16},     {"CharStorage", torch::kInt8},
      {"ByteStorage", torch::kUInt8},      {"BoolStorage", torch::kBool},
      {"ComplexFloatStorage", torch::kComplexFloat},
      {"ComplexDoubleStorage", torch::kComplexDouble}};
  auto it = types.find(type);
  if (it == types.end()) throw PickleError("unsupported tensor storage type torch." + type);
  return it->second;
}

}  // namespace sedensenet::io::pickle

namespace sedensenet::io {

pickle::ValuePtr read_torch_save_bytes(const std::string& bytes,
                                       const std::filesystem::path& name) {
  if (bytes.size() >= 1 && static_cast<unsigned char>(bytes[0]) == 0x80) {
    throw PickleError(name.string() + ": a legacy (pre-1.6) torch.save file; re-save it with "
                      "torch.save(state_dict, path) in PyTorch >= 1.6");
  }
  const auto* base = reinterpret_cast<const uint8_t*>(bytes.data());
  std::vector<ArchiveRecord> verified;
  try {
    verified = verify_archive(base, bytes.size(), name);
  } catch (const FileError& e) {
    throw PickleError(e.what());
  }
  // The records, from the verified table of contents: every one stored (uncompressed), inside
  // the file and matching its CRC-32. All sit in one folder (the archive's name).
  std::map<std::string, std::pair<const uint8_t*, uint64_t>> records;
  std::string folder;
  for (const auto& r : verified) {
    const auto slash = r.name.find('/');
    if (slash == std::string::npos || (!folder.empty() && r.name.compare(0, slash + 1, folder) != 0)) {
      throw PickleError(name.string() + ": not a PyTorch archive (its records are not all in one "
                        "folder)");
    }
    folder = r.name.substr(0, slash + 1);
    if (!records.emplace(r.name.substr(slash + 1), std::make_pair(base + r.data_offset, r.size)).second) {
      throw PickleError(name.string() + ": damaged PyTorch archive (record " + r.name +
                        " appears twice)");
    }
  }
  auto pickle_record = records.find("data.pkl");
  if (pickle_record == records.end()) {
    throw PickleError(name.string() + ": a PyTorch archive without data.pkl (a TorchScript "
                      "module? save the state dict with torch.save(model.state_dict(), path))");
  }
  try {
    auto loader = [&](const std::string& key, torch::Dtype dtype, int64_t numel) {
      const std::string record = "data/" + key;
      auto it = records.find(record);
      if (it == records.end()) throw PickleError("missing tensor storage " + record);
      const auto element = static_cast<int64_t>(torch::elementSize(dtype));
      const auto stored = static_cast<int64_t>(it->second.second);
      if (numel < 0 || numel > stored / element) {
        throw PickleError("tensor storage " + record + " declares " + std::to_string(numel) +
                          " elements, more than its " + std::to_string(stored) + " bytes hold");
      }
      auto tensor = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
      if (numel > 0) std::memcpy(tensor.data_ptr(), it->second.first, static_cast<size_t>(numel * element));
      return tensor;
    };
    pickle::Reader unpickler(pickle_record->second.first,
                             static_cast<size_t>(pickle_record->second.second), loader);
    return unpickler.read();
  } catch (const PickleError& e) {
    throw PickleError(name.string() + ": " + e.what());
  } catch (const std::exception& e) {
    throw PickleError(name.string() + ": damaged PyTorch archive (" + error_message(e) + ")");
  }
}

pickle::ValuePtr read_torch_save(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw PickleError(path.string() + ": file not found");
  std::string bytes;
  try {
    bytes = read_regular_file(path);
  } catch (const FileError& e) {
    throw PickleError(e.what());
  }
  return read_torch_save_bytes(bytes, path);
}

}  // namespace sedensenet::io

namespace sedensenet::io::pickle {

auto Reader::read() -> ValuePtr {
  for (;;) {
    const uint8_t op = byte();
    switch (op) {
      case 0x80: byte(); break;                                   // PROTO
      case 0x95: bytes(8); break;                                 // FRAME (protocol 4)
      case '.': return pop();                                     // STOP
      case '(': marks_.push_back(stack_.size()); break;           // MARK
      case 'N': push(Value::of(None{})); break;                   // NONE
      case 0x88: push(Value::of(true)); break;                    // NEWTRUE
      case 0x89: push(Value::of(false)); break;                   // NEWFALSE
      case 'J': push(Value::of(static_cast<int64_t>(le<int32_t>()))); break;  // BININT
      case 'K': push(Value::of(static_cast<int64_t>(byte()))); break;         // BININT1
      case 'M': push(Value::of(static_cast<int64_t>(le<uint16_t>()))); break; // BININT2
      case 0x8a: {                                                // LONG1
        const uint8_t n = byte();
        if (n > 8) throw PickleError("integer too large in pickle");
        int64_t v = 0;
        const uint8_t* b = bytes(n);
        for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
        if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v -= int64_t{1} << (8 * n);  // sign
        push(Value::of(v));
        break;
      }
      case 'G': {                                                 // BINFLOAT (big-endian)
        const uint8_t* b = bytes(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];
        double d;
        std::memcpy(&d, &bits, 8);
        push(Value::of(d));
        break;
      }
      case 'X': push(Value::of(text(le<uint32_t>()))); break;    // BINUNICODE
      case 0x8c: push(Value::of(text(byte()))); break;            // SHORT_BINUNICODE
      case 'U': push(Value::of(text(byte()))); break;             // SHORT_BINSTRING
      case 'T': push(Value::of(text(le<uint32_t>()))); break;    // BINSTRING
      case 'B': push(Value::of(text(le<uint32_t>()))); break;    // BINBYTES
      case 'C': push(Value::of(text(byte()))); break;             // SHORT_BINBYTES
      case ')': push(tuple({})); break;                           // EMPTY_TUPLE
      case 0x85: { auto a = pop(); push(tuple({a})); break; }     // TUPLE1
      case 0x86: { auto b = pop(), a = pop(); push(tuple({a, b})); break; }  // TUPLE2
      case 0x87: { auto c = pop(), b = pop(), a = pop(); push(tuple({a, b, c})); break; }
      case 't': push(tuple(pop_mark())); break;                   // TUPLE
      case ']': push(Value::of(std::vector<ValuePtr>{})); break;  // EMPTY_LIST
      case 'l': push(Value::of(pop_mark())); break;               // LIST
      case '}': push(Value::of(Value::Dict{})); break;            // EMPTY_DICT
      case 'a': {                                                 // APPEND
        auto v = pop();
        list_of(top()).push_back(attach(top(), v));
        break;
      }
      case 'e': {                                                 // APPENDS
        auto items = pop_mark();
        auto& list = list_of(top());
        for (auto& item : items) list.push_back(attach(top(), item));
        break;
      }
      case 's': {                                                 // SETITEM
        auto v = pop(), k = pop();
        auto& dict = dict_of(top());
        attach(top(), k);
        dict.emplace_back(k, attach(top(), v));
        break;
      }
      case 'u': {                                                 // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2) throw PickleError("odd SETITEMS in pickle");
        auto& dict = dict_of(top());
        for (size_t i = 0; i < items.size(); i += 2) {
          attach(top(), items[i]);
          dict.emplace_back(items[i], attach(top(), items[i + 1]));
        }
        break;
      }
      case 'q': memo_[byte()] = top(); break;                     // BINPUT
      case 'r': memo_[le<uint32_t>()] = top(); break;             // LONG_BINPUT
      case 0x94: memo_[memo_.size()] = top(); break;              // MEMOIZE
      case 'h': push(memo(byte())); break;                        // BINGET
      case 'j': push(memo(le<uint32_t>())); break;                // LONG_BINGET
      case 'c': {                                                 // GLOBAL
        auto module = line(), name = line();
        push(Value::of(Global{module, name}));
        break;
      }
      case 0x93: {                                                // STACK_GLOBAL
        auto name = pop()->as<std::string>("a global's name");
        auto module = pop()->as<std::string>("a global's module");
        push(Value::of(Global{module, name}));
        break;
      }
      case 'Q': push(persistent(pop())); break;                   // BINPERSID
      case 'R': {                                                 // REDUCE
        auto args = pop(), callable = pop();
        push(reduce(callable->as<Global>("a callable"), args));
        break;
      }
      case 0x81: {                                                // NEWOBJ
        auto args = pop(), cls = pop();
        push(reduce(cls->as<Global>("a class"), args));
        break;
      }
      case 'b': pop(); break;                                     // BUILD: attributes ignored
      default: {
        std::ostringstream os;
        os << "unsupported pickle opcode 0x" << std::hex << static_cast<int>(op);
        throw PickleError(os.str());
      }
    }
  }
}

auto Reader::byte() -> uint8_t {
  if (p_ >= end_) throw PickleError("pickle data ends unexpectedly (truncated file?)");
  return *p_++;
}

auto Reader::bytes(size_t n) -> const uint8_t* {
  if (static_cast<size_t>(end_ - p_) < n) throw PickleError("pickle data ends unexpectedly (truncated file?)");
  const uint8_t* start = p_;
  p_ += n;
  return start;
}

auto Reader::text(size_t n) -> std::string {
  const uint8_t* b = bytes(n);
  return std::string(reinterpret_cast<const char*>(b), n);
}

auto Reader::line() -> std::string {
  std::string s;
  for (uint8_t c = byte(); c != '\n'; c = byte()) s.push_back(static_cast<char>(c));
  return s;
}

auto Reader::pop() -> ValuePtr {
  if (stack_.empty()) throw PickleError("malformed pickle (stack underflow)");
  auto v = stack_.back();
  stack_.pop_back();
  return v;
}

auto Reader::top() -> ValuePtr& {
  if (stack_.empty()) throw PickleError("malformed pickle (empty stack)");
  return stack_.back();
}

auto Reader::pop_mark() -> std::vector<ValuePtr> {
  if (marks_.empty()) throw PickleError("malformed pickle (no mark)");
  const size_t start = marks_.back();
  marks_.pop_back();
  std::vector<ValuePtr> items(stack_.begin() + static_cast<long>(start), stack_.end());
  stack_.resize(start);
  return items;
}

auto Reader::memo(size_t key) -> ValuePtr {
  auto it = memo_.find(key);
  if (it == memo_.end()) throw PickleError("malformed pickle (unknown memo entry)");
  return it->second;
}

auto Reader::tuple(std::vector<ValuePtr> items) -> ValuePtr {
  auto v = Value::of(std::vector<ValuePtr>{});
  v->is_tuple = true;
  for (auto& item : items) attach(v, item);
  std::get<std::vector<ValuePtr>>(v->data) = std::move(items);
  return v;
}

auto Reader::attach(const ValuePtr& parent, const ValuePtr& child) -> const ValuePtr& {
  if (parent->sealed || parent == child) {
    throw PickleError("malformed pickle (a container is changed after being placed in another, "
                      "or placed in itself)");
  }
  child->sealed = true;
  if (child->depth + 1 > parent->depth) {
    parent->depth = child->depth + 1;
    if (parent->depth > kMaxDepth) {
      throw PickleError("pickle nested deeper than " + std::to_string(kMaxDepth) + " levels");
    }
  }
  return child;
}

auto Reader::list_of(const ValuePtr& v) -> std::vector<ValuePtr>& {
  if (!v->is<std::vector<ValuePtr>>()) throw PickleError("malformed pickle (APPEND to a non-list)");
  return std::get<std::vector<ValuePtr>>(v->data);
}

auto Reader::dict_of(const ValuePtr& v) -> Value::Dict& {
  if (!v->is<Value::Dict>()) throw PickleError("malformed pickle (SETITEM on a non-dict)");
  return std::get<Value::Dict>(v->data);
}

auto Reader::ints(const ValuePtr& v) -> std::vector<int64_t> {
  std::vector<int64_t> out;
  for (const auto& item : v->as<std::vector<ValuePtr>>("a tuple of integers")) {
    out.push_back(item->as<int64_t>("an integer"));
  }
  return out;
}

auto Reader::persistent(const ValuePtr& id) -> ValuePtr {
  const auto& fields = id->as<std::vector<ValuePtr>>("a persistent id tuple");
  if (fields.size() < 5 || fields[0]->as<std::string>("'storage'") != "storage") {
    throw PickleError("unsupported persistent id in pickle");
  }
  StorageRef ref;
  ref.type = fields[1]->as<Global>("a storage type").name;
  ref.key = fields[2]->as<std::string>("a storage key");
  ref.numel = fields[4]->as<int64_t>("a storage size");
  auto it = storages_.find(ref.key);
  if (it == storages_.end()) {
    it = storages_.emplace(ref.key, load_storage_(ref.key, storage_dtype(ref.type), ref.numel)).first;
  }
  return Value::of(it->second);
}

void Reader::check_geometry(const std::vector<int64_t>& size, const std::vector<int64_t>& stride,
                           int64_t offset, int64_t numel) {
  if (size.size() != stride.size() || size.size() > kMaxTensorDims) {
    throw PickleError("malformed tensor in pickle (" + std::to_string(size.size()) + " sizes, " +
                      std::to_string(stride.size()) + " strides)");
  }
  if (offset < 0) throw PickleError("malformed tensor in pickle (negative storage offset)");
  int64_t elements = 1, last = offset;  // last: the highest element index the view touches
  for (size_t i = 0; i < size.size(); ++i) {
    if (size[i] < 0 || stride[i] < 0) {
      throw PickleError("malformed tensor in pickle (negative size or stride)");
    }
    int64_t reach = 0;
    if (__builtin_mul_overflow(elements, size[i], &elements) ||
        (size[i] > 0 && (__builtin_mul_overflow(size[i] - 1, stride[i], &reach) ||
                         __builtin_add_overflow(last, reach, &last)))) {
      throw PickleError("malformed tensor in pickle (sizes or strides overflow)");
    }
  }
  if (elements > 0 && last >= numel) {
    throw PickleError("tensor extends past its storage (corrupt file?)");
  }
}

auto Reader::reduce(const Global& callable, const ValuePtr& args_value) -> ValuePtr {
  const auto& args = args_value->as<std::vector<ValuePtr>>("call arguments");
  const auto name = callable.full();
  if (name == "collections.OrderedDict" || name == "builtins.dict") return Value::of(Value::Dict{});
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
    if (args.size() < 4) throw PickleError("malformed tensor in pickle");
    const auto& storage = args[0]->as<torch::Tensor>("a tensor storage");
    const auto offset = args[1]->as<int64_t>("a storage offset");
    const auto size = ints(args[2]);
    const auto stride = ints(args[3]);
    check_geometry(size, stride, offset, storage.numel());
    return Value::of(storage.as_strided(size, stride, offset));
  }
  if (name == "torch.jit._pickle.restore_type_tag") {  // LibTorch's pickle_save: (value, type)
    if (args.empty()) throw PickleError("malformed type tag in pickle");
    return args[0];
  }
  if (name == "torch._utils._rebuild_parameter") {
    if (args.empty()) throw PickleError("malformed parameter in pickle");
    return Value::of(args[0]->as<torch::Tensor>("a parameter's tensor"));
  }
  throw PickleError("the file contains a Python object this reader does not handle: " + name +
                    " (expected a state dict: names mapped to tensors)");
}

}  // namespace sedensenet::io::pickle
