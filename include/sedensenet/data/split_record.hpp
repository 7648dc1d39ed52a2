#pragma once
/// \file
/// `SplitRecord`: what a training run records about how its image folder was split, so that
/// evaluating the model later on the same folder scores the images it did not train on.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "sedensenet/data/image_folder.hpp"

namespace sedensenet::data {

/// A train/test split of an image folder, as recorded in a checkpoint's metadata ("split" of
/// "data"): the folder had its own train/ and test/ sides, or was split by `train_fraction` and
/// `split_seed`. Each side is identified by its file count and a digest of its file list
/// (CRC-32 of the relative paths and labels, in order), so a re-split of the same files is
/// recognised and a folder whose files changed is not taken for it.
struct SplitRecord {
  bool predefined = false;
  double train_fraction = 0.8;
  uint64_t split_seed = 0;
  int64_t train_files = 0;
  int64_t test_files = 0;
  std::string train_digest;
  std::string test_digest;

  /// The record of `splits` (as `ImageFolder::split` returned them, before `validate`).
  static SplitRecord of(const ImageFolderSplits& splits);
  nlohmann::json to_json() const;
  /// Throws, naming the key, when `j` is not a split record.
  static SplitRecord from_json(const nlohmann::json& j);
  /// The options that split the folder the same way again.
  ImageFolderOptions folder_options() const;
  /// Whether `splits` has the same files on each side as the recorded split.
  bool matches(const ImageFolderSplits& splits) const;
};

/// CRC-32 (8 hex digits) of `folder`'s file list: each sample's path relative to the folder's
/// root and its label, in order.
std::string file_list_digest(const ImageFolder& folder);

}  // namespace sedensenet::data
