// sedensenet evaluate: metrics and confusion matrix of trained weights on an image folder.
#include <sedensenet/data.hpp>
#include <sedensenet/io/files.hpp>
#include <sedensenet/train/trainer.hpp>
#include <sedensenet/util/threads.hpp>

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "command.hpp"
#include "model_source.hpp"

namespace sedensenet::cli {
namespace {

namespace data = sedensenet::data;
using nlohmann::json;

class Evaluate : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* evaluate = app.add_subcommand("evaluate", "metrics and confusion matrix of trained weights on an image folder");
    model.add_options(evaluate);
    evaluate->add_option("data", data_dir, "image folder (its test/ or val/ side if it has train/ and test/)")->required();
    evaluate->add_option("--batch-size", batch_size, "images per batch")->check(CLI::Range(int64_t{1}, int64_t{65536}));
    evaluate->add_option("--workers", workers, "data-loading threads (0 = one per core)")->check(CLI::NonNegativeNumber);
    evaluate->add_option("--threads", threads, "LibTorch threads (0 = one per core)")->check(CLI::NonNegativeNumber);
    evaluate->add_option("--output", output, "also write the metrics as JSON to this file");
    return evaluate;
  }

  int run(CLI::App&) override {
    sedensenet::set_num_threads(threads);
    auto splits = [&] {
      try {
        return std::optional<data::ImageFolderSplits>(data::ImageFolder::split(data_dir));
      } catch (const c10::Error&) {
        return std::optional<data::ImageFolderSplits>();
      }
    }();
    // train/ + test/ folders: evaluate the test side; otherwise every image of the folder.
    data::ImageFolder folder = splits && splits->predefined ? splits->test : data::ImageFolder(data_dir);
    auto trained = model.load(folder.classes());
    // Map the folder's classes to the model's by name.
    if (!trained.classes.empty() && folder.classes() != trained.classes) {
      throw UsageError("the classes of " + data_dir + " differ from the ones " + model.weights +
                       " was trained on (" + std::to_string(trained.classes.size()) + " classes)");
    }
    folder.validate(false, static_cast<int>(workers));
    data::ImageLoader loader(folder, trained.input.eval_transform(),
                             data::LoaderOptions().batch_size(batch_size).workers(workers).shuffle(false));
    sedensenet::ImageLoaderSource source(loader);
    sedensenet::Trainer evaluator(trained.model, sedensenet::TrainerOptions().threads(threads));
    auto result = evaluator.evaluate(source);
    const auto& names = folder.classes();
    auto report = result.confusion.to_json(names);
    fmt::print("{}: {} images, loss {:.4f}, accuracy {:.2f}%{}\n", folder.root().string(),
               result.images, result.loss, 100 * result.accuracy,
               std::isnan(result.top5) ? "" : fmt::format(", top-5 {:.2f}%", 100 * result.top5));
    fmt::print("{:<16} {:>9} {:>9} {:>9} {:>8}\n", "class", "precision", "recall", "F1", "support");
    for (const auto& name : names) {
      const auto& c = report["per_class"][name];
      fmt::print("{:<16} {:>9.4f} {:>9.4f} {:>9.4f} {:>8}\n", name, c["precision"].get<double>(),
                 c["recall"].get<double>(), c["f1"].get<double>(), c["support"].get<int64_t>());
    }
    fmt::print("confusion matrix (rows: true, columns: predicted):\n{}", result.confusion.to_csv(names));
    if (!output.empty()) {
      report["loss"] = result.loss;
      report["images"] = result.images;
      sedensenet::io::write_file_atomically(output, report.dump(2) + "\n");
      fmt::print("wrote {}\n", output);
    }
    return 0;
  }

 private:
  ModelSource model;
  std::string data_dir;
  int64_t batch_size = 64;
  int64_t workers = 0;
  int threads = 0;
  std::string output;
};

}  // namespace

std::unique_ptr<Command> evaluate_command() { return std::make_unique<Evaluate>(); }

}  // namespace sedensenet::cli
