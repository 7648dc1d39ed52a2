// sedensenet export: a trained model as ONNX or TorchScript, for runtimes that do not link
// SEDenseNet (docs/deploy.md).
#include <sedensenet/serve/classifier.hpp>
#include <sedensenet/serve/export.hpp>
#include <torch/csrc/jit/serialization/import.h>

#include <fmt/format.h>

#include <filesystem>

#include "command.hpp"
#include "model_source.hpp"

namespace sedensenet::cli {
namespace {

namespace fs = std::filesystem;

class Export : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* command = app.add_subcommand("export", "write a trained model as ONNX or TorchScript "
                                       "(ONNX Runtime, OpenCV DNN, TensorRT, torch.jit.load)");
    model.add_options(command, /*weights_positional=*/true);
    command->add_option("output", output, "the file to write (model.onnx, model.ts)")->required();
    command->add_option("--format", format, "onnx or torchscript (default: from the output's "
                        "extension, .onnx or .ts/.pt)")->check(CLI::IsMember({"onnx", "torchscript"}));
    command->add_option("--opset", opset, "ONNX opset to write (13 or later)")
        ->check(CLI::Range(int64_t{13}, int64_t{17}))->capture_default_str();
    command->add_flag("--overwrite", overwrite, "replace OUTPUT if it exists");
    return command;
  }

  int run(CLI::App&) override {
    const auto chosen = chosen_format();
    if (!overwrite && fs::exists(output)) {
      throw UsageError(output + " already exists; choose another name or add --overwrite");
    }
    if (chosen == "onnx" && !serve::onnx_export_available()) {
      throw UsageError("this sedensenet was built without ONNX export: install libonnx-dev "
                       "(apt-get install libonnx-dev), build again, or use --format torchscript");
    }
    model.device = "cpu";
    const auto trained = model.load();
    const auto exported = serve::ExportedModel::from(trained);
    serve::ExportOptions options;
    options.overwrite = overwrite;
    options.opset = opset;
    if (chosen == "onnx") {
      serve::export_onnx(exported, output, options);
    } else {
      serve::export_torchscript(exported, output, options);
    }
    const auto& input = exported.input;
    fmt::print("wrote {} ({}, {:.1f} MB): input \"images\" (batch, 3, {}, {}) float32, RGB scaled "
               "to [0, 1], then (x - mean) / std with mean {} and std {}; output \"logits\" (batch, "
               "{}); {} classes recorded in the file\n",
               output, chosen == "onnx" ? fmt::format("ONNX opset {}", opset) : "TorchScript",
               static_cast<double>(fs::file_size(output)) / 1e6, input.size, input.size,
               nlohmann::json(input.mean).dump(), nlohmann::json(input.std).dump(),
               exported.graph.num_classes(), exported.classes.size());
    if (chosen == "torchscript") check_torchscript(trained);
    return 0;
  }

 private:
  std::string chosen_format() const {
    if (!format.empty()) return format;
    const auto ext = fs::path(output).extension().string();
    if (ext == ".onnx") return "onnx";
    if (ext == ".ts" || ext == ".pt" || ext == ".pth") return "torchscript";
    throw UsageError("cannot tell the format from " + output + ": name it .onnx or .ts, or give "
                     "--format onnx or --format torchscript");
  }

  /// Loads the written file back with LibTorch's TorchScript loader (our own file, just written)
  /// and compares its logits with the training model's on random images.
  void check_torchscript(io::TrainedModel trained) const {
    auto module = torch::jit::load(output);
    torch::NoGradGuard no_grad;
    torch::manual_seed(0);
    const auto x = torch::randn({2, 3, trained.input.size, trained.input.size});
    trained.model->eval();
    const auto expected = trained.model->forward(x);
    const auto difference = (module.forward({x}).toTensor() - expected).abs().max().item<double>();
    fmt::print("checked: torch::jit::load runs it; logits differ from the training model's by "
               "{:.1e} at most\n", difference);
  }

  ModelSource model;
  std::string output;
  std::string format;
  int64_t opset = 13;
  bool overwrite = false;
};

}  // namespace

std::unique_ptr<Command> export_command() { return std::make_unique<Export>(); }

}  // namespace sedensenet::cli
