#pragma once
/// \file
/// `Experiment`: one training run from an image folder, set up in one call. It does what every
/// training program would otherwise repeat: split and check the folder, build the loaders and
/// their pipelines, the model (one output per class) and the `Trainer`, record the metadata that
/// makes checkpoints self-describing (model, input, classes, data), and report progress.

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "sedensenet/data/image_folder.hpp"
#include "sedensenet/data/loader.hpp"
#include "sedensenet/io/state_dict.hpp"
#include "sedensenet/io/trained_model.hpp"
#include "sedensenet/nn/densenet.hpp"
#include "sedensenet/train/data_options.hpp"
#include "sedensenet/train/options.hpp"
#include "sedensenet/train/trainer.hpp"

namespace sedensenet {

class Communicator;
class ProgressPrinter;

/// True when `accuracy` is barely better than guessing: below the share of the largest class in
/// `class_counts` (what always answering that class scores) plus a quarter of the way from there
/// to 100%. With 10 balanced classes that is 32.5%; with 2, 62.5%.
bool learned_little(double accuracy, const std::vector<int64_t>& class_counts);

/// A training run on an image folder.
///
/// Example (what examples/train_image_folder.cpp does):
/// ```
/// sedensenet::Experiment run("photos", sedensenet::DenseNetOptions::densenet_bc(40, 12),
///                            sedensenet::TrainerOptions::recommended().epochs(10).run_dir("runs/photos"),
///                            sedensenet::DataOptions().image_size(64));
/// auto result = run.fit();  // progress on stdout; best.pt, metrics and plots in runs/photos
/// ```
class Experiment {
 public:
  /// Validates the options, splits `data_dir` (train/ and val/ or test/ sub-folders, else a
  /// stratified split by `data.train_fraction()`), checks every file (unusable ones are skipped
  /// and listed, or an error, by `data.bad_files()`), and builds the loaders, the model (with
  /// `model.num_classes()` set to the folder's class count, initialised from `training.seed()`)
  /// and the Trainer. Writes what it found and the model summary to `log` (nullptr: nothing);
  /// during `fit`, a progress line or bar.
  Experiment(std::filesystem::path data_dir, DenseNetOptions model, TrainerOptions training,
             DataOptions data = DataOptions(), std::FILE* log = stdout);
  ~Experiment();
  Experiment(const Experiment&) = delete;
  Experiment& operator=(const Experiment&) = delete;

  /// Starts from the weights in `path` (a PyTorch state dict, torchvision's, or a checkpoint):
  /// what fits is loaded, the rest keeps its initialisation; the report says which is which.
  io::LoadReport warm_start(const std::filesystem::path& path);
  /// Trains data-parallel with the ranks of `communicator` (see `Trainer::set_communicator`).
  void set_communicator(std::shared_ptr<Communicator> communicator);
  /// Adds `extra` to the metadata every checkpoint records (for example the options a tool was
  /// started with). The model, input, classes and data entries are the experiment's own.
  void add_metadata(const nlohmann::json& extra);
  /// Continues the run whose last.pt is in the run folder (`TrainerOptions::run_dir`).
  void resume();
  /// The epochs the run trains: `Trainer::planned_epochs`, with the count that
  /// `TrainerOptions::min_steps` gives on this folder's training side already applied.
  int64_t planned_epochs();

  /// Trains (`Trainer::fit`, with the test side evaluated after every epoch), then lists the files
  /// the loaders skipped, and warns when the best epoch is barely better than guessing (see
  /// `learned_little`).
  TrainResult fit();

  DenseNet& model() { return model_; }
  Trainer& trainer() { return *trainer_; }
  const std::vector<std::string>& classes() const { return splits_.train.classes(); }
  /// The train and test sides of the folder (after the unusable files were removed).
  const data::ImageFolderSplits& splits() const { return splits_; }
  data::ImageLoader& train_loader() { return *train_loader_; }
  data::ImageLoader& test_loader() { return *test_loader_; }
  /// What the model is fed: image size, mean and std (checkpoints record it).
  const io::InputSpec& input() const { return input_; }
  const DataOptions& data_options() const { return data_; }

 private:
  void say(const std::string& text) const;
  /// A message fitted to the log's width.
  void warn(const std::string& text) const;
  /// Training images per class.
  std::vector<int64_t> class_counts() const;
  /// Resolves DataOptions::balance for the folder's class sizes; reports imbalance.
  Balance check_balance() const;
  /// Warns when the images are much larger than the training size.
  void check_image_size() const;
  /// Warns when `result`'s best test accuracy is barely above always answering the test side's
  /// largest class, saying what to try.
  void check_learned(const TrainResult& result) const;

  std::filesystem::path data_dir_;
  DataOptions data_;
  std::FILE* log_;
  data::ImageFolderSplits splits_;
  io::InputSpec input_;
  std::unique_ptr<data::ImageLoader> train_loader_, test_loader_;
  DenseNetOptions model_options_;
  DenseNet model_{nullptr};
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<ProgressPrinter> progress_;
  nlohmann::json metadata_;
};

}  // namespace sedensenet
