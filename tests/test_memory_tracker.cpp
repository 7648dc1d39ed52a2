// MemoryTracker against known allocations.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <thread>

#include "sedensenet/util/memory.hpp"

using namespace sedensenet;

TEST_CASE("MemoryTracker reports the peak of a known allocation", "[memory]") {
  install_cpu_memory_tracking();
  MemoryTracker tracker(torch::kCPU);
  const int64_t four_mib = 4 * 1024 * 1024;
  {
    auto a = torch::empty({1024, 1024}, torch::kFloat32);  // 4 MiB
    CHECK(tracker.current_bytes() - tracker.baseline_bytes() == four_mib);
  }
  CHECK(tracker.current_bytes() == tracker.baseline_bytes());
  {
    auto b = torch::empty({512, 1024}, torch::kFloat32);  // 2 MiB: below the peak
  }
  CHECK(tracker.peak_increase_bytes() == four_mib);
  {
    auto c = torch::empty({1024, 1024}, torch::kFloat64);  // 8 MiB
    auto d = torch::empty({256, 1024}, torch::kFloat32);   // +1 MiB alive together
  }
  CHECK(tracker.peak_increase_bytes() == 9 * 1024 * 1024);
  tracker.stop();
  auto e = torch::empty({4096, 1024}, torch::kFloat32);  // after stop: not counted
  CHECK(tracker.peak_increase_bytes() == 9 * 1024 * 1024);
}

TEST_CASE("Nested trackers: the inner region counts towards the outer peak", "[memory]") {
  install_cpu_memory_tracking();
  MemoryTracker outer;
  int64_t inner_peak = 0;
  {
    MemoryTracker inner;
    auto a = torch::empty({1 << 20}, torch::kFloat32);  // 4 MiB
    inner_peak = inner.peak_increase_bytes();
  }
  auto small = torch::empty({1 << 10}, torch::kFloat32);
  CHECK(inner_peak == 4 * (1 << 20));
  CHECK(outer.peak_increase_bytes() == 4 * (1 << 20));
}

TEST_CASE("Allocations on other threads are counted", "[memory]") {
  install_cpu_memory_tracking();
  MemoryTracker tracker;
  std::thread worker([] { auto t = torch::empty({1 << 20}, torch::kFloat64); });
  worker.join();
  CHECK(tracker.peak_increase_bytes() == 8 * (1 << 20));
}

TEST_CASE("MemoryTracker refuses devices it cannot measure", "[memory][errors]") {
  if (!torch::cuda::is_available()) {
    CHECK_THROWS_WITH(MemoryTracker(torch::Device(torch::kCUDA, 0)),
                      Catch::Matchers::Contains("cuda"));
  }
  CHECK_THROWS_WITH(MemoryTracker(torch::Device(torch::kMeta)),
                    Catch::Matchers::Contains("not supported"));
}
