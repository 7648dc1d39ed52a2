// The CPU pool behind keep_freed_memory(): placement (reuse, best fit, merging), the values of
// live blocks under churn from several threads, and the tensor counter on top of it.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <random>
#include <thread>
#include <vector>

#include "sedensenet/util/allocator.hpp"
#include "sedensenet/util/memory.hpp"

using namespace sedensenet;

namespace {

constexpr int64_t kMiB = 1 << 20;

torch::Tensor mib(int64_t n) { return torch::empty({n * kMiB}, torch::kUInt8); }

}  // namespace

TEST_CASE("keep_freed_memory pools large CPU blocks: reuse, best fit, merged neighbours",
          "[cpu_pool]") {
  REQUIRE(keep_freed_memory());
  REQUIRE(cpu_pool_stats().reserved_bytes > 0);  // Linux with glibc, no AddressSanitizer

  const auto before = cpu_pool_stats();
  {
    auto small = torch::empty({1000}, torch::kFloat32);  // 4 KB: the C library's
    CHECK(cpu_pool_stats().allocated_bytes == before.allocated_bytes);
  }
  auto a = mib(4);
  CHECK(cpu_pool_stats().allocated_bytes == before.allocated_bytes + 4 * kMiB);
  a = torch::Tensor();
  CHECK(cpu_pool_stats().allocated_bytes == before.allocated_bytes);

  // A freed block is reused: the same size again touches nothing new.
  a = mib(4);
  const auto touched = cpu_pool_stats().touched_bytes;
  a = torch::Tensor();
  a = mib(4);
  CHECK(cpu_pool_stats().touched_bytes == touched);

  // Neighbours merge: two freed 2 MiB blocks take a 4 MiB one.
  auto b = mib(2), c = mib(2), fence = mib(1);
  const auto touched_before_merge = cpu_pool_stats().touched_bytes;
  b = torch::Tensor();
  c = torch::Tensor();
  auto merged = mib(4);
  CHECK(cpu_pool_stats().touched_bytes == touched_before_merge);

  // Best fit: a 1 MiB request takes the 1 MiB hole, leaving the 3 MiB hole whole for 3 MiB.
  auto hole3 = mib(3), fence2 = mib(1), hole1 = mib(1), fence3 = mib(1);
  const auto touched_before_fit = cpu_pool_stats().touched_bytes;
  hole3 = torch::Tensor();
  hole1 = torch::Tensor();
  auto one = mib(1);
  auto three = mib(3);
  CHECK(cpu_pool_stats().touched_bytes == touched_before_fit);

  // The blocks do not overlap: each keeps what was written into it.
  std::vector<torch::Tensor> live = {a, merged, fence, fence2, fence3, one, three};
  for (size_t i = 0; i < live.size(); ++i) live[i].fill_(static_cast<int>(i + 1));
  for (size_t i = 0; i < live.size(); ++i) {
    CHECK(live[i].eq(static_cast<int>(i + 1)).all().item<bool>());
  }
}

TEST_CASE("The CPU pool keeps live blocks intact under churn from several threads",
          "[cpu_pool]") {
  REQUIRE(keep_freed_memory());
  const auto before = cpu_pool_stats();
  auto churn = [](unsigned seed, bool* ok) {
    std::mt19937 random(seed);
    std::uniform_int_distribution<int64_t> size(100 * 1024, 6 * kMiB);
    std::vector<std::pair<torch::Tensor, int>> live;
    for (int step = 0; step < 600; ++step) {
      if (!live.empty() && random() % 3 == 0) {
        const size_t victim = random() % live.size();
        const auto& [tensor, mark] = live[victim];
        if (!tensor.eq(mark).all().item<bool>()) *ok = false;
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(victim));
      } else {
        const int mark = static_cast<int>(random() % 250) + 1;
        live.emplace_back(torch::full({size(random)}, mark, torch::kUInt8), mark);
      }
    }
    for (const auto& [tensor, mark] : live) {
      if (!tensor.eq(mark).all().item<bool>()) *ok = false;
    }
  };
  bool ok[4] = {true, true, true, true};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) threads.emplace_back(churn, 11 + t, &ok[t]);
  for (auto& thread : threads) thread.join();
  for (bool thread_ok : ok) CHECK(thread_ok);
  // Everything was freed: the pool holds no more than before.
  CHECK(cpu_pool_stats().allocated_bytes == before.allocated_bytes);
  CHECK(cpu_pool_stats().peak_allocated_bytes > before.allocated_bytes);

  // Trimming gives the free part back; the pool still hands out usable blocks afterwards.
  CHECK(trim_cpu_pool() > 0);
  auto after_trim = torch::full({3 * kMiB}, 7, torch::kUInt8);
  CHECK(after_trim.eq(7).all().item<bool>());
}

TEST_CASE("MemoryTracker counts pooled blocks, installed before or after the pool",
          "[cpu_pool][memory]") {
  install_cpu_memory_tracking();  // first the counter, then the pool beneath it
  REQUIRE(keep_freed_memory());
  MemoryTracker tracker(torch::kCPU);
  const auto pooled = cpu_pool_stats().allocated_bytes;
  {
    auto a = torch::empty({2 * kMiB}, torch::kFloat32);  // 8 MiB
    CHECK(tracker.current_bytes() - tracker.baseline_bytes() == 8 * kMiB);
    CHECK(cpu_pool_stats().allocated_bytes == pooled + 8 * kMiB);
  }
  CHECK(tracker.peak_increase_bytes() == 8 * kMiB);
  CHECK(tracker.current_bytes() == tracker.baseline_bytes());
}
