#pragma once
/// \file
/// `ImageFolder`: a folder with one sub-folder per class, as torchvision's ImageFolder, with
/// reproducible stratified splits and a clear account of every file it does not use.

#include <torch/arg.h>
#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include "sedensenet/util/threads.hpp"
#include "sedensenet/data/image.hpp"
#include "sedensenet/data/rng.hpp"
#include "sedensenet/data/transforms.hpp"

namespace sedensenet::data {

/// What to do with a file that has an image extension but cannot be used.
enum class BadFilePolicy {
  skip,   ///< leave it out and list it (with the reason) in the summary; a class left without
          ///< images is still an error
  error,  ///< stop at the first one, naming the file
};

/// "skip" or "error" (option schemas, config files).
inline const char* to_string(BadFilePolicy policy) { return policy == BadFilePolicy::skip ? "skip" : "error"; }
inline std::vector<BadFilePolicy> enum_values(BadFilePolicy) { return {BadFilePolicy::skip, BadFilePolicy::error}; }

/// Options of `ImageFolder`.
struct ImageFolderOptions {
  /// Share of each class that goes to training when the folder has no train/ and val/ (or test/)
  /// sub-folders, in (0, 1). The reference's 80/20 by default.
  TORCH_ARG(double, train_fraction) = 0.8;
  /// Seed of the stratified split (the same seed always gives the same split).
  TORCH_ARG(uint64_t, split_seed) = 0;
  /// Limits applied when decoding (pixel count, file size).
  TORCH_ARG(DecodeOptions, decode) = {};
  /// What `validate` and the loader do with unusable files.
  TORCH_ARG(BadFilePolicy, on_bad_file) = BadFilePolicy::skip;
};

/// One image: its file and class index.
struct Sample {
  std::filesystem::path path;
  int64_t label = 0;
};

/// A file left out, and why.
struct BadFile {
  std::string path;
  std::string reason;
};

/// What a scan found besides the images.
struct ScanSummary {
  int64_t images = 0;            ///< files with an image extension
  int64_t hidden_ignored = 0;    ///< hidden files and folders (names starting with '.')
  int64_t other_ignored = 0;     ///< files with another extension
  int64_t folders_repeated = 0;  ///< folders reached again through a link (read once, see list_images)
  std::vector<BadFile> bad;      ///< files removed by `validate` under the skip policy
};

/// The image extensions recognised (lower case, with the dot), case-insensitively.
const std::set<std::string>& image_extensions();

namespace detail {
bool is_hidden(const std::filesystem::path& p);

std::string lower_extension(const std::filesystem::path& p);

bool is_dir(const std::filesystem::path& p);

/// The identity of the directory at `p` after following links: (device, inode).
std::optional<std::pair<uint64_t, uint64_t>> directory_identity(const std::filesystem::path& p);

/// Image files under `dir`, recursively (following links), in torchvision's order: by folder
/// path, then by file name. Each real folder (device and inode) is read once: a folder reached
/// again through a link, a link loop of any shape among them, is skipped at once and counted in
/// `summary.folders_repeated`, where torchvision would read it again (or loop).
std::vector<std::filesystem::path> list_images(const std::filesystem::path& dir,
                                               ScanSummary& summary);

/// Class folders of `root`, sorted (torchvision: sorted(entry.name for entry in scandir(root))).
std::vector<std::string> class_folders(const std::filesystem::path& root,
                                       ScanSummary& summary);
}  // namespace detail

class ImageFolder;

/// The two sides of a dataset: given by train/ and val/ (or test/) folders, or a seeded
/// stratified split of one folder.
struct ImageFolderSplits;

/// Images in `root/<class>/**/<file>`, usable as a `torch::data` dataset (`get(i)` reads,
/// decodes and transforms image i). Class index = position of the class folder's name in sorted
/// order (torchvision's rule); files are in torchvision's order. Hidden files and folders and
/// files with other extensions are ignored and counted in `summary()`.
///
/// Example:
/// ```
/// auto splits = sedensenet::data::ImageFolder::split("photos");  // 80/20 unless train/ val/
/// std::cout << splits.train.size().value() << " training images in "
///           << splits.train.classes().size() << " classes\n";
/// ```
class ImageFolder : public torch::data::datasets::Dataset<ImageFolder> {
 public:
  /// Scans `root` as one dataset (its sub-folders are the classes).
  explicit ImageFolder(const std::filesystem::path& root, ImageFolderOptions options = {});

  /// The train and test sides of `root` (see `ImageFolderSplits`).
  static ImageFolderSplits split(const std::filesystem::path& root, ImageFolderOptions options = {});

  /// Reads, decodes and transforms sample `index` (`set_transform`; without one, the uint8 image
  /// as decoded). Augmentation is seeded by (`augmentation_seed`, `epoch`, index). Throws
  /// `ImageError` for an unusable file (run `validate` first to remove them under the skip policy).
  torch::data::Example<> get(size_t index) override;

  /// The decoded and transformed image of sample `index` for a given epoch.
  torch::Tensor load(size_t index, int64_t epoch) const;

  torch::optional<size_t> size() const override { return samples_.size(); }

  /// Class names in index order.
  const std::vector<std::string>& classes() const { return classes_; }
  /// Images per class, in class-index order.
  std::vector<int64_t> class_counts() const;
  /// Every image with its class index.
  const std::vector<Sample>& samples() const { return samples_; }
  /// Counts of ignored files and the list of files removed by `validate`.
  const ScanSummary& summary() const { return summary_; }
  const std::filesystem::path& root() const { return root_; }
  const ImageFolderOptions& options() const { return options_; }

  /// The transform `get` applies.
  void set_transform(TransformPtr transform) { transform_ = std::move(transform); }
  const TransformPtr& transform() const { return transform_; }
  /// Epoch and seed that seed the augmentation in `get`.
  void set_epoch(int64_t epoch) { epoch_ = epoch; }
  void set_augmentation_seed(uint64_t seed) { augmentation_seed_ = seed; }

  /// Checks that every file can be used: reads it and its header (size, format, pixel limit,
  /// truncation), and with `decode` also decodes the pixels. Under the skip policy unusable files
  /// are removed and listed in `summary().bad`; under the error policy the first one (in sample
  /// order) is thrown as `ImageError`. Either way a class left without images is an error.
  /// Runs on `threads` threads (0 = one per core). Returns the files removed.
  std::vector<BadFile> validate(bool decode = false, int threads = 0);

  /// A short report: images per class, ignored and removed files.
  std::string describe() const;

  /// A dataset with the same classes and options but only `samples` (used by `split`).
  ImageFolder subset(std::vector<Sample> samples) const;

 private:
  friend struct ImageFolderSplits;
  ImageFolder() = default;

  static void check_root(const std::filesystem::path& root);

  void check_classes(const std::filesystem::path& root) const;

  void scan_classes(const std::filesystem::path& root);

  void check_no_empty_class(const std::string& when) const;

  std::filesystem::path root_;
  ImageFolderOptions options_;
  std::vector<std::string> classes_;
  std::vector<Sample> samples_;
  ScanSummary summary_;
  TransformPtr transform_;
  int64_t epoch_ = 0;
  uint64_t augmentation_seed_ = 0;
};

struct ImageFolderSplits {
  ImageFolder train;
  ImageFolder test;
  /// True when the folder had train/ and val/ (or test/) sub-folders.
  bool predefined = false;
};

}  // namespace sedensenet::data
