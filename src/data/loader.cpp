#include "sedensenet/data/loader.hpp"

namespace sedensenet::data {

std::vector<int64_t> shard_of(const std::vector<int64_t>& order, int64_t index, int64_t count,
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

int64_t shard_size(int64_t n, int64_t index, int64_t count, bool pad) {
  if (count <= 1) return n;
  if (pad) return (n + count - 1) / count;
  return n / count + (index < n % count ? 1 : 0);
}

ImageLoader::Epoch ImageLoader::epoch(int64_t index, int64_t first_batch) {
  return Epoch(*this, index, first_batch);
}

}  // namespace sedensenet::data

namespace sedensenet::data {

ImageLoader::ImageLoader(ImageFolder dataset, TransformPtr transform, LoaderOptions options)
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
  decode_options_ = dataset_->options().decode();
  if (options_.decode_downscale() && transform_) {
    decode_options_.min_size(transform_->min_input_size());
  }
}

auto ImageLoader::batches_per_epoch() const -> int64_t {
  const auto n = epoch_samples();
  const auto b = options_.batch_size();
  return options_.drop_last() ? n / b : (n + b - 1) / b;
}

auto ImageLoader::images_per_epoch() const -> int64_t {
  const auto n = epoch_samples();
  return options_.drop_last() ? n / options_.batch_size() * options_.batch_size() : n;
}

void ImageLoader::set_shard(int64_t index, int64_t count, bool pad) {
  TORCH_CHECK(count >= 1 && index >= 0 && index < count, "ImageLoader::set_shard: index ", index,
              " outside [0, ", count, ")");
  shard_index_ = index;
  shard_count_ = count;
  shard_pad_ = pad;
}

auto ImageLoader::bad_files() const -> std::vector<BadFile> {
  std::lock_guard<std::mutex> lock(mutex_);
  return bad_files_;
}

auto ImageLoader::usable_count() const -> size_t {
  size_t n = 0;
  for (const auto& b : bad_) n += b.load() ? 0 : 1;
  return n;
}

auto ImageLoader::epoch_samples() const -> int64_t {
  if (shard_count_ == 1) return static_cast<int64_t>(usable_count());
  return shard_size(static_cast<int64_t>(bad_.size()), shard_index_, shard_count_, shard_pad_);
}

auto ImageLoader::epoch_order(int64_t epoch) const -> std::vector<int64_t> {
  std::vector<int64_t> order;
  for (size_t i = 0; i < bad_.size(); ++i) {
    if (shard_count_ > 1 || !bad_[i]) order.push_back(static_cast<int64_t>(i));
  }
  if (options_.shuffle() && options_.balance_classes() && !order.empty()) {
    std::map<int64_t, std::vector<int64_t>> by_class;
    for (const auto i : order) by_class[dataset_->samples()[static_cast<size_t>(i)].label].push_back(i);
    std::vector<const std::vector<int64_t>*> classes;
    for (const auto& entry : by_class) classes.push_back(&entry.second);
    Rng rng = Rng::for_item(options_.seed(), static_cast<uint64_t>(epoch), 0xba1a);
    for (auto& slot : order) {
      const auto& members = *classes[static_cast<size_t>(rng.randint(0, static_cast<int64_t>(classes.size())))];
      slot = members[static_cast<size_t>(rng.randint(0, static_cast<int64_t>(members.size())))];
    }
  } else if (options_.shuffle()) {
    Rng rng = Rng::for_item(options_.seed(), static_cast<uint64_t>(epoch), 0x0def);
    const auto permutation = rng.permutation(static_cast<int64_t>(order.size()));
    std::vector<int64_t> shuffled(order.size());
    for (size_t i = 0; i < permutation.size(); ++i) shuffled[i] = order[static_cast<size_t>(permutation[i])];
    order = std::move(shuffled);
  }
  return shard_of(order, shard_index_, shard_count_, shard_pad_);
}

auto ImageLoader::decoded(size_t i) -> torch::Tensor {
  if (options_.cache()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cache_[i].defined()) return cache_[i];
    }
    auto image = read_image(dataset_->samples()[i].path, decode_options_);
    std::lock_guard<std::mutex> lock(mutex_);
    cache_[i] = image;
    return image;
  }
  return read_image(dataset_->samples()[i].path, decode_options_);
}

auto ImageLoader::acquire_buffer(at::IntArrayRef shape, torch::ScalarType dtype, bool pinned) -> torch::Tensor {
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

void ImageLoader::record_bad(size_t i, const std::string& reason) {
  bad_[i] = true;
  std::lock_guard<std::mutex> lock(mutex_);
  bad_files_.push_back({dataset_->samples()[i].path.string(), reason});
}

ImageLoader::Epoch::Epoch(ImageLoader& loader, int64_t index, int64_t first_batch)
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

auto ImageLoader::Epoch::next() -> std::optional<Batch> {
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

void ImageLoader::Epoch::stop() {
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

void ImageLoader::Epoch::work() {
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

auto ImageLoader::Epoch::build(const std::vector<int64_t>& members) -> Batch {
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

}  // namespace sedensenet::data
