#pragma once
/// \file
/// Converting checkpoints of SEDenseNet 0.1 (format version 1: LibTorch `OutputArchive` files) to
/// the current format (io/checkpoint_file.hpp).
///
/// The old format can only be read through LibTorch's TorchScript loader, which runs code stored
/// in the file: a crafted file can create or overwrite files while it is being read. Nothing else
/// in this library reads it; this conversion does, once, for a file its user trusts.

#include <filesystem>

namespace sedensenet {

/// Reads `old_file` (a version-1 best.pt or last.pt written by `sedensenet train`, whose metadata
/// records the DenseNet) with LibTorch's loader and writes the same weights, run state, optimizer
/// state and random state to `new_file` in the current format. Refuses to overwrite `new_file`.
/// Call it only for files you made or trust (see the file comment).
void convert_legacy_checkpoint(const std::filesystem::path& old_file,
                               const std::filesystem::path& new_file);

}  // namespace sedensenet
