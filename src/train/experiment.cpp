#include "sedensenet/train/experiment.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "sedensenet/nn/summary.hpp"
#include "sedensenet/data/batch_source.hpp"
#include "sedensenet/data/image.hpp"
#include "sedensenet/data/split_record.hpp"
#include "sedensenet/train/progress.hpp"
#include "sedensenet/train/schedule.hpp"

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
  if (log_ != nullptr) progress_ = std::make_unique<ProgressPrinter>(log_);
  const auto split = data::SplitRecord::of(splits_);  // before unusable files are removed
  warn("data: " + data_dir_.string() + " (" + (splits_.predefined ? "train/ and test/ folders" : "stratified split") + ")");
  warn("  train: " + splits_.train.describe());
  warn("  test:  " + splits_.test.describe());
  const int check_threads = static_cast<int>(data_.workers());
  splits_.train.validate(false, check_threads);
  splits_.test.validate(false, check_threads);
  if (!splits_.train.summary().bad.empty() || !splits_.test.summary().bad.empty()) {
    warn("  after checking every file:");
    warn("  train: " + splits_.train.describe());
    warn("  test:  " + splits_.test.describe());
  }

  const Balance balance = check_balance();
  check_image_size();

  const bool pin = training.device() != "cpu";
  train_loader_ = std::make_unique<data::ImageLoader>(
      splits_.train, input_.train_transform(data_.augment()),
      data_.loader_options(true, training.seed()).pin_memory(pin).balance_classes(balance == Balance::sampler));
  test_loader_ = std::make_unique<data::ImageLoader>(splits_.test, input_.eval_transform(),
                                                     data_.loader_options(false).pin_memory(pin));

  model_options_.num_classes(static_cast<int64_t>(classes().size()));
  torch::manual_seed(training.seed());
  model_ = DenseNet(model_options_);
  if (log_ != nullptr) say(summary(model_, {3, data_.image_size(), data_.image_size()}).to_string());

  trainer_ = std::make_unique<Trainer>(model_, std::move(training));
  trainer_->set_class_names(classes());
  if (balance == Balance::weights) trainer_->set_class_weights(class_balance_weights(class_counts()));
  nlohmann::json data_record = data_.to_json();
  data_record["root"] = std::filesystem::absolute(data_dir_).string();
  data_record["split"] = split.to_json();
  data_record["balance_used"] = to_string(balance);
  metadata_ = io::densenet_metadata(model_, input_, {{"data", data_record}});
  trainer_->set_metadata(metadata_);
  if (progress_) progress_->attach(*trainer_);
  trainer_->on_epoch_end([this](const EpochMetrics& m) {
    const auto& o = trainer_->options();
    if (m.epoch != 1 || !trainer_->epochs_fixed_by_budget()) return;
    std::ostringstream os;
    os << "time budget " << o.time_budget_minutes() << " min: epoch 1 took " << std::fixed << std::setprecision(0)
       << m.seconds << " s, so the run trains " << trainer_->planned_epochs() << " of at most " << o.epochs()
       << " epochs (--epochs), the schedule spanning them";
    warn(os.str());
  });
}

Experiment::~Experiment() = default;

std::vector<int64_t> Experiment::class_counts() const { return splits_.train.class_counts(); }

Balance Experiment::check_balance() const {
  const auto counts = class_counts();
  const auto [smallest, largest] = std::minmax_element(counts.begin(), counts.end());
  const double ratio = static_cast<double>(*largest) / static_cast<double>(std::max<int64_t>(*smallest, 1));
  Balance balance = data_.balance();
  if (balance == Balance::automatic) balance = ratio >= 1.5 ? Balance::weights : Balance::none;
  if (ratio >= 3) {
    std::ostringstream os;
    os.precision(2);
    os << "warning: unbalanced classes: '" << classes()[static_cast<size_t>(smallest - counts.begin())] << "' has "
       << *smallest << " training images, '" << classes()[static_cast<size_t>(largest - counts.begin())] << "' "
       << *largest << " (1:" << std::fixed << ratio << ")";
    if (balance == Balance::none) os << "; --balance weights or sampler keeps the model from ignoring the small classes";
    warn(os.str());
  }
  if (balance == Balance::weights) {
    warn(std::string("balance: class-weighted loss (") +
         (data_.balance() == Balance::automatic ? "--balance auto" : "--balance weights") +
         "; sampler draws class-balanced epochs instead, none turns it off)");
  } else if (balance == Balance::sampler) {
    warn("balance: class-balanced epochs (--balance sampler)");
  }
  return balance;
}

void Experiment::check_image_size() const {
  // The median shorter side of up to 64 training images, spread over the folder, from their headers.
  const auto& samples = splits_.train.samples();
  const size_t n = std::min<size_t>(64, samples.size());
  std::vector<int64_t> sides;
  for (size_t k = 0; k < n; ++k) {
    const auto& path = samples[k * samples.size() / n].path;
    try {
      const auto bytes = data::read_file(path);
      const auto header = data::read_header(bytes.data(), bytes.size(), path.string());
      sides.push_back(std::min(header.width, header.height));
    } catch (const std::exception&) {
      // unusable files were reported by validate
    }
  }
  if (sides.empty()) return;
  std::nth_element(sides.begin(), sides.begin() + static_cast<std::ptrdiff_t>(sides.size() / 2), sides.end());
  const int64_t median = sides[sides.size() / 2];
  const int64_t size = data_.image_size();
  if (static_cast<double>(median) >= 1.25 * static_cast<double>(size)) {
    std::ostringstream os;
    os << "warning: the images' shorter side is " << median << " pixels (median), but they are trained at " << size
       << "x" << size << ", losing detail: --image-size " << std::min<int64_t>(median, 224)
       << (median > 96 ? " with an ImageNet-style preset (--preset densenet121) learns from more of it" : " keeps it");
    warn(os.str());
  }
}

bool learned_little(double accuracy, const std::vector<int64_t>& class_counts) {
  const int64_t total = std::accumulate(class_counts.begin(), class_counts.end(), int64_t{0});
  if (total == 0 || class_counts.size() < 2 || std::isnan(accuracy)) return false;
  const double guess =
      static_cast<double>(*std::max_element(class_counts.begin(), class_counts.end())) / static_cast<double>(total);
  return accuracy < guess + 0.25 * (1.0 - guess);
}

void Experiment::check_learned(const TrainResult& result) const {
  if (result.interrupted || result.best_epoch < 1) return;
  const auto counts = splits_.test.class_counts();
  if (!learned_little(result.best_accuracy, counts)) return;
  const auto largest = std::max_element(counts.begin(), counts.end());
  const auto train_counts = class_counts();
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  const auto& options = trainer_->options();
  const bool balanced = std::all_of(counts.begin(), counts.end(), [&](int64_t n) { return n == *largest; });
  const double guess = static_cast<double>(*largest) / static_cast<double>(total);
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << "warning: the model learned little: its best test accuracy, "
     << 100 * result.best_accuracy << "%, is " << (result.best_accuracy > guess ? "barely above" : "no better than")
     << " the " << 100 * guess << "% that "
     << (balanced ? "guessing scores (" + std::to_string(counts.size()) + " classes of the same size)"
                  : "always answering the largest class, '" +
                        classes()[static_cast<size_t>(largest - counts.begin())] + "', scores")
     << ". It trained for "
     << static_cast<int64_t>(result.history.epochs().size()) * train_loader_->batches_per_epoch() << " steps on "
     << splits_.train.samples().size() << " images ("
     << *std::min_element(train_counts.begin(), train_counts.end())
     << " in the smallest class). Try more epochs ("
     << (options.time_budget_minutes() > 0
             ? "a larger --time-budget-minutes, or --epochs without one"
             : "--epochs " + std::to_string(3 * options.epochs()))
     << "), more images per class, starting from trained weights (--init-weights), or check that the class "
        "folders hold what their names say";
  warn(os.str());
}

void Experiment::say(const std::string& text) const {
  if (log_ == nullptr) return;
  std::fputs(text.c_str(), log_);
  std::fflush(log_);
}

void Experiment::warn(const std::string& text) const {
  if (log_ == nullptr) return;
  for (const auto& line : ProgressPrinter::fit({text}, progress_->width())) std::fprintf(log_, "%s\n", line.c_str());
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

int64_t Experiment::planned_epochs() {
  if (trainer_->epochs_fixed_by_budget()) return trainer_->planned_epochs();
  const int64_t world = trainer_->world_size();
  if (world > 1) train_loader_->set_shard(trainer_->rank(), world);  // as fit() will: this rank's share
  const auto& o = trainer_->options();
  return epochs_for_min_steps(o.epochs(), o.min_steps(), train_loader_->batches_per_epoch());
}

TrainResult Experiment::fit() {
  const auto& options = trainer_->options();
  const int64_t world = trainer_->world_size();
  const int64_t epochs = planned_epochs();  // shards the loader first, as Trainer::fit will
  std::ostringstream plan;
  if (options.time_budget_minutes() > 0 && !trainer_->epochs_fixed_by_budget()) {
    plan << "training: at most " << epochs << " epochs, as many as fit " << options.time_budget_minutes()
         << " min at the pace of the first, ";
  } else {
    plan << "training: " << epochs << " epochs, ";
  }
  if (epochs > options.epochs() && !trainer_->epochs_fixed_by_budget()) {
    const int64_t steps = epochs * train_loader_->batches_per_epoch();
    plan << "raised from --epochs " << options.epochs() << " by --min-steps " << options.min_steps() << " to make "
         << steps << " steps on this small training set"
         << (steps < options.min_steps() ? " (at most " + std::to_string(kMinStepsMaxEpochFactor) + " x --epochs)" : "")
         << ", ";
  }
  if (world > 1) {
    plan << "on " << world << " processes, " << train_loader_->batches_per_epoch() << " steps per epoch of "
         << world << " x " << data_.batch_size() << " = " << world * data_.batch_size() << " images";
  } else {
    const int64_t batches = train_loader_->batches_per_epoch();
    plan << batches << (batches == 1 ? " batch of " : " batches of ") << data_.batch_size() << " per epoch";
  }
  plan << ", " << at::get_num_threads() << (world > 1 ? " threads each" : " threads")
       << (options.run_dir().empty() ? std::string(", no run folder") : ", run folder " + options.run_dir());
  warn(plan.str());

  data::ImageLoaderSource train(*train_loader_), test(*test_loader_);
  auto result = trainer_->fit(train, &test);
  for (const auto* loader : {train_loader_.get(), test_loader_.get()}) {
    for (const auto& bad : loader->bad_files()) {
      warn("skipped unusable file " + bad.path + ": " + bad.reason);
    }
  }
  check_learned(result);
  return result;
}

}  // namespace sedensenet
