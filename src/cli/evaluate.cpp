// sedensenet evaluate: metrics and confusion matrix of trained weights on an image folder.
#include <sedensenet/data.hpp>
#include <sedensenet/io/files.hpp>
#include <sedensenet/train/data_options.hpp>
#include <sedensenet/train/trainer.hpp>
#include <sedensenet/util/threads.hpp>

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "command.hpp"
#include "model_source.hpp"
#include "option_flags.hpp"

namespace sedensenet::cli {
namespace {

namespace data = sedensenet::data;
namespace fs = std::filesystem;
using nlohmann::json;

class Evaluate : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* evaluate = app.add_subcommand("evaluate", "metrics and confusion matrix of trained weights on an image folder");
    model.add_options(evaluate);
    evaluate->add_option("data", data_dir, "image folder (its test/ or val/ side if it has train/ and test/)")->required();
    evaluate->add_flag("--all", all, "on a folder without train/ and test/ sides: score every image, also those "
                       "the model trained on (default: the images its run held out, by the split its checkpoint records)");
    // The loader's options, from DataOptions' schema.
    data_flags_ = std::make_unique<OptionFlags<DataOptions>>(
        evaluate, DataOptions(), "Data",
        std::set<std::string>{"image_size", "augment", "cache", "bad_files", "train_fraction", "split_seed"});
    evaluate->add_option("--threads", threads, "LibTorch threads (0 = one per core)")->check(CLI::NonNegativeNumber);
    evaluate->add_option("--output", output, "also write the metrics as JSON to this file");
    return evaluate;
  }

  int run(CLI::App&) override {
    sedensenet::set_num_threads(threads);
    checked_device(model.device, "--device");  // before the folder is read
    const auto data_options = data_flags_->apply(DataOptions());
    auto [folder, trained] = choose_images();
    folder.validate(false, static_cast<int>(data_options.workers()));
    data::ImageLoader loader(folder, trained.input.eval_transform(), data_options.loader_options(false));
    sedensenet::ImageLoaderSource source(loader);
    sedensenet::Trainer evaluator(trained.model, sedensenet::TrainerOptions().threads(threads).device(model.device));
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
  /// The images to score and the model: a folder's test side; for a folder without sides, the
  /// images the run held out (its checkpoint records the split), or with --all every image.
  std::pair<data::ImageFolder, io::TrainedModel> choose_images() const {
    // The folder's classes name a state dict's outputs; the model's input says how to decode.
    std::optional<data::ImageFolderSplits> predefined;
    try {
      auto splits = data::ImageFolder::split(data_dir);
      if (splits.predefined) predefined = std::move(splits);
    } catch (const c10::Error&) {
    }
    auto trained = model.load(predefined ? predefined->test.classes() : data::ImageFolder(data_dir).classes());
    const auto decode = trained.input.decode_options();
    if (predefined) {
      auto splits = data::ImageFolder::split(data_dir, data::ImageFolderOptions().decode(decode));
      check_classes(splits.test, trained);
      if (all) fmt::print("--all: {} has train/ and test/ sides; scoring its test side\n", data_dir);
      return {splits.test, std::move(trained)};
    }
    data::ImageFolder everything(data_dir, data::ImageFolderOptions().decode(decode));
    check_classes(everything, trained);
    const auto& metadata = trained.state.is_object() && trained.state.contains("metadata") ? trained.state["metadata"] : json();
    if (!metadata.is_object() || !metadata.contains("data") || !metadata["data"].contains("split")) {
      fmt::print("note: {} records no training split (a state dict, or a checkpoint of an earlier version): "
                 "scoring every image of {}; if the model trained on some of them, this score is too high\n",
                 model.weights, data_dir);
      return {std::move(everything), std::move(trained)};
    }
    const auto record = data::SplitRecord::from_json(metadata["data"]["split"]);
    const auto recorded_root = metadata["data"].value("root", std::string());
    auto own = data::ImageFolder::split(data_dir, record.folder_options().decode(decode));
    const bool same_split = !record.predefined && record.matches(own);
    if (all) {
      fmt::print("--all: scoring all {} images of {}, {} of them images the model trained on\n",
                 everything.samples().size(), data_dir,
                 same_split ? std::to_string(record.train_files) : std::string("possibly some"));
      return {std::move(everything), std::move(trained)};
    }
    if (same_split) {
      fmt::print("scoring the {} images the run held out ({} of each class, split seed {}, as {} records); "
                 "--all scores all {}\n",
                 record.test_files, fmt::format("{:g}%", 100 * (1 - record.train_fraction)), record.split_seed,
                 model.weights, everything.samples().size());
      return {std::move(own.test), std::move(trained)};
    }
    std::error_code error;
    if (!recorded_root.empty() && fs::equivalent(recorded_root, data_dir, error)) {
      throw UsageError(data_dir + " has changed since " + model.weights + " was trained on it (" +
                       std::to_string(record.train_files + record.test_files) + " images then, " +
                       std::to_string(everything.samples().size()) +
                       " now), so the images the run held out cannot be told from the ones it trained on: "
                       "add --all to score every image (training images included), or evaluate on a separate folder");
    }
    fmt::print("note: {} is not the folder {} was trained on ({}): scoring every image\n", data_dir, model.weights,
               recorded_root.empty() ? std::string("another one") : recorded_root);
    return {std::move(everything), std::move(trained)};
  }

  void check_classes(const data::ImageFolder& folder, const io::TrainedModel& trained) const {
    if (!trained.classes.empty() && folder.classes() != trained.classes) {
      throw UsageError("the classes of " + data_dir + " differ from the ones " + model.weights +
                       " was trained on (" + std::to_string(trained.classes.size()) + " classes)");
    }
  }

  ModelSource model;
  std::string data_dir;
  bool all = false;
  std::unique_ptr<OptionFlags<DataOptions>> data_flags_;
  int threads = 0;
  std::string output;
};

}  // namespace

std::unique_ptr<Command> evaluate_command() { return std::make_unique<Evaluate>(); }

}  // namespace sedensenet::cli
