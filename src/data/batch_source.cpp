#include "sedensenet/data/batch_source.hpp"

#include <algorithm>
#include <numeric>
#include <vector>

#include "sedensenet/data/rng.hpp"

namespace sedensenet::data {

void BatchSource::for_each_from(int64_t epoch, int64_t first_batch, const Visitor& fn) {
  int64_t index = 0;
  for_each(epoch, [&](const Batch& batch) { return index++ < first_batch || fn(batch); });
}

void BatchSource::shard(int64_t index, int64_t count, bool /*pad*/) {
  TORCH_CHECK(count == 1, "this BatchSource cannot be split across ", count, " ranks (shard ",
              index, "): override BatchSource::shard, or use ImageLoaderSource or TensorSource");
}

void ImageLoaderSource::for_each(int64_t epoch, const Visitor& fn) { for_each_from(epoch, 0, fn); }

void ImageLoaderSource::for_each_from(int64_t epoch, int64_t first_batch, const Visitor& fn) {
  auto pass = loader_->epoch(epoch, first_batch);
  while (auto batch = pass.next()) {
    if (!fn(*batch)) break;
  }
}

int64_t ImageLoaderSource::batches_per_epoch() const { return loader_->batches_per_epoch(); }

void ImageLoaderSource::shard(int64_t index, int64_t count, bool pad) {
  loader_->set_shard(index, count, pad);
}

TensorSource::TensorSource(torch::Tensor images, torch::Tensor labels, int64_t batch_size,
                           bool shuffle, uint64_t seed)
    : images_(std::move(images)), labels_(std::move(labels)), batch_size_(batch_size),
      shuffle_(shuffle), seed_(seed) {
  TORCH_CHECK(images_.size(0) == labels_.size(0), "TensorSource: ", images_.size(0),
              " images but ", labels_.size(0), " labels");
  TORCH_CHECK(batch_size >= 1, "TensorSource: batch_size must be >= 1, got ", batch_size);
}

void TensorSource::for_each(int64_t epoch, const Visitor& fn) {
  std::vector<int64_t> order(static_cast<size_t>(images_.size(0)));
  std::iota(order.begin(), order.end(), 0);
  if (shuffle_) order = Rng::for_item(seed_, static_cast<uint64_t>(epoch), 7).permutation(images_.size(0));
  order = shard_of(order, shard_index_, shard_count_, shard_pad_);
  const auto n = static_cast<int64_t>(order.size());
  auto index = torch::tensor(order, torch::kLong);
  for (int64_t start = 0; start < n; start += batch_size_) {
    const int64_t len = std::min(batch_size_, n - start);
    auto idx = index.narrow(0, start, len);
    Batch b{images_.index_select(0, idx), labels_.index_select(0, idx),
            std::vector<int64_t>(order.begin() + start, order.begin() + start + len)};
    if (!fn(b)) break;
  }
}

int64_t TensorSource::batches_per_epoch() const {
  const int64_t n = shard_size(images_.size(0), shard_index_, shard_count_, shard_pad_);
  return (n + batch_size_ - 1) / batch_size_;
}

void TensorSource::shard(int64_t index, int64_t count, bool pad) {
  TORCH_CHECK(count >= 1 && index >= 0 && index < count, "TensorSource::shard: index ", index,
              " outside [0, ", count, ")");
  shard_index_ = index;
  shard_count_ = count;
  shard_pad_ = pad;
}

}  // namespace sedensenet::data
