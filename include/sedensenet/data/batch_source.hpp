#pragma once
/// \file
/// Where the Trainer's batches come from: the `BatchSource` interface, `ImageLoaderSource` (an
/// `ImageLoader`) and `TensorSource` (tensors already in memory).

#include <torch/types.h>

#include <cstdint>
#include <functional>

#include "sedensenet/data/loader.hpp"

namespace sedensenet::data {

/// A sequence of batches per epoch. Implement it for anything that is neither an `ImageLoader`
/// nor tensors in memory.
class BatchSource {
 public:
  using Visitor = std::function<bool(const Batch&)>;
  virtual ~BatchSource() = default;
  /// Calls `fn` with each batch of epoch `epoch` (0-based), in order; stops early if it returns
  /// false.
  virtual void for_each(int64_t epoch, const Visitor& fn) = 0;
  /// Like `for_each`, starting at batch `first_batch` (0-based) of the epoch: how a run resumes
  /// from a checkpoint taken in the middle of an epoch. The batches must be those `for_each`
  /// would give from that point. The default reads and drops the first batches; sources that can
  /// seek override it.
  virtual void for_each_from(int64_t epoch, int64_t first_batch, const Visitor& fn);
  /// Batches per epoch (for progress and the learning-rate schedule).
  virtual int64_t batches_per_epoch() const = 0;
  /// Distributed training: from now on yield only shard `index` of `count` of every epoch (see
  /// `ImageLoader::set_shard` for the rule: the same order on every rank, rank r takes every
  /// count-th sample from position r; `pad` repeats samples so that every shard has as many
  /// batches). The Trainer calls it. Sources that cannot be split keep this default, which refuses.
  virtual void shard(int64_t index, int64_t count, bool pad);
};

/// Batches from an `ImageLoader` (which must outlive the source). Skipped batches of a resumed
/// epoch are never decoded.
class ImageLoaderSource : public BatchSource {
 public:
  explicit ImageLoaderSource(ImageLoader& loader) : loader_(&loader) {}
  void for_each(int64_t epoch, const Visitor& fn) override;
  void for_each_from(int64_t epoch, int64_t first_batch, const Visitor& fn) override;
  int64_t batches_per_epoch() const override;
  void shard(int64_t index, int64_t count, bool pad) override;

 private:
  ImageLoader* loader_;
};

/// Batches of in-memory tensors: images (N, ...) and labels (N), shuffled per epoch from a seed.
class TensorSource : public BatchSource {
 public:
  TensorSource(torch::Tensor images, torch::Tensor labels, int64_t batch_size, bool shuffle = true,
               uint64_t seed = 0);
  void for_each(int64_t epoch, const Visitor& fn) override;
  int64_t batches_per_epoch() const override;
  void shard(int64_t index, int64_t count, bool pad) override;

 private:
  torch::Tensor images_, labels_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  int64_t shard_index_ = 0, shard_count_ = 1;
  bool shard_pad_ = true;
};

}  // namespace sedensenet::data
