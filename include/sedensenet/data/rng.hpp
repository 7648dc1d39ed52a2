#pragma once
/// \file
/// A small, seedable random-number generator for data augmentation and shuffling.
///
/// Every sample of every epoch gets its own generator, seeded from (seed, epoch, sample index), so
/// augmentations do not depend on which worker thread handles which sample, or in what order:
/// the same seed gives the same batches whatever the number of workers. The algorithms are fixed
/// here (not left to the standard library), so results are the same on every platform.

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace sedensenet::data {

/// SplitMix64: a fast, well-mixed 64-bit generator (Steele, Lea and Flood, 2014).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  /// A generator for one item of a stream, derived from a seed and up to two indices.
  static Rng for_item(uint64_t seed, uint64_t a, uint64_t b = 0) {
    Rng mixer(seed ^ 0x9E3779B97F4A7C15ULL);
    uint64_t s = mixer.next() ^ (a * 0xD1B54A32D192ED03ULL);
    Rng second(s);
    s = second.next() ^ (b * 0xAEF17502108EF2D9ULL);
    return Rng(Rng(s).next());
  }

  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform in [low, high).
  double uniform(double low, double high) { return low + (high - low) * uniform(); }
  /// Uniform integer in [low, high) (high > low), without modulo bias.
  int64_t randint(int64_t low, int64_t high) {
    const uint64_t range = static_cast<uint64_t>(high - low);
    const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t x;
    do {
      x = next();
    } while (x >= limit);
    return low + static_cast<int64_t>(x % range);
  }
  /// True with probability p.
  bool bernoulli(double p) { return uniform() < p; }

  /// A uniformly random permutation of 0..n-1 (Fisher-Yates).
  std::vector<int64_t> permutation(int64_t n) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = n - 1; i > 0; --i) {
      const int64_t j = randint(0, i + 1);
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
    return order;
  }

 private:
  uint64_t state_;
};

}  // namespace sedensenet::data
