// sedensenet train: from an image folder to a run folder (config, history, checkpoints, metrics,
// plots); resume, warm start, data-parallel training. Trainer options come from their schema
// (TrainerOptions::fields); the flags here are the data, the model and the process layout.
#include <sedensenet/io/trained_model.hpp>
#include <sedensenet/train/experiment.hpp>
#include <sedensenet/train/progress.hpp>
#include <sedensenet/train/run_folder.hpp>
#include <sedensenet/util/allocator.hpp>
#include <sedensenet/util/errors.hpp>
#include <sedensenet/util/threads.hpp>
// Data-parallel training (c10d): needs LibTorch's c10d and Gloo headers (Debian: libgloo-dev).
#if __has_include(<gloo/algorithm.h>) && (defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL))
#include <sedensenet/distributed.hpp>
#define SEDENSENET_CLI_DISTRIBUTED 1
#else
#include <sedensenet/distributed/environment.hpp>
#endif

#include <fmt/format.h>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "command.hpp"
#include "option_flags.hpp"

namespace sedensenet::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::atomic<Trainer*> g_trainer{nullptr};
std::atomic<int> g_signal{0};

/// SIGINT / SIGTERM during training: the first asks the trainer to stop after the current batch
/// (it then writes last.pt); a second one ends the process at once (last.pt and best.pt are
/// written atomically, so the previous ones stay intact).
extern "C" void on_signal(int signal) {
  if (g_signal.exchange(signal) != 0) {
    static const char message[] = "\nsecond interrupt: stopping now without saving\n";
    [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(128 + signal);
  }
  static const char message[] =
      "\ninterrupt: finishing the current batch and saving last.pt (interrupt again to quit now)\n";
  if (g_rank <= 0) {  // one message for a distributed run: rank 0's
    [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, message, sizeof message - 1);
  }
  if (auto* trainer = g_trainer.load()) trainer->request_stop();
}

/// `base` if it holds no run, else the first of base-2, base-3, ... that holds none.
std::string unused_run_dir(const std::string& base) {
  std::string dir = base;
  for (int n = 2; !RunFolder(dir).run_files().empty(); ++n) dir = base + "-" + std::to_string(n);
  return dir;
}

class Train : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {

    auto* t = app.add_subcommand("train", "train a classifier on an image folder");
    t->add_option("data", data_dir,
                  "image folder: one sub-folder per class, or train/ and val/ (or test/) "
                  "sub-folders each holding class folders");
    t->add_option("--preset", preset,
                  "architecture: densenet_small (small images such as 28x28: stride-2 stem, two "
                  "blocks), densenet_bc_<depth>[_k<growth>] (CIFAR style, e.g. densenet_bc_100) "
                  "or densenet121/169/201/161 (ImageNet style)")
        ->capture_default_str();
    t->add_option("--recipe", recipe,
                  "starting point for the optimisation options: recommended (AdamW 2e-3, cosine with "
                  "warm-up, label smoothing) or reference (Adam 1e-4, constant)")
        ->check(CLI::IsMember({"recommended", "reference"}))
        ->capture_default_str();
    t->add_option("--resume", resume, "continue the run in this run folder (its config.json gives every other option)");
    t->add_option("--config", config, "JSON file of option values (keys: long option names); flags given on the command line override it. A run folder's config.json works too.");
    auto* dist = "distributed training (docs/distributed.md)";
    t->add_option("--nproc", nproc, "start this many worker processes on this machine, training data-parallel "
                  "(each with --threads, default cores / nproc)")->check(CLI::Range(1, 1024))->group(dist)->capture_default_str();
    t->add_option("--nnodes", nnodes, "machines in the job (run the same command on each, with its --node-rank)")
        ->check(CLI::Range(1, 65536))->group(dist)->capture_default_str();
    t->add_option("--node-rank", node_rank, "this machine's index, 0 .. nnodes-1 (0 hosts the rendezvous)")
        ->check(CLI::NonNegativeNumber)->group(dist)->capture_default_str();
    t->add_option("--master-addr", master_addr, "address of the machine with --node-rank 0")->group(dist)->capture_default_str();
    t->add_option("--master-port", master_port, "rendezvous TCP port (0: a free loopback port, one machine only)")
        ->check(CLI::Range(0, 65535))->group(dist)->capture_default_str();
    t->add_option("--dist-backend", dist_backend, "auto (NCCL on CUDA, Gloo on CPU), gloo or nccl")
        ->check(CLI::IsMember({"auto", "gloo", "nccl"}))->group(dist)->capture_default_str();
    t->add_option("--dist-timeout", dist_timeout, "seconds a rank waits for the others before it stops with an error "
                  "naming the rank that went away")->check(CLI::PositiveNumber)->group(dist)->capture_default_str();
    t->add_option("--init-weights", init_weights,
                  "start from these weights: a PyTorch state dict file (torchvision's, the reference's, "
                  "this library's) or a run's best.pt; what does not fit (SE blocks, another classifier) "
                  "stays as initialised and is listed");
    t->add_flag("--allow-partial", allow_partial,
                "start from --init-weights even when they fit less than half of the model's tensors");
    // Every DataOptions option (image size, augmentation, loader, split), from its schema.
    data_flags_ = std::make_unique<OptionFlags<DataOptions>>(t, DataOptions(), "Data");
    // Every DenseNetOptions option but the class count (the folder's), from its schema.
    model_flags_ = std::make_unique<OptionFlags<DenseNetOptions>>(
        t, DenseNetOptions::preset(preset), "Model (defaults: --preset's; densenet_bc_40_k12 shown)",
        std::set<std::string>{"num_classes"});
    // Every TrainerOptions option, from its schema; four former flag names still work.
    trainer_flags_ = std::make_unique<OptionFlags<TrainerOptions>>(
        t, TrainerOptions::recommended(), "Training (defaults: --recipe recommended)",
        std::set<std::string>{},
        std::map<std::string, std::vector<std::string>>{{"grad_clip_norm", {"--grad-clip"}},
                                                        {"mixup_alpha", {"--mixup"}},
                                                        {"cutmix_alpha", {"--cutmix"}},
                                                        {"early_stopping_patience", {"--early-stopping"}}});
    t->get_option("--seed")->description("seed of initialisation, data order, augmentation, dropout and MixUp/CutMix");
    t->get_option("--run-dir")->description("run folder for config, history, checkpoints, metrics and plots (default: runs/<preset>, or "
        "runs/<preset>-2, -3, ... when that holds a run); one holding a run is refused without --resume or --overwrite");
    t->get_option("--run-dir")->default_str("");
    return t;
  }

  int run(CLI::App& command_app) override {
    CLI::App* command = &command_app;
    if (g_arguments.size() == 2) {  // a bare `sedensenet train`: its usage
      std::fputs(command->help().c_str(), stdout);
      return 2;
    }

    // Which of the two were given on the command line, before a config file adds its values.
    const auto given = [&](const char* flag) { return command->get_option(flag)->count() > 0; };
    const bool epochs_on_command_line = given("--epochs"), min_steps_on_command_line = given("--min-steps");
    if (!resume.empty()) {
      const auto config = fs::path(resume) / "config.json";
      if (!fs::exists(config)) {
        throw UsageError("cannot resume: " + config.string() + " not found (is " + resume +
                         " a run folder?)");
      }
      const auto saved = read_json_file(config.string());
      if (!saved.contains("metadata") || !saved["metadata"].contains("cli")) {
        throw UsageError(config.string() + " was not written by `sedensenet train`");
      }
      refuse_model_changes(command, saved["metadata"]["cli"]);
      apply_json_defaults(command, saved["metadata"]["cli"], config.string(), {"run_dir", "overwrite"});
    } else if (!config.empty()) {
      auto values = read_json_file(config);
      // A run folder's config.json: take the options it recorded.
      if (values.contains("metadata") && values["metadata"].contains("cli")) {
        values = values["metadata"]["cli"];
      }
      apply_json_defaults(command, values, config, {"run_dir", "overwrite"});
    }
    // Optimisation options: the recipe, then every option given on the command line or in a
    // config file.
    auto options = trainer_flags_->apply(recipe == "reference" ? TrainerOptions::reference()
                                                       : TrainerOptions::recommended());
    options.min_lr(std::min(options.min_lr(), options.lr()));
    // An epoch count given is the count: the recipe's --min-steps raises only the default one,
    // unless --min-steps is given beside it (both on the command line, or both in a config file:
    // `--resume RUN --epochs 50` trains 50, and a run recorded before --min-steps existed resumes
    // with its count unchanged).
    if ((epochs_on_command_line && !min_steps_on_command_line) || (given("--epochs") && !given("--min-steps"))) {
      options.min_steps(0);
    }
    if (!resume.empty()) {
      options.run_dir(resume);
    } else if (options.run_dir().empty()) {
      options.run_dir(unused_run_dir("runs/" + preset));
    } else if (const auto files = RunFolder(options.run_dir()).run_files(); !files.empty() && !options.overwrite()) {
      throw UsageError("--run-dir " + options.run_dir() + " already holds a run (" + files.front() +
                       (files.size() > 1 ? ", ..." : "") + "): continue it with --resume " + options.run_dir() +
                       ", choose another --run-dir, or add --overwrite to replace it");
    }
    options.validate();
    checked_device(options.device(), "--device");  // before the data are read
    auto data_options = data_flags_->apply(DataOptions());
    data_options.validate();
    if (data_dir.empty()) throw UsageError("train: the image folder is required (sedensenet train DATA; sedensenet train --help lists the options)");
    // The architecture first: an impossible one is reported before the data are scanned.
    auto model_options = model_flags_->apply(DenseNetOptions::preset(preset));
    check_model_size(model_options);

    // Distributed: as the launcher, start the workers; as a worker, join the process group.
    const bool launched = std::getenv("SEDENSENET_LAUNCHED") != nullptr;
    if ((nproc > 1 || nnodes > 1) && !launched && std::getenv("WORLD_SIZE") != nullptr) {
      throw UsageError("--nproc starts its own worker processes, but WORLD_SIZE is already set (torchrun, "
                       "Slurm): drop --nproc, or unset WORLD_SIZE");
    }
    distributed::Environment env;
    try {
      env = distributed::Environment::from_environment();
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    if ((nproc > 1 || nnodes > 1) && !launched) {
      if (env.distributed()) {
        throw UsageError("--nproc starts its own worker processes, but this process is already rank " +
                         std::to_string(env.rank) + " of a job (Slurm variables): drop --nproc");
      }
      if (node_rank >= nnodes) {
        throw UsageError("--node-rank " + std::to_string(node_rank) + " must be below --nnodes " +
                         std::to_string(nnodes));
      }
  #if defined(SEDENSENET_CLI_DISTRIBUTED)
      distributed::LaunchOptions launch;
      launch.nproc = nproc;
      launch.nnodes = nnodes;
      launch.node_rank = node_rank;
      launch.master_addr = master_addr;
      launch.master_port = master_port;
      launch.grace = std::chrono::milliseconds(static_cast<int64_t>(dist_timeout * 1000) + 30000);
      launch.arguments = g_arguments;
      launch.extra_environment = {"SEDENSENET_LAUNCHED=1"};
      fmt::print("launching {} worker process(es) on this machine: ranks {} .. {} of {}\n", nproc,
                 node_rank * nproc, (node_rank + 1) * nproc - 1, nproc * nnodes);
      std::fflush(stdout);
      try {
        return distributed::launch(launch);
      } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
      }
  #else
      throw UsageError("--nproc: this build of sedensenet has no distributed support (it was built "
                       "without Gloo's headers: install libgloo-dev and rebuild)");
  #endif
    }
    std::shared_ptr<Communicator> communicator;
    if (env.distributed()) {
      g_rank = env.rank;
      // Rank 0 reports; the others print only errors (to stderr, with their rank).
      if (env.rank != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) std::perror("stdout");
      // The machine's cores are shared by its ranks.
      if (options.threads() == 0) {
        options.threads(std::max(1, hardware_threads() / static_cast<int>(env.local_world_size)));
      }
      if (data_options.workers() == 0) data_options.workers(options.threads());
      if (options.device() == "cuda") options.device("cuda:" + std::to_string(env.local_rank));
    }

    set_num_threads(options.threads());
    keep_freed_memory();  // no page faults for every step's activations

    Experiment experiment(data_dir, model_options, options, data_options);
    if (!init_weights.empty() && resume.empty()) {
      is_checkpoint_weights(init_weights);  // a missing or damaged file is named first
      io::LoadReport report;
      try {
        report = experiment.warm_start(init_weights);
      } catch (const std::exception& e) {
        throw UsageError(error_message(e) + " (--init-weights; is --preset its architecture?)");
      }
      // Counted as LoadReport::loaded_tensors counts: without BatchNorm's step counters.
      size_t model_tensors = experiment.model()->named_parameters().size();
      for (const auto& b : experiment.model()->named_buffers()) {
        if (b.key().find("num_batches_tracked") == std::string::npos) ++model_tensors;
      }
      const size_t loaded = report.loaded_tensors();
      if (2 * loaded < model_tensors && !allow_partial) {
        throw UsageError("--init-weights " + init_weights + " fits only " + std::to_string(loaded) + " of the model's " +
                         std::to_string(model_tensors) + " tensors, so most of the model would start untrained: is --preset the "
                         "architecture the weights were trained with? Add --allow-partial to start from them anyway");
      }
      fmt::print("initial weights from {}: loaded {} of the model's {} tensors ({:.0f}%), the others keep their "
                 "initialisation. {}\n",
                 init_weights, loaded, model_tensors,
                 100.0 * static_cast<double>(loaded) / static_cast<double>(std::max<size_t>(model_tensors, 1)),
                 report.to_string(3));
    }
    if (env.distributed()) {
  #if defined(SEDENSENET_CLI_DISTRIBUTED)
      communicator = distributed::ProcessGroup::create(
          env, distributed::ProcessGroupOptions()
                   .backend(dist_backend)
                   .device(torch::Device(options.device()))
                   .timeout(std::chrono::milliseconds(static_cast<int64_t>(dist_timeout * 1000))));
      fmt::print("distributed: {}\n", communicator->describe());
  #else
      throw UsageError("WORLD_SIZE=" + std::to_string(env.world_size) + " asks for distributed training, but this "
                       "build of sedensenet has none (install libgloo-dev and rebuild)");
  #endif
    }
    experiment.set_communicator(communicator);
    experiment.add_metadata({{"cli", recorded_options(options, model_options, data_options)}});
    auto& trainer = experiment.trainer();
    if (!resume.empty()) {
      experiment.resume();
      fmt::print("resuming {} after epoch {} of {}\n", resume, trainer.completed_epochs(), experiment.planned_epochs());
    }
    std::fflush(stdout);

    g_trainer = &trainer;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    auto result = experiment.fit();
    g_trainer = nullptr;
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);

    if (result.interrupted) {
      const auto position =
          trainer.batches_into_epoch() > 0
              ? fmt::format("epoch {} and {} of {} batches of epoch {}", trainer.completed_epochs(),
                            trainer.batches_into_epoch(), experiment.train_loader().batches_per_epoch(),
                            trainer.completed_epochs() + 1)
              : fmt::format("epoch {}", trainer.completed_epochs());
      fmt::print("\ninterrupted: {} holds {}. Continue with:\n  sedensenet train --resume {}\n",
                 (fs::path(options.run_dir()) / "last.pt").string(), position, options.run_dir());
      std::fflush(stdout);
      const int signal = g_signal.load();
      return signal != 0 ? 128 + signal : 130;
    }
    double best_f1 = NAN;
    for (const auto& m : result.history.epochs()) {
      if (m.epoch == result.best_epoch) best_f1 = m.test_macro_f1;
    }
    const int width = terminal_columns(stdout);
    for (const auto& line : ProgressPrinter::fit(
             {fmt::format("best epoch {} by {}: test accuracy {:.2f}%, macro-F1 {:.3f}{}", result.best_epoch,
                          to_string(options.best_metric()), 100 * result.best_accuracy, best_f1,
                          result.early_stopped ? " (early stopping)" : ""),
              fmt::format("run folder {}: best.pt, last.pt, history.csv, metrics.json, confusion_matrix.csv; "
                          "plots loss.svg, accuracy.svg, lr.svg, confusion_matrix.svg",
                          options.run_dir())},
             width)) {
      fmt::print("{}\n", line);
    }
    return 0;
  }

 private:
  /// A resumed run keeps its model: a model flag on the command line whose value differs from
  /// the run's (`recorded`, its config.json) is refused, naming both values.
  void refuse_model_changes(CLI::App* command, const json& recorded) const {
    std::vector<std::string> keys = {"preset", "image_size"};
    DenseNetOptions::fields([&](const char* key, auto, const char*, const schema::Range&) {
      if (std::string(key) != "num_classes") keys.emplace_back(key);
    });
    for (const auto& key : keys) {
      const auto* option = command->get_option_no_throw(flag_name(key));
      if (option == nullptr || option->count() == 0 || !recorded.contains(key)) continue;
      std::string given;
      for (const auto& r : option->results()) given += (given.empty() ? "" : ",") + r;
      const auto& value = recorded[key];
      std::string saved;
      if (value.is_array()) {
        for (const auto& v : value) saved += (saved.empty() ? "" : ",") + v.dump();
      } else {
        saved = value.is_string() ? value.get<std::string>() : value.dump();
      }
      char* end = nullptr;
      const double number = std::strtod(given.c_str(), &end);
      const bool same = given == saved || (value.is_number() && end != given.c_str() && *end == '\0' &&
                                           number == value.get<double>());
      if (!same) {
        throw UsageError("--resume " + resume + " continues that run with its own model: " + flag_name(key) + " " +
                         given + " differs from its " + saved + " (config.json). Drop " + flag_name(key) +
                         ", or start a new run (--init-weights " + resume + "/best.pt starts from its weights)");
      }
    }
  }

  /// What config.json records under metadata.cli: every option of this command by its key, so
  /// that --resume and --config give them back.
  json recorded_options(const TrainerOptions& options, const DenseNetOptions& model,
                        const DataOptions& data) const {
    json j = options.to_json();
    j.update(io::to_json(model));
    j.erase("num_classes");  // the folder's
    j.update(data.to_json());
    j.update({{"data", data_dir}, {"preset", preset}, {"recipe", recipe}, {"init_weights", init_weights}});
    return j;
  }

  std::string data_dir;
  std::string preset = "densenet_bc_40_k12";
  std::string recipe = "recommended";
  std::string resume;
  std::string config;
  std::string init_weights;
  bool allow_partial = false;
  // Distributed training (not recorded in config.json: a run may resume on another layout).
  int64_t nproc = 1;
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::string dist_backend = "auto";
  double dist_timeout = 300;
  std::unique_ptr<OptionFlags<DataOptions>> data_flags_;
  std::unique_ptr<OptionFlags<TrainerOptions>> trainer_flags_;
  std::unique_ptr<OptionFlags<DenseNetOptions>> model_flags_;
};

}  // namespace

std::unique_ptr<Command> train_command() { return std::make_unique<Train>(); }

}  // namespace sedensenet::cli
