#pragma once
// The arithmetic every fused batch norm + ReLU kernel shares (batch_norm_relu.cpp for NCHW maps,
// batch_norm_relu_rows.cpp for channels-last ones): the per-channel scale and shift, and the
// ReLU's pre-activation. Both files compile with -ffp-contract=off (src/CMakeLists.txt), so the
// pre-activation rounds the same in the forward, the recomputation and the backward of either
// layout (see batch_norm_relu.cpp).
#include <cstdint>
#include <utility>

namespace sedensenet::detail {

/// The per-channel scale and shift of the normalisation, computed the same way in forward and
/// backward (the backward recomputes the ReLU mask from them).
inline std::pair<float, float> affine_of(const float* w, const float* b, int64_t ch, float mean,
                                         float invstd) {
  const double wv = w[ch];
  return {static_cast<float>(wv * invstd), static_cast<float>(b[ch] - mean * wv * invstd)};
}

/// The pre-activation of the ReLU; the one expression every kernel uses for it.
inline __attribute__((always_inline)) float preactivation(float x, float scale, float shift) {
  return x * scale + shift;
}

}  // namespace sedensenet::detail
