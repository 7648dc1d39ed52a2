#include "sedensenet/nn/transition.hpp"

#include <utility>

namespace sedensenet {

TransitionImpl::TransitionImpl(TransitionOptions options) : options(std::move(options)) {
  reset();
}

void TransitionImpl::reset() {
  TORCH_CHECK(options.in_channels() >= 1, "TransitionOptions: in_channels must be >= 1, got ",
              options.in_channels());
  TORCH_CHECK(options.out_channels() >= 1, "TransitionOptions: out_channels must be >= 1, got ",
              options.out_channels());
  norm = register_module("norm", torch::nn::BatchNorm2d(options.in_channels()));
  conv = register_module(
      "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(),
                                                         options.out_channels(), 1)
                                    .stride(1)
                                    .bias(false)));
  init::reference_conv_(*conv);
}

bool TransitionImpl::uses_efficient_path(const torch::Tensor& x) const {
  return options.memory() != MemoryMode::standard && detail::records_for_backward(*this, x);
}

torch::Tensor TransitionImpl::forward(const torch::Tensor& x) {
  // The efficient path is the dense layer's first recomputing function with one input.
  auto compressed = uses_efficient_path(x)
                        ? detail::efficient_bottleneck_input(
                              {x}, norm->weight, norm->bias, conv->weight,
                              detail::NormConvModules{norm.get(), conv.get()})
                        : conv->forward(batch_norm_relu(x, *norm));
  return torch::avg_pool2d(compressed, kPoolSize, kPoolSize);
}

void TransitionImpl::pretty_print(std::ostream& stream) const {
  stream << "sedensenet::Transition(in_channels=" << options.in_channels()
         << ", out_channels=" << options.out_channels() << ", memory=" << options.memory() << ")";
}

}  // namespace sedensenet
