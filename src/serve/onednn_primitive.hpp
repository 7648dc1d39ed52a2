#pragma once
// One float32 convolution as a oneDNN primitive of our own: built once for one input shape, with
// the weights reordered into the layout the primitive chose and the ReLU fused, then only executed.
//
// This file and onednn_primitive.cpp include no LibTorch header, on purpose: they compile against
// the system's oneDNN 2.x (Debian's libdnnl-dev) on both LibTorch builds. PyPI's LibTorch 2.x ships
// oneDNN 3.x headers on its include path but links that oneDNN statically with hidden symbols, so
// the only oneDNN our code can call there is the system's, and its headers must not meet LibTorch's
// (src/CMakeLists.txt compiles this file in a target of its own).
#include <cstddef>
#include <cstdint>
#include <memory>

namespace sedensenet::serve::detail {

/// The shape of one convolution call: input (n, channels, height, width), nhwc in memory; weights
/// (out_channels, channels, kernel_h, kernel_w), ohwi in memory; square stride and padding.
struct ConvolutionShape {
  int64_t n = 0, channels = 0, height = 0, width = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
  int64_t stride = 1, padding = 0;
  bool relu = false;  ///< ReLU fused after the convolution
  int64_t out_height() const { return (height + 2 * padding - kernel_h) / stride + 1; }
  int64_t out_width() const { return (width + 2 * padding - kernel_w) / stride + 1; }
};

/// A convolution primitive with its own copy of the weights (and bias) in oneDNN's layout. Safe to
/// run from several threads at once: each calling thread has its own scratchpad.
class OneDnnConvolution {
 public:
  /// The primitive for `shape`, with `weights` (ohwi) and `bias` (out_channels floats, or null)
  /// copied in; null when oneDNN refuses the shape (the caller uses LibTorch's convolution).
  static std::unique_ptr<OneDnnConvolution> make(const ConvolutionShape& shape, const float* weights,
                                                 const float* bias);
  ~OneDnnConvolution();
  OneDnnConvolution(const OneDnnConvolution&) = delete;
  OneDnnConvolution& operator=(const OneDnnConvolution&) = delete;

  /// dst (n, out_channels, out_height, out_width, nhwc) = conv(src (nhwc)), ReLU when the shape
  /// says so. Blocks until done.
  void run(const float* src, float* dst) const;

 private:
  struct State;
  explicit OneDnnConvolution(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace sedensenet::serve::detail
