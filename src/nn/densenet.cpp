#include "sedensenet/nn/densenet.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace sedensenet {

double estimated_parameters(const DenseNetOptions& o) {
  const double k = static_cast<double>(o.growth_rate());
  const double bottleneck = static_cast<double>(o.bn_size()) * k;
  double channels = static_cast<double>(o.num_init_features());
  double total = 3.0 * channels * (o.small_inputs() ? 9.0 : 49.0) + 2.0 * channels;
  for (size_t b = 0; b < o.block_config().size(); ++b) {
    for (int64_t layer = 0; layer < o.block_config()[b]; ++layer) {
      total += 2.0 * channels + channels * bottleneck + 2.0 * bottleneck + bottleneck * k * 9.0;
      if (o.se_reduction() > 0) total += 2.0 * k * std::max(1.0, k / static_cast<double>(o.se_reduction()));
      channels += k;
      if (total > 1e30) return total;
    }
    if (b + 1 < o.block_config().size()) {
      const double out = std::floor(channels * o.compression());
      total += 2.0 * channels + channels * out;
      channels = out;
    }
  }
  return total + 2.0 * channels + channels * static_cast<double>(o.num_classes());
}

void check_model_size(const DenseNetOptions& o) {
  double layers = 0;
  for (auto n : o.block_config()) layers += static_cast<double>(n);
  TORCH_CHECK(layers <= static_cast<double>(kMaxDenseLayers), "DenseNetOptions: ", layers,
              " dense layers in all, more than the ", kMaxDenseLayers, " this library builds "
              "(is the depth a typo?)");
  const double parameters = estimated_parameters(o);
  TORCH_CHECK(parameters <= kMaxParameters, "DenseNetOptions: the model would have about ",
              parameters, " parameters, more than the ", kMaxParameters, " this library builds "
              "(growth_rate ", o.growth_rate(), ", num_init_features ", o.num_init_features(),
              ", bn_size ", o.bn_size(), ", num_classes ", o.num_classes(), ")");
}

namespace detail {
void check_densenet_options(const DenseNetOptions& o) {
  TORCH_CHECK(o.growth_rate() >= 1, "DenseNetOptions: growth_rate must be >= 1, got ",
              o.growth_rate());
  TORCH_CHECK(!o.block_config().empty(),
              "DenseNetOptions: block_config must list at least one block, got an empty list");
  for (size_t i = 0; i < o.block_config().size(); ++i) {
    TORCH_CHECK(o.block_config()[i] >= 1, "DenseNetOptions: block_config[", i,
                "] (layers in dense block ", i + 1, ") must be >= 1, got ", o.block_config()[i]);
  }
  TORCH_CHECK(o.num_init_features() >= 1, "DenseNetOptions: num_init_features must be >= 1, got ",
              o.num_init_features());
  TORCH_CHECK(o.compression() > 0.0 && o.compression() <= 1.0,
              "DenseNetOptions: compression must be in (0, 1], got ", o.compression());
  TORCH_CHECK(o.bn_size() >= 1, "DenseNetOptions: bn_size must be >= 1, got ", o.bn_size());
  TORCH_CHECK(o.drop_rate() >= 0.0 && o.drop_rate() < 1.0,
              "DenseNetOptions: drop_rate must be in [0, 1), got ", o.drop_rate());
  TORCH_CHECK(o.num_classes() >= 1, "DenseNetOptions: num_classes must be >= 1, got ",
              o.num_classes());
  TORCH_CHECK(o.se_reduction() >= 0,
              "DenseNetOptions: se_reduction must be >= 0 (0 disables SE), got ", o.se_reduction());
  TORCH_CHECK(o.stem_stride() == 1 || o.stem_stride() == 2,
              "DenseNetOptions: stem_stride must be 1 or 2, got ", o.stem_stride());
  TORCH_CHECK(o.small_inputs() || o.stem_stride() == 1,
              "DenseNetOptions: stem_stride ", o.stem_stride(), " needs the small-input stem "
              "(small_inputs true); the ImageNet stem always has stride 2 and a max-pool");
  TORCH_CHECK(o.se_min_hidden() >= 1, "DenseNetOptions: se_min_hidden must be >= 1, got ",
              o.se_min_hidden());
  check_model_size(o);
}

BlockBuilder default_block_builder(const DenseNetOptions& o) {
  if (o.se_reduction() == 0) return block_builder<DenseLayer<NoAttention>>();
  if (o.se_gate() == SEGate::scaled_sigmoid) {
    return block_builder<DenseLayer<SEBlock<ScaledSigmoid>>>();
  }
  return block_builder<DenseLayer<SEBlock<Sigmoid>>>();
}
}  // namespace detail

DenseNetImpl::DenseNetImpl(DenseNetOptions options)
    : DenseNetImpl(options, detail::default_block_builder(options), "default") {}

DenseNetImpl::DenseNetImpl(DenseNetOptions options, BlockBuilder builder, std::string blocks)
    : options(std::move(options)), builder_(std::move(builder)), blocks_(std::move(blocks)) {
  TORCH_CHECK(!blocks_.empty(), "DenseNet: the name of the dense blocks is empty");
  reset();
}

void DenseNetImpl::reset() {
  detail::check_densenet_options(options);
  TORCH_CHECK(builder_, "DenseNet: the block builder is empty");
  const auto& o = options;
  constexpr int64_t kInputChannels = 3;

  features = register_module("features", NamedSequential());
  // Stem. CIFAR style keeps the resolution (or halves it, stem_stride 2); ImageNet style divides
  // it by 4.
  const auto stem = o.small_inputs()
                        ? torch::nn::Conv2dOptions(kInputChannels, o.num_init_features(), 3)
                              .stride(o.stem_stride())
                              .padding(1)
                              .bias(false)
                        : torch::nn::Conv2dOptions(kInputChannels, o.num_init_features(), 7)
                              .stride(2)
                              .padding(3)
                              .bias(false);
  torch::nn::Conv2d conv0(stem);
  init::reference_conv_(*conv0);
  features->push_back("conv0", conv0);
  if (!o.small_inputs()) {
    features->push_back("norm0", torch::nn::BatchNorm2d(o.num_init_features()));
    features->push_back("relu0", torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
    features->push_back("pool0", torch::nn::MaxPool2d(
                                     torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  }

  AttentionSettings attention;
  attention.reduction = o.se_reduction();
  attention.min_hidden = o.se_min_hidden();
  attention.zero_init_last = o.se_gate() == SEGate::scaled_sigmoid;

  int64_t channels = o.num_init_features();
  const auto& blocks = o.block_config();
  for (size_t i = 0; i < blocks.size(); ++i) {
    DenseBlockOptions block_options(blocks[i], DenseLayerOptions(channels, o.growth_rate())
                                                   .bn_size(o.bn_size())
                                                   .drop_rate(o.drop_rate())
                                                   .memory(o.memory())
                                                   .attention(attention));
    features->push_back("denseblock" + std::to_string(i + 1), builder_(block_options));
    channels = block_options.out_channels();
    if (i + 1 != blocks.size()) {
      const auto compressed =
          static_cast<int64_t>(std::floor(static_cast<double>(channels) * o.compression()));
      TORCH_CHECK(compressed >= 1, "DenseNetOptions: compression ", o.compression(),
                  " leaves transition", i + 1, " with no channels (", channels, " in); use a "
                  "larger compression");
      features->push_back("transition" + std::to_string(i + 1),
                          Transition(TransitionOptions(channels, compressed).memory(o.memory())));
      channels = compressed;
    }
  }
  features->push_back("norm5", torch::nn::BatchNorm2d(channels));
  num_features_ = channels;

  classifier = register_module("classifier", torch::nn::Linear(channels, o.num_classes()));
  torch::NoGradGuard no_grad;
  classifier->bias.zero_();
  // New weights (reset, clone) take the layout the network runs in.
  if (memory_format_ != torch::MemoryFormat::Contiguous) set_memory_format(memory_format_);
}

torch::Tensor DenseNetImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, "DenseNet expects images (N, 3, H, W), got ",
              x.sizes());
  auto out = features->forward(memory_format_ == torch::MemoryFormat::Contiguous
                                   ? x
                                   : x.contiguous(memory_format_));
  out = torch::relu_(out);
  out = torch::adaptive_avg_pool2d(out, {1, 1}).flatten(1);
  return classifier->forward(out);
}

void DenseNetImpl::set_memory_format(torch::MemoryFormat format) {
  TORCH_CHECK(format == torch::MemoryFormat::Contiguous || format == torch::MemoryFormat::ChannelsLast,
              "DenseNet::set_memory_format: Contiguous or ChannelsLast, got ", format);
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(format));
  }
  memory_format_ = format;
}

void DenseNetImpl::set_memory(MemoryMode mode) {
  options.memory(mode);
  for (const auto& module : features->children()) {
    if (auto* configurable = dynamic_cast<MemoryConfigurable*>(module.get())) {
      configurable->set_memory(mode);
    }
  }
}

void DenseNetImpl::pretty_print(std::ostream& stream) const {
  stream << "sedensenet::DenseNet(growth_rate=" << options.growth_rate() << ", blocks=[";
  for (size_t i = 0; i < options.block_config().size(); ++i) {
    stream << (i ? ", " : "") << options.block_config()[i];
  }
  stream << "], num_classes=" << options.num_classes() << ", se_reduction="
         << options.se_reduction() << ", memory=" << options.memory() << ")";
}

}  // namespace sedensenet
