// Experiment (an image folder to a run folder in one call) and DataOptions (its schema).

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "sedensenet/data/split_record.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/io/trained_model.hpp"
#include "sedensenet/train.hpp"
#include "support/image_tree.hpp"
#include "support/python.hpp"

using namespace sedensenet;
namespace fs = std::filesystem;

namespace {
/// What an Experiment printed to `log` (closed here), with the fitting to the terminal's width
/// undone: continuation lines are indented by two.
std::string read_experiment_log(std::FILE* log) {
  std::rewind(log);
  std::string printed;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, log)) > 0;) printed.append(buffer, n);
  std::fclose(log);
  std::string text;
  size_t from = 0;
  for (size_t at; (at = printed.find("\n  ", from)) != std::string::npos; from = at + 3) {
    text.append(printed, from, at - from).push_back(' ');
  }
  return text.append(printed, from, std::string::npos);
}
}  // namespace

TEST_CASE("DataOptions: one schema gives JSON, defaults and checks that name the option",
          "[experiment][options]") {
  const auto defaults = DataOptions().to_json();
  CHECK((defaults == nlohmann::json{{"image_size", 32},   {"augment", "reference"}, {"batch_size", 64},
                                   {"workers", 0},       {"cache", false},         {"jpeg_draft", true},
                                   {"bad_files", "skip"},
                                   {"train_fraction", 0.8}, {"split_seed", 0}, {"balance", "auto"}, {"alpha", "white"}}));
  auto changed = DataOptions().image_size(64).augment("strong").bad_files(data::BadFilePolicy::error).split_seed(7);
  CHECK(DataOptions::from_json(changed.to_json()).to_json() == changed.to_json());
  CHECK(DataOptions::from_json({{"batch_size", 16}}).batch_size() == 16);
  CHECK(DataOptions::from_json({{"batch_size", 16}}).image_size() == 32);  // the rest: defaults

  CHECK_THROWS_WITH(DataOptions::from_json({{"batchsize", 16}}), Catch::Contains("unknown key 'batchsize'"));
  CHECK_THROWS_WITH(DataOptions::from_json({{"bad_files", "ignore"}}),
                    Catch::Contains("'bad_files' must be skip or error"));
  CHECK_THROWS_WITH(DataOptions().image_size(4).validate(),
                    Catch::Contains("image_size must be in [8, 4096], got 4"));
  CHECK_THROWS_WITH(DataOptions().train_fraction(1.0).validate(), Catch::Contains("train_fraction"));
  CHECK_THROWS_WITH(DataOptions().augment("heavy").validate(),
                    Catch::Contains("augment must be one of none, flip, reference, strong, got 'heavy'"));
  CHECK_NOTHROW(DataOptions().validate());

  const auto loader = DataOptions().batch_size(16).workers(2).cache(true).loader_options(true, 5);
  CHECK(loader.batch_size() == 16);
  CHECK(loader.workers() == 2);
  CHECK(loader.cache());
  CHECK(loader.shuffle());
  CHECK(loader.seed() == 5);
  CHECK_FALSE(DataOptions().loader_options(false).shuffle());
  const auto folder = DataOptions().train_fraction(0.5).split_seed(3).folder_options();
  CHECK(folder.train_fraction() == 0.5);
  CHECK(folder.split_seed() == 3);
  CHECK(DataOptions().image_size(48).input().size == 48);
}

TEST_CASE("Experiment sets up data, model and trainer from a folder, trains, and records its metadata",
          "[experiment]") {
  test::TempDir dir;
  const auto root = dir.path() / "photos";
  // Three classes of flat colours (distinct per class), 10, 10 and 15 images.
  test::make_image_tree(root, {"cats", "dogs", "owls"}, {10, 10, 15}, 12);
  const auto run = dir.path() / "run";
  std::FILE* log = std::tmpfile();
  REQUIRE(log != nullptr);

  Experiment experiment(root, DenseNetOptions::densenet_bc(10, 4),
                        TrainerOptions().epochs(2).threads(2).lr(1e-3).run_dir(run.string()),
                        DataOptions().image_size(16).batch_size(8).workers(1).train_fraction(0.6), log);
  CHECK((experiment.classes() == std::vector<std::string>{"cats", "dogs", "owls"}));
  CHECK_FALSE(experiment.splits().predefined);
  // The stratified split: 6 + 6 + 9 for training, the rest for testing.
  CHECK(experiment.splits().train.size().value() == 21);
  CHECK(experiment.splits().test.size().value() == 14);
  CHECK(experiment.train_loader().batches_per_epoch() == 3);
  CHECK(experiment.input().size == 16);
  {
    torch::NoGradGuard no_grad;
    experiment.model()->eval();
    CHECK((experiment.model()->forward(torch::zeros({1, 3, 16, 16})).sizes() == torch::IntArrayRef{1, 3}));
  }

  experiment.add_metadata({{"note", "from the test"}});
  CHECK_THROWS_WITH(experiment.add_metadata({{"data", 1}}), Catch::Contains("'data' is recorded by the experiment"));

  auto result = experiment.fit();
  CHECK(result.best_epoch >= 1);
  CHECK(experiment.trainer().history().epochs().size() == 2);

  // The checkpoint describes itself: classes, input, model, the data options and the folder.
  auto trained = io::load_trained_model(run / "best.pt");
  CHECK(trained.classes == experiment.classes());
  CHECK(trained.input.size == 16);
  CHECK(trained.options.num_classes() == 3);
  const auto metadata = trained.state.at("metadata");
  CHECK(metadata.at("note") == "from the test");
  CHECK(metadata.at("data").at("root") == fs::absolute(root).string());
  CHECK(metadata.at("data").at("train_fraction") == 0.6);
  CHECK(metadata.at("data").at("batch_size") == 8);
  const auto split = data::SplitRecord::from_json(metadata.at("data").at("split"));
  CHECK_FALSE(split.predefined);
  CHECK(split.train_fraction == 0.6);
  CHECK(split.train_files == 21);
  CHECK(split.test_files == 14);
  // Splitting the folder again with the record's options gives the same sides.
  CHECK(split.matches(data::ImageFolder::split(root, split.folder_options())));
  CHECK_FALSE(split.matches(data::ImageFolder::split(root, split.folder_options().split_seed(1))));

  // What it printed: the folder, the model, the plan.
  const auto text = read_experiment_log(log);
  CHECK_THAT(text, Catch::Contains("data: " + root.string() + " (stratified split)"));
  CHECK_THAT(text, Catch::Contains("training: 2 epochs, 3 batches of 8 per epoch"));
  CHECK_THAT(text, Catch::Contains("run folder " + run.string()));
}

TEST_CASE("Experiment checks its options before it reads the folder", "[experiment]") {
  test::TempDir dir;
  // The folder does not exist: an invalid option must still be what is reported.
  CHECK_THROWS_WITH(Experiment(dir.path() / "missing", DenseNetOptions::densenet_bc(10, 4), TrainerOptions(),
                               DataOptions().augment("heavy"), nullptr),
                    Catch::Contains("augment must be one of"));
  CHECK_THROWS_WITH(Experiment(dir.path() / "missing", DenseNetOptions::densenet_bc(10, 4),
                               TrainerOptions().epochs(0), DataOptions(), nullptr),
                    Catch::Contains("epochs must be"));
}

TEST_CASE("Experiment balances unbalanced classes and says so; it questions a small image size",
          "[experiment][balance]") {
  test::TempDir dir;
  const auto root = dir.path() / "icons";
  test::make_image_tree(root, {"rare", "common"}, {5, 30}, 12);
  const auto model = DenseNetOptions::densenet_bc(10, 4);
  {
    std::FILE* log = std::tmpfile();
    Experiment experiment(root, model, TrainerOptions(), DataOptions().image_size(8).workers(1), log);
    const auto text = read_experiment_log(log);
    CHECK_THAT(text, Catch::Contains("warning: unbalanced classes: 'rare' has 4 training images, 'common' 24 (1:6.00)"));
    CHECK_THAT(text, Catch::Contains("balance: class-weighted loss (--balance auto"));
    // 12-pixel images trained at 8x8.
    CHECK_THAT(text, Catch::Contains("warning: the images' shorter side is 12 pixels (median), but they are trained at 8x8"));
    CHECK(experiment.trainer().metadata().at("data").at("balance_used") == "weights");
  }
  {
    std::FILE* log = std::tmpfile();
    Experiment experiment(root, model, TrainerOptions(),
                          DataOptions().image_size(12).workers(1).balance(Balance::none), log);
    const auto text = read_experiment_log(log);
    CHECK_THAT(text, Catch::Contains("--balance weights or sampler keeps the model from ignoring the small classes"));
    CHECK_THAT(text, !Catch::Contains("balance: class"));
    CHECK_THAT(text, !Catch::Contains("shorter side"));
  }
  {
    Experiment experiment(root, model, TrainerOptions(),
                          DataOptions().image_size(12).workers(1).balance(Balance::sampler), nullptr);
    CHECK(experiment.trainer().metadata().at("data").at("balance_used") == "sampler");
    int64_t rare = 0;
    for (auto& batch : experiment.train_loader().epoch(0)) rare += (batch.labels == 1).sum().item<int64_t>();  // common 0, rare 1
    CHECK(rare > 4);  // 28 draws, each rare with probability 1/2 (never more than 4 unbalanced)
  }
}

TEST_CASE("learned_little: barely better than always answering the largest class", "[experiment]") {
  // 10 balanced classes: guessing scores 10%, the line is 10% + 25% of the remaining 90% = 32.5%.
  const std::vector<int64_t> ten(10, 100);
  CHECK(learned_little(0.10, ten));
  CHECK(learned_little(0.32, ten));
  CHECK_FALSE(learned_little(0.33, ten));
  CHECK_FALSE(learned_little(0.93, ten));
  // Unbalanced, 80:20: answering the large class scores 80%, so 84% is still little (line 85%).
  CHECK(learned_little(0.84, {80, 20}));
  CHECK_FALSE(learned_little(0.86, {80, 20}));
  // Nothing to judge: no test images, one class, no accuracy.
  CHECK_FALSE(learned_little(0.0, {0, 0}));
  CHECK_FALSE(learned_little(0.0, {10}));
  CHECK_FALSE(learned_little(NAN, ten));
}

TEST_CASE("Experiment warns when the model learned little, and says what to try", "[experiment]") {
  test::TempDir dir;
  // Three classes holding the same 12 images: nothing tells them apart.
  const auto root = dir.path() / "same";
  test::make_image_tree(root, {"a"}, {12}, 12);
  for (const char* name : {"b", "c"}) fs::copy(root / "a", root / name);
  std::FILE* log = std::tmpfile();
  REQUIRE(log != nullptr);
  Experiment experiment(root, DenseNetOptions::densenet_bc(10, 4), TrainerOptions::recommended().min_steps(0).epochs(2).threads(2),
                        DataOptions().image_size(12).batch_size(6).workers(1).train_fraction(0.5), log);
  const auto result = experiment.fit();
  REQUIRE(result.best_epoch >= 1);
  CHECK(result.best_accuracy < 0.5);
  const auto text = read_experiment_log(log);
  CHECK_THAT(text, Catch::Contains("warning: the model learned little: its best test accuracy, "));
  CHECK_THAT(text, Catch::Contains(" the 33.33% that guessing scores (3 classes of the same size)"));
  CHECK_THAT(text, Catch::Contains("It trained for 6 steps on 18 images (6 in the smallest class)"));
  CHECK_THAT(text, Catch::Contains("--epochs 6"));

  // Unbalanced and signal-free ('b' holds 'a''s images and 12 more alike): the line is the share
  // of the largest class.
  const auto unbalanced = dir.path() / "unbalanced";
  test::make_image_tree(unbalanced / "a", {"."}, {12}, 12);
  test::make_image_tree(unbalanced / "b", {"."}, {24}, 12);
  std::FILE* log1 = std::tmpfile();
  REQUIRE(log1 != nullptr);
  Experiment lopsided(unbalanced, DenseNetOptions::densenet_bc(10, 4), TrainerOptions::recommended().min_steps(0).epochs(2).threads(2),
                      DataOptions().image_size(12).batch_size(6).workers(1).train_fraction(0.5), log1);
  lopsided.fit();
  CHECK_THAT(read_experiment_log(log1),
             Catch::Contains(" the 66.67% that always answering the largest class, 'b', scores"));

  // Classes the images tell apart (their pixel values encode the class): no warning.
  const auto distinct = dir.path() / "distinct";
  test::make_image_tree(distinct, {"a", "b", "c"}, {12, 12, 12}, 12);
  std::FILE* log2 = std::tmpfile();
  REQUIRE(log2 != nullptr);
  Experiment learns(distinct, DenseNetOptions::densenet_bc(10, 4), TrainerOptions::recommended().min_steps(0).epochs(30).threads(2),
                    DataOptions().image_size(12).batch_size(6).workers(1).train_fraction(0.5).augment("none"), log2);
  const auto learned = learns.fit();
  const auto text2 = read_experiment_log(log2);
  CHECK(learned.best_accuracy > 0.5);
  CHECK_THAT(text2, !Catch::Contains("learned little"));
}
