// Trainer: learning, best-model selection, resume equivalence, NaN handling, run-folder files,
// schedules and option validation.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <tuple>

#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/nn.hpp"
#include "sedensenet/train.hpp"
#include "support/image_tree.hpp"
#include "support/python.hpp"
#include "support/quadrant_task.hpp"

using namespace sedensenet;
using test::quadrant_task;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
DenseNet tiny_net(int64_t classes = 4, double drop = 0.0) {
  return DenseNet(DenseNetOptions::densenet_bc(10, 4).num_classes(classes).drop_rate(drop));
}

std::vector<std::string> lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  auto pb = b.named_parameters();
  for (const auto& p : a.named_parameters()) {
    if (!torch::equal(p.value(), pb[p.key()])) return false;
  }
  auto bb = b.named_buffers();
  for (const auto& p : a.named_buffers()) {
    if (!torch::equal(p.value(), bb[p.key()])) return false;
  }
  return true;
}

/// Wraps a model and returns NaN logits from the `bad_call`-th training forward on.
struct PoisonedImpl : torch::nn::Module {
  PoisonedImpl(DenseNet inner, int64_t bad_call)
      : net(register_module("net", inner)), bad_call(bad_call) {}
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = net->forward(x);
    if (is_training() && ++calls >= bad_call) y = y * std::numeric_limits<float>::quiet_NaN();
    return y;
  }
  DenseNet net;
  int64_t bad_call;
  int64_t calls = 0;
};
TORCH_MODULE(Poisoned);
}  // namespace

TEST_CASE("Trainer learns a small synthetic task far above chance", "[trainer]") {
  auto [train_x, train_y] = quadrant_task(512, 1);
  auto [test_x, test_y] = quadrant_task(256, 2);
  TensorSource train(train_x, train_y, 32, true, 3);
  TensorSource test(test_x, test_y, 64, false);
  auto net = tiny_net();
  Trainer trainer(net, TrainerOptions::recommended().min_steps(0).epochs(4).lr(5e-3).threads(2));
  auto result = trainer.fit(train, &test);
  REQUIRE(result.history.epochs().size() == 4);
  const auto& last = result.history.epochs().back();
  INFO("test accuracy " << last.test_accuracy << " (chance 0.25)");
  CHECK(result.best_accuracy > 0.9);
  CHECK(last.train_loss < result.history.epochs().front().train_loss);
  CHECK(std::isnan(last.test_top5));  // fewer than 5 classes: no top-5
  CHECK(last.images_per_second > 0);
  CHECK(last.train_images == 512);
}

TEST_CASE("On the CPU a standard-mode DenseNet trains on channels-last maps, as NCHW does",
          "[trainer][channels_last]") {
  // Channels-last changes the layout, not the function: two epochs on channels-last and on NCHW
  // maps end with the same weights up to float rounding (other summation orders in oneDNN and in
  // the batch norm kernels).
  const auto task = quadrant_task(128, 31);
  const torch::Tensor& train_x = task.first;
  const torch::Tensor& train_y = task.second;
  auto train_for = [&](bool channels_last, MemoryMode memory) {
    torch::manual_seed(5);
    auto net = DenseNet(DenseNetOptions::densenet_bc(10, 4).num_classes(4).memory(memory));
    TensorSource train(train_x, train_y, 32, true, 3);
    Trainer trainer(net, TrainerOptions::recommended().min_steps(0).epochs(2).threads(2).channels_last(channels_last));
    auto result = trainer.fit(train);
    return std::make_tuple(net, result.history.epochs().back().train_loss);
  };
  auto [cl, cl_loss] = train_for(true, MemoryMode::standard);
  auto [nchw, nchw_loss] = train_for(false, MemoryMode::standard);
  CHECK(cl->memory_format() == torch::MemoryFormat::ChannelsLast);
  CHECK(nchw->memory_format() == torch::MemoryFormat::Contiguous);
  const torch::Tensor conv2 = cl->named_parameters()["features.denseblock1.denselayer1.conv2.weight"];
  CHECK(conv2.is_contiguous(torch::MemoryFormat::ChannelsLast));
  CHECK_FALSE(conv2.is_contiguous());
  CHECK(cl_loss == Approx(nchw_loss).epsilon(1e-4));
  // A copy runs in the same layout, with the same values.
  const auto copy = std::dynamic_pointer_cast<DenseNetImpl>(cl->clone());
  REQUIRE(copy != nullptr);
  CHECK(copy->memory_format() == torch::MemoryFormat::ChannelsLast);
  const torch::Tensor copied = copy->named_parameters()["features.denseblock1.denselayer1.conv2.weight"];
  CHECK(copied.is_contiguous(torch::MemoryFormat::ChannelsLast));
  CHECK(torch::equal(copied, conv2));
  auto reference = nchw->named_parameters();
  for (const auto& p : cl->named_parameters()) {
    INFO(p.key());
    CHECK(torch::allclose(p.value(), reference[p.key()], 1e-3, 1e-4));
  }
  // The efficient modes keep their NCHW block buffers: the model is left as it is.
  auto [efficient, efficient_loss] = train_for(true, MemoryMode::efficient);
  CHECK(efficient->memory_format() == torch::MemoryFormat::Contiguous);
  CHECK(efficient_loss == Approx(nchw_loss).epsilon(1e-4));
  // forward gives its input the model's layout, so NCHW images work on a channels-last model.
  torch::NoGradGuard no_grad;
  cl->eval();
  const auto x = train_x.narrow(0, 0, 8);
  const auto logits = cl->forward(x);
  CHECK(torch::allclose(logits, cl->forward(x.contiguous(torch::MemoryFormat::ChannelsLast))));
}

TEST_CASE("The model ends with the weights of the best test accuracy", "[trainer][best]") {
  auto [train_x, train_y] = quadrant_task(256, 4);
  auto [test_x, test_y] = quadrant_task(128, 5);
  TensorSource train(train_x, train_y, 32, true, 6);
  TensorSource test(test_x, test_y, 64, false);
  test::TempDir dir;
  auto net = tiny_net();
  // A high learning rate makes the test accuracy move up and down between epochs.
  Trainer trainer(net, TrainerOptions().epochs(5).lr(3e-2).threads(2).run_dir(dir.path().string()));
  std::vector<std::shared_ptr<torch::nn::Module>> snapshots;
  trainer.on_epoch_end([&](const EpochMetrics&) { snapshots.push_back(net->clone()); });
  auto result = trainer.fit(train, &test);
  const auto& epochs = result.history.epochs();
  int64_t best = 0;
  for (size_t i = 0; i < epochs.size(); ++i) {
    if (epochs[i].test_accuracy > epochs[static_cast<size_t>(best)].test_accuracy) best = static_cast<int64_t>(i);
  }
  CHECK(result.best_epoch == best + 1);
  CHECK(result.best_accuracy == epochs[static_cast<size_t>(best)].test_accuracy);
  CHECK(same_parameters(*net, *snapshots[static_cast<size_t>(best)]));
  CHECK(trainer.evaluate(test).accuracy == result.best_accuracy);
  // best.pt holds the same weights.
  auto reloaded = tiny_net();
  io::load_module_tensors(*reloaded, io::read_checkpoint_file(dir / "best.pt").model, "best.pt");
  CHECK(same_parameters(*reloaded, *net));
}

TEST_CASE("An interrupted and resumed run ends with the weights of an uninterrupted one",
          "[trainer][resume]") {
  test::TempDir dir;
  test::make_image_tree(dir / "data", {"a", "b", "c"}, {12, 12, 12}, 12);
  auto splits = data::ImageFolder::split(dir / "data");
  auto transform = data::compose({std::make_shared<data::RandomCrop>(12, 2),
                                  std::make_shared<data::RandomHorizontalFlip>(),
                                  std::make_shared<data::ToTensor>()});
  auto options = TrainerOptions::recommended().min_steps(0).epochs(3).threads(2).mixup_alpha(0.4).seed(9);
  auto run = [&](const fs::path& run_dir, int stop_after, bool resume) {
    data::ImageLoader train_loader(splits.train, transform, data::LoaderOptions().batch_size(8).seed(2).workers(2));
    data::ImageLoader test_loader(splits.test, std::make_shared<data::ToTensor>(),
                                  data::LoaderOptions().batch_size(8).shuffle(false));
    ImageLoaderSource train(train_loader), test(test_loader);
    torch::manual_seed(123);  // the same initial weights everywhere
    auto net = tiny_net(3, /*drop=*/0.2);
    Trainer trainer(net, TrainerOptions(options).run_dir(run_dir.string()));
    if (resume) trainer.resume(run_dir);
    if (stop_after > 0) {
      trainer.on_epoch_end([&, stop_after](const EpochMetrics& m) {
        if (m.epoch == stop_after) trainer.request_stop();
      });
    }
    auto result = trainer.fit(train, &test);
    return std::make_pair(net, result);
  };
  auto [straight, straight_result] = run(dir / "straight", 0, false);
  auto [first_part, first_result] = run(dir / "interrupted", 2, false);
  CHECK(first_result.interrupted);
  CHECK(first_result.history.epochs().size() == 2);
  auto [resumed, resumed_result] = run(dir / "interrupted", 0, true);
  CHECK_FALSE(resumed_result.interrupted);
  REQUIRE(resumed_result.history.epochs().size() == 3);
  // Same history (timings aside), same best epoch, same final (best) weights.
  for (size_t i = 0; i < 3; ++i) {
    CHECK(resumed_result.history.epochs()[i].train_loss == straight_result.history.epochs()[i].train_loss);
    CHECK(resumed_result.history.epochs()[i].test_accuracy == straight_result.history.epochs()[i].test_accuracy);
  }
  CHECK(resumed_result.best_epoch == straight_result.best_epoch);
  CHECK(same_parameters(*resumed, *straight));
  // And the last.pt of both runs holds identical weights (the state after epoch 3).
  auto load_last = [](const fs::path& p) {
    auto net = tiny_net(3, 0.2);
    io::load_module_tensors(*net, io::read_checkpoint_file(p).model, p.string());
    return net;
  };
  auto last_a = load_last(dir / "straight" / "last.pt");
  auto last_b = load_last(dir / "interrupted" / "last.pt");
  CHECK(same_parameters(*last_a, *last_b));
}

TEST_CASE("A run stopped in the middle of an epoch resumes at the next batch and ends as an uninterrupted one",
          "[trainer][resume][interrupt]") {
  test::TempDir dir;
  test::make_image_tree(dir / "data", {"a", "b", "c"}, {12, 12, 12}, 12);
  auto splits = data::ImageFolder::split(dir / "data");
  auto transform = data::compose({std::make_shared<data::RandomCrop>(12, 2),
                                  std::make_shared<data::RandomHorizontalFlip>(),
                                  std::make_shared<data::ToTensor>()});
  // Dropout, MixUp, augmentation and a per-batch schedule: everything that depends on the position;
  // and a moving average of the weights, which last.pt must carry too.
  const double ema = GENERATE(0.0, 0.9);
  CAPTURE(ema);
  auto options = TrainerOptions::recommended().min_steps(0).epochs(2).threads(2).mixup_alpha(0.4).seed(5).ema_decay(ema);
  struct Stop {
    int64_t epoch, batch;
  };
  auto run = [&](const fs::path& run_dir, std::optional<Stop> stop, bool resume) {
    data::ImageLoader train_loader(splits.train, transform, data::LoaderOptions().batch_size(4).seed(3).workers(2));
    data::ImageLoader test_loader(splits.test, std::make_shared<data::ToTensor>(),
                                  data::LoaderOptions().batch_size(8).shuffle(false));
    ImageLoaderSource train(train_loader), test(test_loader);
    torch::manual_seed(77);
    auto net = tiny_net(3, /*drop=*/0.2);
    Trainer trainer(net, TrainerOptions(options).run_dir(run_dir.string()));
    if (resume) trainer.resume(run_dir);
    std::vector<int64_t> batches_seen;
    trainer.on_batch_end([&, stop](const BatchEvent& e) {
      batches_seen.push_back(e.batch);
      if (stop && e.epoch == stop->epoch && e.batch == stop->batch) trainer.request_stop();
    });
    auto result = trainer.fit(train, &test);
    return std::make_tuple(net, result, batches_seen, trainer.completed_epochs(), trainer.batches_into_epoch());
  };
  auto [straight, straight_result, straight_batches, e0, b0] = run(dir / "straight", std::nullopt, false);
  const auto per_epoch = static_cast<int64_t>(straight_batches.size()) / 2;
  REQUIRE(per_epoch >= 5);

  // Stopped after batch 3 of epoch 2: last.pt records epoch 1 plus 3 batches.
  auto [first, first_result, first_batches, epochs_done, batches_done] = run(dir / "cut", Stop{2, 3}, false);
  CHECK(first_result.interrupted);
  CHECK(epochs_done == 1);
  CHECK(batches_done == 3);
  CHECK(static_cast<int64_t>(first_batches.size()) == per_epoch + 3);
  CHECK(first_result.history.epochs().size() == 1);

  // Resumed: batches 4, 5, ... of epoch 2, then the same end state as the uninterrupted run.
  auto [resumed, resumed_result, resumed_batches, e2, b2] = run(dir / "cut", std::nullopt, true);
  REQUIRE(static_cast<int64_t>(resumed_batches.size()) == per_epoch - 3);
  CHECK(resumed_batches.front() == 4);
  CHECK(resumed_batches.back() == per_epoch);
  CHECK_FALSE(resumed_result.interrupted);
  CHECK(b2 == 0);
  REQUIRE(resumed_result.history.epochs().size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    // The interrupted epoch's metrics include the batches before the stop.
    CHECK(resumed_result.history.epochs()[i].train_loss == straight_result.history.epochs()[i].train_loss);
    CHECK(resumed_result.history.epochs()[i].train_accuracy == straight_result.history.epochs()[i].train_accuracy);
    CHECK(resumed_result.history.epochs()[i].test_accuracy == straight_result.history.epochs()[i].test_accuracy);
  }
  CHECK(same_parameters(*resumed, *straight));

  // Stopping inside the first epoch works too (no best.pt yet).
  auto [early, early_result, early_batches, e3, b3] = run(dir / "early", Stop{1, 2}, false);
  CHECK(early_result.interrupted);
  CHECK(e3 == 0);
  CHECK(b3 == 2);
  CHECK(fs::exists(dir / "early" / "last.pt"));
  CHECK_FALSE(fs::exists(dir / "early" / "best.pt"));
  auto [late, late_result, late_batches, e4, b4] = run(dir / "early", std::nullopt, true);
  CHECK(static_cast<int64_t>(late_batches.size()) == 2 * per_epoch - 2);
  CHECK(same_parameters(*late, *straight));
}

TEST_CASE("A NaN loss stops the run naming the epoch and batch and last.pt keeps the last good state",
          "[trainer][nan]") {
  auto [train_x, train_y] = quadrant_task(128, 7);
  TensorSource train(train_x, train_y, 32, true, 1);
  test::TempDir dir;
  Poisoned model(tiny_net(), /*bad_call=*/6);  // 4 batches per epoch: fails at epoch 2, batch 2
  Trainer trainer(model, TrainerOptions().epochs(3).threads(2).run_dir(dir.path().string()));
  std::shared_ptr<torch::nn::Module> after_epoch_1;
  trainer.on_epoch_end([&](const EpochMetrics&) { after_epoch_1 = model->net->clone(); });
  REQUIRE_THROWS_AS(trainer.fit(train), TrainingError);
  try {
    Poisoned again(tiny_net(), 6);
    Trainer t2(again, TrainerOptions().epochs(3).threads(2).run_dir((dir / "b").string()));
    t2.fit(train);
  } catch (const TrainingError& e) {
    CHECK_THAT(std::string(e.what()), Contains("epoch 2, batch 2 of 4") && Contains("nan") &&
                                          Contains("last.pt holds the last good state (epoch 1)") &&
                                          Contains("Lower the learning rate"));
  }
  REQUIRE(after_epoch_1);
  const auto last = io::read_checkpoint_file(dir / "last.pt");
  CHECK(last.state.at("epoch").get<int64_t>() == 1);
  Poisoned reloaded(tiny_net(), 6);
  io::load_module_tensors(*reloaded, last.model, "last.pt");
  CHECK(same_parameters(*reloaded->net, *after_epoch_1));
}

TEST_CASE("The run folder holds config, history, checkpoints, metrics and plots",
          "[trainer][files]") {
  test::TempDir dir;
  torch::manual_seed(0);
  auto [train_x, train_y] = quadrant_task(96, 8);
  auto [test_x, test_y] = quadrant_task(64, 9);
  // Six classes (two never used) so that top-5 is reported.
  TensorSource train(train_x, train_y, 32, true, 1), test(test_x, test_y, 32, false);
  auto net = tiny_net(6);
  Trainer trainer(net, TrainerOptions().epochs(2).threads(2).run_dir(dir.path().string()));
  trainer.set_class_names({"tl", "tr", "bl", "br", "x", "y"});
  trainer.set_metadata({{"model", "tiny"}});
  auto result = trainer.fit(train, &test);

  for (const auto* name : {"config.json", "history.csv", "history.jsonl", "best.pt", "last.pt",
                           "metrics.json", "confusion_matrix.json", "confusion_matrix.csv",
                           "loss.svg", "accuracy.svg", "lr.svg", "confusion_matrix.svg"}) {
    INFO(name);
    CHECK(fs::exists(dir / name));
  }
  auto config = nlohmann::json::parse(io::read_text_file(dir / "config.json"));
  CHECK(config.at("trainer").at("epochs") == 2);
  CHECK(config.at("trainer").at("lr") == 1e-4);
  CHECK(config.at("metadata").at("model") == "tiny");
  CHECK(TrainerOptions::from_json(config.at("trainer")).to_json() == config.at("trainer"));

  auto csv = lines(dir / "history.csv");
  REQUIRE(csv.size() == 3);
  CHECK(csv[0] == "epoch,train_loss,train_accuracy,train_top5,test_loss,test_accuracy,test_top5,"
                  "lr,seconds,images_per_second,train_images,test_macro_f1");
  CHECK(csv[1].rfind("1,", 0) == 0);
  auto jsonl = lines(dir / "history.jsonl");
  REQUIRE(jsonl.size() == 2);
  auto second = nlohmann::json::parse(jsonl[1]);
  CHECK(second.at("epoch") == 2);
  CHECK(second.at("test_accuracy").get<double>() == result.history.epochs()[1].test_accuracy);
  CHECK(!second.at("test_top5").is_null());  // 6 classes: top-5 reported
  CHECK(second.at("train_images") == 96);

  auto metrics = nlohmann::json::parse(io::read_text_file(dir / "metrics.json"));
  CHECK(metrics.at("per_class").contains("tl"));
  CHECK(metrics.at("per_class").at("tl").contains("f1"));
  CHECK(metrics.at("test_images") == 64);
  auto confusion = nlohmann::json::parse(io::read_text_file(dir / "confusion_matrix.json"));
  int64_t total = 0;
  for (const auto& row : confusion.at("matrix")) {
    for (const auto& v : row) total += v.get<int64_t>();
  }
  CHECK(total == 64);
  CHECK(lines(dir / "confusion_matrix.csv")[0] == "true\\predicted,tl,tr,bl,br,x,y");
  CHECK_THAT(io::read_text_file(dir / "accuracy.svg"), Contains("<svg") && Contains("test top-5"));
}

TEST_CASE("Confusion matrix: precision, recall and F1 per class", "[trainer][metrics]") {
  ConfusionMatrix m(3);
  // true: 0 0 0 1 1 2 ; predicted: 0 0 1 1 2 2
  auto logits = torch::zeros({6, 3});
  const std::vector<int64_t> predicted = {0, 0, 1, 1, 2, 2};
  for (int64_t i = 0; i < 6; ++i) logits[i][predicted[static_cast<size_t>(i)]] = 1;
  m.add(logits, torch::tensor({0, 0, 0, 1, 1, 2}, torch::kLong));
  auto stats = m.per_class();
  CHECK(stats[0].precision == Approx(1.0));
  CHECK(stats[0].recall == Approx(2.0 / 3));
  CHECK(stats[1].precision == Approx(0.5));
  CHECK(stats[1].recall == Approx(0.5));
  CHECK(stats[2].precision == Approx(0.5));
  CHECK(stats[2].recall == Approx(1.0));
  CHECK(stats[2].f1 == Approx(2 * 0.5 / 1.5));
  CHECK(m.accuracy() == Approx(4.0 / 6));
}

TEST_CASE("Learning-rate schedules", "[trainer][schedule]") {
  const int64_t batches = 10;
  SECTION("cosine with warm-up") {
    LearningRateSchedule s(TrainerOptions().epochs(10).lr(1.0).scheduler(ScheduleKind::cosine)
                               .warmup_epochs(2).min_lr(0.1), batches);
    CHECK(s.at(0, 0) == Approx(0.01));
    CHECK(s.at(1, 0) == Approx(0.505));
    CHECK(s.at(2, 0) == Approx(1.0));
    CHECK(s.at(6, 0) == Approx(0.55));
    CHECK(s.at(9, 9) == Approx(0.1).margin(0.01));
  }
  SECTION("step and multistep") {
    LearningRateSchedule step(TrainerOptions().epochs(10).lr(1.0).scheduler(ScheduleKind::step)
                                  .step_size(3).gamma(0.5), batches);
    CHECK(step.at(2, 9) == Approx(1.0));
    CHECK(step.at(3, 0) == Approx(0.5));
    CHECK(step.at(6, 0) == Approx(0.25));
    LearningRateSchedule multi(TrainerOptions().epochs(10).lr(1.0).scheduler(ScheduleKind::multistep)
                                   .milestones({2, 5}).gamma(0.1), batches);
    CHECK(multi.at(1, 0) == Approx(1.0));
    CHECK(multi.at(2, 0) == Approx(0.1));
    CHECK(multi.at(5, 0) == Approx(0.01));
  }
  SECTION("onecycle") {
    LearningRateSchedule s(TrainerOptions().epochs(10).lr(1.0).scheduler(ScheduleKind::onecycle), batches);
    CHECK(s.at(0, 0) == Approx(1.0 / 25));
    CHECK(s.at(3, 0) == Approx(1.0));
    CHECK(s.at(9, 9) < 0.01);
  }
  SECTION("plateau") {
    LearningRateSchedule s(TrainerOptions().epochs(10).lr(1.0).scheduler(ScheduleKind::plateau)
                               .plateau_patience(2).plateau_factor(0.5), batches);
    s.observe(1.0);
    s.observe(1.1);
    CHECK(s.at(2, 0) == Approx(1.0));
    s.observe(1.2);
    CHECK(s.at(3, 0) == Approx(0.5));
    auto saved = s.to_json();
    LearningRateSchedule restored(TrainerOptions().epochs(10).lr(1.0).scheduler(ScheduleKind::plateau)
                                      .plateau_patience(2).plateau_factor(0.5), batches);
    restored.from_json(saved);
    CHECK(restored.at(4, 0) == Approx(0.5));
  }
}

TEST_CASE("Early stopping ends the run when the test accuracy stops improving",
          "[trainer][early_stopping]") {
  auto [x, y] = quadrant_task(64, 10);
  TensorSource train(x, y, 32), test(x.narrow(0, 0, 32), y.narrow(0, 0, 32), 32, false);
  auto net = tiny_net();
  // lr so small that nothing changes: no improvement after the first epoch.
  Trainer trainer(net, TrainerOptions().epochs(20).lr(1e-12).early_stopping_patience(2).threads(2));
  auto result = trainer.fit(train, &test);
  CHECK(result.early_stopped);
  const auto epochs = static_cast<int64_t>(result.history.epochs().size());
  CHECK(epochs < 20);
  CHECK(result.best_epoch == epochs - 2);  // two epochs without improvement, then stop
}

TEST_CASE("TrainerOptions are validated with the option, its value and the range",
          "[trainer][errors]") {
  using Case = std::pair<std::function<TrainerOptions()>, std::string>;
  auto [make, message] = GENERATE(values<Case>({
      {[] { return TrainerOptions().epochs(0); }, "epochs must be in [1, 100000], got 0"},
      {[] { return TrainerOptions().lr(-1); }, "lr must be > 0, got -1"},
      {[] { return TrainerOptions().momentum(1.0); }, "momentum must be in [0, 1), got 1"},
      {[] { return TrainerOptions().nesterov(true); }, "nesterov applies to the sgd optimizer only"},
      {[] { return TrainerOptions().label_smoothing(1.0); }, "label_smoothing must be in [0, 1), got 1"},
      {[] { return TrainerOptions().scheduler(ScheduleKind::multistep); }, "needs milestones"},
      {[] { return TrainerOptions().milestones({3, 2}); }, "milestones must be increasing"},
      {[] { return TrainerOptions().grad_clip_norm(-1); }, "grad_clip_norm must be >= 0"},
      {[] { return TrainerOptions().device("tpu"); }, "device must be cpu, cuda or cuda:N, got 'tpu'"},
      {[] { return TrainerOptions().min_lr(1.0); }, "min_lr must be in [0, lr]"},
      {[] { return TrainerOptions().threads(-2); }, "threads must be >= 0"},
  }));
  INFO(message);
  auto net = tiny_net();
  REQUIRE_THROWS_WITH(Trainer(net, make()), Contains(message));
}

TEST_CASE("Resume refuses a folder without a checkpoint and a damaged checkpoint",
          "[trainer][resume][errors]") {
  test::TempDir dir;
  auto net = tiny_net();
  Trainer trainer(net, TrainerOptions().threads(2));
  REQUIRE_THROWS_WITH(trainer.resume(dir.path()), Contains("last.pt not found"));
  std::ofstream(dir / "last.pt") << "not a checkpoint";
  REQUIRE_THROWS_WITH(trainer.resume(dir.path()), Contains("is not a readable checkpoint"));
  REQUIRE_THROWS_WITH(TrainerOptions::from_json({{"epochz", 3}}), Contains("unknown key 'epochz'"));
  REQUIRE_THROWS_WITH(TrainerOptions::from_json({{"epochs", "three"}}), Contains("'epochs' must be an integer, got \"three\""));
  REQUIRE_THROWS_WITH(TrainerOptions::from_json({{"epochs", 3e20}}), Contains("'epochs' must be an integer"));
  REQUIRE_THROWS_WITH(TrainerOptions::from_json({{"threads", int64_t{1} << 40}}), Contains("'threads' is out of range"));
}

TEST_CASE("Resume works for a module that is not Cloneable, with best.pt present",
          "[trainer][resume]") {
  auto [train_x, train_y] = quadrant_task(64, 3);
  TensorSource train(train_x, train_y, 32, true, 1);
  test::TempDir dir;
  Poisoned first(tiny_net(), /*bad_call=*/1000000);  // a plain torch::nn::Module: no clone()
  Trainer(first, TrainerOptions().epochs(1).threads(2).run_dir(dir.path().string())).fit(train);
  REQUIRE(fs::exists(dir / "best.pt"));
  Poisoned again(tiny_net(), 1000000);
  Trainer trainer(again, TrainerOptions().epochs(2).threads(2).run_dir(dir.path().string()));
  REQUIRE_NOTHROW(trainer.resume(dir.path()));
  CHECK(trainer.completed_epochs() == 1);
  CHECK(same_parameters(*again, *first));  // the weights after epoch 1 (last.pt)
}

TEST_CASE("A run folder holding a run is kept: refused unless resumed or overwrite is set",
          "[trainer][files][errors]") {
  auto [train_x, train_y] = quadrant_task(64, 3);
  TensorSource train(train_x, train_y, 32, true, 1);
  test::TempDir dir;
  const auto options = TrainerOptions().epochs(1).threads(2).run_dir(dir.path().string());
  Trainer first(tiny_net(), options);
  first.fit(train);
  const auto best = io::read_text_file(dir / "best.pt");
  // The same trainer may go on writing it (a second fit continues the run).
  CHECK_NOTHROW(first.fit(train));

  // Another run into it: refused, naming the folder and the ways out, and nothing changes.
  Trainer second(tiny_net(), options);
  CHECK_THROWS_WITH(second.fit(train), Contains("run folder " + dir.path().string() + " already holds a run (last.pt, best.pt") &&
                                           Contains("resume") && Contains("overwrite"));
  CHECK(io::read_text_file(dir / "best.pt") == best);
  CHECK((RunFolder(dir.path()).run_files() == std::vector<std::string>{"last.pt", "best.pt", "history.csv", "history.jsonl",
                                                                      "loss.svg", "accuracy.svg", "lr.svg"}));

  // A resumed run continues it.
  Trainer resumed(tiny_net(), TrainerOptions(options).epochs(2));
  resumed.resume(dir.path());
  CHECK_NOTHROW(resumed.fit(train));

  // overwrite: the run's files are replaced (a stale one deleted), other files stay.
  std::ofstream(dir / "notes.txt") << "mine";
  std::ofstream(dir / "confusion_matrix.svg") << "stale";
  Trainer replacing(tiny_net(), TrainerOptions(options).overwrite(true));
  replacing.fit(train);  // no test source: no metrics or confusion matrix are written
  CHECK(replacing.history().epochs().size() == 1);
  CHECK_FALSE(fs::exists(dir / "confusion_matrix.svg"));
  CHECK(fs::exists(dir / "notes.txt"));

  // A folder with only config.json (a run stopped before its first epoch) holds nothing to keep.
  test::TempDir started;
  std::ofstream(started / "config.json") << "{}";
  CHECK(RunFolder(started.path()).run_files().empty());
  CHECK_NOTHROW(Trainer(tiny_net(), TrainerOptions(options).run_dir(started.path().string())).fit(train));
}

TEST_CASE("best_metric picks the best epoch by accuracy, macro-F1 or loss; epochs record macro-F1 and recall",
          "[trainer][best]") {
  auto [train_x, train_y] = quadrant_task(256, 4);
  auto [test_x, test_y] = quadrant_task(128, 5);
  for (const auto metric : {BestMetric::macro_f1, BestMetric::loss}) {
    INFO(to_string(metric));
    TensorSource train(train_x, train_y, 32, true, 6);
    TensorSource test(test_x, test_y, 64, false);
    auto net = tiny_net();
    Trainer trainer(net, TrainerOptions().epochs(5).lr(3e-2).threads(2).best_metric(metric));
    auto result = trainer.fit(train, &test);
    const auto& epochs = result.history.epochs();
    size_t best = 0;
    for (size_t i = 0; i < epochs.size(); ++i) {
      const bool better = metric == BestMetric::loss ? epochs[i].test_loss < epochs[best].test_loss
                                                     : epochs[i].test_macro_f1 > epochs[best].test_macro_f1;
      if (better) best = i;
    }
    CHECK(result.best_epoch == static_cast<int64_t>(best) + 1);
    CHECK(result.best_accuracy == epochs[best].test_accuracy);
    // The model ends with that epoch's weights: its evaluation gives that epoch's figures.
    const auto evaluation = trainer.evaluate(test);
    CHECK(evaluation.loss == Approx(epochs[best].test_loss).epsilon(1e-6));
    CHECK(evaluation.confusion.macro_f1() == Approx(epochs[best].test_macro_f1));
    for (const auto& m : epochs) {
      REQUIRE(m.test_recall.size() == 4);
      CHECK(m.test_top_class >= 0);
      CHECK(m.test_top_class < 4);
      CHECK(m.test_top_class_share >= 0.25 - 1e-9);  // the most predicted class: at least a quarter
      CHECK(m.test_top_class_share <= 1.0);
    }
    // And the history round-trips them.
    const auto again = History::from_json(result.history.to_json());
    CHECK(again.epochs().back().test_macro_f1 == epochs.back().test_macro_f1);
    CHECK(again.epochs().back().test_recall == epochs.back().test_recall);
  }
  CHECK(TrainerOptions::recommended().best_metric() == BestMetric::macro_f1);
  CHECK(TrainerOptions().best_metric() == BestMetric::accuracy);  // the reference's
}

TEST_CASE("Class weights weight the training loss as PyTorch's weighted cross-entropy", "[trainer][balance]") {
  CHECK(torch::allclose(class_balance_weights({10, 30}), torch::tensor({2.0f, 40.0f / 60.0f})));
  CHECK_THROWS_WITH(class_balance_weights({3, 0}), Contains("every class needs images"));
  // (not a structured binding: the lambda below captures them, which clang refuses in C++17)
  const auto task = quadrant_task(64, 8);
  const auto& x = task.first;
  const auto& y = task.second;
  const auto skew = torch::tensor({4.0f, 0.25f, 0.25f, 0.25f});
  // One step of plain SGD (no momentum, decay or clipping) on one batch of 64.
  const auto step = [&](std::optional<torch::Tensor> weights) {
    torch::manual_seed(1);
    auto net = tiny_net();
    Trainer trainer(net, TrainerOptions().epochs(1).threads(2).optimizer(OptimizerKind::sgd).momentum(0).lr(0.1));
    if (weights) trainer.set_class_weights(*weights);
    TensorSource source(x, y, 64, false);
    trainer.fit(source);
    return net;
  };
  auto plain = step(std::nullopt);
  auto ones = step(torch::ones({4}));
  auto skewed = step(skew);
  CHECK(same_parameters(*plain, *ones));  // weights of 1: the plain loss
  CHECK_FALSE(same_parameters(*plain, *skewed));
  // The same step by hand with PyTorch's weighted cross-entropy.
  torch::manual_seed(1);
  auto manual = tiny_net();
  manual->train();
  auto loss = torch::nn::functional::cross_entropy(manual->forward(x), y,
                                                   torch::nn::functional::CrossEntropyFuncOptions().weight(skew));
  loss.backward();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : manual->parameters()) p.sub_(0.1 * p.grad());
  }
  auto expected = manual->named_parameters();
  for (const auto& p : skewed->named_parameters()) {
    INFO(p.key());
    CHECK(torch::allclose(p.value(), expected[p.key()], 1e-5, 1e-6));
  }
}
