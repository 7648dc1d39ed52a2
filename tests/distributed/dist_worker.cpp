// One rank of the distributed tests (tests/test_distributed.cpp starts two of them on loopback
// through sedensenet::distributed::launch, or one for the single-process reference).
//
//   dist_worker SCENARIO OUT_DIR [BATCH]
//
// Scenarios: frozen_bn, bn, ema, bn_simulated, resume, epoch_end_stop, evaluate, kill, nan. Each writes its results as
// files under OUT_DIR named after the rank (params_r<rank>.pt, result_r<rank>.json, error_r<rank>.txt).
#include <torch/torch.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "sedensenet/distributed.hpp"
#include "sedensenet/nn.hpp"
#include "sedensenet/train.hpp"
#include "support/quadrant_task.hpp"

using namespace sedensenet;
using test::quadrant_task;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kTrainImages = 64, kTestImages = 37, kClasses = 4, kEpochs = 2;
constexpr uint64_t kSeed = 5;

DenseNet make_net(MemoryMode memory) {
  torch::manual_seed(kSeed);
  return DenseNet(DenseNetOptions::densenet_bc(10, 4).num_classes(kClasses).memory(memory));
}

/// A DenseNet whose BatchNorm layers stay in eval mode while it trains: no batch statistics in
/// play, so 2 ranks x batch b must equal one process with batch 2b.
struct FrozenBatchNormImpl : torch::nn::Module {
  explicit FrozenBatchNormImpl(DenseNet inner) : net(register_module("net", std::move(inner))) {}
  torch::Tensor forward(const torch::Tensor& x) { return net->forward(x); }
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    for (auto& m : modules()) {
      if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) bn->eval();
    }
  }
  DenseNet net;
};
TORCH_MODULE(FrozenBatchNorm);

/// Returns NaN logits from its `bad_call`-th training forward on (on one rank).
struct PoisonedImpl : torch::nn::Module {
  PoisonedImpl(DenseNet inner, int64_t bad_call) : net(register_module("net", std::move(inner))), bad(bad_call) {}
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = net->forward(x);
    if (is_training() && ++calls >= bad) out = out * std::numeric_limits<float>::quiet_NaN();
    return out;
  }
  DenseNet net;
  int64_t bad, calls = 0;
};
TORCH_MODULE(Poisoned);

TrainerOptions sgd_options() {
  return TrainerOptions().optimizer(OptimizerKind::sgd).lr(0.05).momentum(0.9).epochs(kEpochs)
      .threads(1).seed(kSeed);
}

std::vector<torch::Tensor> state_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.detach().clone());
  for (auto& b : m.buffers()) out.push_back(b.detach().clone());
  return out;
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  std::ofstream(path) << j.dump(2) << "\n";
}

nlohmann::json evaluation_json(const Evaluation& e) {
  return {{"loss", e.loss}, {"accuracy", e.accuracy}, {"top5", std::isnan(e.top5) ? -1.0 : e.top5},
          {"images", e.images}, {"confusion", e.confusion.to_json({})["matrix"]}};
}

/// Trains with the Trainer; saves the parameters and buffers after the last epoch (before the
/// best weights are loaded back) and the history.
template <typename Holder>
void train_and_save(Holder model, TrainerOptions options, int64_t batch, const fs::path& out,
                    const std::shared_ptr<Communicator>& comm, const std::string& tag,
                    std::function<void(Trainer&)> setup = {}) {
  auto [images, labels] = quadrant_task(kTrainImages, 11);
  auto [test_images, test_labels] = quadrant_task(kTestImages, 12);
  Trainer trainer(model, options);
  trainer.set_communicator(comm);
  const auto rank = trainer.rank();
  if (setup) setup(trainer);
  trainer.on_epoch_end([&](const EpochMetrics& m) {
    if (m.epoch == options.epochs()) torch::save(state_of(*model.ptr()), (out / (tag + "_params_r" + std::to_string(rank) + ".pt")).string());
  });
  TensorSource train(images, labels, batch, /*shuffle=*/true, kSeed);
  TensorSource test(test_images, test_labels, 5, /*shuffle=*/false);
  auto result = trainer.fit(train, &test);
  nlohmann::json history = result.history.to_json();
  write_json(out / (tag + "_result_r" + std::to_string(rank) + ".json"),
             {{"history", history}, {"interrupted", result.interrupted}, {"world", trainer.world_size()}});
}

/// One process doing what two ranks do: each global batch is split as the two shards split it,
/// each half goes forward and backward on its own (its own BatchNorm batch statistics), and the
/// gradients are averaged before the step.
void simulate_two_ranks(int64_t batch, const fs::path& out) {
  auto net = make_net(MemoryMode::efficient);
  auto [images, labels] = quadrant_task(kTrainImages, 11);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  net->train();
  for (int64_t epoch = 0; epoch < kEpochs; ++epoch) {
    const auto order = data::Rng::for_item(kSeed, static_cast<uint64_t>(epoch), 7).permutation(kTrainImages);
    std::vector<std::vector<int64_t>> shard(2);
    for (size_t p = 0; p < order.size(); ++p) shard[p % 2].push_back(order[p]);
    for (size_t start = 0; start < shard[0].size(); start += static_cast<size_t>(batch)) {
      sgd.zero_grad();
      std::vector<torch::Tensor> sums;
      for (int r = 0; r < 2; ++r) {
        const auto end = std::min(shard[r].size(), start + static_cast<size_t>(batch));
        auto idx = torch::tensor(std::vector<int64_t>(shard[r].begin() + static_cast<long>(start),
                                                      shard[r].begin() + static_cast<long>(end)));
        auto loss = torch::nn::functional::cross_entropy(net->forward(images.index_select(0, idx)),
                                                         labels.index_select(0, idx));
        for (auto& p : net->parameters()) {
          if (p.grad().defined()) p.mutable_grad().zero_();
        }
        loss.backward();
        size_t i = 0;
        for (auto& p : net->parameters()) {
          if (r == 0) sums.push_back(p.grad().clone()); else sums[i] += p.grad();
          ++i;
        }
      }
      size_t i = 0;
      for (auto& p : net->parameters()) p.mutable_grad().copy_(sums[i++] / 2);
      sgd.step();
    }
  }
  std::vector<torch::Tensor> params;
  for (auto& p : net->parameters()) params.push_back(p.detach().clone());
  torch::save(params, (out / "simulated_params.pt").string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: dist_worker SCENARIO OUT_DIR [BATCH]\n";
    return 2;
  }
  const std::string scenario = argv[1];
  const fs::path out = argv[2];
  const int64_t batch = argc > 3 ? std::atoll(argv[3]) : 8;
  fs::create_directories(out);
  int64_t rank = 0;
  try {
    sedensenet::set_num_threads(1);
    auto env = distributed::Environment::from_environment();
    rank = env.rank;
    const auto timeout_s = std::getenv("DIST_TIMEOUT_S") ? std::atof(std::getenv("DIST_TIMEOUT_S")) : 60.0;
    std::shared_ptr<Communicator> comm;
    if (env.distributed()) {
      comm = distributed::ProcessGroup::create(
          env, distributed::ProcessGroupOptions().timeout(
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000))));
    }
    if (scenario == "frozen_bn") {
      train_and_save(FrozenBatchNorm(make_net(MemoryMode::standard)), sgd_options(), batch, out, comm, "frozen_bn");
    } else if (scenario == "bn") {
      train_and_save(make_net(MemoryMode::efficient), sgd_options(), batch, out, comm, "bn");
    } else if (scenario == "ema") {
      // A moving average of the weights: what each rank ends with (the best epoch's average).
      auto net = make_net(MemoryMode::efficient);
      train_and_save(net, sgd_options().ema_decay(0.8), batch, out, comm, "ema");
      torch::save(state_of(*net), (out / ("ema_final_r" + std::to_string(rank) + ".pt")).string());
    } else if (scenario == "bn_simulated") {
      simulate_two_ranks(batch, out);
    } else if (scenario == "resume") {
      // Uninterrupted, then stopped by rank 1 alone in the middle of epoch 1 and resumed.
      const auto whole = out / "run_whole", parts = out / "run_parts";
      train_and_save(make_net(MemoryMode::efficient), sgd_options().run_dir(whole.string()), batch, out, comm, "whole");
      train_and_save(make_net(MemoryMode::efficient), sgd_options().run_dir(parts.string()), batch, out, comm,
                     "stopped", [&](Trainer& t) {
                       t.on_batch_end([&t](const BatchEvent& e) {
                         if (t.rank() == 1 && e.epoch == 1 && e.batch == 2) t.request_stop();
                       });
                     });
      train_and_save(make_net(MemoryMode::efficient), sgd_options().run_dir(parts.string()), batch, out, comm,
                     "resumed", [&](Trainer& t) { t.resume(parts); });
    } else if (scenario == "epoch_end_stop") {
      // Rank 1 alone is asked to stop after epoch 1's last collective (as a Ctrl-C that reaches
      // it while the epoch's checkpoint is written): both ranks must stop there, together.
      train_and_save(make_net(MemoryMode::standard), sgd_options().epochs(3), batch, out, comm, "epoch_stop",
                     [&](Trainer& t) {
                       t.on_epoch_end([&t](const EpochMetrics& m) {
                         if (t.rank() == 1 && m.epoch == 1) t.request_stop();
                       });
                     });
    } else if (scenario == "evaluate") {
      auto net = make_net(MemoryMode::standard);
      auto [images, labels] = quadrant_task(kTestImages, 12);
      Trainer trainer(net, TrainerOptions().threads(1));
      trainer.set_communicator(comm);
      TensorSource source(images, labels, 5, /*shuffle=*/false);
      write_json(out / ("evaluate_r" + std::to_string(rank) + ".json"), evaluation_json(trainer.evaluate(source)));
    } else if (scenario == "kill") {
      auto net = make_net(MemoryMode::efficient);
      auto [images, labels] = quadrant_task(kTrainImages, 11);
      Trainer trainer(net, sgd_options().epochs(1000));
      trainer.set_communicator(comm);
      trainer.on_batch_end([&](const BatchEvent& e) {
        if (rank == 1 && e.epoch == 2 && e.batch == 2) std::raise(SIGKILL);
      });
      TensorSource train(images, labels, batch, true, kSeed);
      trainer.fit(train);
    } else if (scenario == "nan") {
      auto net = Poisoned(make_net(MemoryMode::standard), rank == 1 ? 3 : 1000000);
      auto [images, labels] = quadrant_task(kTrainImages, 11);
      Trainer trainer(net, sgd_options());
      trainer.set_communicator(comm);
      TensorSource train(images, labels, batch, true, kSeed);
      trainer.fit(train);
    } else {
      std::cerr << "unknown scenario " << scenario << "\n";
      return 2;
    }
  } catch (const std::exception& e) {
    const std::string message = error_message(e);
    std::ofstream(out / ("error_r" + std::to_string(rank) + ".txt")) << message << "\n";
    std::cerr << "dist_worker rank " << rank << ": " << message << "\n";
    std::cerr.flush();
    std::_Exit(dynamic_cast<const DistributedError*>(&e) ? 3 : 4);
  }
  return 0;
}
