// See onednn_convolution.hpp. Compiled with SEDENSENET_WITH_ONEDNN when the LibTorch in use links
// the system's oneDNN 2.x (cmake/SEDenseNetDependencies.cmake); otherwise only the stand-ins at
// the end are built.
#include "onednn_convolution.hpp"

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

#if defined(SEDENSENET_WITH_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace sedensenet::serve {

#if defined(SEDENSENET_WITH_ONEDNN)

class ConvolutionPlans {
 public:
  torch::Tensor run(const Convolution& c, const torch::Tensor& x, bool relu) {
    const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
    const int64_t out_h = (h + 2 * c.padding - c.weight.size(2)) / c.stride + 1;
    const int64_t out_w = (w + 2 * c.padding - c.weight.size(3)) / c.stride + 1;
    if (out_h <= 0 || out_w <= 0) return {};
    const std::shared_ptr<const Plan> plan = find(c, x, relu);  // alive while it runs
    if (plan == nullptr) return {};
    auto y = torch::empty({n, c.weight.size(0), out_h, out_w},
                          x.options().memory_format(torch::MemoryFormat::ChannelsLast));
    const auto& eng = engine();
    dnnl::memory src(plan->src_desc, eng, x.data_ptr());
    dnnl::memory dst(plan->dst_desc, eng, y.data_ptr());
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, plan->weights}, {DNNL_ARG_DST, dst}};
    if (plan->has_bias) args.emplace(DNNL_ARG_BIAS, plan->bias);
    // A scratchpad per calling thread, grown as needed and reused: the library's shared one would
    // make concurrent callers of a primitive overwrite each other's (Debian's oneDNN is built
    // without concurrent execution), and a fresh one per call costs page faults at large batches.
    if (plan->scratchpad_bytes > 0) {
      thread_local torch::Tensor scratch;  // kept until the thread ends: the largest one needed
      if (!scratch.defined() || static_cast<size_t>(scratch.numel()) < plan->scratchpad_bytes) {
        scratch = torch::empty({static_cast<int64_t>(plan->scratchpad_bytes)}, torch::kUInt8);
      }
      args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(plan->scratchpad_desc, eng, scratch.data_ptr()));
    }
    thread_local dnnl::stream stream(eng);
    plan->primitive.execute(stream, args);
    stream.wait();
    return y;
  }

 private:
  // Input (N, C, H, W), ReLU, and the storage and version of the weight and the bias: weights
  // changed in place or replaced get a new plan. A plan holds the tensors it was made from, so
  // their storage cannot be freed and its address reused by other weights while the key exists.
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, const void*, int64_t, const void*,
                         int64_t>;

  struct Plan {
    bool usable = false;
    dnnl::convolution_forward primitive;
    dnnl::memory::desc src_desc, dst_desc;
    dnnl::memory weights, bias;
    torch::Tensor weights_storage, bias_storage;  // what `weights` and `bias` point into
    torch::Tensor source_weight, source_bias;     // what the key names
    bool has_bias = false;
    dnnl::memory::desc scratchpad_desc;
    size_t scratchpad_bytes = 0;
  };

  static const dnnl::engine& engine() {
    static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    return eng;
  }

  // Plans are shared: another thread may drop one from the map while this one runs it.
  std::shared_ptr<const Plan> find(const Convolution& c, const torch::Tensor& x, bool relu) {
    const bool bias = c.bias.defined();
    const Key key{x.size(0), x.size(1), x.size(2), x.size(3), relu, c.weight.data_ptr(),
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
      it = plans_.emplace(key, std::make_shared<const Plan>(make(c, x, relu))).first;
    }
    return it->second->usable ? it->second : nullptr;
  }

  static Plan make(const Convolution& c, const torch::Tensor& x, bool relu) {
    using dnnl::memory;
    using tag = memory::format_tag;
    Plan plan;
    plan.source_weight = c.weight;
    plan.source_bias = c.bias;
    try {
      const auto f32 = memory::data_type::f32;
      const int64_t out = c.weight.size(0), kh = c.weight.size(2), kw = c.weight.size(3);
      const int64_t out_h = (x.size(2) + 2 * c.padding - kh) / c.stride + 1;
      const int64_t out_w = (x.size(3) + 2 * c.padding - kw) / c.stride + 1;
      plan.src_desc = memory::desc({x.size(0), x.size(1), x.size(2), x.size(3)}, f32, tag::nhwc);
      plan.dst_desc = memory::desc({x.size(0), out, out_h, out_w}, f32, tag::nhwc);
      const memory::desc given_weights({out, c.weight.size(1), kh, kw}, f32, tag::ohwi);
      const memory::desc any_weights({out, c.weight.size(1), kh, kw}, f32, tag::any);
      plan.has_bias = c.bias.defined();
      const memory::desc bias_desc = plan.has_bias ? memory::desc({out}, f32, tag::a) : memory::desc();
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (relu) {
        dnnl::post_ops ops;
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(ops);
      }
      const memory::dims stride{c.stride, c.stride}, padding{c.padding, c.padding};
      const dnnl::convolution_forward::desc desc(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, plan.src_desc,
          any_weights, bias_desc, plan.dst_desc, stride, padding, padding);
      const dnnl::convolution_forward::primitive_desc pd(desc, attr, engine());
      plan.primitive = dnnl::convolution_forward(pd);
      plan.scratchpad_desc = pd.scratchpad_desc();
      plan.scratchpad_bytes = plan.scratchpad_desc.get_size();
      // The weights, once, in the primitive's layout (owned by a tensor of the right size).
      auto source_weights = c.weight.contiguous(torch::MemoryFormat::ChannelsLast);
      plan.weights_storage = torch::empty({static_cast<int64_t>(pd.weights_desc().get_size() / sizeof(float)) + 1},
                                          torch::kFloat32);
      plan.weights = memory(pd.weights_desc(), engine(), plan.weights_storage.data_ptr());
      memory given(given_weights, engine(), source_weights.data_ptr());
      dnnl::stream stream(engine());
      dnnl::reorder(given, plan.weights).execute(stream, given, plan.weights);
      stream.wait();
      if (plan.has_bias) {
        plan.bias_storage = c.bias.to(torch::kFloat32).contiguous().clone();
        plan.bias = memory(bias_desc, engine(), plan.bias_storage.data_ptr());
      }
      plan.usable = true;
    } catch (const dnnl::error&) {
      plan.usable = false;  // LibTorch's convolution runs this shape instead
    }
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
