#pragma once
/// \file
/// SEDenseNet's checkpoint files (best.pt, last.pt): the one place that writes them, reads them
/// and checks their format version.
///
/// A checkpoint is a file in the format of Python's `torch.save` (a zip archive with `data.pkl` and
/// one uncompressed record per tensor), holding one dict:
///
///     {"format": "sedensenet-checkpoint", "version": 2,
///      "state": "<JSON: epoch, history, metadata, classes, trainer options, ...>",
///      "model": OrderedDict(name -> tensor),               # parameters and buffers
///      "optimizer": "<JSON: kind, learning rates, steps>" or None,
///      "optimizer_tensors": OrderedDict(name -> tensor),   # moments, momentum buffers
///      "extra": OrderedDict(name -> tensor)}               # random state, per-rank state, weight average
///
/// It is read by this library's own unpickler (io/pickle.hpp), which knows dicts, strings, numbers
/// and tensors and nothing that runs code; LibTorch's TorchScript reader never sees the file.
/// Python reads it with `torch.load(path, weights_only=True)` (`["model"]` is a state dict).
///
/// Checkpoints of format version 1 (SEDenseNet 0.1: LibTorch `OutputArchive` files, read through
/// TorchScript) are refused with the command that converts a trusted one
/// (`sedensenet convert-checkpoint`, docs/reliability.md).

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace sedensenet::io {

/// The value of the checkpoint's "format" field.
inline constexpr const char* kCheckpointFormat = "sedensenet-checkpoint";
/// The format version this build writes, and the newest it reads.
inline constexpr int64_t kCheckpointVersion = 2;

/// Tensors by name, in a fixed order.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// The content of a checkpoint file.
struct CheckpointFile {
  nlohmann::json state = nlohmann::json::object();  ///< the run state (see Trainer)
  NamedTensors model;                                ///< parameters and buffers
  nlohmann::json optimizer;          ///< optimizer description; null when not saved (best.pt)
  NamedTensors optimizer_tensors;    ///< the optimizer's per-parameter tensors
  NamedTensors extra;                ///< anything else (random state, per-rank state, weight average)

  /// The tensor `name` of `extra`, or an undefined tensor.
  torch::Tensor extra_tensor(const std::string& name) const;
};

/// The bytes of `checkpoint` as a file.
std::string encode_checkpoint(const CheckpointFile& checkpoint);
/// Writes `checkpoint` to `path` atomically (the previous file stays until the new one is complete).
void write_checkpoint_file(const std::filesystem::path& path, const CheckpointFile& checkpoint);

/// The bytes of a plain state dict as Python's `torch.save(model.state_dict(), path)` writes it: a
/// zip archive whose pickle is an `OrderedDict` of name -> tensor and nothing else, so that
/// `torch.load(path, weights_only=True)` (the default since PyTorch 2.6) reads it.
std::string encode_state_dict(const NamedTensors& tensors);

/// Parses a checkpoint's bytes; `name` is the file the messages name. Throws `std::runtime_error`
/// with a one-line message naming the file for anything that is not a readable checkpoint of a
/// version this build knows: damaged or truncated archives, other files, old-format checkpoints,
/// newer versions, malformed content. Never runs code from the file, and every size in it is
/// checked against the file's length before anything is allocated.
CheckpointFile decode_checkpoint(const std::string& bytes, const std::filesystem::path& name);
/// `decode_checkpoint` of the file at `path` (which must exist and be a regular file).
CheckpointFile read_checkpoint_file(const std::filesystem::path& path);

/// Whether `path` is a SEDenseNet checkpoint (of any version), as opposed to a Python state dict or
/// anything else. Reads only the archive's table of contents and, for a torch.save file, its
/// "format" field.
bool is_checkpoint_file(const std::filesystem::path& path);

/// `module`'s parameters and buffers, detached CPU copies.
NamedTensors module_tensors(const torch::nn::Module& module);
/// Copies `tensors` into `module`'s parameters and buffers with a strict `load_state_dict`: every
/// name must be there with the same shape and every parameter and buffer covered, else the error
/// lists the differences (naming `name`) and nothing is changed.
void load_module_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                         const std::string& name);

}  // namespace sedensenet::io
