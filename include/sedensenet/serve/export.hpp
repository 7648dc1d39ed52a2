#pragma once
/// \file
/// Writing a trained model for runtimes that do not link this library: TorchScript (Python's
/// `torch.jit.load`, C++ `torch::jit::load`) and ONNX (ONNX Runtime, OpenCV's DNN module,
/// TensorRT). Both write the `serve::InferenceGraph` of the model, so they compute what
/// `Classifier` computes, and both carry the class names and the preprocessing with them.
///
/// Example:
/// ```
/// auto trained = sedensenet::io::load_trained_model("runs/x/best.pt");
/// sedensenet::serve::export_torchscript(trained, "model.ts");
/// if (sedensenet::serve::onnx_export_available()) sedensenet::serve::export_onnx(trained, "model.onnx");
/// ```

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sedensenet/io/trained_model.hpp"
#include "sedensenet/serve/inference_graph.hpp"

namespace sedensenet::serve {

/// What an exported file needs besides the graph: class names and preprocessing.
struct ExportedModel {
  InferenceGraph graph;
  io::InputSpec input;
  std::vector<std::string> classes;

  /// From a loaded model (class names default to "0", "1", ... when the checkpoint has none).
  static ExportedModel from(const io::TrainedModel& trained);
  /// The metadata both formats carry: {"format": "sedensenet.export", "version": 1, "classes": [..],
  /// "input": InputSpec JSON (size, mean, std, alpha)}.
  nlohmann::json metadata() const;
};

/// Options of the exporters.
struct ExportOptions {
  /// Replace an existing file. Off: an existing `path` is refused and left as it is.
  bool overwrite = false;
  /// ONNX only: the opset written (13 or later; 13 is what OpenCV 4.6 and ONNX Runtime read).
  int64_t opset = 13;
};

/// Writes a TorchScript module: `forward(images) -> logits` for images (N, 3, size, size),
/// preprocessed as `input` says, and attributes `classes` (List[str]), `input_size` (int), `mean`
/// and `std` (List[float]); the JSON metadata is also an extra file "sedensenet.json". Written
/// without Python: the module's code is generated from the graph and compiled by LibTorch's
/// TorchScript compiler. The file is written atomically. Throws `io::FileError` naming the file.
void export_torchscript(const ExportedModel& model, const std::filesystem::path& path,
                        const ExportOptions& options = {});
inline void export_torchscript(const io::TrainedModel& trained, const std::filesystem::path& path,
                               const ExportOptions& options = {}) {
  export_torchscript(ExportedModel::from(trained), path, options);
}

/// Whether this build has the ONNX writer (Debian's libonnx-dev at configure time).
bool onnx_export_available();

/// Writes an ONNX model: input "images" (batch, 3, size, size) float32 with a dynamic batch
/// dimension, output "logits" (batch, classes), only standard ONNX operators (Conv,
/// BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, Concat, Sigmoid, Shape,
/// Resize, Mul, Flatten, Gemm) in forms OpenCV 4.6's importer reads too; the metadata as the model's metadata_props "sedensenet" (JSON), "classes" and
/// "input". The graph is checked with ONNX's own checker before it is written, atomically. Throws
/// `std::runtime_error` when the build has no ONNX writer (see `onnx_export_available`).
void export_onnx(const ExportedModel& model, const std::filesystem::path& path,
                 const ExportOptions& options = {});
inline void export_onnx(const io::TrainedModel& trained, const std::filesystem::path& path,
                        const ExportOptions& options = {}) {
  export_onnx(ExportedModel::from(trained), path, options);
}

}  // namespace sedensenet::serve
