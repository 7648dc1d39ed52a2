// sedensenet predict: top-k classes for image files or folders.
#include <sedensenet/data.hpp>
#include <sedensenet/io/files.hpp>
#include <sedensenet/serve/classifier.hpp>
#include <sedensenet/util/threads.hpp>

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "command.hpp"
#include "model_source.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>

namespace sedensenet::cli {
namespace {

namespace data = sedensenet::data;
namespace fs = std::filesystem;
using nlohmann::json;

class Predict : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* predict = app.add_subcommand("predict", "top-k classes for image files or folders");
    model.add_options(predict);
    predict->add_option("inputs", inputs, "image files and/or folders (searched recursively)")->required();
    predict->add_option("--top-k", top_k, "classes to show per image")->check(CLI::Range(int64_t{1}, int64_t{100000}));
    predict->add_flag("--json", as_json, "print JSON instead of text");
    predict->add_option("--threads", threads, "LibTorch threads (0 = one per core)")->check(CLI::NonNegativeNumber);
    return predict;
  }

  int run(CLI::App&) override {
    sedensenet::set_num_threads(threads);
    auto trained = model.load();
    const auto device = checked_device(model.device, "--device");
    std::vector<fs::path> files;
    for (const auto& input : inputs) {
      if (fs::is_directory(input)) {
        std::vector<fs::path> found;
        for (const auto& entry : fs::recursive_directory_iterator(input)) {
          auto ext = entry.path().extension().string();
          std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
          if (entry.is_regular_file() && data::image_extensions().count(ext)) found.push_back(entry.path());
        }
        std::sort(found.begin(), found.end());
        files.insert(files.end(), found.begin(), found.end());
      } else if (fs::exists(input)) {
        files.emplace_back(input);
      } else {
        throw UsageError(input + ": no such file or folder");
      }
    }
    if (files.empty()) throw UsageError("predict: no image files found in the given paths");
    // The inference path: batch norm folded, no autograd (serve::InferenceGraph).
    const Classifier classifier(trained, ClassifierOptions().device(device).batch_size(batch_size));
    json results = json::array();
    // An unusable file does not stop the others: it is reported, and the exit status says so.
    const auto predictions = classifier.predict(files, top_k, data::BadFilePolicy::skip);
    size_t unusable = 0;
    for (size_t i = 0; i < files.size(); ++i) {
      if (!predictions[i].error.empty()) {
        ++unusable;
        results.push_back({{"file", files[i].string()}, {"error", predictions[i].error}});
        fmt::print(stderr, "sedensenet: warning: {} (not classified)\n", predictions[i].error);
        continue;
      }
      json top = json::array();
      std::string line = files[i].string() + ":";
      for (const auto& c : predictions[i].top) {
        top.push_back({{"class", c.name}, {"index", c.index}, {"probability", c.probability}});
        line += fmt::format("{} {} {:.1f}%", line.back() == ':' ? "" : ",", c.name, 100 * c.probability);
      }
      results.push_back({{"file", files[i].string()}, {"top", top}});
      if (!as_json) fmt::print("{}\n", line);
    }
    if (as_json) fmt::print("{}\n", results.dump(2));
    if (unusable > 0) {
      fmt::print(stderr,
                 "sedensenet: error: {} of {} files could not be read (listed above); the others "
                 "were classified\n",
                 unusable, files.size());
      return 1;
    }
    return 0;
  }

 private:
  ModelSource model;
  std::vector<std::string> inputs;
  int64_t top_k = 3;
  bool as_json = false;
  int threads = 0;
  int64_t batch_size = 64;
};

}  // namespace

std::unique_ptr<Command> predict_command() { return std::make_unique<Predict>(); }

}  // namespace sedensenet::cli
