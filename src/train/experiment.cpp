#include "sedensenet/train/experiment.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <sstream>

#include "sedensenet/nn/summary.hpp"
#include "sedensenet/data/batch_source.hpp"
#include "sedensenet/data/split_record.hpp"
#include "sedensenet/train/progress.hpp"

namespace sedensenet {

namespace {

DataOptions validated(DataOptions data, const TrainerOptions& training) {
  data.validate();
  training.validate();
  return data;
}

}  // namespace

Experiment::Experiment(std::filesystem::path data_dir, DenseNetOptions model, TrainerOptions training,
                       DataOptions data, std::FILE* log)
    : data_dir_(std::move(data_dir)),
      data_(validated(std::move(data), training)),
      log_(log),
      splits_(data::ImageFolder::split(data_dir_, data_.folder_options())),
      input_(data_.input()),
      model_options_(std::move(model)) {
  const auto split = data::SplitRecord::of(splits_);  // before unusable files are removed
  std::ostringstream found;
  found << "data: " << data_dir_.string() << " ("
        << (splits_.predefined ? "train/ and test/ folders" : "stratified split") << ")\n  train: "
        << splits_.train.describe() << "\n  test:  " << splits_.test.describe() << "\n";
  say(found.str());
  const int check_threads = static_cast<int>(data_.workers());
  splits_.train.validate(false, check_threads);
  splits_.test.validate(false, check_threads);
  if (!splits_.train.summary().bad.empty() || !splits_.test.summary().bad.empty()) {
    say("  after checking every file:\n  train: " + splits_.train.describe() +
        "\n  test:  " + splits_.test.describe() + "\n");
  }

  const bool pin = training.device() != "cpu";
  train_loader_ = std::make_unique<data::ImageLoader>(
      splits_.train, input_.train_transform(data_.augment()),
      data_.loader_options(true, training.seed()).pin_memory(pin));
  test_loader_ = std::make_unique<data::ImageLoader>(splits_.test, input_.eval_transform(),
                                                     data_.loader_options(false).pin_memory(pin));

  model_options_.num_classes(static_cast<int64_t>(classes().size()));
  torch::manual_seed(training.seed());
  model_ = DenseNet(model_options_);
  if (log_ != nullptr) say(summary(model_, {3, data_.image_size(), data_.image_size()}).to_string());

  trainer_ = std::make_unique<Trainer>(model_, std::move(training));
  trainer_->set_class_names(classes());
  nlohmann::json data_record = data_.to_json();
  data_record["root"] = std::filesystem::absolute(data_dir_).string();
  data_record["split"] = split.to_json();
  metadata_ = io::densenet_metadata(model_, input_, {{"data", data_record}});
  trainer_->set_metadata(metadata_);
  if (log_ != nullptr) {
    progress_ = std::make_unique<ProgressPrinter>(log_);
    progress_->attach(*trainer_);
  }
}

Experiment::~Experiment() = default;

void Experiment::say(const std::string& text) const {
  if (log_ == nullptr) return;
  std::fputs(text.c_str(), log_);
  std::fflush(log_);
}

io::LoadReport Experiment::warm_start(const std::filesystem::path& path) {
  return io::warm_start(*model_, path);
}

void Experiment::set_communicator(std::shared_ptr<Communicator> communicator) {
  trainer_->set_communicator(std::move(communicator));
}

void Experiment::add_metadata(const nlohmann::json& extra) {
  TORCH_CHECK(extra.is_object(), "Experiment::add_metadata: expected a JSON object, got ", extra.dump());
  for (const auto& [key, value] : extra.items()) {
    TORCH_CHECK(!metadata_.contains(key), "Experiment::add_metadata: '", key,
                "' is recorded by the experiment itself");
    metadata_[key] = value;
  }
  trainer_->set_metadata(metadata_);
}

void Experiment::resume() { trainer_->resume(trainer_->options().run_dir()); }

TrainResult Experiment::fit() {
  const auto& options = trainer_->options();
  const int64_t world = trainer_->world_size();
  if (world > 1) train_loader_->set_shard(trainer_->rank(), world);  // as fit() will: this rank's share
  std::ostringstream plan;
  plan << "training: " << options.epochs() << " epochs, ";
  if (world > 1) {
    plan << "on " << world << " processes, " << train_loader_->batches_per_epoch() << " steps per epoch of "
         << world << " x " << data_.batch_size() << " = " << world * data_.batch_size() << " images";
  } else {
    plan << train_loader_->batches_per_epoch() << " batches of " << data_.batch_size() << " per epoch";
  }
  plan << ", " << at::get_num_threads() << (world > 1 ? " threads each" : " threads")
       << (options.run_dir().empty() ? std::string(", no run folder") : ", run folder " + options.run_dir()) << "\n";
  say(plan.str());

  data::ImageLoaderSource train(*train_loader_), test(*test_loader_);
  auto result = trainer_->fit(train, &test);
  for (const auto* loader : {train_loader_.get(), test_loader_.get()}) {
    for (const auto& bad : loader->bad_files()) {
      say("skipped unusable file " + bad.path + ": " + bad.reason + "\n");
    }
  }
  return result;
}

}  // namespace sedensenet
