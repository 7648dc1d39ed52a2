// TorchScript export without Python: the module's forward is generated as TorchScript source from
// the inference graph, compiled by LibTorch (Module::define), and saved with the graph's tensors
// as buffers.
#include <torch/csrc/jit/api/module.h>

#include <sstream>
#include <string>

#include "sedensenet/io/files.hpp"
#include "sedensenet/serve/export.hpp"

namespace sedensenet::serve {
namespace {

/// A graph tensor's name as a TorchScript attribute: "blocks.0.layers.3.conv1.weight" ->
/// "blocks_0_layers_3_conv1_weight".
std::string attribute(std::string name) {
  for (auto& c : name) {
    if (c == '.') c = '_';
  }
  return name;
}

/// Helpers the generated forward calls. Channel vectors are stored as (1, C, 1, 1).
constexpr const char* kHelpers = R"TS(
def norm_relu(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return torch.relu(torch.addcmul(shift, x, scale))

def squeeze_excite(self, x: Tensor, fc1: Tensor, fc2: Tensor, gain: float) -> Tensor:
    s = x.mean([2, 3])
    g = torch.sigmoid(torch.matmul(torch.relu(torch.matmul(s, fc1.t())), fc2.t())) * gain
    return x * g.unsqueeze(2).unsqueeze(3)
)TS";

class SourceWriter {
 public:
  explicit SourceWriter(const InferenceGraph& g) : g_(g) {}

  std::string forward() {
    out_ << "def forward(self, images: Tensor) -> Tensor:\n";
    line("x = " + conv("stem", g_.stem, "images"));
    if (g_.imagenet_stem) line("x = torch.max_pool2d(torch.relu(x), [3, 3], [2, 2], [1, 1])");
    for (size_t b = 0; b < g_.blocks.size(); ++b) {
      const auto& block = g_.blocks[b];
      const auto in = std::to_string(block.in_channels);
      const auto k = std::to_string(block.growth_rate);
      line("out = torch.empty([x.size(0), " + std::to_string(block.out_channels()) +
           ", x.size(2), x.size(3)], dtype=x.dtype, device=x.device)");
      line("out.narrow(1, 0, " + in + ").copy_(x)");
      int64_t channels = block.in_channels;
      for (size_t l = 0; l < block.layers.size(); ++l) {
        const auto& layer = block.layers[l];
        const std::string p = "blocks." + std::to_string(b) + ".layers." + std::to_string(l);
        line("y = " + norm(p + ".norm1", "out.narrow(1, 0, " + std::to_string(channels) + ")"));
        line("y = torch.relu(" + conv(p + ".conv1", layer.conv1, "y") + ")");
        line("y = " + conv(p + ".conv2", layer.conv2, "y"));
        if (layer.has_se) {
          const char* gain = layer.se.gate == SEGate::scaled_sigmoid ? "2.0" : "1.0";
          line("y = self.squeeze_excite(y, self." + attribute(p + ".se.fc1") + ", self." +
               attribute(p + ".se.fc2") + ", " + gain + ")");
        }
        line("out.narrow(1, " + std::to_string(channels) + ", " + k + ").copy_(y)");
        channels += block.growth_rate;
      }
      line("x = out");
      if (b < g_.transitions.size()) {
        const std::string p = "transitions." + std::to_string(b);
        line("x = torch.avg_pool2d(" + norm(p + ".norm", "x") + ", [2, 2], [2, 2])");
        line("x = " + conv(p + ".conv", g_.transitions[b].conv, "x"));
      }
    }
    line("x = " + norm("norm5", "x") + ".mean([2, 3])");
    line("return torch.linear(x, self.classifier_weight, self.classifier_bias)");
    return out_.str();
  }

 private:
  void line(const std::string& text) { out_ << "    " << text << "\n"; }

  static std::string conv(const std::string& name, const Convolution& c, const std::string& x) {
    const auto s = std::to_string(c.stride);
    const auto p = std::to_string(c.padding);
    const std::string bias = c.bias.defined() ? "self." + attribute(name + ".bias") : "None";
    return "torch.conv2d(" + x + ", self." + attribute(name + ".weight") + ", " + bias + ", [" +
           s + ", " + s + "], [" + p + ", " + p + "])";
  }

  static std::string norm(const std::string& name, const std::string& x) {
    return "self.norm_relu(" + x + ", self." + attribute(name + ".scale") + ", self." +
           attribute(name + ".shift") + ")";
  }

  const InferenceGraph& g_;
  std::ostringstream out_;
};

}  // namespace

void export_torchscript(const ExportedModel& model, const std::filesystem::path& path,
                        const ExportOptions& options) {
  if (!options.overwrite && std::filesystem::exists(path)) {
    throw io::FileError(path, "already exists; choose another name or pass overwrite "
                              "(the tool's --overwrite)");
  }
  const auto graph = model.graph.to(torch::kCPU);
  torch::jit::Module module("SEDenseNetClassifier");
  for (const auto& [name, tensor] : graph.named_tensors()) {
    const bool channel_vector = name.size() > 6 && (name.rfind(".scale") == name.size() - 6 ||
                                                    name.rfind(".shift") == name.size() - 6);
    module.register_buffer(attribute(name),
                           channel_vector ? tensor.view({1, -1, 1, 1}).clone() : tensor.clone());
  }
  c10::List<std::string> classes;
  for (const auto& c : model.classes) classes.push_back(c);
  module.register_attribute("classes", c10::ListType::ofStrings(), classes);
  module.register_attribute("input_size", c10::IntType::get(), model.input.size);
  c10::List<double> mean(model.input.mean);
  c10::List<double> stdev(model.input.std);
  module.register_attribute("mean", c10::ListType::ofFloats(), mean);
  module.register_attribute("std", c10::ListType::ofFloats(), stdev);
  module.define(kHelpers);
  module.define(SourceWriter(graph).forward());
  module.eval();

  std::ostringstream bytes;
  torch::jit::ExtraFilesMap extra{{"sedensenet.json", model.metadata().dump(2)}};
  module.save(bytes, extra);
  io::write_file_atomically(path, bytes.str());
}

}  // namespace sedensenet::serve
