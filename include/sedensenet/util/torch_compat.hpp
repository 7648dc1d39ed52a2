#pragma once
/// \file
/// What differs between the LibTorch versions SEDenseNet supports (1.13 and 2.x), in one place:
/// the version test, and the autocast switches, which 2.4 made per device type.

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

/// True when the LibTorch being compiled against is `major.minor` or later.
#define SEDENSENET_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace sedensenet::compat {

/// Whether autocast is on for `device` (kCPU or kCUDA).
inline bool autocast_enabled(c10::DeviceType device) {
#if SEDENSENET_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

/// Turns autocast on or off for `device` (kCPU or kCUDA).
inline void set_autocast_enabled(c10::DeviceType device, bool enabled) {
#if SEDENSENET_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

/// The type autocast casts to on `device` (kCPU or kCUDA).
inline at::ScalarType autocast_dtype(c10::DeviceType device) {
#if SEDENSENET_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                         : at::autocast::get_autocast_cpu_dtype();
#endif
}

/// Sets the type autocast casts to on `device` (kCPU or kCUDA).
inline void set_autocast_dtype(c10::DeviceType device, at::ScalarType dtype) {
#if SEDENSENET_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

/// Autocast to `dtype` on `device` for the guard's lifetime; the previous state comes back after,
/// and autocast's cast cache is cleared when it was turned on here.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, at::ScalarType dtype, bool enabled = true)
      : device_(device), was_enabled_(autocast_enabled(device)), was_dtype_(autocast_dtype(device)) {
    set_autocast_dtype(device, dtype);
    set_autocast_enabled(device, enabled);
  }
  ~AutocastGuard() {
    set_autocast_enabled(device_, was_enabled_);
    set_autocast_dtype(device_, was_dtype_);
    if (!was_enabled_) at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
};

}  // namespace sedensenet::compat
