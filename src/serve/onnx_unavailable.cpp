// Stands in for onnx_export.cpp in builds configured without ONNX (libonnx-dev).
#include <stdexcept>

#include "sedensenet/serve/export.hpp"

namespace sedensenet::serve {

bool onnx_export_available() { return false; }

void export_onnx(const ExportedModel&, const std::filesystem::path& path, const ExportOptions&) {
  throw std::runtime_error(
      "cannot write " + path.string() +
      ": this SEDenseNet was built without ONNX export. Install Debian's libonnx-dev (apt-get "
      "install libonnx-dev), configure and build again; or export TorchScript (--format "
      "torchscript) instead");
}

}  // namespace sedensenet::serve
