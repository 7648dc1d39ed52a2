#pragma once
/// \file
/// `DataOptions`: how a training run turns an image folder into batches (the split, the image
/// size and augmentation, the loader). One schema, like `TrainerOptions`: each option is listed
/// once in `fields`, and range checks, JSON (config.json, `--config`) and the tool's flags come
/// from that list.

#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sedensenet/data/image_folder.hpp"
#include "sedensenet/data/loader.hpp"
#include "sedensenet/io/trained_model.hpp"
#include "sedensenet/util/option_schema.hpp"

namespace sedensenet {

/// What a training run does about classes of very different sizes.
enum class Balance {
  automatic,  ///< "auto": `weights` when the largest class has 1.5x the images of the smallest or more, else `none`
  none,       ///< the reference's: every image once per epoch, plain loss
  weights,    ///< the training loss weighted by class, 1 / class size (normalised to mean 1)
  sampler,    ///< class-balanced epochs (`LoaderOptions::balance_classes`)
};
inline const char* to_string(Balance b) {
  switch (b) {
    case Balance::automatic: return "auto";
    case Balance::none: return "none";
    case Balance::weights: return "weights";
    case Balance::sampler: return "sampler";
  }
  return "?";
}
inline std::vector<Balance> enum_values(Balance) {
  return {Balance::automatic, Balance::none, Balance::weights, Balance::sampler};
}

/// Loss weights for classes of `counts` images: total / (classes x count), so that every class
/// weighs the same in the loss and the mean weight over images stays 1.
torch::Tensor class_balance_weights(const std::vector<int64_t>& counts);

/// The data side of a training run (see `Experiment`).
///
/// Example:
/// ```
/// auto data = sedensenet::DataOptions().image_size(64).augment("strong").batch_size(32);
/// ```
class DataOptions {
 public:
  /// Images are resized to image_size x image_size.
  TORCH_ARG(int64_t, image_size) = 32;
  /// Training augmentation, one of `io::InputSpec::augmentation_policies()`.
  TORCH_ARG(std::string, augment) = "reference";
  /// Images per batch (per process in data-parallel training).
  TORCH_ARG(int64_t, batch_size) = 64;
  /// Data-loading threads; 0 = one per core.
  TORCH_ARG(int64_t, workers) = 0;
  /// Keep decoded images in memory (datasets that fit in RAM).
  TORCH_ARG(bool, cache) = false;
  /// Decode-time downscaling of training JPEGs (`LoaderOptions::decode_downscale`); evaluation
  /// always decodes in full.
  TORCH_ARG(bool, jpeg_draft) = true;
  /// Unusable image files: skip them (and list them) or stop at the first.
  TORCH_ARG(data::BadFilePolicy, bad_files) = data::BadFilePolicy::skip;
  /// Share of each class used for training when the folder has no train/ and val/ (or test/).
  TORCH_ARG(double, train_fraction) = 0.8;
  /// Seed of that split.
  TORCH_ARG(uint64_t, split_seed) = 0;
  /// Unbalanced classes: class-weighted loss, class-balanced sampling, or nothing.
  TORCH_ARG(Balance, balance) = Balance::automatic;
  /// Transparent images (icons, logos): composited over white, or alpha dropped as torchvision
  /// does (which leaves many icons one flat colour: their shape is in the alpha channel).
  TORCH_ARG(data::Alpha, alpha) = data::Alpha::white;

 public:

  /// Every option once: key (JSON; the tool's flag with '-' for '_'), member, help, range.
  template <typename Visitor>
  static void fields(Visitor&& visit) {
    using schema::any;
    using schema::between;
    using T = DataOptions;
    visit("image_size", &T::image_size_, "images are resized to size x size", between(8, 4096));
    visit("augment", &T::augment_,
          "training augmentation: none, flip (random horizontal flip), reference (flip + padded crop), "
          "strong (also rotation and colour jitter)",
          any());
    visit("batch_size", &T::batch_size_, "images per batch", between(1, 65536));
    visit("workers", &T::workers_, "data-loading threads (0 = one per core)", schema::at_least(0));
    visit("cache", &T::cache_, "keep decoded images in memory (small datasets)", any());
    visit("jpeg_draft", &T::jpeg_draft_,
          "training images: decode JPEGs at 1/2 to 1/8 of their size when the first transform "
          "needs no more (libjpeg's DCT scaling, PIL's draft; faster on large photos, pixels not "
          "torchvision's); evaluation always decodes in full",
          any());
    visit("bad_files", &T::bad_files_, "unusable image files: skip (listed) or error", any());
    visit("train_fraction", &T::train_fraction_,
          "share of each class used for training when the folder has no train/ and val/",
          between(0.01, 0.99));
    visit("split_seed", &T::split_seed_, "seed of that split", any());
    visit("balance", &T::balance_,
          "unbalanced classes: auto (weights when the largest class has 1.5x the images of the smallest), "
          "none, weights (class-weighted loss) or sampler (class-balanced epochs)",
          any());
    visit("alpha", &T::alpha_,
          "transparent images: white (composited over white, as a viewer shows them) or drop (alpha discarded, "
          "as torchvision does)",
          any());
  }

  /// Throws, naming the option, its value and what is allowed, if any option is invalid.
  void validate() const;

  /// The image folder's options (split and bad-file policy).
  data::ImageFolderOptions folder_options() const {
    return data::ImageFolderOptions()
        .train_fraction(train_fraction_)
        .split_seed(split_seed_)
        .on_bad_file(bad_files_)
        .decode(input().decode_options());
  }
  /// The input the model is trained on: image_size, ImageNet mean and std.
  io::InputSpec input() const {
    io::InputSpec spec;
    spec.size = image_size_;
    spec.alpha = alpha_;
    return spec;
  }
  /// The loader's options for the training side (shuffled with `seed`) or the test side (in order).
  data::LoaderOptions loader_options(bool training, uint64_t seed = 0) const {
    return data::LoaderOptions()
        .batch_size(batch_size_)
        .workers(workers_)
        .cache(cache_)
        .shuffle(training)
        .seed(seed)
        .decode_downscale(training && jpeg_draft_);
  }

  nlohmann::json to_json() const { return schema::to_json(*this); }
  /// Keys not in `j` keep `base`'s values; an unknown key is an error naming it.
  static DataOptions from_json(const nlohmann::json& j) { return from_json(j, DataOptions()); }
  static DataOptions from_json(const nlohmann::json& j, DataOptions base) {
    return schema::from_json(j, std::move(base), "data options");
  }
};

}  // namespace sedensenet
