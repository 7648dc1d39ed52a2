// Data-parallel training throughput: the same training with 1 and with 2 processes (1 LibTorch
// thread each, Gloo over loopback), side by side in one run. Reports images/s, the speed-up, and
// the share of step time spent waiting for gradient communication that backward did not hide.
//
//   distributed_throughput [--preset densenet_bc_40_k12] [--image-size 32] [--batch 32]
//                          [--images 2048] [--procs 1,2] [--small-buckets 0.1] [--csv FILE]
//
// Run without arguments it launches itself once per process count (each rank: --worker).
#include <sedensenet/distributed.hpp>
#include <sedensenet/sedensenet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace sedensenet;

namespace {

struct Settings {
  std::string preset = "densenet_bc_40_k12";
  int64_t image_size = 32, batch = 32, images = 2048, epochs = 2;
  double bucket_mb = 25;  // 25 MB buckets (first 1 MB), as DistributedDataParallel
};

/// One rank: trains `epochs` epochs on synthetic in-memory images (the first is warm-up) and
/// writes the last epoch's figures (rank 0).
int worker(const Settings& s, const fs::path& out) {
  sedensenet::set_num_threads(1);
  sedensenet::keep_freed_memory();
  auto env = distributed::Environment::from_environment();
  std::shared_ptr<distributed::ProcessGroup> group;
  if (env.distributed()) group = distributed::ProcessGroup::create(env);
  torch::manual_seed(1);
  auto images = torch::randn({s.images, 3, s.image_size, s.image_size});
  auto labels = torch::randint(0, 10, {s.images}, torch::kLong);
  DenseNet net(DenseNetOptions::preset(s.preset).num_classes(10));
  Trainer trainer(net, TrainerOptions().optimizer(OptimizerKind::sgd).lr(0.01).epochs(s.epochs).threads(1));
  trainer.set_communicator(group, s.bucket_mb, std::min(1.0, s.bucket_mb));
  TensorSource source(images, labels, s.batch, true, 1);
  double wait_before = 0, wait_last = 0;
  int64_t steps_before = 0, steps_last = 0;
  EpochMetrics last;
  trainer.on_epoch_end([&](const EpochMetrics& m) {
    if (const auto* reducer = trainer.gradient_reducer()) {
      wait_last = reducer->wait_seconds() - wait_before;
      steps_last = reducer->steps() - steps_before;
      wait_before = reducer->wait_seconds();
      steps_before = reducer->steps();
    }
    last = m;
  });
  trainer.fit(source);
  // The cost of one all-reduce of every gradient at once, not overlapped with anything.
  double raw_allreduce_ms = 0;
  int64_t parameters = 0, buckets = 0;
  for (const auto& p : net->parameters()) parameters += p.numel();
  if (group) {
    buckets = static_cast<int64_t>(trainer.gradient_reducer()->bucket_count());
    auto flat = torch::zeros({parameters});
    group->all_reduce(flat);
    const auto started = std::chrono::steady_clock::now();
    const int reps = 20;
    for (int i = 0; i < reps; ++i) group->all_reduce(flat);
    raw_allreduce_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count() / reps;
  }
  if (env.rank == 0) {
    const int64_t steps = trainer.world_size() > 1 ? steps_last : (s.images + s.batch - 1) / s.batch;
    nlohmann::json j = {{"processes", env.world_size},
                        {"bucket_mb", s.bucket_mb},
                        {"images_per_second", last.images_per_second},
                        {"epoch_seconds", last.seconds},
                        {"steps", steps},
                        {"exposed_comm_seconds", wait_last},
                        {"raw_allreduce_ms", raw_allreduce_ms},
                        {"parameters", parameters},
                        {"buckets", buckets}};
    std::ofstream(out) << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Data-parallel training throughput: 1 against 2 processes (Gloo, loopback)"};
  Settings s;
  std::vector<int64_t> procs = {1, 2};
  std::vector<double> small_buckets = {0.1};
  std::string csv_path = "distributed_throughput.csv", out;
  bool is_worker = false;
  app.add_option("--preset", s.preset, "architecture")->capture_default_str();
  app.add_option("--image-size", s.image_size, "input size")->capture_default_str();
  app.add_option("--batch", s.batch, "batch size per process")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--images", s.images, "training images per epoch (all processes together)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--epochs", s.epochs, "epochs (the last is measured)")->check(CLI::Range(2, 100))->capture_default_str();
  app.add_option("--procs", procs, "process counts to compare")->delimiter(',');
  app.add_option("--small-buckets", small_buckets, "also run the largest process count with these bucket sizes "
                 "(MB), to see communication overlap with backward")->delimiter(',');
  app.add_option("--bucket-mb", s.bucket_mb, "(internal) bucket size of a worker");
  app.add_option("--csv", csv_path, "CSV output")->capture_default_str();
  app.add_flag("--worker", is_worker, "(internal) run as one rank");
  app.add_option("--out", out, "(internal) result file of a worker");
  CLI11_PARSE(app, argc, argv);
  try {
    if (is_worker) return worker(s, out);
    const auto dir = fs::temp_directory_path() / ("sedensenet-dist-bench-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::vector<nlohmann::json> results;
    std::vector<std::pair<int64_t, double>> runs;
    for (const auto n : procs) runs.emplace_back(n, s.bucket_mb);
    const int64_t most = *std::max_element(procs.begin(), procs.end());
    if (most > 1) {
      for (const auto mb : small_buckets) runs.emplace_back(most, mb);
    }
    for (const auto& [n, mb] : runs) {
      fmt::print("running {} process(es), buckets of {} MB ...\n", n, mb);
      std::fflush(stdout);
      distributed::LaunchOptions launch;
      launch.nproc = n;
      const auto file = dir / ("result_" + std::to_string(results.size()) + ".json");
      launch.arguments = {argv[0], "--worker", "--out", file.string(), "--preset", s.preset,
                          "--image-size", std::to_string(s.image_size), "--batch", std::to_string(s.batch),
                          "--images", std::to_string(s.images), "--epochs", std::to_string(s.epochs),
                          "--bucket-mb", std::to_string(mb)};
      const int status = distributed::launch(launch);
      TORCH_CHECK(status == 0, "the run with ", n, " process(es) failed with status ", status);
      results.push_back(nlohmann::json::parse(std::ifstream(file)));
    }
    fs::remove_all(dir);
    const double base = results.front()["images_per_second"].get<double>();
    fmt::print("\n{} at {}x{}, batch {} per process, {} images per epoch, 1 LibTorch thread per process, "
               "Gloo on loopback\n", s.preset, s.image_size, s.image_size, s.batch, s.images);
    fmt::print("{:>9} {:>10} {:>8} {:>12} {:>9} {:>10} {:>16} {:>14} {:>17}\n", "processes", "bucket MB",
               "buckets", "images/s", "speed-up", "step ms", "exposed comm ms", "comm fraction",
               "raw all-reduce ms");
    std::ofstream csv(csv_path);
    csv << "preset,image_size,batch_per_process,images,processes,bucket_mb,buckets,images_per_second,speedup,"
           "step_ms,exposed_comm_ms_per_step,comm_fraction,raw_allreduce_ms,parameters\n";
    for (const auto& r : results) {
      const double ips = r["images_per_second"].get<double>();
      const double steps = std::max<double>(1, r["steps"].get<double>());
      const double step_ms = 1000 * r["epoch_seconds"].get<double>() / steps;
      const double comm_ms = 1000 * r["exposed_comm_seconds"].get<double>() / steps;
      const double fraction = comm_ms / step_ms;
      const bool single = r["processes"].get<int64_t>() == 1;
      fmt::print("{:>9} {:>10} {:>8} {:>12.1f} {:>8.2f}x {:>10.1f} {:>16} {:>14} {:>17}\n",
                 r["processes"].get<int64_t>(), single ? "-" : fmt::format("{:g}", r["bucket_mb"].get<double>()),
                 single ? "-" : std::to_string(r["buckets"].get<int64_t>()), ips, ips / base, step_ms,
                 single ? "-" : fmt::format("{:.2f}", comm_ms), single ? "-" : fmt::format("{:.1f}%", 100 * fraction),
                 single ? "-" : fmt::format("{:.2f}", r["raw_allreduce_ms"].get<double>()));
      csv << s.preset << "," << s.image_size << "," << s.batch << "," << s.images << "," << r["processes"] << ","
          << r["bucket_mb"] << "," << r["buckets"] << "," << ips << "," << ips / base << "," << step_ms << ","
          << comm_ms << "," << fraction << "," << r["raw_allreduce_ms"] << "," << r["parameters"] << "\n";
    }
    fmt::print("CSV: {}\n", csv_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "distributed_throughput: %s\n", error_message(e).c_str());
    return 1;
  }
  return 0;
}
