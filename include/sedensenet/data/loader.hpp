#pragma once
/// \file
/// `ImageLoader`: batches from an `ImageFolder`, decoded and transformed by worker threads into a
/// bounded prefetch queue.
///
/// Determinism: the epoch's order comes from (seed, epoch) and each sample's augmentation from
/// (seed, epoch, sample index), so the same seed gives the same batches and the same
/// augmentations whatever the number of workers. Failures surface in batch order, also
/// independent of the number of workers.

#include <torch/arg.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sedensenet/data/codec.hpp"
#include "sedensenet/data/image_folder.hpp"
#include "sedensenet/data/rng.hpp"
#include "sedensenet/data/transforms.hpp"
#include "sedensenet/util/threads.hpp"
#include "sedensenet/util/worker_thread.hpp"

namespace sedensenet::data {

/// Distributed training: the samples of shard `index` of `count` in an epoch `order` (the same
/// order on every rank), as PyTorch's DistributedSampler takes them: positions index,
/// index + count, index + 2 count, ... With `pad` the order is first extended by repeating its
/// start to a multiple of `count`, so that every shard has the same size.
std::vector<int64_t> shard_of(const std::vector<int64_t>& order, int64_t index, int64_t count,
                              bool pad);

/// How many samples `shard_of` gives from an order of `n`.
int64_t shard_size(int64_t n, int64_t index, int64_t count, bool pad);

/// Options of `ImageLoader`.
struct LoaderOptions {
  /// Images per batch, >= 1.
  TORCH_ARG(int64_t, batch_size) = 64;
  /// Worker threads decoding and transforming; 0 = one per core.
  TORCH_ARG(int64_t, workers) = 0;
  /// Batches each worker may prepare ahead of the consumer (the queue holds workers * prefetch).
  TORCH_ARG(int64_t, prefetch) = 2;
  /// Shuffle the order every epoch (seeded by seed and epoch); false keeps the dataset's order.
  TORCH_ARG(bool, shuffle) = true;
  /// With shuffle: draw each epoch's samples class-balanced instead of permuting them (as many
  /// samples as usual, each from a class drawn uniformly, then an image of it drawn uniformly,
  /// with replacement: PyTorch's WeightedRandomSampler with weights 1 / class size). Small
  /// classes are seen as often as large ones; some images of large classes are skipped per epoch.
  TORCH_ARG(bool, balance_classes) = false;
  /// Drop the last batch when it is smaller than batch_size.
  TORCH_ARG(bool, drop_last) = false;
  /// Seed of the order and of the augmentations.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Keep decoded images in memory after their first use (for datasets that fit in RAM: the
  /// random transforms still run every epoch, the decoding does not).
  TORCH_ARG(bool, cache) = false;
  /// Decode-time downscaling: decode each JPEG at 1/2, 1/4 or 1/8 of its size when the
  /// transform's first step needs no more (`Transform::min_input_size`; libjpeg's DCT scaling, as
  /// PIL's `draft`). Several times faster on photos much larger than the training size; the
  /// pixels are no longer torchvision's (docs/benchmarks.md, "Loading", says how far). Training
  /// loaders of the Trainer and the tool turn it on (`jpeg_draft`); off by default here.
  TORCH_ARG(bool, decode_downscale) = false;
  /// Allocate batches in page-locked memory (only when CUDA is available) for faster copies.
  TORCH_ARG(bool, pin_memory) = false;
};

/// A batch: images (N, C, H, W) float (or as the transform returns them), labels (N) int64, and
/// the dataset indices of its samples.
struct Batch {
  torch::Tensor images;
  torch::Tensor labels;
  std::vector<int64_t> indices;
};

/// Iterates an `ImageFolder` in batches, with worker threads.
///
/// Example:
/// ```
/// auto splits = sedensenet::data::ImageFolder::split("photos");
/// sedensenet::data::ImageLoader loader(splits.train, sedensenet::data::train_transform(224),
///                                      sedensenet::data::LoaderOptions().batch_size(32));
/// for (int epoch = 0; epoch < 10; ++epoch) {
///   for (auto& batch : loader.epoch(epoch)) { /* batch.images: (32, 3, 224, 224) */ }
/// }
/// ```
class ImageLoader {
 public:
  ImageLoader(ImageFolder dataset, TransformPtr transform, LoaderOptions options = {});

  class Epoch;

  /// Starts epoch `index`: workers begin preparing batches at once. One epoch at a time.
  /// `first_batch` > 0 starts in the middle of the epoch (resuming a run): the batches are those
  /// the whole epoch would give from that point, and the ones before it are not prepared.
  Epoch epoch(int64_t index, int64_t first_batch = 0);

  /// Batches an epoch yields (before any file is found unusable).
  int64_t batches_per_epoch() const;
  /// Images an epoch yields (before any file is found unusable).
  int64_t images_per_epoch() const;

  /// Distributed training: this loader yields only shard `index` of `count` of every epoch,
  /// as PyTorch's DistributedSampler does. The epoch's order (shuffled from seed and epoch) is
  /// the same on every rank; with `pad`, it is extended by repeating its start to a multiple of
  /// `count`, so that every shard has the same number of samples (and batches); rank r takes
  /// positions r, r + count, r + 2 count, ... So with batch size b, batch k of the ranks together
  /// holds exactly batch k of a single process with batch size count x b. Without `pad` (for
  /// evaluation) every sample is seen once and shards differ by at most one sample. The order
  /// is over all samples, also those found unusable (they are dropped from their batch), so the
  /// shards stay consistent across ranks.
  void set_shard(int64_t index, int64_t count, bool pad = true);

  const ImageFolder& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }
  /// Files skipped so far (skip policy), with the reason.
  std::vector<BadFile> bad_files() const;
  /// Worker threads an epoch uses (`LoaderOptions::workers`, 0 = one per core, at most
  /// `max_threads()`).
  int64_t worker_count() const { return worker_count_; }
  /// The largest batch a loader makes.
  static constexpr int64_t kMaxBatchSize = int64_t{1} << 20;

 private:
  size_t usable_count() const;

  /// Samples in this loader's epochs (its shard's, when sharded).
  int64_t epoch_samples() const;

  /// The epoch's sample order (before batching): usable samples, shuffled (or drawn
  /// class-balanced) by (seed, epoch) if asked, then this shard's part.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  /// Decoded image of sample i (from the cache when enabled).
  torch::Tensor decoded(size_t i);

  /// A batch tensor from the pool (one no batch or view refers to any more), or a new one. Reusing
  /// batch memory avoids the page faults of a fresh multi-megabyte allocation for every batch
  /// (measured: 15 ms for a 64x3x224x224 float batch, more than decoding and transforming it).
  torch::Tensor acquire_buffer(at::IntArrayRef shape, torch::ScalarType dtype, bool pinned);

  void record_bad(size_t i, const std::string& reason);

  std::shared_ptr<ImageFolder> dataset_;
  TransformPtr transform_;
  LoaderOptions options_;
  DecodeOptions decode_options_;  ///< the folder's, with min_size when decode_downscale is on
  int64_t worker_count_ = 1;
  std::vector<std::atomic<bool>> bad_;
  std::vector<torch::Tensor> cache_;
  std::vector<BadFile> bad_files_;
  std::vector<torch::Tensor> pool_;  // reusable batch tensors
  mutable std::mutex mutex_;
  bool epoch_running_ = false;
  int64_t shard_index_ = 0, shard_count_ = 1;
  bool shard_pad_ = true;
};

/// One pass over the data. Iterate with `next()` or a range-for. Destroying it (also early, or
/// while an exception propagates) stops and joins the workers.
class ImageLoader::Epoch {
 public:
  Epoch(ImageLoader& loader, int64_t index, int64_t first_batch = 0);

  Epoch(Epoch&& other) = delete;
  Epoch(const Epoch&) = delete;
  Epoch& operator=(const Epoch&) = delete;

  ~Epoch() { stop(); }

  /// The next batch, or nothing at the end of the epoch. Rethrows a worker's failure (an
  /// unusable file under the error policy, an exception in a transform) at the batch it belongs
  /// to, naming the file.
  std::optional<Batch> next();

  /// Batches in this epoch.
  size_t size() const { return plan_.size(); }

  /// Range-for support.
  class iterator {
   public:
    iterator(Epoch* epoch, bool end) : epoch_(epoch) {
      if (!end) advance();
    }
    Batch& operator*() { return *current_; }
    Batch* operator->() { return &*current_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    bool operator!=(const iterator& other) const {
      return current_.has_value() != other.current_.has_value();
    }

   private:
    void advance() { current_ = epoch_->next(); }
    Epoch* epoch_;
    std::optional<Batch> current_;
  };
  iterator begin() { return iterator(this, false); }
  iterator end() { return iterator(this, true); }

 private:
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };

  void stop();

  void work();

  Batch build(const std::vector<int64_t>& members);

  ImageLoader* loader_;
  int64_t index_;
  std::vector<std::vector<int64_t>> plan_;
  size_t capacity_ = 1;
  std::vector<sedensenet::detail::WorkerThread> workers_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::map<size_t, Result> results_;
  size_t next_batch_ = 0;
  size_t consumed_ = 0;
  bool stopping_ = false;
};

}  // namespace sedensenet::data
