// See onednn_primitive.hpp. Compiled against the system's oneDNN 2.x only (no LibTorch headers).
#include "onednn_primitive.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <unordered_map>
#include <utility>

#include <oneapi/dnnl/dnnl.hpp>

namespace sedensenet::serve::detail {

namespace {

const dnnl::engine& engine() {
  static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

/// The calling thread's scratchpad, grown as needed and kept until the thread ends. One per
/// thread, not the library's shared one: Debian's oneDNN is built without concurrent execution,
/// so concurrent callers of one primitive would overwrite each other's; and a fresh one per call
/// costs page faults at large batches.
void* thread_scratchpad(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.size < bytes) {
    std::free(buffer.data);
    buffer.data = nullptr;
    buffer.size = 0;
    const size_t rounded = (bytes + 63) / 64 * 64;  // aligned_alloc wants a multiple of 64
    buffer.data = std::aligned_alloc(64, rounded);
    if (buffer.data == nullptr) throw std::bad_alloc();
    buffer.size = rounded;
  }
  return buffer.data;
}

}  // namespace

struct OneDnnConvolution::State {
  dnnl::convolution_forward primitive;
  dnnl::memory::desc src_desc, dst_desc, scratchpad_desc;
  dnnl::memory weights, bias;  // owned by oneDNN, in the primitive's layout
  bool has_bias = false;
  size_t scratchpad_bytes = 0;
};

OneDnnConvolution::OneDnnConvolution(std::unique_ptr<State> state) : state_(std::move(state)) {}
OneDnnConvolution::~OneDnnConvolution() = default;

std::unique_ptr<OneDnnConvolution> OneDnnConvolution::make(const ConvolutionShape& s,
                                                           const float* weights, const float* bias) {
  using dnnl::memory;
  using tag = memory::format_tag;
  const auto f32 = memory::data_type::f32;
  if (s.out_height() <= 0 || s.out_width() <= 0) return nullptr;
  auto state = std::make_unique<State>();
  try {
    state->src_desc = memory::desc({s.n, s.channels, s.height, s.width}, f32, tag::nhwc);
    state->dst_desc = memory::desc({s.n, s.out_channels, s.out_height(), s.out_width()}, f32, tag::nhwc);
    const memory::dims weight_dims{s.out_channels, s.channels, s.kernel_h, s.kernel_w};
    state->has_bias = bias != nullptr;
    const memory::desc bias_desc = state->has_bias ? memory::desc({s.out_channels}, f32, tag::a)
                                                   : memory::desc();
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (s.relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    const memory::dims stride{s.stride, s.stride}, padding{s.padding, s.padding};
    const dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, state->src_desc,
        memory::desc(weight_dims, f32, tag::any), bias_desc, state->dst_desc, stride, padding, padding);
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, engine());
    state->primitive = dnnl::convolution_forward(pd);
    state->scratchpad_desc = pd.scratchpad_desc();
    state->scratchpad_bytes = state->scratchpad_desc.get_size();
    // The weights, once, in the primitive's layout.
    state->weights = memory(pd.weights_desc(), engine());
    memory given(memory::desc(weight_dims, f32, tag::ohwi), engine(), const_cast<float*>(weights));
    dnnl::stream stream(engine());
    dnnl::reorder(given, state->weights).execute(stream, given, state->weights);
    stream.wait();
    if (state->has_bias) {
      state->bias = memory(bias_desc, engine());
      std::memcpy(state->bias.get_data_handle(), bias, static_cast<size_t>(s.out_channels) * sizeof(float));
    }
  } catch (const dnnl::error&) {
    return nullptr;  // oneDNN refused the shape: LibTorch's convolution runs it
  }
  return std::unique_ptr<OneDnnConvolution>(new OneDnnConvolution(std::move(state)));
}

void OneDnnConvolution::run(const float* src, float* dst) const {
  const State& s = *state_;
  const auto& eng = engine();
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, dnnl::memory(s.src_desc, eng, const_cast<float*>(src))},
      {DNNL_ARG_WEIGHTS, s.weights},
      {DNNL_ARG_DST, dnnl::memory(s.dst_desc, eng, dst)}};
  if (s.has_bias) args.emplace(DNNL_ARG_BIAS, s.bias);
  if (s.scratchpad_bytes > 0) {
    args.emplace(DNNL_ARG_SCRATCHPAD,
                 dnnl::memory(s.scratchpad_desc, eng, thread_scratchpad(s.scratchpad_bytes)));
  }
  thread_local dnnl::stream stream(eng);
  s.primitive.execute(stream, args);
  stream.wait();
}

}  // namespace sedensenet::serve::detail
