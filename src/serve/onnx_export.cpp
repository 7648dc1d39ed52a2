// ONNX export with ONNX's own protobuf classes and checker (Debian's libonnx-dev). Compiled only
// when CMake finds ONNX; onnx_unavailable.cpp stands in otherwise.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <set>
#include <string>
#include <vector>

#include "sedensenet/io/files.hpp"
#include "sedensenet/serve/export.hpp"
#include "sedensenet/version.hpp"

namespace sedensenet::serve {
namespace {

class OnnxWriter {
 public:
  explicit OnnxWriter(onnx::GraphProto& graph) : graph_(graph) {}

  /// A float32 initializer from a tensor, with the given dims (default: the tensor's).
  std::string initializer(const std::string& name, const torch::Tensor& t,
                          std::vector<int64_t> dims = {}) {
    const auto data = t.to(torch::kCPU, torch::kFloat32).contiguous();
    if (dims.empty()) dims = data.sizes().vec();
    auto* init = graph_.add_initializer();
    init->set_name(name);
    init->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) init->add_dims(d);
    init->set_raw_data(std::string(static_cast<const char*>(data.data_ptr()),
                                   static_cast<size_t>(data.numel()) * sizeof(float)));
    return name;
  }

  /// A node with one output; returns the output's name.
  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        std::string* output) {
    auto* n = graph_.add_node();
    n->set_op_type(op);
    const auto id = std::to_string(next_++);
    n->set_name(op + "_" + id);
    for (const auto& i : inputs) n->add_input(i);
    *output = "t" + id;
    n->add_output(*output);
    return *n;
  }
  std::string op(const std::string& type, const std::vector<std::string>& inputs) {
    std::string out;
    node(type, inputs, &out);
    return out;
  }

  static void ints(onnx::NodeProto& n, const std::string& name, std::vector<int64_t> values) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto v : values) a->add_ints(v);
  }
  static void integer(onnx::NodeProto& n, const std::string& name, int64_t value) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(value);
  }
  static void real(onnx::NodeProto& n, const std::string& name, float value) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(value);
  }

  std::string conv(const std::string& name, const Convolution& c, const std::string& x) {
    std::vector<std::string> inputs = {x, initializer(name + ".weight", c.weight)};
    if (c.bias.defined()) inputs.push_back(initializer(name + ".bias", c.bias));
    std::string out;
    auto& n = node("Conv", inputs, &out);
    const auto k = c.weight.sizes();
    ints(n, "kernel_shape", {k[2], k[3]});
    ints(n, "strides", {c.stride, c.stride});
    ints(n, "pads", {c.padding, c.padding, c.padding, c.padding});
    return out;
  }

  /// relu(x * scale + shift) as BatchNormalization with mean 0, variance 1 and epsilon 0 (what
  /// every runtime reads), then Relu.
  std::string norm_relu(const std::string& name, const ScaleShiftReLU& n, const std::string& x) {
    const auto channels = n.scale.size(0);
    std::string out;
    auto& bn = node("BatchNormalization",
                    {x, initializer(name + ".scale", n.scale), initializer(name + ".shift", n.shift),
                     constant("zeros", channels, 0.0f), constant("ones", channels, 1.0f)},
                    &out);
    real(bn, "epsilon", 0.0f);
    return op("Relu", {out});
  }

  /// A shared constant vector (channels) filled with `value`.
  std::string constant(const std::string& what, int64_t channels, float value) {
    const auto name = what + "_" + std::to_string(channels);
    if (constants_.insert(name).second) initializer(name, torch::full({channels}, value));
    return name;
  }

  std::string squeeze_excite(const std::string& name, const SqueezeExcitation& se,
                             const std::string& x) {
    // The fully connected layers as 1x1 convolutions of the pooled (N, C, 1, 1) map: no reshape,
    // which is what OpenCV reads best.
    auto pooled = op("GlobalAveragePool", {x});
    std::string hidden;
    auto& fc1 = node("Conv", {pooled, initializer(name + ".fc1", se.fc1,
                                                  {se.fc1.size(0), se.fc1.size(1), 1, 1})},
                     &hidden);
    ints(fc1, "kernel_shape", {1, 1});
    std::string z;
    auto& fc2 = node("Conv", {op("Relu", {hidden}), initializer(name + ".fc2", se.fc2,
                                                                {se.fc2.size(0), se.fc2.size(1), 1, 1})},
                     &z);
    ints(fc2, "kernel_shape", {1, 1});
    auto gate = op("Sigmoid", {z});
    if (se.gate == SEGate::scaled_sigmoid) {
      if (constants_.insert("two").second) initializer("two", torch::full({1}, 2.0f));
      gate = op("Mul", {gate, "two"});
    }
    // The gate (N, C, 1, 1) repeated to x's shape before the product: OpenCV 4.6 cannot infer the
    // shape of a broadcasting Mul when the batch is dynamic; Resize to Shape(x) is exact.
    std::string full;
    auto& resize = node("Resize", {gate, "", "", op("Shape", {x})}, &full);
    auto* mode = resize.add_attribute();
    mode->set_name("mode");
    mode->set_type(onnx::AttributeProto::STRING);
    mode->set_s("nearest");
    return op("Mul", {x, full});
  }

 private:
  onnx::GraphProto& graph_;
  int next_ = 0;
  std::set<std::string> constants_;
};

void value_info(onnx::ValueInfoProto* v, const std::string& name,
                const std::vector<std::string>& symbolic, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* tensor = v->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tensor->mutable_shape();
  for (const auto& s : symbolic) shape->add_dim()->set_dim_param(s);
  for (auto d : dims) shape->add_dim()->set_dim_value(d);
}

void metadata(onnx::ModelProto& model, const std::string& key, const std::string& value) {
  auto* p = model.add_metadata_props();
  p->set_key(key);
  p->set_value(value);
}

}  // namespace

bool onnx_export_available() { return true; }

void export_onnx(const ExportedModel& exported, const std::filesystem::path& path,
                 const ExportOptions& options) {
  if (!options.overwrite && std::filesystem::exists(path)) {
    throw io::FileError(path, "already exists; choose another name or pass overwrite "
                              "(the tool's --overwrite)");
  }
  if (options.opset < 13) {
    throw std::invalid_argument("export_onnx: opset " + std::to_string(options.opset) +
                                " is not supported; use 13 or later");
  }
  const auto& g = exported.graph;
  onnx::ModelProto model;
  model.set_ir_version(onnx::IR_VERSION);
  model.set_producer_name("SEDenseNet");
  model.set_producer_version(SEDENSENET_VERSION_STRING);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset);
  auto& graph = *model.mutable_graph();
  graph.set_name("sedensenet");
  const auto size = exported.input.size;
  value_info(graph.add_input(), "images", {"batch"}, {3, size, size});
  value_info(graph.add_output(), "logits", {"batch"}, {g.num_classes()});

  OnnxWriter w(graph);
  auto x = w.conv("stem", g.stem, "images");
  if (g.imagenet_stem) {
    std::string pooled;
    auto& pool = w.node("MaxPool", {w.op("Relu", {x})}, &pooled);
    OnnxWriter::ints(pool, "kernel_shape", {3, 3});
    OnnxWriter::ints(pool, "strides", {2, 2});
    OnnxWriter::ints(pool, "pads", {1, 1, 1, 1});
    x = pooled;
  }
  for (size_t b = 0; b < g.blocks.size(); ++b) {
    std::vector<std::string> features = {x};
    for (size_t l = 0; l < g.blocks[b].layers.size(); ++l) {
      const auto& layer = g.blocks[b].layers[l];
      const std::string p = "blocks." + std::to_string(b) + ".layers." + std::to_string(l);
      std::string input = features.front();
      if (features.size() > 1) {
        auto& cat = w.node("Concat", features, &input);
        OnnxWriter::integer(cat, "axis", 1);
      }
      auto y = w.norm_relu(p + ".norm1", layer.norm1, input);
      y = w.op("Relu", {w.conv(p + ".conv1", layer.conv1, y)});
      y = w.conv(p + ".conv2", layer.conv2, y);
      if (layer.has_se) y = w.squeeze_excite(p + ".se", layer.se, y);
      features.push_back(y);
    }
    auto& cat = w.node("Concat", features, &x);
    OnnxWriter::integer(cat, "axis", 1);
    if (b < g.transitions.size()) {
      const std::string p = "transitions." + std::to_string(b);
      std::string pooled;
      auto& pool = w.node("AveragePool", {w.norm_relu(p + ".norm", g.transitions[b].norm, x)},
                          &pooled);
      OnnxWriter::ints(pool, "kernel_shape", {2, 2});
      OnnxWriter::ints(pool, "strides", {2, 2});
      x = w.conv(p + ".conv", g.transitions[b].conv, pooled);
    }
  }
  auto pooled = w.op("GlobalAveragePool", {w.norm_relu("norm5", g.norm5, x)});
  std::string flat;
  auto& flatten = w.node("Flatten", {pooled}, &flat);
  OnnxWriter::integer(flatten, "axis", 1);
  auto& gemm = w.node("Gemm",
                      {flat, w.initializer("classifier.weight", g.classifier_weight),
                       w.initializer("classifier.bias", g.classifier_bias)},
                      &x);
  OnnxWriter::integer(gemm, "transB", 1);
  graph.mutable_node(graph.node_size() - 1)->set_output(0, "logits");

  metadata(model, "sedensenet", exported.metadata().dump());
  metadata(model, "classes", nlohmann::json(exported.classes).dump());
  metadata(model, "input", exported.input.to_json().dump());

  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("export_onnx: ONNX's checker refused the graph (a bug in "
                                         "SEDenseNet; please report it): ") + e.what());
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) {
    throw io::FileError(path, "the ONNX model could not be serialised (over 2 GB?)");
  }
  io::write_file_atomically(path, bytes);
}

}  // namespace sedensenet::serve
