#pragma once
/// \file
/// Reading what Python's `torch.save` writes: a zip archive (PyTorch >= 1.6) holding `data.pkl`, a
/// pickle (protocol 2) of the saved object, and one record per tensor storage. LibTorch's own
/// `pickle_load` turns the `collections.OrderedDict` of a state dict into None, so this reads the
/// pickle itself: the opcodes torch.save emits, with a value model of None, bool, int, float,
/// string, tuple, list, dict and tensor, and the few callables state dicts use.

#include <torch/types.h>

#include "sedensenet/io/archive.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/util/errors.hpp"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace sedensenet::io {

/// A file that is not a readable PyTorch file, with the reason.
class PickleError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace pickle {

/// The deepest nesting of lists, tuples and dicts the reader accepts (a state dict needs 3).
inline constexpr int kMaxDepth = 64;
/// The most dimensions a tensor in a file may have.
inline constexpr size_t kMaxTensorDims = 64;

struct Value;
using ValuePtr = std::shared_ptr<Value>;

/// A Python global (module.name), as GLOBAL references it.
struct Global {
  std::string module, name;
  std::string full() const { return module + "." + name; }
};

/// What a persistent id points to: a storage record of the archive.
struct StorageRef {
  std::string key;       ///< record name under data/
  std::string type;      ///< e.g. "FloatStorage"
  int64_t numel = 0;
};

struct None {};

/// One unpickled value.
struct Value {
  using Dict = std::vector<std::pair<ValuePtr, ValuePtr>>;  // insertion order kept
  std::variant<None, bool, int64_t, double, std::string, std::vector<ValuePtr> /*list*/,
               Dict, Global, StorageRef, torch::Tensor>
      data;
  bool is_tuple = false;  ///< a list that was a Python tuple
  int depth = 0;          ///< nesting depth of the containers below (0 for a scalar)
  bool sealed = false;    ///< placed inside another value: may not change any more

  template <typename T>
  bool is() const { return std::holds_alternative<T>(data); }
  template <typename T>
  const T& as(const char* what) const {
    if (!is<T>()) throw PickleError(std::string("unexpected pickle content: expected ") + what);
    return std::get<T>(data);
  }
  static ValuePtr make() { return std::make_shared<Value>(); }
  template <typename T>
  static ValuePtr of(T v) {
    auto p = make();
    p->data = std::move(v);
    return p;
  }
};

torch::Dtype storage_dtype(const std::string& type);

/// The unpickler. `load_storage(key, dtype, numel)` returns the storage's tensor.
class Reader {
 public:
  using StorageLoader = std::function<torch::Tensor(const std::string&, torch::Dtype, int64_t)>;

  Reader(const uint8_t* data, size_t size, StorageLoader loader)
      : p_(data), end_(data + size), load_storage_(std::move(loader)) {}

  ValuePtr read();

 private:
  uint8_t byte();
  const uint8_t* bytes(size_t n);
  template <typename T>
  T le() {
    T v;
    std::memcpy(&v, bytes(sizeof(T)), sizeof(T));
    return v;
  }
  std::string text(size_t n);
  std::string line();
  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  ValuePtr pop();
  ValuePtr& top();
  std::vector<ValuePtr> pop_mark();
  ValuePtr memo(size_t key);
  static ValuePtr tuple(std::vector<ValuePtr> items);
  /// Records that `child` goes inside `parent`: the child may not change any more (so no value
  /// can come to contain itself, and the depth below is final) and the parent's depth grows.
  static const ValuePtr& attach(const ValuePtr& parent, const ValuePtr& child);
  static std::vector<ValuePtr>& list_of(const ValuePtr& v);
  static Value::Dict& dict_of(const ValuePtr& v);
  static std::vector<int64_t> ints(const ValuePtr& v);

  /// ('storage', torch.<Type>Storage, key, location, numel) -> the storage's tensor.
  ValuePtr persistent(const ValuePtr& id);

  /// A view of `size` and `stride` at `offset` must lie inside a storage of `numel` elements;
  /// every product and sum is checked for overflow.
  static void check_geometry(const std::vector<int64_t>& size, const std::vector<int64_t>& stride,
                             int64_t offset, int64_t numel);

  ValuePtr reduce(const Global& callable, const ValuePtr& args_value);

  const uint8_t* p_;
  const uint8_t* end_;
  StorageLoader load_storage_;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<size_t, ValuePtr> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

}  // namespace pickle

/// Parses the bytes of a file written by Python's `torch.save` (zip format) and returns its
/// object; `name` is the file the messages name. The archive's checksums are verified first
/// (`verify_archive`). Throws `PickleError` for anything that is not a readable torch.save file.
pickle::ValuePtr read_torch_save_bytes(const std::string& bytes,
                                       const std::filesystem::path& name);

/// Reads a file written by Python's `torch.save` (zip format) and returns its object.
pickle::ValuePtr read_torch_save(const std::filesystem::path& path);

}  // namespace sedensenet::io
