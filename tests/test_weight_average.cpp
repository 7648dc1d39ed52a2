// WeightAverage (an exponential moving average of the weights) and the Trainer with ema_decay:
// the update rule against a float64 recurrence, applying and restoring, checkpoint round trips,
// and which weights a run evaluates, keeps and resumes from.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <optional>

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

struct NetImpl : torch::nn::Module {
  NetImpl() : linear(register_module("linear", torch::nn::Linear(3, 2))),
              norm(register_module("norm", torch::nn::BatchNorm1d(2))) {}
  torch::Tensor forward(const torch::Tensor& x) { return norm(linear(x)); }
  torch::nn::Linear linear;
  torch::nn::BatchNorm1d norm;
};
TORCH_MODULE(Net);

std::map<std::string, torch::Tensor> weights(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, t] : io::module_tensors(m)) out[name] = t;
  return out;
}

double max_difference(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (const auto& [name, t] : a) {
    worst = std::max(worst, (t.to(torch::kDouble) - b.at(name).to(torch::kDouble)).abs().max().item<double>());
  }
  return worst;
}

/// The recurrence of the documentation in float64: a = d a + (1 - d) w, d = min(decay, n / (n + 9));
/// integer tensors are copied.
struct ReferenceAverage {
  ReferenceAverage(const torch::nn::Module& m, double decay) : decay(decay) {
    for (auto& [name, t] : weights(m)) average[name] = t.is_floating_point() ? t.to(torch::kDouble) : t.clone();
  }
  void update(const torch::nn::Module& m) {
    ++n;
    const double d = std::min(decay, static_cast<double>(n) / static_cast<double>(n + 9));
    for (auto& [name, t] : weights(m)) {
      average[name] = t.is_floating_point() ? average[name] * d + t.to(torch::kDouble) * (1 - d) : t.clone();
    }
  }
  double decay;
  int64_t n = 0;
  std::map<std::string, torch::Tensor> average;
};

}  // namespace

TEST_CASE("WeightAverage: a = d a + (1 - d) w with d = min(decay, n / (n + 9)); integers are copied", "[ema]") {
  torch::manual_seed(1);
  Net net;
  WeightAverage average(*net, 0.8);
  ReferenceAverage reference(*net, 0.8);
  CHECK(average.decay_at(1) == Approx(0.1));
  CHECK(average.decay_at(11) == Approx(0.55));
  CHECK(average.decay_at(100) == 0.8);  // 100 / 109 > 0.8
  torch::optim::SGD sgd(net->parameters(), 0.1);
  for (int step = 0; step < 40; ++step) {
    // A real training step: moves the parameters, the running statistics and num_batches_tracked.
    auto loss = net->forward(torch::randn({8, 3})).pow(2).mean() + net->linear->weight.sum();
    sgd.zero_grad();
    loss.backward();
    sgd.step();
    average.update(*net);
    reference.update(*net);
  }
  CHECK(average.updates() == 40);
  std::map<std::string, torch::Tensor> got;
  for (auto& [name, t] : average.tensors()) got[name] = t;
  CHECK(max_difference(got, reference.average) < 1e-5);  // float32 against float64, weights up to ~5
  CHECK(got.at("norm.num_batches_tracked").item<int64_t>() == 40);
  // The average lags the weights: it is not simply the last ones.
  CHECK(max_difference(got, weights(*net)) > 1e-3);

  REQUIRE_THROWS_WITH(WeightAverage(*net, 1.0), Contains("decay must be in [0, 1), got 1"));
  Net other;
  other->register_parameter("extra", torch::zeros({1}));
  REQUIRE_THROWS_WITH(average.update(*other), Contains("not the module it was made from"));
}

TEST_CASE("WeightAverage: apply_to lends the average to the module and gives its weights back", "[ema]") {
  torch::manual_seed(2);
  Net net;
  WeightAverage average(*net, 0.5);
  const auto initial = weights(*net);
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(1.0);
  const auto trained = weights(*net);
  {
    auto applied = average.apply_to(*net);
    CHECK(max_difference(weights(*net), initial) == 0);
    // Moving the guard keeps one restoration.
    auto moved = std::move(applied);
    CHECK(max_difference(weights(*net), initial) == 0);
  }
  CHECK(max_difference(weights(*net), trained) == 0);
  average.assign(*net);
  std::map<std::string, torch::Tensor> got;
  for (auto& [name, t] : average.tensors()) got[name] = t;
  CHECK(max_difference(got, trained) == 0);
}

TEST_CASE("WeightAverage: load restores a saved average and names what does not fit", "[ema]") {
  torch::manual_seed(3);
  Net net;
  WeightAverage average(*net, 0.9);
  for (int i = 0; i < 5; ++i) {
    {
      torch::NoGradGuard no_grad;
      for (auto& p : net->parameters()) p.add_(0.5);
    }
    average.update(*net);
  }
  WeightAverage restored(*net, 0.9);
  restored.load(average.tensors(), average.updates(), "last.pt");
  CHECK(restored.updates() == 5);
  std::map<std::string, torch::Tensor> a, b;
  for (auto& [name, t] : average.tensors()) a[name] = t;
  for (auto& [name, t] : restored.tensors()) b[name] = t;
  CHECK(max_difference(a, b) == 0);

  auto saved = average.tensors();
  saved[0].second = torch::zeros({5, 5});
  REQUIRE_THROWS_WITH(restored.load(saved, 5, "run/last.pt"),
                      Contains("run/last.pt: the weight average does not fit the model") &&
                          Contains("linear.weight is [5, 5]"));
  saved = average.tensors();
  saved.pop_back();
  REQUIRE_THROWS_WITH(restored.load(saved, 5, "run/last.pt"), Contains("is missing"));
}

TEST_CASE("With ema_decay a run evaluates and keeps the moving average; last.pt holds both", "[ema][trainer]") {
  auto [train_x, train_y] = quadrant_task(192, 4);
  auto [test_x, test_y] = quadrant_task(96, 5);
  TensorSource train(train_x, train_y, 32, true, 6);
  TensorSource test(test_x, test_y, 48, false);
  test::TempDir dir;
  torch::manual_seed(11);
  DenseNet net(DenseNetOptions::densenet_bc(10, 4).num_classes(4));
  const double decay = 0.7;
  Trainer trainer(net, TrainerOptions::recommended().min_steps(0).epochs(3).threads(2).ema_decay(decay).run_dir(dir.path().string()));
  // The reference average follows the trained weights after every step; at every epoch's end it
  // is what the epoch was evaluated with.
  std::optional<ReferenceAverage> reference;
  std::vector<std::map<std::string, torch::Tensor>> at_epoch_end;
  std::map<std::string, torch::Tensor> trained;
  trainer.on_batch_end([&](const BatchEvent&) {
    reference->update(*net);
    trained = weights(*net);
  });
  trainer.on_epoch_end([&](const EpochMetrics&) { at_epoch_end.push_back(reference->average); });
  reference.emplace(*net, decay);  // the weights the run starts from
  auto result = trainer.fit(train, &test);
  REQUIRE(at_epoch_end.size() == 3);
  REQUIRE(trainer.weight_average() != nullptr);
  CHECK(trainer.weight_average()->updates() == 3 * 6);

  // The model ends with the average of the best epoch; its evaluation is the history's.
  const auto best = static_cast<size_t>(result.best_epoch - 1);
  CHECK(max_difference(weights(*net), at_epoch_end[best]) < 1e-5);
  CHECK(trainer.evaluate(test).accuracy == result.best_accuracy);
  CHECK(result.history.epochs()[best].test_accuracy == result.best_accuracy);
  // best.pt: that average. last.pt: the trained weights, and the average after the last step.
  std::map<std::string, torch::Tensor> best_file, last_average;
  for (auto& [name, t] : io::read_checkpoint_file(dir / "best.pt").model) best_file[name] = t;
  CHECK(max_difference(best_file, weights(*net)) == 0);
  const auto last = io::read_checkpoint_file(dir / "last.pt");
  std::map<std::string, torch::Tensor> last_model;
  for (auto& [name, t] : last.model) last_model[name] = t;
  CHECK(max_difference(last_model, trained) == 0);
  for (auto& [name, t] : last.extra) {
    if (name.rfind("average/", 0) == 0) last_average[name.substr(8)] = t;
  }
  CHECK(max_difference(last_average, at_epoch_end.back()) < 1e-5);
  CHECK(last.state.at("average_updates").get<int64_t>() == 18);
  CHECK(max_difference(last_model, last_average) > 1e-4);  // they differ: both are needed

  // Resuming needs the options the run had: the average is there or not, as ema_decay says.
  DenseNet again(DenseNetOptions::densenet_bc(10, 4).num_classes(4));
  Trainer without(again, TrainerOptions::recommended().min_steps(0).epochs(4).threads(2).run_dir(dir.path().string()));
  REQUIRE_THROWS_WITH(without.resume(dir.path()), Contains("holds a moving average of the weights, but ema_decay is 0") &&
                                                      Contains("config.json"));
  test::TempDir plain;
  Trainer(again, TrainerOptions::recommended().min_steps(0).epochs(1).threads(2).run_dir(plain.path().string())).fit(train, &test);
  Trainer with(again, TrainerOptions::recommended().min_steps(0).epochs(2).threads(2).ema_decay(0.9).run_dir(plain.path().string()));
  REQUIRE_THROWS_WITH(with.resume(plain.path()), Contains("holds no moving average of the weights, but ema_decay is 0.9"));
}
