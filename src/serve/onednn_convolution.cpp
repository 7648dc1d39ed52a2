// See onednn_convolution.hpp. Compiled with SEDENSENET_WITH_ONEDNN when the system's oneDNN 2.x
// can run beside the LibTorch in use (cmake/SEDenseNetDependencies.cmake); otherwise only the
// stand-ins at the end are built. The primitives themselves are in onednn_primitive.cpp, which
// sees oneDNN's headers and not LibTorch's; this file sees LibTorch's and not oneDNN's.
#include "onednn_convolution.hpp"

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#if defined(SEDENSENET_WITH_ONEDNN)
#include "onednn_primitive.hpp"
#endif

namespace sedensenet::serve {

#if defined(SEDENSENET_WITH_ONEDNN)

class ConvolutionPlans {
 public:
  torch::Tensor run(const Convolution& c, const torch::Tensor& x, bool relu) {
    const detail::ConvolutionShape shape = shape_of(c, x, relu);
    if (shape.out_height() <= 0 || shape.out_width() <= 0) return {};
    const std::shared_ptr<const Plan> plan = find(c, shape);  // alive while it runs
    if (plan == nullptr) return {};
    auto y = torch::empty({shape.n, shape.out_channels, shape.out_height(), shape.out_width()},
                          x.options().memory_format(torch::MemoryFormat::ChannelsLast));
    plan->convolution->run(x.data_ptr<float>(), y.data_ptr<float>());
    return y;
  }

 private:
  // Input (N, C, H, W), ReLU, and the storage and version of the weight and the bias: weights
  // changed in place or replaced get a new plan. A plan holds the tensors it was made from, so
  // their storage cannot be freed and its address reused by other weights while the key exists.
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, const void*, int64_t, const void*,
                         int64_t>;

  struct Plan {
    std::unique_ptr<detail::OneDnnConvolution> convolution;  // null: oneDNN refused the shape
    torch::Tensor source_weight, source_bias;                 // what the key names
  };

  static detail::ConvolutionShape shape_of(const Convolution& c, const torch::Tensor& x, bool relu) {
    detail::ConvolutionShape s;
    s.n = x.size(0);
    s.channels = x.size(1);
    s.height = x.size(2);
    s.width = x.size(3);
    s.out_channels = c.weight.size(0);
    s.kernel_h = c.weight.size(2);
    s.kernel_w = c.weight.size(3);
    s.stride = c.stride;
    s.padding = c.padding;
    s.relu = relu;
    return s;
  }

  // Plans are shared: another thread may drop one from the map while this one runs it.
  std::shared_ptr<const Plan> find(const Convolution& c, const detail::ConvolutionShape& shape) {
    const bool bias = c.bias.defined();
    const Key key{shape.n, shape.channels, shape.height, shape.width, shape.relu, c.weight.data_ptr(),
                  static_cast<int64_t>(c.weight._version()), bias ? c.bias.data_ptr() : nullptr,
                  bias ? static_cast<int64_t>(c.bias._version()) : 0};
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      // Plans for other weights are stale (they were changed or replaced): drop them, so that a
      // graph whose weights keep changing does not keep a copy of every version.
      for (auto stale = plans_.begin(); stale != plans_.end();) {
        const auto& k = stale->first;
        const bool same_weights = std::get<5>(k) == std::get<5>(key) && std::get<6>(k) == std::get<6>(key) &&
                                  std::get<7>(k) == std::get<7>(key) && std::get<8>(k) == std::get<8>(key);
        stale = same_weights ? std::next(stale) : plans_.erase(stale);
      }
      // Many input shapes (a caller passing images of every size to forward) would otherwise
      // keep a plan each without bound; Classifier's fixed input size needs a few.
      if (plans_.size() >= kMaxPlans) plans_.clear();
      it = plans_.emplace(key, make(c, shape)).first;
    }
    return it->second->convolution != nullptr ? it->second : nullptr;
  }

  static std::shared_ptr<const Plan> make(const Convolution& c, const detail::ConvolutionShape& shape) {
    auto plan = std::make_shared<Plan>();
    plan->source_weight = c.weight;
    plan->source_bias = c.bias;
    const auto weights = c.weight.contiguous(torch::MemoryFormat::ChannelsLast);  // ohwi
    const auto bias = c.bias.defined() ? c.bias.to(torch::kFloat32).contiguous() : torch::Tensor();
    plan->convolution = detail::OneDnnConvolution::make(
        shape, weights.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr);
    return plan;
  }

  static constexpr size_t kMaxPlans = 64;
  std::mutex mutex_;
  std::map<Key, std::shared_ptr<const Plan>> plans_;
};

namespace detail {

std::shared_ptr<ConvolutionPlans> make_convolution_plans() {
  return std::make_shared<ConvolutionPlans>();
}

torch::Tensor run_convolution(ConvolutionPlans& plans, const Convolution& c, const torch::Tensor& x,
                              bool relu) {
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || x.dim() != 4 || x.numel() == 0 ||
      !x.is_contiguous(torch::MemoryFormat::ChannelsLast) || !c.weight.device().is_cpu() ||
      c.weight.scalar_type() != torch::kFloat32 || c.weight.size(1) != x.size(1)) {
    return {};
  }
  return plans.run(c, x, relu);
}

}  // namespace detail

#else  // no direct oneDNN path in this build

class ConvolutionPlans {};

namespace detail {

std::shared_ptr<ConvolutionPlans> make_convolution_plans() { return nullptr; }

torch::Tensor run_convolution(ConvolutionPlans&, const Convolution&, const torch::Tensor&, bool) {
  return {};
}

}  // namespace detail

#endif

}  // namespace sedensenet::serve
