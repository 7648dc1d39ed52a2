// The epoch count a run decides for itself. TrainerOptions::time_budget_minutes: the count fixed
// after the first epoch, a run that trains as one given that count would, and a resumed run that
// keeps the count. TrainerOptions::min_steps: the count raised on a small data set, the same way.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/nn.hpp"
#include "sedensenet/train.hpp"
#include "support/python.hpp"
#include "support/quadrant_task.hpp"

using namespace sedensenet;
using test::quadrant_task;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

struct BudgetRun {
  DenseNet net;
  TrainResult result;
  int64_t planned = 0;
};

/// Trains a small DenseNet on the quadrant task (2 batches per epoch) with `options`, from the same
/// initial weights every time. `slow_first_epoch` sleeps this long after each batch of epoch 1;
/// `stop_after` requests a stop at the end of that epoch; `resume` continues the run folder.
BudgetRun train(const TrainerOptions& options, double slow_first_epoch = 0, int64_t stop_after = 0,
                bool resume = false) {
  auto [x, y] = quadrant_task(64, 5);
  TensorSource train_source(x, y, 32), test_source(x.narrow(0, 0, 32), y.narrow(0, 0, 32), 32, false);
  torch::manual_seed(77);
  DenseNet net(DenseNetOptions::densenet_bc(10, 4).num_classes(4));
  Trainer trainer(net, options);
  if (resume) trainer.resume(options.run_dir());
  if (slow_first_epoch > 0) {
    trainer.on_batch_end([slow_first_epoch](const BatchEvent& e) {
      if (e.epoch == 1) std::this_thread::sleep_for(std::chrono::duration<double>(slow_first_epoch));
    });
  }
  if (stop_after > 0) {
    trainer.on_epoch_end([&trainer, stop_after](const EpochMetrics& m) {
      if (m.epoch == stop_after) trainer.request_stop();
    });
  }
  auto result = trainer.fit(train_source, &test_source);
  return {net, result, trainer.planned_epochs()};
}

void check_same_run(const BudgetRun& a, const BudgetRun& b) {
  REQUIRE(a.result.history.epochs().size() == b.result.history.epochs().size());
  for (size_t i = 0; i < a.result.history.epochs().size(); ++i) {
    const auto& ma = a.result.history.epochs()[i];
    const auto& mb = b.result.history.epochs()[i];
    CHECK(ma.train_loss == mb.train_loss);
    CHECK(ma.lr == mb.lr);
    CHECK(ma.test_loss == mb.test_loss);
  }
  auto pb = b.net->named_parameters();
  for (const auto& p : a.net->named_parameters()) CHECK(torch::equal(p.value(), pb[p.key()]));
}

int64_t planned_in_last_checkpoint(const fs::path& run_dir) {
  return io::read_checkpoint_file(run_dir / "last.pt").state.at("planned_epochs").get<int64_t>();
}

}  // namespace

TEST_CASE("epochs_within_budget: as many epochs as fit at the first one's pace, 1 to the maximum",
          "[trainer][time_budget]") {
  CHECK(epochs_within_budget(600, 50, 30) == 12);
  CHECK(epochs_within_budget(600, 60, 30) == 10);  // exactly ten fit
  CHECK(epochs_within_budget(600, 61, 30) == 9);
  CHECK(epochs_within_budget(600, 50, 8) == 8);    // the maximum wins
  CHECK(epochs_within_budget(10, 50, 30) == 1);    // the first epoch is done whatever the budget
  CHECK(epochs_within_budget(600, 0, 30) == 30);   // no measurable time: the maximum
  CHECK(epochs_within_budget(600, NAN, 30) == 30);
  CHECK(epochs_within_budget(1e300, 1e-300, 30) == 30);
}

TEST_CASE("A time budget needs a first epoch whose learning rates do not depend on the epoch count",
          "[trainer][time_budget][errors]") {
  const auto base = TrainerOptions::recommended().time_budget_minutes(10);
  CHECK_NOTHROW(base.validate());
  CHECK_NOTHROW(TrainerOptions().time_budget_minutes(10).validate());  // constant schedule
  CHECK_THROWS_WITH(TrainerOptions(base).warmup_epochs(0.5).validate(),
                    Contains("time_budget_minutes") && Contains("warmup_epochs 0.5"));
  CHECK_THROWS_WITH(TrainerOptions(base).scheduler(ScheduleKind::onecycle).validate(),
                    Contains("time_budget_minutes") && Contains("onecycle"));
  CHECK_THROWS_WITH(TrainerOptions(base).time_budget_minutes(-1).validate(), Contains("time_budget_minutes"));
  // And it round-trips through config.json's JSON.
  CHECK(TrainerOptions::from_json(base.to_json()).time_budget_minutes() == 10);
}

TEST_CASE("A time budget fixes the epoch count after the first epoch; the run is the one with that count",
          "[trainer][time_budget]") {
  test::TempDir dir;
  const auto options = TrainerOptions::recommended().min_steps(0).lr(5e-3).threads(2).seed(3);

  SECTION("a budget the first epoch uses up: one epoch, the first of any longer run") {
    auto budget = train(TrainerOptions(options).epochs(4).time_budget_minutes(1e-9).run_dir((dir / "tiny").string()));
    auto longer = train(TrainerOptions(options).epochs(4));
    CHECK(budget.planned == 1);
    CHECK_FALSE(budget.result.interrupted);
    REQUIRE(budget.result.history.epochs().size() == 1);
    // Warm-up is the whole first epoch, whatever the count: the same losses as the 4-epoch run's.
    CHECK(budget.result.history.epochs()[0].train_loss == longer.result.history.epochs()[0].train_loss);
    CHECK(planned_in_last_checkpoint(dir / "tiny") == 1);
  }

  SECTION("a budget larger than the maximum: the run given epochs, unchanged") {
    auto budget = train(TrainerOptions(options).epochs(3).time_budget_minutes(1e6));
    auto plain = train(TrainerOptions(options).epochs(3));
    CHECK(budget.planned == 3);
    check_same_run(budget, plain);
  }

  SECTION("a budget for two epochs of a slow first one: the same as epochs 2, schedule included") {
    // Epoch 1 sleeps 2 x 2 s, so it takes 4 s and a little; 11.9 s hold two such epochs (and not
    // three) as long as the little stays under 1.95 s, even under the sanitizers.
    auto budget = train(TrainerOptions(options).epochs(6).time_budget_minutes(11.9 / 60), /*slow_first_epoch=*/2.0);
    auto two = train(TrainerOptions(options).epochs(2));
    CHECK(budget.planned == 2);
    check_same_run(budget, two);  // the cosine schedule ended at min_lr after epoch 2, as two's did
  }

  SECTION("a resumed run keeps the count its first epoch fixed") {
    const auto run_options = TrainerOptions(options).epochs(3).time_budget_minutes(1e6);
    auto straight = train(run_options);
    auto first = train(TrainerOptions(run_options).run_dir((dir / "resumed").string()), 0, /*stop_after=*/1);
    CHECK(first.result.interrupted);
    CHECK(planned_in_last_checkpoint(dir / "resumed") == 3);
    // Resumed with a budget that would now allow one epoch: the recorded count wins.
    auto resumed = train(TrainerOptions(run_options).time_budget_minutes(1e-9).run_dir((dir / "resumed").string()),
                         0, 0, /*resume=*/true);
    CHECK(resumed.planned == 3);
    CHECK_FALSE(resumed.result.interrupted);
    check_same_run(resumed, straight);
  }
}

TEST_CASE("epochs_for_min_steps: the fewest epochs that make min_steps, never fewer than epochs",
          "[trainer][min_steps]") {
  CHECK(epochs_for_min_steps(10, 3000, 30) == 100);    // 2,000 images at batch 64
  CHECK(epochs_for_min_steps(20, 3000, 29) == 104);    // rounded up: 104 x 29 = 3016
  CHECK(epochs_for_min_steps(10, 3000, 29) == 100);    // at most 10 x epochs
  CHECK(epochs_for_min_steps(10, 3000, 1) == 100);     // a handful of images: not 3,000 epochs
  CHECK(epochs_for_min_steps(10, 3000, 938) == 10);    // Fashion-MNIST: epochs make more already
  CHECK(epochs_for_min_steps(10, 0, 30) == 10);        // off
  CHECK(epochs_for_min_steps(10, 3000, 0) == 10);      // no batches: nothing to raise
  CHECK(TrainerOptions::recommended().min_steps() == 3000);
  CHECK(TrainerOptions::reference().min_steps() == 0);  // the reference trains exactly its epochs
  CHECK(TrainerOptions::from_json(TrainerOptions().min_steps(77).to_json()).min_steps() == 77);
  CHECK_THROWS_WITH(TrainerOptions().min_steps(-1).validate(), Contains("min_steps"));
}

TEST_CASE("min_steps raises the epoch count of a small data set; the run is the one with that count",
          "[trainer][min_steps]") {
  test::TempDir dir;
  const auto options = TrainerOptions::recommended().lr(5e-3).threads(2).seed(3);  // 2 batches per epoch

  SECTION("7 steps of 2 per epoch: 4 epochs, as epochs(4) without min_steps, the schedule spanning them") {
    auto raised = train(TrainerOptions(options).epochs(2).min_steps(7));
    auto four = train(TrainerOptions(options).epochs(4).min_steps(0));
    CHECK(raised.planned == 4);
    check_same_run(raised, four);
  }

  SECTION("epochs that make enough steps already: unchanged") {
    auto enough = train(TrainerOptions(options).epochs(3).min_steps(6));
    CHECK(enough.planned == 3);
    CHECK(enough.result.history.epochs().size() == 3);
  }

  SECTION("a resumed run arrives at the same count and ends as an uninterrupted one") {
    const auto run_options = TrainerOptions(options).epochs(1).min_steps(5);  // 3 epochs
    auto straight = train(run_options);
    auto first = train(TrainerOptions(run_options).run_dir((dir / "resumed").string()), 0, /*stop_after=*/1);
    CHECK(first.result.interrupted);
    auto resumed = train(TrainerOptions(run_options).run_dir((dir / "resumed").string()), 0, 0, /*resume=*/true);
    CHECK(resumed.planned == 3);
    CHECK_FALSE(resumed.result.interrupted);
    check_same_run(resumed, straight);
  }

  SECTION("with a time budget, the raised count is its maximum") {
    auto budget = train(TrainerOptions(options).epochs(1).min_steps(6).time_budget_minutes(1e6));
    CHECK(budget.planned == 3);
  }
}
