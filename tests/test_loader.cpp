// ImageLoader: the same batches and augmentations whatever the number of workers, drop_last,
// cache, bad files under both policies, failing transforms, and clean early exit.
#include <catch2/catch.hpp>
#include <sys/syscall.h>
#include <unistd.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "sedensenet/data/loader.hpp"
#include "support/bundle.hpp"
#include "support/image_tree.hpp"
#include "support/python.hpp"

using namespace sedensenet::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// The thread count once at least `workers` worker threads are parked. The loader takes its
/// workers from parked threads and parks them again after each epoch, so those are expected; any
/// thread beyond them after an epoch would be a leak.
int thread_count_with_parked(int workers) {
  std::atomic<int> started{0};
  {
    std::vector<sedensenet::detail::WorkerThread> threads;
    for (int i = 0; i < workers; ++i) {
      threads.emplace_back([&] {
        ++started;
        while (started.load() < workers) std::this_thread::yield();  // all at once: distinct threads
      });
    }
  }
  return thread_count();
}

TransformPtr augmenting() {
  return compose({std::make_shared<Resize>(10, 10), std::make_shared<RandomHorizontalFlip>(),
                  std::make_shared<RandomCrop>(8, 2), std::make_shared<ColorJitter>(0.3, 0.3),
                  std::make_shared<ToTensor>(),
                  std::make_shared<Normalize>(imagenet_mean(), imagenet_std())});
}

std::vector<Batch> run_epoch(ImageLoader& loader, int64_t epoch) {
  std::vector<Batch> batches;
  for (auto& batch : loader.epoch(epoch)) batches.push_back(batch);
  return batches;
}

/// The kernel ids of the process's threads.
std::set<long> thread_ids() {
  std::set<long> ids;
  for (const auto& e : fs::directory_iterator("/proc/self/task")) ids.insert(std::stol(e.path().filename()));
  return ids;
}

/// Records the kernel id of each thread that transforms an image.
class ThreadSpy : public Transform {
 public:
  torch::Tensor apply(const torch::Tensor& image, Rng&) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    seen.insert(static_cast<long>(::syscall(SYS_gettid)));
    return image;
  }
  std::string describe() const override { return "ThreadSpy"; }
  mutable std::set<long> seen;

 private:
  mutable std::mutex mutex_;
};

class ThrowingTransform : public Transform {
 public:
  torch::Tensor apply(const torch::Tensor& image, Rng&) const override {
    if (image[0][0][0].item<int>() == 3) throw std::runtime_error("user transform exploded");
    return ToTensor().apply(image, *std::make_unique<Rng>(0));
  }
  std::string describe() const override { return "Throwing"; }
};
}  // namespace

TEST_CASE("The same seed gives the same batches and augmentations for any worker count",
          "[loader][determinism]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b", "c"}, {9, 7, 5});
  ImageFolder folder(dir.path());
  std::vector<std::vector<Batch>> runs;
  for (int64_t workers : {1, 2, 3}) {
    ImageLoader loader(folder, augmenting(),
                       LoaderOptions().batch_size(4).workers(workers).seed(11).prefetch(1));
    runs.push_back(run_epoch(loader, 2));
  }
  REQUIRE(runs[0].size() == 6);  // 21 images, batches of 4, last one of 1
  for (size_t r = 1; r < runs.size(); ++r) {
    REQUIRE(runs[r].size() == runs[0].size());
    for (size_t b = 0; b < runs[0].size(); ++b) {
      CHECK(runs[r][b].indices == runs[0][b].indices);
      CHECK(torch::equal(runs[r][b].labels, runs[0][b].labels));
      CHECK(torch::equal(runs[r][b].images, runs[0][b].images));
    }
  }
  CHECK(runs[0].back().images.sizes() == torch::IntArrayRef({1, 3, 8, 8}));
  CHECK(runs[0][0].images.is_contiguous());
  CHECK(runs[0][0].images.scalar_type() == torch::kFloat);
  CHECK(runs[0][0].labels.scalar_type() == torch::kLong);
  // Every image exactly once per epoch; another epoch has another order.
  std::vector<int64_t> seen;
  for (const auto& b : runs[0]) seen.insert(seen.end(), b.indices.begin(), b.indices.end());
  std::sort(seen.begin(), seen.end());
  std::vector<int64_t> all(21);
  std::iota(all.begin(), all.end(), 0);
  CHECK(seen == all);
  ImageLoader loader(folder, augmenting(), LoaderOptions().batch_size(4).seed(11));
  CHECK(run_epoch(loader, 3)[0].indices != runs[0][0].indices);
}

TEST_CASE("drop_last, no shuffle, cache", "[loader]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {5, 5});
  ImageFolder folder(dir.path());
  ImageLoader dropping(folder, augmenting(), LoaderOptions().batch_size(4).drop_last(true));
  CHECK(dropping.batches_per_epoch() == 2);
  CHECK(run_epoch(dropping, 0).size() == 2);

  ImageLoader ordered(folder, std::make_shared<ToTensor>(),
                      LoaderOptions().batch_size(3).shuffle(false).workers(2));
  auto batches = run_epoch(ordered, 0);
  CHECK(batches[0].indices == std::vector<int64_t>{0, 1, 2});
  CHECK(batches[3].indices == std::vector<int64_t>{9});
  CHECK(torch::equal(batches[0].labels, torch::tensor({0, 0, 0}, torch::kLong)));

  ImageLoader plain(folder, augmenting(), LoaderOptions().batch_size(3).seed(5));
  ImageLoader cached(folder, augmenting(), LoaderOptions().batch_size(3).seed(5).cache(true));
  for (int64_t epoch : {0, 1}) {
    auto p = run_epoch(plain, epoch);
    auto c = run_epoch(cached, epoch);
    for (size_t b = 0; b < p.size(); ++b) CHECK(torch::equal(p[b].images, c[b].images));
  }
}

TEST_CASE("An epoch started at a later batch gives the rest of the full epoch's batches",
          "[loader][resume]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {9, 8});
  ImageFolder folder(dir.path());
  ImageLoader loader(folder, augmenting(), LoaderOptions().batch_size(3).seed(4).workers(2));
  const auto full = run_epoch(loader, 2);
  REQUIRE(full.size() == 6);
  for (int64_t first : {1, 4, 6, 9}) {
    std::vector<Batch> rest;
    for (auto& batch : loader.epoch(2, first)) rest.push_back(batch);
    REQUIRE(rest.size() == static_cast<size_t>(std::max<int64_t>(0, 6 - first)));
    for (size_t i = 0; i < rest.size(); ++i) {
      CHECK(torch::equal(rest[i].images, full[static_cast<size_t>(first) + i].images));
      CHECK(rest[i].indices == full[static_cast<size_t>(first) + i].indices);
    }
  }
  CHECK_THROWS_WITH(loader.epoch(0, -1), Contains("first_batch must be >= 0"));
}

TEST_CASE("Bad files: skipped and listed, or the epoch stops naming the file",
          "[loader][errors]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {6, 6});
  std::ofstream(dir / "a" / "img_002.png", std::ios::trunc) << "corrupt";
  SECTION("skip") {
    ImageFolder folder(dir.path());
    ImageLoader loader(folder, augmenting(), LoaderOptions().batch_size(4).shuffle(false));
    auto batches = run_epoch(loader, 0);
    int64_t images = 0;
    for (const auto& b : batches) images += b.images.size(0);
    CHECK(images == 11);
    CHECK(batches[0].images.size(0) == 3);  // the batch that held the bad file is one short
    REQUIRE(loader.bad_files().size() == 1);
    CHECK_THAT(loader.bad_files()[0].path, Contains("img_002.png"));
    CHECK_THAT(loader.bad_files()[0].reason, Contains("not a supported image"));
    // Later epochs leave it out from the start.
    CHECK(loader.images_per_epoch() == 11);
    CHECK(run_epoch(loader, 1)[0].images.size(0) == 4);
  }
  SECTION("error") {
    ImageFolder folder(dir.path(), ImageFolderOptions().on_bad_file(BadFilePolicy::error));
    const int before = thread_count_with_parked(3);
    const auto start = std::chrono::steady_clock::now();
    for (int64_t workers : {1, 3}) {
      ImageLoader loader(folder, augmenting(),
                         LoaderOptions().batch_size(2).shuffle(false).workers(workers));
      auto epoch = loader.epoch(0);
      CHECK(epoch.next().has_value());  // batch 0: images 0 and 1
      REQUIRE_THROWS_WITH(epoch.next(), Contains("img_002.png") && Contains("not a supported image"));
      CHECK(thread_count() == before);  // the failure already joined the workers
    }
    CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 10.0);
  }
}

TEST_CASE("An exception in a user transform stops the epoch, naming the file",
          "[loader][errors]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {6, 6});
  ImageFolder folder(dir.path());
  ImageLoader loader(folder, std::make_shared<ThrowingTransform>(),
                     LoaderOptions().batch_size(4).shuffle(false).workers(2));
  const int before = thread_count_with_parked(2);
  const auto start = std::chrono::steady_clock::now();
  auto run = [&] { run_epoch(loader, 0); };
  REQUIRE_THROWS_WITH(run(), Contains("img_003.png") && Contains("user transform exploded"));
  // The loader is usable again afterwards.
  CHECK_THROWS(run());
  // No deadlock and no leaked worker (CTest's timeout is the hard limit if it ever hangs).
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 10.0);
  CHECK(thread_count() == before);
}

TEST_CASE("Leaving an epoch early joins the workers promptly and leaks no thread",
          "[loader][shutdown]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {40, 40});
  ImageFolder folder(dir.path());
  const int before = thread_count_with_parked(4);
  const auto start = std::chrono::steady_clock::now();
  {
    ImageLoader loader(folder, augmenting(), LoaderOptions().batch_size(2).workers(4));
    for (auto& batch : loader.epoch(0)) {
      CHECK(batch.images.size(0) == 2);
      break;  // early exit with workers busy and the queue full
    }
    auto epoch = loader.epoch(1);  // and one abandoned without reading anything
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds < 10.0);
  CHECK(thread_count() == before);
}

TEST_CASE("Epochs reuse parked worker threads instead of starting new ones", "[loader][shutdown]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {20, 20});
  ImageFolder folder(dir.path());
  auto spy = std::make_shared<ThreadSpy>();
  ImageLoader loader(folder, spy, LoaderOptions().batch_size(2).workers(3));
  run_epoch(loader, 0);
  const auto alive = thread_ids();
  spy->seen.clear();
  for (int64_t epoch = 1; epoch < 5; ++epoch) run_epoch(loader, epoch);
  CHECK(thread_ids() == alive);  // no thread started or ended after the first epoch
  REQUIRE(!spy->seen.empty());
  for (const auto tid : spy->seen) CHECK(alive.count(tid) == 1);  // later epochs ran on them
}

TEST_CASE("Loader options are validated", "[loader][errors]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {1, 1});
  ImageFolder folder(dir.path());
  REQUIRE_THROWS_WITH(ImageLoader(folder, nullptr, LoaderOptions().batch_size(0)),
                      Contains("batch_size must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(ImageLoader(folder, nullptr, LoaderOptions().workers(-1)),
                      Contains("workers must be >= 0"));
  ImageLoader loader(folder, nullptr, LoaderOptions().batch_size(2));
  auto first = loader.epoch(0);
  REQUIRE_THROWS_WITH(loader.epoch(1), Contains("an epoch is already running"));
}

TEST_CASE("Images of different sizes in one batch: a clear error", "[loader][errors]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {2, 2}, 12);
  write_png(dir / "a" / "big.png", torch::zeros({3, 20, 20}, torch::kUInt8));
  ImageFolder folder(dir.path());
  ImageLoader loader(folder, std::make_shared<ToTensor>(), LoaderOptions().batch_size(8));
  REQUIRE_THROWS_WITH(run_epoch(loader, 0), Contains("add Resize or CenterCrop"));
}

TEST_CASE("shard_of splits an order as DistributedSampler does", "[loader][distributed]") {
  std::vector<int64_t> order = {7, 3, 9, 0, 5, 1, 8, 2, 6, 4};
  // Padded: 10 -> 12 positions (the first two repeated), 4 per shard.
  CHECK(shard_of(order, 0, 3, true) == std::vector<int64_t>{7, 0, 8, 4});
  CHECK(shard_of(order, 1, 3, true) == std::vector<int64_t>{3, 5, 2, 7});
  CHECK(shard_of(order, 2, 3, true) == std::vector<int64_t>{9, 1, 6, 3});
  // Not padded: every sample exactly once, shards of 4, 3, 3.
  std::vector<int64_t> all;
  for (int64_t r = 0; r < 3; ++r) {
    const auto shard = shard_of(order, r, 3, false);
    CHECK(static_cast<int64_t>(shard.size()) == shard_size(10, r, 3, false));
    all.insert(all.end(), shard.begin(), shard.end());
  }
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(shard_size(10, 2, 3, true) == 4);
  CHECK(shard_of(order, 0, 1, true) == order);
}

TEST_CASE("Sharded loaders together give the batches of one loader with the global batch size",
          "[loader][distributed]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {8, 8});
  ImageFolder folder(dir.path());
  auto options = LoaderOptions().batch_size(2).workers(2).seed(3);
  ImageLoader whole(folder, augmenting(), LoaderOptions(options).batch_size(4));
  ImageLoader first(folder, augmenting(), options), second(folder, augmenting(), options);
  first.set_shard(0, 2);
  second.set_shard(1, 2);
  CHECK(first.batches_per_epoch() == 4);
  CHECK(first.images_per_epoch() == 8);
  const auto w = run_epoch(whole, 1), a = run_epoch(first, 1), b = run_epoch(second, 1);
  REQUIRE(w.size() == 4);
  REQUIRE(a.size() == 4);
  REQUIRE(b.size() == 4);
  for (size_t k = 0; k < w.size(); ++k) {
    // Batch k of the two shards is batch k of the whole, sample for sample, augmentation included.
    CHECK(a[k].indices == std::vector<int64_t>{w[k].indices[0], w[k].indices[2]});
    CHECK(b[k].indices == std::vector<int64_t>{w[k].indices[1], w[k].indices[3]});
    CHECK(torch::equal(a[k].images, torch::stack({w[k].images[0], w[k].images[2]})));
    CHECK(torch::equal(b[k].images, torch::stack({w[k].images[1], w[k].images[3]})));
  }
  CHECK_THROWS_WITH(first.set_shard(2, 2), Contains("outside [0, 2)"));
}

TEST_CASE("balance_classes draws class-balanced epochs, reproducibly", "[loader][balance]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"rare", "common"}, {5, 45}, 8);
  ImageFolder folder(dir.path());
  const auto to_tensor = compose({std::make_shared<ToTensor>()});
  ImageLoader balanced(folder, to_tensor, LoaderOptions().batch_size(10).workers(2).seed(3).balance_classes(true));
  ImageLoader plain(folder, to_tensor, LoaderOptions().batch_size(10).workers(2).seed(3));
  const auto labels_of = [](ImageLoader& loader, int64_t epoch) {
    std::vector<int64_t> labels, indices;
    for (auto& batch : loader.epoch(epoch)) {
      for (int64_t i = 0; i < batch.labels.size(0); ++i) labels.push_back(batch.labels[i].item<int64_t>());
      indices.insert(indices.end(), batch.indices.begin(), batch.indices.end());
    }
    return std::make_pair(labels, indices);
  };
  // As many samples as an ordinary epoch; over 4 epochs (200 draws) each class about half.
  int64_t rare = 0, total = 0;
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    const auto [labels, indices] = labels_of(balanced, epoch);
    CHECK(labels.size() == 50);
    rare += std::count(labels.begin(), labels.end(), 1);  // classes in sorted order: common 0, rare 1
    total += static_cast<int64_t>(labels.size());
    // Labels match the drawn images.
    for (size_t i = 0; i < labels.size(); ++i) CHECK(folder.samples()[static_cast<size_t>(indices[i])].label == labels[i]);
  }
  CHECK(rare > 70);   // binomial(200, 0.5): 70..130 is beyond 4 standard deviations
  CHECK(rare < 130);
  // Without it: every image once, 5 of the rare class per epoch.
  const auto plain_labels = labels_of(plain, 0).first;
  CHECK(std::count(plain_labels.begin(), plain_labels.end(), 1) == 5);
  // The same (seed, epoch) draws the same samples; another epoch others.
  CHECK(labels_of(balanced, 1).second == labels_of(balanced, 1).second);
  CHECK(labels_of(balanced, 1).second != labels_of(balanced, 2).second);
}

TEST_CASE("JPEG photos load as torchvision loads them; decode-time downscaling when asked",
          "[loader][jpeg][python]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::run_python("pil_reference.py", "photos " + dir.path().string());
  const auto expected = sedensenet::test::load_bundle(dir / "expected");
  ImageFolder folder(dir / "images");
  const auto pipeline = compose({std::make_shared<Resize>(32), std::make_shared<CenterCrop>(32),
                                 std::make_shared<ToTensor>()});
  CHECK(pipeline->min_input_size() == 32);
  // The full decode is torchvision's DataLoader sample for sample, value for value.
  ImageLoader exact(folder, pipeline, LoaderOptions().batch_size(6).shuffle(false).workers(2));
  auto batch = run_epoch(exact, 0).at(0);
  REQUIRE(batch.images.size(0) == 6);
  for (int64_t i = 0; i < 6; ++i) {
    INFO("image " << i);
    CHECK(torch::equal(batch.images[i], expected.at("image_" + std::to_string(i))));
  }
  // decode_downscale: each photo (shorter side 375 to 455) is decoded at 1/8 (47 to 57 pixels,
  // still >= 32), then resized; close to, not equal to, the full decode.
  ImageLoader draft(folder, pipeline,
                    LoaderOptions().batch_size(6).shuffle(false).workers(2).decode_downscale(true));
  auto drafted = run_epoch(draft, 0).at(0);
  Rng rng(0);
  for (int64_t i = 0; i < 6; ++i) {
    INFO("image " << i);
    const auto& path = folder.samples()[static_cast<size_t>(i)].path;
    const auto small = decode_image(read_file(path), path.string(), DecodeOptions().min_size(32));
    CHECK(small.size(1) == (read_image(path).size(1) + 7) / 8);
    CHECK(torch::equal(drafted.images[i], pipeline->apply(small, rng)));
    const double difference = (drafted.images[i] - batch.images[i]).abs().mean().item<double>();
    CHECK(difference > 0);
    // These synthetic photos carry pixel noise (the worst case for a smaller decode): 3.6 to 3.7
    // levels of 255 on average, measured.
    CHECK(difference < 5.0 / 255);
  }
}

TEST_CASE("The input size each transform needs, which decode-time downscaling keeps",
          "[transforms][jpeg]") {
  CHECK(Resize(224).min_input_size() == 224);
  CHECK(Resize(30, 50).min_input_size() == 50);
  // 32 / sqrt(0.08 * 0.75) = 130.6: the smallest crop still has 32 pixels on each side.
  CHECK(RandomResizedCrop(32).min_input_size() == 131);
  CHECK(RandomResizedCrop(32, {0.5, 1.0}, {1.0, 1.0}).min_input_size() == 46);
  CHECK(CenterCrop(32).min_input_size() == 0);
  CHECK(compose({std::make_shared<CenterCrop>(32), std::make_shared<Resize>(16)})->min_input_size() == 0);
  CHECK(compose({std::make_shared<Resize>(40), std::make_shared<CenterCrop>(32)})->min_input_size() == 40);
}
