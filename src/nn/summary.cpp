#include "sedensenet/nn/summary.hpp"

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <iomanip>
#include <sstream>

#include "sedensenet/nn/efficient.hpp"

namespace sedensenet {

std::string ModelSummary::to_string() const {
  std::ostringstream out;
  auto shape = [](const std::vector<int64_t>& s) {
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
    os << ")";
    return os.str();
  };
  out << std::left << std::setw(16) << "stage" << std::setw(24) << "output shape" << std::right
      << std::setw(14) << "parameters" << std::setw(18) << "MACs" << "\n";
  out << std::string(72, '-') << "\n";
  out << std::left << std::setw(16) << "input" << std::setw(24) << shape(input_shape) << "\n";
  for (const auto& s : stages) {
    out << std::left << std::setw(16) << s.name << std::setw(24) << shape(s.output_shape)
        << std::right << std::setw(14) << s.parameters << std::setw(18) << s.macs << "\n";
  }
  out << std::string(72, '-') << "\n";
  out << "parameters: " << parameters << " (" << trainable_parameters << " trainable)\n";
  out << "forward MACs: " << macs << " (" << std::fixed << std::setprecision(3)
      << static_cast<double>(macs) / 1e9 << " G)\n";
  return out.str();
}

std::ostream& operator<<(std::ostream& os, const ModelSummary& s) {
  return os << s.to_string();
}

namespace {
int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding,
                         int64_t dilation) {
  return (in + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

// MACs of the convolutions and linear layers inside `stage`, whose input is `input_shape`.
// Within a DenseNet stage every convolution sees the stage's input resolution (dense layers and
// transitions convolve before they pool), which is what this assumes.
int64_t stage_macs(const torch::nn::Module& stage, at::IntArrayRef input_shape) {
  const int64_t batch = input_shape[0];
  int64_t macs = 0;
  for (const auto& module : stage.modules(/*include_self=*/true)) {
    if (const auto* conv = dynamic_cast<const torch::nn::Conv2dImpl*>(module.get())) {
      const auto& o = conv->options;
      const auto& padding = detail::explicit_padding(o.padding());
      const int64_t h = conv_output_size(input_shape[2], (*o.kernel_size())[0], (*o.stride())[0],
                                         (*padding)[0], (*o.dilation())[0]);
      const int64_t w = conv_output_size(input_shape[3], (*o.kernel_size())[1], (*o.stride())[1],
                                         (*padding)[1], (*o.dilation())[1]);
      macs += batch * o.out_channels() * h * w * (o.in_channels() / o.groups()) *
              (*o.kernel_size())[0] * (*o.kernel_size())[1];
    } else if (const auto* linear = dynamic_cast<const torch::nn::LinearImpl*>(module.get())) {
      macs += batch * linear->options.in_features() * linear->options.out_features();
    }
  }
  return macs;
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}
}  // namespace

ModelSummary summary(DenseNet& model, std::vector<int64_t> input_shape) {
  if (input_shape.size() == 3) input_shape.insert(input_shape.begin(), 1);
  TORCH_CHECK(input_shape.size() == 4 && input_shape[1] == 3,
              "summary: input_shape must be (N, 3, H, W) or (3, H, W), got ",
              c10::IntArrayRef(input_shape));
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;

  ModelSummary result;
  result.input_shape = input_shape;
  const auto first = model->parameters();
  auto x = torch::zeros(input_shape, first.empty() ? torch::TensorOptions()
                                                   : first.front().options());
  auto& features = *model->features;
  for (size_t i = 0; i < features.size(); ++i) {
    StageSummary stage;
    stage.name = features.name(i);
    const auto& module = *features[i].ptr();
    stage.macs = stage_macs(module, x.sizes());
    stage.parameters = count_parameters(module);
    x = features[i].forward<torch::Tensor>(x);
    stage.output_shape = x.sizes().vec();
    result.stages.push_back(std::move(stage));
  }
  StageSummary head;
  head.name = "head";
  x = torch::adaptive_avg_pool2d(torch::relu(x), {1, 1}).flatten(1);
  head.macs = stage_macs(*model->classifier, x.sizes());
  head.parameters = count_parameters(*model->classifier);
  head.output_shape = model->classifier->forward(x).sizes().vec();
  result.stages.push_back(std::move(head));

  for (const auto& s : result.stages) result.macs += s.macs;
  for (const auto& p : model->parameters()) {
    result.parameters += p.numel();
    if (p.requires_grad()) result.trainable_parameters += p.numel();
  }
  if (was_training) model->train();
  return result;
}

}  // namespace sedensenet
