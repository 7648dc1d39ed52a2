#pragma once
/// \file
/// MixUp and CutMix: a batch transform that blends every image with another image of its batch.

#include <torch/types.h>

#include <cstdint>

namespace sedensenet::data {

/// A mixed batch: the images, the partner of each sample (`permutation`) and the weight of the
/// original labels. `lambda == 1` means the batch was left as it was (and `permutation` is
/// undefined); otherwise the loss is `lambda * loss(y) + (1 - lambda) * loss(y[permutation])`.
struct MixedBatch {
  torch::Tensor images;
  torch::Tensor permutation;
  double lambda = 1.0;
};

/// MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019), per batch.
///
/// With both alphas > 0, each batch takes one of the two with probability 1/2. The mixing weight
/// is drawn from Beta(alpha, alpha); CutMix pastes a box of area (1 - lambda) from the partner
/// image and then sets lambda to the exact share of pixels kept. Every draw comes from a LibTorch
/// generator seeded from (seed, epoch, batch), so a batch is mixed the same way whatever came
/// before it: a run resumed in the middle of an epoch mixes as an uninterrupted one.
class BatchMix {
 public:
  /// An alpha of 0 turns that method off; both 0 makes `operator()` the identity.
  BatchMix(double mixup_alpha, double cutmix_alpha, uint64_t seed);
  /// Whether any mixing is on.
  bool enabled() const { return mixup_alpha_ > 0 || cutmix_alpha_ > 0; }
  /// Mixes `images` (N, C, H, W), batch `batch` of epoch `epoch`. Batches of fewer than 2 images
  /// are returned unchanged.
  MixedBatch operator()(const torch::Tensor& images, int64_t epoch, int64_t batch) const;

 private:
  double mixup_alpha_, cutmix_alpha_;
  uint64_t seed_;
};

}  // namespace sedensenet::data
