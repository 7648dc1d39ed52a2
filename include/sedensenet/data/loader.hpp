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

namespace sedensenet::data {

/// Distributed training: the samples of shard `index` of `count` in an epoch `order` (the same
/// order on every rank), as PyTorch's DistributedSampler takes them: positions index,
/// index + count, index + 2 count, ... With `pad` the order is first extended by repeating its
/// start to a multiple of `count`, so that every shard has the same size.
inline std::vector<int64_t> shard_of(const std::vector<int64_t>& order, int64_t index, int64_t count,
                                     bool pad) {
  if (count <= 1 || order.empty()) return order;
  const auto n = static_cast<int64_t>(order.size());
  const int64_t total = pad ? (n + count - 1) / count * count : n;
  std::vector<int64_t> shard;
  shard.reserve(static_cast<size_t>((total + count - 1) / count));
  for (int64_t position = index; position < total; position += count) {
    shard.push_back(order[static_cast<size_t>(position % n)]);
  }
  return shard;
}

/// How many samples `shard_of` gives from an order of `n`.
inline int64_t shard_size(int64_t n, int64_t index, int64_t count, bool pad) {
  if (count <= 1) return n;
  if (pad) return (n + count - 1) / count;
  return n / count + (index < n % count ? 1 : 0);
}

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
  /// Drop the last batch when it is smaller than batch_size.
  TORCH_ARG(bool, drop_last) = false;
  /// Seed of the order and of the augmentations.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Keep decoded images in memory after their first use (for datasets that fit in RAM: the
  /// random transforms still run every epoch, the decoding does not).
  TORCH_ARG(bool, cache) = false;
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
  ImageLoader(ImageFolder dataset, TransformPtr transform, LoaderOptions options = {})
      : dataset_(std::make_shared<ImageFolder>(std::move(dataset))),
        transform_(std::move(transform)), options_(std::move(options)) {
    TORCH_CHECK(options_.batch_size() >= 1, "LoaderOptions: batch_size must be >= 1, got ",
                options_.batch_size());
    TORCH_CHECK(options_.batch_size() <= kMaxBatchSize, "LoaderOptions: batch_size must be at "
                "most ", kMaxBatchSize, ", got ", options_.batch_size());
    worker_count_ = thread_count(options_.workers(), "loader workers");
    TORCH_CHECK(options_.prefetch() >= 1 && options_.prefetch() <= 64,
                "LoaderOptions: prefetch must be in [1, 64], got ", options_.prefetch());
    TORCH_CHECK(dataset_->size().value() > 0, "ImageLoader: the dataset is empty");
    const size_t n = dataset_->size().value();
    bad_ = std::vector<std::atomic<bool>>(n);
    if (options_.cache()) cache_.resize(n);
  }

  class Epoch;

  /// Starts epoch `index`: workers begin preparing batches at once. One epoch at a time.
  /// `first_batch` > 0 starts in the middle of the epoch (resuming a run): the batches are those
  /// the whole epoch would give from that point, and the ones before it are not prepared.
  Epoch epoch(int64_t index, int64_t first_batch = 0);

  /// Batches an epoch yields (before any file is found unusable).
  int64_t batches_per_epoch() const {
    const auto n = epoch_samples();
    const auto b = options_.batch_size();
    return options_.drop_last() ? n / b : (n + b - 1) / b;
  }
  /// Images an epoch yields (before any file is found unusable).
  int64_t images_per_epoch() const {
    const auto n = epoch_samples();
    return options_.drop_last() ? n / options_.batch_size() * options_.batch_size() : n;
  }

  /// Distributed training: this loader yields only shard `index` of `count` of every epoch,
  /// as PyTorch's DistributedSampler does. The epoch's order (shuffled from seed and epoch) is
  /// the same on every rank; with `pad`, it is extended by repeating its start to a multiple of
  /// `count`, so that every shard has the same number of samples (and batches); rank r takes
  /// positions r, r + count, r + 2 count, ... So with batch size b, batch k of the ranks together
  /// holds exactly batch k of a single process with batch size count x b. Without `pad` (for
  /// evaluation) every sample is seen once and shards differ by at most one sample. The order
  /// is over all samples, also those found unusable (they are dropped from their batch), so the
  /// shards stay consistent across ranks.
  void set_shard(int64_t index, int64_t count, bool pad = true) {
    TORCH_CHECK(count >= 1 && index >= 0 && index < count, "ImageLoader::set_shard: index ", index,
                " outside [0, ", count, ")");
    shard_index_ = index;
    shard_count_ = count;
    shard_pad_ = pad;
  }

  const ImageFolder& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }
  /// Files skipped so far (skip policy), with the reason.
  std::vector<BadFile> bad_files() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return bad_files_;
  }
  /// Worker threads an epoch uses (`LoaderOptions::workers`, 0 = one per core, at most
  /// `max_threads()`).
  int64_t worker_count() const { return worker_count_; }
  /// The largest batch a loader makes.
  static constexpr int64_t kMaxBatchSize = int64_t{1} << 20;

 private:
  size_t usable_count() const {
    size_t n = 0;
    for (const auto& b : bad_) n += b.load() ? 0 : 1;
    return n;
  }

  /// Samples in this loader's epochs (its shard's, when sharded).
  int64_t epoch_samples() const {
    if (shard_count_ == 1) return static_cast<int64_t>(usable_count());
    return shard_size(static_cast<int64_t>(bad_.size()), shard_index_, shard_count_, shard_pad_);
  }

  /// The epoch's sample order (before batching): usable samples, shuffled by (seed, epoch) if
  /// asked, then this shard's part.
  std::vector<int64_t> epoch_order(int64_t epoch) const {
    std::vector<int64_t> order;
    for (size_t i = 0; i < bad_.size(); ++i) {
      if (shard_count_ > 1 || !bad_[i]) order.push_back(static_cast<int64_t>(i));
    }
    if (options_.shuffle()) {
      Rng rng = Rng::for_item(options_.seed(), static_cast<uint64_t>(epoch), 0x0def);
      const auto permutation = rng.permutation(static_cast<int64_t>(order.size()));
      std::vector<int64_t> shuffled(order.size());
      for (size_t i = 0; i < permutation.size(); ++i) shuffled[i] = order[static_cast<size_t>(permutation[i])];
      order = std::move(shuffled);
    }
    return shard_of(order, shard_index_, shard_count_, shard_pad_);
  }

  /// Decoded image of sample i (from the cache when enabled).
  torch::Tensor decoded(size_t i) {
    if (options_.cache()) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (cache_[i].defined()) return cache_[i];
      }
      auto image = read_image(dataset_->samples()[i].path, dataset_->options().decode());
      std::lock_guard<std::mutex> lock(mutex_);
      cache_[i] = image;
      return image;
    }
    return read_image(dataset_->samples()[i].path, dataset_->options().decode());
  }

  /// A batch tensor from the pool (one no batch or view refers to any more), or a new one. Reusing
  /// batch memory avoids the page faults of a fresh multi-megabyte allocation for every batch
  /// (measured: 15 ms for a 64x3x224x224 float batch, more than decoding and transforming it).
  torch::Tensor acquire_buffer(at::IntArrayRef shape, torch::ScalarType dtype, bool pinned) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& buffer : pool_) {
      if (buffer.use_count() == 1 && buffer.storage().use_count() == 1 &&
          buffer.sizes() == shape && buffer.scalar_type() == dtype) {
        return buffer;
      }
    }
    auto buffer = torch::empty(shape, torch::TensorOptions().dtype(dtype).pinned_memory(pinned));
    const auto limit = static_cast<size_t>(worker_count() * (options_.prefetch() + 1) + 2);
    if (pool_.size() < limit) pool_.push_back(buffer);
    return buffer;
  }

  void record_bad(size_t i, const std::string& reason) {
    bad_[i] = true;
    std::lock_guard<std::mutex> lock(mutex_);
    bad_files_.push_back({dataset_->samples()[i].path.string(), reason});
  }

  std::shared_ptr<ImageFolder> dataset_;
  TransformPtr transform_;
  LoaderOptions options_;
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
  Epoch(ImageLoader& loader, int64_t index, int64_t first_batch = 0)
      : loader_(&loader), index_(index) {
    TORCH_CHECK(first_batch >= 0, "ImageLoader::epoch: first_batch must be >= 0, got ", first_batch);
    TORCH_CHECK(!loader.epoch_running_, "ImageLoader: an epoch is already running; finish or "
                "destroy it before starting the next");
    loader.epoch_running_ = true;
    const auto& options = loader.options_;
    const auto usable = loader.epoch_order(index);
    const auto b = static_cast<size_t>(options.batch_size());
    for (size_t start = 0; start < usable.size(); start += b) {
      const size_t end = std::min(usable.size(), start + b);
      if (options.drop_last() && end - start < b) break;
      plan_.emplace_back(usable.begin() + static_cast<long>(start),
                         usable.begin() + static_cast<long>(end));
    }
    consumed_ = next_batch_ = std::min(plan_.size(), static_cast<size_t>(first_batch));
    capacity_ = static_cast<size_t>(loader.worker_count() * options.prefetch());
    for (int64_t w = 0; w < loader.worker_count(); ++w) {
      try {
        workers_.emplace_back([this] { work(); });
      } catch (const std::system_error& e) {
        // At the system's thread limit: the workers that started share the epoch.
        if (workers_.empty()) {
          TORCH_CHECK(false, "the loader cannot start a worker thread (", e.what(), "); the system "
                      "is at its thread limit: use fewer workers");
        }
        break;
      }
    }
  }

  Epoch(Epoch&& other) = delete;
  Epoch(const Epoch&) = delete;
  Epoch& operator=(const Epoch&) = delete;

  ~Epoch() { stop(); }

  /// The next batch, or nothing at the end of the epoch. Rethrows a worker's failure (an
  /// unusable file under the error policy, an exception in a transform) at the batch it belongs
  /// to, naming the file.
  std::optional<Batch> next() {
    if (consumed_ >= plan_.size()) return std::nullopt;
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return results_.count(consumed_) > 0; });
    auto node = results_.extract(consumed_);
    ++consumed_;
    lock.unlock();
    space_.notify_all();
    if (node.mapped().error) {
      stop();
      std::rethrow_exception(node.mapped().error);
    }
    return std::move(node.mapped().batch);
  }

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

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    space_.notify_all();
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
    workers_.clear();
    if (loader_) loader_->epoch_running_ = false;
  }

  void work() {
    sedensenet::detail::use_single_intra_op_thread();
    torch::NoGradGuard no_grad;
    for (;;) {
      size_t k;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        space_.wait(lock, [&] { return stopping_ || next_batch_ < consumed_ + capacity_; });
        if (stopping_ || next_batch_ >= plan_.size()) return;
        k = next_batch_++;
      }
      Result result;
      try {
        result.batch = build(plan_[k]);
      } catch (...) {
        result.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        results_.emplace(k, std::move(result));
      }
      ready_.notify_all();
    }
  }

  Batch build(const std::vector<int64_t>& members) {
    auto& loader = *loader_;
    const auto& options = loader.options_;
    Batch batch;
    torch::Tensor images;
    std::vector<int64_t> labels;
    int64_t filled = 0;
    for (const auto index : members) {
      const auto i = static_cast<size_t>(index);
      torch::Tensor image;
      try {
        image = loader.decoded(i);
      } catch (const ImageError& e) {
        if (loader.dataset_->options().on_bad_file() == BadFilePolicy::error) throw;
        loader.record_bad(i, e.reason());
        continue;
      }
      const auto& path = loader.dataset_->samples()[i].path;
      Rng rng = Rng::for_item(options.seed(), static_cast<uint64_t>(index_), i);
      auto transform_failed = [&](const std::exception& e) {
        return std::runtime_error(path.string() + ": transform failed: " + e.what());
      };
      if (images.defined()) {
        // Later samples: written straight into their slot when the pipeline can.
        auto slot = images[filled];
        bool written = false;
        try {
          written = loader.transform_ && loader.transform_->apply_into(image, rng, slot);
          if (!written) {
            rng = Rng::for_item(options.seed(), static_cast<uint64_t>(index_), i);
            if (loader.transform_) image = loader.transform_->apply(image, rng);
          }
        } catch (const std::exception& e) {
          throw transform_failed(e);
        }
        if (!written) {
          TORCH_CHECK(image.sizes() == images.sizes().slice(1), path.string(),
                      ": transformed image has shape ", image.sizes(),
                      " but earlier images in its batch have ", images.sizes().slice(1),
                      "; add Resize or CenterCrop to the transform so that all images have one "
                      "size");
          slot.copy_(image);
        }
      } else {
        // First sample: its shape sizes the batch.
        try {
          if (loader.transform_) image = loader.transform_->apply(image, rng);
        } catch (const std::exception& e) {
          throw transform_failed(e);
        }
        std::vector<int64_t> shape{static_cast<int64_t>(members.size())};
        for (auto d : image.sizes()) shape.push_back(d);
        images = loader.acquire_buffer(shape, image.scalar_type(),
                                       options.pin_memory() && torch::cuda::is_available());
        images[filled].copy_(image);
      }
      labels.push_back(loader.dataset_->samples()[i].label);
      batch.indices.push_back(index);
      ++filled;
    }
    if (!images.defined()) {  // every file of the batch was unusable
      images = torch::empty({0});
    } else if (filled < images.size(0)) {
      images = images.narrow(0, 0, filled);
    }
    batch.images = images;
    batch.labels = torch::tensor(labels, torch::kLong);
    return batch;
  }

  ImageLoader* loader_;
  int64_t index_;
  std::vector<std::vector<int64_t>> plan_;
  size_t capacity_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::map<size_t, Result> results_;
  size_t next_batch_ = 0;
  size_t consumed_ = 0;
  bool stopping_ = false;
};

inline ImageLoader::Epoch ImageLoader::epoch(int64_t index, int64_t first_batch) {
  return Epoch(*this, index, first_batch);
}

}  // namespace sedensenet::data
