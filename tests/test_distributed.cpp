// Distributed data-parallel training: two ranks on loopback (Gloo), started by the library's
// launcher running tests/distributed/dist_worker.cpp, against one process on the same data.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "sedensenet/distributed/environment.hpp"
#include "sedensenet/distributed/launch.hpp"
#include "support/python.hpp"

using namespace sedensenet;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

/// A fresh folder for one scenario, inside this process's temporary folder (removed at exit).
fs::path work_dir(const std::string& name) {
  static const test::TempDir root;
  auto p = root / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

/// Runs `nproc` workers of `scenario`; returns the launcher's exit status.
int run_workers(int64_t nproc, const std::string& scenario, const fs::path& out, int64_t batch,
                double timeout_s = 60, double grace_s = 60) {
  ::setenv("DIST_TIMEOUT_S", std::to_string(timeout_s).c_str(), 1);
  distributed::LaunchOptions o;
  o.nproc = nproc;
  o.executable = SEDENSENET_DIST_WORKER;
  o.arguments = {SEDENSENET_DIST_WORKER, scenario, out.string(), std::to_string(batch)};
  o.grace = std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
  return distributed::launch(o);
}

std::vector<torch::Tensor> load_tensors(const fs::path& p) {
  REQUIRE(fs::exists(p));
  std::vector<torch::Tensor> v;
  torch::load(v, p.string());
  return v;
}

nlohmann::json load_json(const fs::path& p) {
  REQUIRE(fs::exists(p));
  return nlohmann::json::parse(std::ifstream(p));
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].sizes() == b[i].sizes());
    worst = std::max(worst, (a[i].to(torch::kDouble) - b[i].to(torch::kDouble)).abs().max().item<double>());
  }
  return worst;
}

/// A history without its wall-clock fields.
nlohmann::json without_timing(nlohmann::json history) {
  for (auto& epoch : history) {
    epoch.erase("seconds");
    epoch.erase("images_per_second");
  }
  return history;
}

bool identical(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("distributed: 2 ranks x batch b train as 1 process x batch 2b (eval-mode BatchNorm)",
          "[distributed]") {
  const auto two = work_dir("frozen2"), one = work_dir("frozen1");
  REQUIRE(run_workers(2, "frozen_bn", two, 8) == 0);
  REQUIRE(run_workers(1, "frozen_bn", one, 16) == 0);
  const auto r0 = load_tensors(two / "frozen_bn_params_r0.pt");
  const auto r1 = load_tensors(two / "frozen_bn_params_r1.pt");
  const auto single = load_tensors(one / "frozen_bn_params_r0.pt");
  CHECK(identical(r0, r1));  // every rank holds the same parameters and buffers
  CHECK(max_difference(r0, single) < 1e-5);
  // Reduced metrics: the history shows the global figures, as one process computes them.
  const auto h2 = load_json(two / "frozen_bn_result_r0.json"), h1 = load_json(one / "frozen_bn_result_r0.json");
  CHECK(h2["world"] == 2);
  CHECK(h1["world"] == 1);
  CHECK(load_json(two / "frozen_bn_result_r1.json")["history"] == h2["history"]);
  REQUIRE(h2["history"].size() == 2);
  CHECK(h2["history"][1]["train_loss"].get<double>() < h2["history"][0]["train_loss"].get<double>());  // it learns
  for (size_t e = 0; e < 2; ++e) {
    const auto& a = h2["history"][e];
    const auto& b = h1["history"][e];
    CHECK(a["train_images"] == b["train_images"]);
    CHECK(a["train_images"] == 64);
    CHECK(a["train_loss"].get<double>() == Approx(b["train_loss"].get<double>()).margin(1e-5));
    CHECK(a["train_accuracy"] == b["train_accuracy"]);
    CHECK(a["test_loss"].get<double>() == Approx(b["test_loss"].get<double>()).margin(1e-5));
    CHECK(a["test_accuracy"] == b["test_accuracy"]);
  }
}

TEST_CASE("distributed: parameters and BatchNorm buffers identical on every rank, gradients as "
          "averaged by DistributedDataParallel (efficient dense layers)",
          "[distributed]") {
  const auto two = work_dir("bn2"), sim = work_dir("bnsim");
  REQUIRE(run_workers(2, "bn", two, 8) == 0);
  REQUIRE(run_workers(1, "bn_simulated", sim, 8) == 0);
  const auto r0 = load_tensors(two / "bn_params_r0.pt");
  const auto r1 = load_tensors(two / "bn_params_r1.pt");
  CHECK(identical(r0, r1));  // parameters and the per-epoch averaged running statistics
  // Each rank's half-batch has its own BatchNorm statistics; the mean of the two halves'
  // gradients is what one process computes by running the halves separately.
  const auto simulated = load_tensors(sim / "simulated_params.pt");
  std::vector<torch::Tensor> params(r0.begin(), r0.begin() + static_cast<long>(simulated.size()));
  CHECK(max_difference(params, simulated) < 1e-5);
}

TEST_CASE("distributed: with ema_decay every rank evaluates and ends with the same averaged weights",
          "[distributed][ema]") {
  const auto two = work_dir("ema2");
  REQUIRE(run_workers(2, "ema", two, 8) == 0);
  // The average's BatchNorm statistics are averaged over the ranks before each evaluation, as the
  // model's are; without that each rank's would follow its own shard's batches.
  const auto r0 = load_tensors(two / "ema_final_r0.pt");
  const auto r1 = load_tensors(two / "ema_final_r1.pt");
  CHECK(identical(r0, r1));
  CHECK(without_timing(load_json(two / "ema_result_r0.json")["history"]) ==
        without_timing(load_json(two / "ema_result_r1.json")["history"]));
  // And they are the average, not the trained weights of the last epoch.
  CHECK_FALSE(identical(r0, load_tensors(two / "ema_params_r0.pt")));
}

TEST_CASE("distributed: a run stopped by one rank mid-epoch resumes to the uninterrupted result",
          "[distributed]") {
  const auto dir = work_dir("resume");
  REQUIRE(run_workers(2, "resume", dir, 8) == 0);
  // The stop (asked on rank 1 only) ended the run on both ranks at the same batch.
  CHECK(load_json(dir / "stopped_result_r0.json")["interrupted"] == true);
  CHECK(load_json(dir / "stopped_result_r1.json")["interrupted"] == true);
  const auto whole = load_tensors(dir / "whole_params_r0.pt");
  CHECK(identical(whole, load_tensors(dir / "resumed_params_r0.pt")));
  CHECK(identical(whole, load_tensors(dir / "resumed_params_r1.pt")));
  CHECK(without_timing(load_json(dir / "resumed_result_r0.json")["history"]) ==
        without_timing(load_json(dir / "whole_result_r0.json")["history"]));
  // Only rank 0 wrote the run folder, and it records the distributed run.
  const auto config = load_json(dir / "run_whole" / "config.json");
  CHECK(config["distributed"]["world_size"] == 2);
  CHECK(fs::exists(dir / "run_whole" / "last.pt"));
  CHECK(fs::exists(dir / "run_whole" / "history.csv"));
}

TEST_CASE("distributed: a stop asked on one rank after an epoch's last collective stops both there",
          "[distributed]") {
  const auto dir = work_dir("epoch_end_stop");
  // Before the ranks agreed at the end of the epoch as well, rank 1 left and rank 0 went on into
  // epoch 2 until its collective timed out: the launcher failed instead of both ranks stopping.
  REQUIRE(run_workers(2, "epoch_end_stop", dir, 8, /*timeout_s=*/20) == 0);
  for (const auto* r : {"r0", "r1"}) {
    const auto result = load_json(dir / (std::string("epoch_stop_result_") + r + ".json"));
    CHECK(result["interrupted"] == true);
    CHECK(result["history"].size() == 1);
  }
}

TEST_CASE("distributed: evaluation reduced over ranks equals the single-process evaluation",
          "[distributed]") {
  const auto two = work_dir("eval2"), one = work_dir("eval1");
  REQUIRE(run_workers(2, "evaluate", two, 5) == 0);
  REQUIRE(run_workers(1, "evaluate", one, 5) == 0);
  const auto a = load_json(two / "evaluate_r0.json"), b = load_json(one / "evaluate_r0.json");
  CHECK(a == load_json(two / "evaluate_r1.json"));
  CHECK(a["images"] == 37);  // 37 test images over 2 ranks: 19 + 18, each counted once
  CHECK(a["images"] == b["images"]);
  CHECK(a["accuracy"] == b["accuracy"]);
  CHECK(a["confusion"] == b["confusion"]);
  CHECK(a["loss"].get<double>() == Approx(b["loss"].get<double>()).margin(1e-6));
}

TEST_CASE("distributed: a killed rank makes the other exit non-zero within the timeout, naming it",
          "[distributed]") {
  const auto dir = work_dir("kill");
  const auto started = std::chrono::steady_clock::now();
  const int status = run_workers(2, "kill", dir, 8, /*timeout_s=*/20, /*grace_s=*/60);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  CHECK(status == 128 + SIGKILL);  // the launcher forwards the first failure: rank 1's
  REQUIRE(fs::exists(dir / "error_r0.txt"));
  const auto message = read_text(dir / "error_r0.txt");
  CHECK_THAT(message, Contains("rank 1 has stopped"));
  CHECK(seconds < 20 + 15);  // bounded by the timeout (a dead peer is noticed at once)
}

TEST_CASE("distributed: a non-finite loss on one rank stops every rank at that batch", "[distributed]") {
  const auto dir = work_dir("nan");
  CHECK(run_workers(2, "nan", dir, 8) != 0);
  for (const char* file : {"error_r0.txt", "error_r1.txt"}) {
    const auto message = read_text(dir / file);
    CHECK_THAT(message, Contains("on rank 1 at epoch 1, batch 3"));
  }
}

TEST_CASE("distributed: the environment is read as torchrun sets it, with clear errors",
          "[distributed]") {
  for (const char* v : {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                        "SLURM_NTASKS", "SLURM_PROCID"}) {
    ::unsetenv(v);
  }
  CHECK_FALSE(distributed::Environment::from_environment().distributed());
  ::setenv("WORLD_SIZE", "2", 1);
  CHECK_THROWS_WITH(distributed::Environment::from_environment(), Contains("RANK is not set"));
  ::setenv("RANK", "2", 1);
  CHECK_THROWS_WITH(distributed::Environment::from_environment(), Contains("RANK='2' must be an integer in [0, 1]"));
  ::setenv("RANK", "1", 1);
  CHECK_THROWS_WITH(distributed::Environment::from_environment(), Contains("MASTER_ADDR is not set"));
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  ::setenv("MASTER_PORT", "http", 1);
  CHECK_THROWS_WITH(distributed::Environment::from_environment(), Contains("MASTER_PORT='http'"));
  ::setenv("MASTER_PORT", "29555", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  const auto env = distributed::Environment::from_environment();
  CHECK(env.distributed());
  CHECK(env.rank == 1);
  CHECK(env.world_size == 2);
  CHECK(env.master_addr == "10.0.0.1");
  CHECK(env.master_port == 29555);
  CHECK(env.local_rank == 1);
  for (const char* v : {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"}) ::unsetenv(v);
  // Slurm's names stand in when MASTER_ADDR is given.
  ::setenv("SLURM_NTASKS", "4", 1);
  ::setenv("SLURM_PROCID", "3", 1);
  CHECK_FALSE(distributed::Environment::from_environment().distributed());  // no MASTER_ADDR: not ours
  ::setenv("MASTER_ADDR", "node01", 1);
  const auto slurm = distributed::Environment::from_environment();
  CHECK(slurm.rank == 3);
  CHECK(slurm.world_size == 4);
  for (const char* v : {"SLURM_NTASKS", "SLURM_PROCID", "MASTER_ADDR"}) ::unsetenv(v);
}
