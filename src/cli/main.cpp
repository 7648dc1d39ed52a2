// sedensenet: the command-line tool. Train from an image folder, resume, evaluate, predict,
// prepare Fashion-MNIST, and show an architecture summary. See docs/cli.md.
#include <sedensenet/sedensenet.hpp>
// Data-parallel training (c10d): needs LibTorch's c10d and Gloo headers (Debian: libgloo-dev).
#if __has_include(<gloo/algorithm.h>) && (defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL))
#include <sedensenet/distributed.hpp>
#define SEDENSENET_CLI_DISTRIBUTED 1
#else
#include <sedensenet/distributed/environment.hpp>
#endif

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace data = sedensenet::data;
using nlohmann::json;

namespace {

/// A one-line failure for the user (no stack trace): printed and exit code 1.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------------
// JSON configuration: values of options not given on the command line.
// ---------------------------------------------------------------------------------------------

std::string json_scalar(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

/// Sets every option named in `values` (keys are long option names without dashes, '_' or '-')
/// that was not given on the command line. Unknown keys are an error naming the key.
void apply_json_defaults(CLI::App* command, const json& values, const std::string& source,
                         const std::vector<std::string>& ignored = {}) {
  if (!values.is_object()) throw UsageError(source + ": expected a JSON object of option values");
  for (const auto& [key, value] : values.items()) {
    if (std::find(ignored.begin(), ignored.end(), key) != ignored.end()) continue;
    std::string name = key;
    std::replace(name.begin(), name.end(), '_', '-');
    CLI::Option* option = command->get_option_no_throw("--" + name);
    if (option == nullptr) option = command->get_option_no_throw(name);  // positionals
    if (option == nullptr) {
      throw UsageError(source + ": unknown option '" + key + "' (see sedensenet " +
                       command->get_name() + " --help)");
    }
    if (option->count() > 0 || value.is_null()) continue;  // the command line wins
    option->clear();
    if (value.is_array()) {
      for (const auto& item : value) option->add_result(json_scalar(item));
    } else {
      option->add_result(json_scalar(value));
    }
    try {
      option->run_callback();
    } catch (const CLI::Error& e) {
      throw UsageError(source + ": option '" + key + "': " + e.what());
    }
  }
}

json read_json_file(const std::string& path) {
  std::string text;
  try {
    text = sedensenet::io::read_regular_file(path);
  } catch (const std::exception& e) {
    throw UsageError("config file " + sedensenet::error_message(e));
  }
  try {
    return sedensenet::util::parse_json(text, "config file " + path);
  } catch (const std::exception& e) {
    throw UsageError(sedensenet::error_message(e));
  }
}

/// Every integer option of `app` and its subcommands rejects a value its type cannot hold
/// ("--epochs 99999999999999999999") instead of saturating it.
void reject_integer_overflow(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    // The type name carries validator descriptions after a colon ("INT:NONNEGATIVE").
    const std::string type = option->get_type_name();
    const bool is_unsigned = type.rfind("UINT", 0) == 0;
    if (!is_unsigned && type.rfind("INT", 0) != 0) continue;
    option->check(CLI::Validator(
        [is_unsigned](std::string& value) -> std::string {
          const char* first = value.data();
          const char* last = value.data() + value.size();
          std::errc ec;
          if (is_unsigned) {
            uint64_t v = 0;
            ec = std::from_chars(first, last, v).ec;
          } else {
            int64_t v = 0;
            ec = std::from_chars(first, last, v).ec;
          }
          if (ec == std::errc::result_out_of_range) return "the value " + value + " is out of range";
          return std::string();
        },
        ""));
  }
  for (CLI::App* sub : app.get_subcommands({})) reject_integer_overflow(*sub);
}

// ---------------------------------------------------------------------------------------------
// train
// ---------------------------------------------------------------------------------------------

struct TrainArgs {
  std::string data_dir;
  std::string preset = "densenet_bc_40_k12";
  std::string recipe = "recommended";
  int64_t epochs = 10;
  int64_t batch_size = 64;
  double lr = 0;
  std::string optimizer;
  std::string scheduler;
  double weight_decay = 0;
  double warmup_epochs = 0;
  double min_lr = 0;
  double label_smoothing = 0;
  double grad_clip = 0;
  double mixup = 0;
  double cutmix = 0;
  int64_t early_stopping = 0;
  int64_t image_size = 32;
  std::string augment = "reference";
  int64_t workers = 0;
  int threads = 0;
  std::string device = "cpu";
  bool bf16 = false;
  std::string run_dir;
  std::string resume;
  std::string config;
  std::string memory = "standard";
  int64_t se_reduction = 16;
  double drop_rate = 0;
  uint64_t seed = 0;
  bool cache = false;
  std::string bad_files = "skip";
  std::string init_weights;
  double train_fraction = 0.8;
  uint64_t split_seed = 0;
  // Distributed training (not recorded in config.json: a run may resume on another layout).
  int64_t nproc = 1;
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::string dist_backend = "auto";
  double dist_timeout = 300;
};

// The command line as given (the launcher starts workers with it).
std::vector<std::string> g_arguments;
// This process's rank in a distributed run (-1: not distributed).
int64_t g_rank = -1;

void add_train(CLI::App& app, TrainArgs& a) {
  auto* t = app.add_subcommand("train", "train a classifier on an image folder");
  t->add_option("data", a.data_dir,
                "image folder: one sub-folder per class, or train/ and val/ (or test/) "
                "sub-folders each holding class folders");
  t->add_option("--preset", a.preset,
                "architecture: densenet_bc_<depth>[_k<growth>] (CIFAR style, e.g. densenet_bc_100) "
                "or densenet121/169/201/161 (ImageNet style)")
      ->capture_default_str();
  t->add_option("--recipe", a.recipe,
                "starting point for the optimisation options: recommended (AdamW 2e-3, cosine with "
                "warm-up, label smoothing) or reference (Adam 1e-4, constant)")
      ->check(CLI::IsMember({"recommended", "reference"}))
      ->capture_default_str();
  t->add_option("--epochs", a.epochs, "passes over the training data")->check(CLI::Range(int64_t{1}, int64_t{100000}))->capture_default_str();
  t->add_option("--batch-size", a.batch_size, "images per batch")->check(CLI::Range(int64_t{1}, int64_t{65536}))->capture_default_str();
  t->add_option("--lr", a.lr, "peak learning rate (default: the recipe's)")->check(CLI::PositiveNumber);
  t->add_option("--optimizer", a.optimizer, "adam, adamw or sgd (default: the recipe's)")
      ->check(CLI::IsMember({"adam", "adamw", "sgd"}));
  t->add_option("--scheduler", a.scheduler,
                "constant, step, multistep, cosine, plateau or onecycle (default: the recipe's)")
      ->check(CLI::IsMember({"constant", "step", "multistep", "cosine", "plateau", "onecycle"}));
  t->add_option("--weight-decay", a.weight_decay, "weight decay (default: the recipe's)")->check(CLI::NonNegativeNumber);
  t->add_option("--warmup-epochs", a.warmup_epochs, "cosine: warm-up epochs (default: the recipe's)")->check(CLI::NonNegativeNumber);
  t->add_option("--min-lr", a.min_lr, "cosine: final learning rate (default: the recipe's)")->check(CLI::NonNegativeNumber);
  t->add_option("--label-smoothing", a.label_smoothing, "label smoothing in [0, 1) (default: the recipe's)")->check(CLI::Range(0.0, 0.999));
  t->add_option("--grad-clip", a.grad_clip, "clip the gradient norm (0 = off; default: the recipe's)")->check(CLI::NonNegativeNumber);
  t->add_option("--mixup", a.mixup, "MixUp alpha (0 = off)")->check(CLI::NonNegativeNumber);
  t->add_option("--cutmix", a.cutmix, "CutMix alpha (0 = off)")->check(CLI::NonNegativeNumber);
  t->add_option("--early-stopping", a.early_stopping, "stop after this many epochs without a better test accuracy (0 = off)")
      ->check(CLI::Range(int64_t{0}, int64_t{100000}));
  t->add_option("--image-size", a.image_size, "images are resized to size x size")->check(CLI::Range(8, 4096))->capture_default_str();
  t->add_option("--augment", a.augment,
                "training augmentation: none, flip (random horizontal flip), reference (flip + padded "
                "crop), strong (also rotation and colour jitter)")
      ->check(CLI::IsMember({"none", "flip", "reference", "strong"}))
      ->capture_default_str();
  t->add_option("--workers", a.workers, "data-loading threads (0 = one per core)")->check(CLI::NonNegativeNumber);
  t->add_option("--threads", a.threads, "LibTorch threads (0 = one per core)")->check(CLI::NonNegativeNumber);
  t->add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  t->add_flag("--bf16", a.bf16, "bfloat16 autocast (CUDA only)");
  t->add_option("--run-dir", a.run_dir, "run folder for config, history, checkpoints, metrics and plots (default: runs/<preset>)");
  t->add_option("--resume", a.resume, "continue the run in this run folder (its config.json gives every other option)");
  t->add_option("--config", a.config, "JSON file of option values (keys: long option names); flags given on the command line override it. A run folder's config.json works too.");
  t->add_option("--memory", a.memory, "dense layers: standard, efficient or efficient_input_only")
      ->check(CLI::IsMember({"standard", "efficient", "efficient_input_only"}))
      ->capture_default_str();
  t->add_option("--se-reduction", a.se_reduction, "SE reduction ratio (0 = no SE)")->check(CLI::Range(int64_t{0}, int64_t{65536}))->capture_default_str();
  t->add_option("--drop-rate", a.drop_rate, "dropout after each dense layer")->check(CLI::Range(0.0, 0.99));
  t->add_option("--seed", a.seed, "seed of initialisation, data order and augmentation");
  t->add_flag("--cache", a.cache, "keep decoded images in memory (small datasets)");
  t->add_option("--bad-files", a.bad_files, "unusable image files: skip (listed) or error")
      ->check(CLI::IsMember({"skip", "error"}))
      ->capture_default_str();
  t->add_option("--train-fraction", a.train_fraction, "share of each class used for training when the folder has no train/ and val/")
      ->check(CLI::Range(0.01, 0.99))
      ->capture_default_str();
  t->add_option("--split-seed", a.split_seed, "seed of that split");
  auto* dist = "distributed training (docs/distributed.md)";
  t->add_option("--nproc", a.nproc, "start this many worker processes on this machine, training data-parallel "
                "(each with --threads, default cores / nproc)")->check(CLI::Range(1, 1024))->group(dist)->capture_default_str();
  t->add_option("--nnodes", a.nnodes, "machines in the job (run the same command on each, with its --node-rank)")
      ->check(CLI::Range(1, 65536))->group(dist)->capture_default_str();
  t->add_option("--node-rank", a.node_rank, "this machine's index, 0 .. nnodes-1 (0 hosts the rendezvous)")
      ->check(CLI::NonNegativeNumber)->group(dist)->capture_default_str();
  t->add_option("--master-addr", a.master_addr, "address of the machine with --node-rank 0")->group(dist)->capture_default_str();
  t->add_option("--master-port", a.master_port, "rendezvous TCP port (0: a free loopback port, one machine only)")
      ->check(CLI::Range(0, 65535))->group(dist)->capture_default_str();
  t->add_option("--dist-backend", a.dist_backend, "auto (NCCL on CUDA, Gloo on CPU), gloo or nccl")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}))->group(dist)->capture_default_str();
  t->add_option("--dist-timeout", a.dist_timeout, "seconds a rank waits for the others before it stops with an error "
                "naming the rank that went away")->check(CLI::PositiveNumber)->group(dist)->capture_default_str();
  t->add_option("--init-weights", a.init_weights,
                "start from these weights: a PyTorch state dict file (torchvision's, the reference's, "
                "this library's) or a run's best.pt; what does not fit (SE blocks, another classifier) "
                "stays as initialised and is listed");
}

json train_args_json(const TrainArgs& a, const sedensenet::TrainerOptions& o) {
  return {{"data", a.data_dir},       {"preset", a.preset},
          {"recipe", a.recipe},       {"epochs", a.epochs},
          {"batch_size", a.batch_size}, {"lr", o.lr()},
          {"optimizer", sedensenet::to_string(o.optimizer())},
          {"scheduler", sedensenet::to_string(o.scheduler())},
          {"weight_decay", o.weight_decay()}, {"warmup_epochs", o.warmup_epochs()},
          {"min_lr", o.min_lr()},     {"label_smoothing", o.label_smoothing()},
          {"grad_clip", o.grad_clip_norm()}, {"mixup", a.mixup},
          {"cutmix", a.cutmix},       {"early_stopping", a.early_stopping},
          {"image_size", a.image_size}, {"augment", a.augment},
          {"workers", a.workers},     {"threads", a.threads},
          {"device", a.device},       {"bf16", a.bf16},
          {"memory", a.memory},       {"se_reduction", a.se_reduction},
          {"drop_rate", a.drop_rate}, {"seed", a.seed},
          {"cache", a.cache},         {"bad_files", a.bad_files},
          {"train_fraction", a.train_fraction}, {"split_seed", a.split_seed},
          {"init_weights", a.init_weights}};
}

data::TransformPtr train_transform(const std::string& augment, int64_t size,
                                   const sedensenet::io::InputSpec& input) {
  std::vector<data::TransformPtr> steps = {std::make_shared<data::Resize>(size, size)};
  if (augment != "none") steps.push_back(std::make_shared<data::RandomHorizontalFlip>());
  if (augment == "reference" || augment == "strong") {
    steps.push_back(std::make_shared<data::RandomCrop>(size, std::max<int64_t>(1, size / 8)));
  }
  if (augment == "strong") {
    steps.push_back(std::make_shared<data::RandomRotation>(10.0));
    steps.push_back(std::make_shared<data::ColorJitter>(0.2, 0.2, 0.2));
  }
  steps.push_back(std::make_shared<data::ToTensor>());
  steps.push_back(std::make_shared<data::Normalize>(input.mean, input.std));
  return data::compose(steps);
}

/// Whether a weights file is a run checkpoint (of any version: its reader explains old ones) or
/// else a state dict; a file that is missing, truncated, corrupted or not a PyTorch archive gets
/// one message naming it here, before it is taken for a state dict.
bool is_checkpoint_weights(const std::string& path) {
  if (!fs::exists(path)) throw UsageError("weights file " + path + " not found");
  if (sedensenet::io::is_checkpoint_file(path)) return true;
  sedensenet::io::read_verified_archive(path);
  return false;
}

std::atomic<sedensenet::Trainer*> g_trainer{nullptr};
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

int run_train(CLI::App* command, TrainArgs& a) {
  if (!a.resume.empty()) {
    const auto config = fs::path(a.resume) / "config.json";
    if (!fs::exists(config)) {
      throw UsageError("cannot resume: " + config.string() + " not found (is " + a.resume +
                       " a run folder?)");
    }
    const auto saved = read_json_file(config.string());
    if (!saved.contains("metadata") || !saved["metadata"].contains("cli")) {
      throw UsageError(config.string() + " was not written by `sedensenet train`");
    }
    apply_json_defaults(command, saved["metadata"]["cli"], config.string(), {"run_dir"});
    a.run_dir = a.resume;
  } else if (!a.config.empty()) {
    auto values = read_json_file(a.config);
    // A run folder's config.json: take the options it recorded.
    if (values.contains("metadata") && values["metadata"].contains("cli")) {
      values = values["metadata"]["cli"];
    }
    apply_json_defaults(command, values, a.config, {"run_dir"});
  }
  if (a.data_dir.empty()) throw UsageError("train: the image folder is required (sedensenet train DATA)");
  if (a.run_dir.empty()) a.run_dir = "runs/" + a.preset;
  // The architecture first: an impossible one is reported before the data are scanned.
  sedensenet::check_model_size(sedensenet::DenseNetOptions::preset(a.preset));

  // Distributed: as the launcher, start the workers; as a worker, join the process group.
  const bool launched = std::getenv("SEDENSENET_LAUNCHED") != nullptr;
  if ((a.nproc > 1 || a.nnodes > 1) && !launched && std::getenv("WORLD_SIZE") != nullptr) {
    throw UsageError("--nproc starts its own worker processes, but WORLD_SIZE is already set (torchrun, "
                     "Slurm): drop --nproc, or unset WORLD_SIZE");
  }
  sedensenet::distributed::Environment env;
  try {
    env = sedensenet::distributed::Environment::from_environment();
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  if ((a.nproc > 1 || a.nnodes > 1) && !launched) {
    if (env.distributed()) {
      throw UsageError("--nproc starts its own worker processes, but this process is already rank " +
                       std::to_string(env.rank) + " of a job (Slurm variables): drop --nproc");
    }
    if (a.node_rank >= a.nnodes) {
      throw UsageError("--node-rank " + std::to_string(a.node_rank) + " must be below --nnodes " +
                       std::to_string(a.nnodes));
    }
#if defined(SEDENSENET_CLI_DISTRIBUTED)
    sedensenet::distributed::LaunchOptions launch;
    launch.nproc = a.nproc;
    launch.nnodes = a.nnodes;
    launch.node_rank = a.node_rank;
    launch.master_addr = a.master_addr;
    launch.master_port = a.master_port;
    launch.grace = std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout * 1000) + 30000);
    launch.arguments = g_arguments;
    launch.extra_environment = {"SEDENSENET_LAUNCHED=1"};
    fmt::print("launching {} worker process(es) on this machine: ranks {} .. {} of {}\n", a.nproc,
               a.node_rank * a.nproc, (a.node_rank + 1) * a.nproc - 1, a.nproc * a.nnodes);
    std::fflush(stdout);
    try {
      return sedensenet::distributed::launch(launch);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
#else
    throw UsageError("--nproc: this build of sedensenet has no distributed support (it was built "
                     "without Gloo's headers: install libgloo-dev and rebuild)");
#endif
  }
  std::shared_ptr<sedensenet::Communicator> communicator;
  if (env.distributed()) {
    g_rank = env.rank;
    // Rank 0 reports; the others print only errors (to stderr, with their rank).
    if (env.rank != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) std::perror("stdout");
    // The machine's cores are shared by its ranks.
    if (a.threads == 0) a.threads = std::max(1, sedensenet::hardware_threads() / static_cast<int>(env.local_world_size));
    if (a.workers == 0) a.workers = a.threads;
    if (a.device == "cuda") a.device = "cuda:" + std::to_string(env.local_rank);
  }

  sedensenet::set_num_threads(a.threads);
  sedensenet::keep_freed_memory();  // no page faults for every step's activations
  // Optimisation options: the recipe, then every flag given explicitly.
  auto options = a.recipe == "reference" ? sedensenet::TrainerOptions::reference()
                                         : sedensenet::TrainerOptions::recommended();
  auto given = [&](const char* name) { return command->get_option(name)->count() > 0; };
  options.epochs(a.epochs).device(a.device).threads(a.threads).bf16(a.bf16).seed(a.seed)
      .run_dir(a.run_dir).mixup_alpha(a.mixup).cutmix_alpha(a.cutmix)
      .early_stopping_patience(a.early_stopping);
  if (given("--lr")) options.lr(a.lr);
  if (given("--optimizer")) options.optimizer(sedensenet::optimizer_from_string(a.optimizer));
  if (given("--scheduler")) options.scheduler(sedensenet::schedule_from_string(a.scheduler));
  if (given("--weight-decay")) options.weight_decay(a.weight_decay);
  if (given("--warmup-epochs")) options.warmup_epochs(a.warmup_epochs);
  if (given("--min-lr")) options.min_lr(a.min_lr);
  if (given("--label-smoothing")) options.label_smoothing(a.label_smoothing);
  if (given("--grad-clip")) options.grad_clip_norm(a.grad_clip);
  options.min_lr(std::min(options.min_lr(), options.lr()));
  options.validate();

  // Data.
  auto folder_options = data::ImageFolderOptions()
                            .train_fraction(a.train_fraction)
                            .split_seed(a.split_seed)
                            .on_bad_file(data::bad_file_policy_from_string(a.bad_files));
  auto splits = data::ImageFolder::split(a.data_dir, folder_options);
  fmt::print("data: {} ({})\n  train: {}\n  test:  {}\n", a.data_dir,
             splits.predefined ? "train/ and test/ folders" : "stratified split",
             splits.train.describe(), splits.test.describe());
  splits.train.validate(false, static_cast<int>(a.workers));
  splits.test.validate(false, static_cast<int>(a.workers));
  if (!splits.train.summary().bad.empty() || !splits.test.summary().bad.empty()) {
    fmt::print("  after checking every file:\n  train: {}\n  test:  {}\n", splits.train.describe(),
               splits.test.describe());
  }
  const auto& classes = splits.train.classes();
  sedensenet::io::InputSpec input;
  input.size = a.image_size;
  data::ImageLoader train_loader(splits.train, train_transform(a.augment, a.image_size, input),
                                 data::LoaderOptions()
                                     .batch_size(a.batch_size)
                                     .workers(a.workers)
                                     .seed(a.seed)
                                     .cache(a.cache)
                                     .pin_memory(options.device() != "cpu"));
  data::ImageLoader test_loader(splits.test, input.eval_transform(),
                                data::LoaderOptions()
                                    .batch_size(a.batch_size)
                                    .workers(a.workers)
                                    .shuffle(false)
                                    .cache(a.cache)
                                    .pin_memory(options.device() != "cpu"));

  // Model.
  auto model_options = sedensenet::DenseNetOptions::preset(a.preset)
                           .num_classes(static_cast<int64_t>(classes.size()))
                           .se_reduction(a.se_reduction)
                           .drop_rate(a.drop_rate)
                           .memory(sedensenet::memory_mode_from_string(a.memory));
  torch::manual_seed(a.seed);
  sedensenet::DenseNet net(model_options);
  std::cout << sedensenet::summary(net, {3, a.image_size, a.image_size}) << std::flush;

  if (!a.init_weights.empty() && a.resume.empty()) {
    sedensenet::io::LoadReport report;
    if (is_checkpoint_weights(a.init_weights)) {
      auto trained = sedensenet::io::load_trained_model(a.init_weights);
      std::map<std::string, torch::Tensor> tensors;
      for (const auto& p : trained.model->named_parameters()) tensors[p.key()] = p.value();
      for (const auto& b : trained.model->named_buffers()) tensors[b.key()] = b.value();
      report = sedensenet::io::load_state_dict(*net, tensors, a.init_weights,
                                               sedensenet::io::LoadOptions().strict(false));
    } else {
      report = sedensenet::io::load_state_dict(*net, a.init_weights, sedensenet::io::LoadOptions().strict(false));
    }
    if (report.loaded_tensors() == 0) {
      throw UsageError(a.init_weights + ": none of its tensors fit the model (" + report.to_string(5) +
                       "); is --preset the architecture it was trained with?");
    }
    fmt::print("initial weights from {}: {}\n", a.init_weights, report.to_string(8));
  }
  if (env.distributed()) {
#if defined(SEDENSENET_CLI_DISTRIBUTED)
    communicator = sedensenet::distributed::ProcessGroup::create(
        env, sedensenet::distributed::ProcessGroupOptions()
                 .backend(a.dist_backend)
                 .device(torch::Device(options.device()))
                 .timeout(std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout * 1000))));
    fmt::print("distributed: {}\n", communicator->describe());
#else
    throw UsageError("WORLD_SIZE=" + std::to_string(env.world_size) + " asks for distributed training, but this "
                     "build of sedensenet has none (install libgloo-dev and rebuild)");
#endif
  }
  sedensenet::Trainer trainer(net, options);
  trainer.set_communicator(communicator);
  trainer.set_class_names(classes);
  trainer.set_metadata(sedensenet::io::densenet_metadata(
      model_options, input,
      {{"cli", train_args_json(a, options)}, {"data", {{"root", fs::absolute(a.data_dir).string()}}}}));
  if (!a.resume.empty()) {
    trainer.resume(a.resume);
    fmt::print("resuming {} after epoch {} of {}\n", a.resume, trainer.completed_epochs(), a.epochs);
  }
  sedensenet::ProgressPrinter progress;
  progress.attach(trainer);
  if (env.distributed()) {
    train_loader.set_shard(env.rank, env.world_size);  // as fit() will: this rank's share
    fmt::print("training: {} epochs on {} processes, {} steps per epoch of {} x {} = {} images, {} "
               "threads each, run folder {}\n",
               options.epochs(), env.world_size, train_loader.batches_per_epoch(), env.world_size,
               a.batch_size, env.world_size * a.batch_size, at::get_num_threads(), a.run_dir);
  } else {
    fmt::print("training: {} epochs, {} batches of {} per epoch, {} threads, run folder {}\n",
               options.epochs(), train_loader.batches_per_epoch(), a.batch_size, at::get_num_threads(),
               a.run_dir);
  }
  std::fflush(stdout);

  g_trainer = &trainer;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  sedensenet::ImageLoaderSource train_source(train_loader), test_source(test_loader);
  auto result = trainer.fit(train_source, &test_source);
  g_trainer = nullptr;
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);

  for (const auto* loader : {&train_loader, &test_loader}) {
    for (const auto& bad : loader->bad_files()) {
      fmt::print("skipped unusable file {}: {}\n", bad.path, bad.reason);
    }
  }
  if (result.interrupted) {
    const auto position =
        trainer.batches_into_epoch() > 0
            ? fmt::format("epoch {} and {} of {} batches of epoch {}", trainer.completed_epochs(),
                          trainer.batches_into_epoch(), train_loader.batches_per_epoch(),
                          trainer.completed_epochs() + 1)
            : fmt::format("epoch {}", trainer.completed_epochs());
    fmt::print("\ninterrupted: {} holds {}. Continue with:\n  sedensenet train --resume {}\n",
               (fs::path(a.run_dir) / "last.pt").string(), position, a.run_dir);
    std::fflush(stdout);
    const int signal = g_signal.load();
    return signal != 0 ? 128 + signal : 130;
  }
  fmt::print("best test accuracy {:.2f}% at epoch {}{}\n", 100 * result.best_accuracy,
             result.best_epoch, result.early_stopped ? " (early stopping)" : "");
  fmt::print("run folder {}: best.pt, last.pt, history.csv, metrics.json, confusion_matrix.csv; "
             "plots loss.svg, accuracy.svg, lr.svg, confusion_matrix.svg\n",
             a.run_dir);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// evaluate
// ---------------------------------------------------------------------------------------------

/// Where a model for evaluate / predict comes from: a run's checkpoint (self-describing) or a
/// Python state dict file plus the architecture given here.
struct ModelSource {
  std::string weights;
  std::string preset;
  int64_t image_size = 0;
  int64_t se_reduction = 16;
  std::string se_gate = "sigmoid";
  std::vector<std::string> class_names;

  void add_options(CLI::App* command) {
    command->add_option("--weights", weights, "best.pt or last.pt of a run folder, or a PyTorch "
                        "state dict file (torch.save(model.state_dict()); then give --preset)")->required();
    command->add_option("--preset", preset, "architecture of a PyTorch state dict file");
    command->add_option("--image-size", image_size, "input size for a PyTorch state dict file (default: 32 CIFAR style, 224 ImageNet style)")->check(CLI::Range(int64_t{0}, int64_t{4096}));
    command->add_option("--se-reduction", se_reduction, "SE reduction of a PyTorch state dict file's model (0 = no SE, e.g. torchvision)")->check(CLI::Range(int64_t{0}, int64_t{65536}))->capture_default_str();
    command->add_option("--se-gate", se_gate, "SE gate of a PyTorch state dict file's model")
        ->check(CLI::IsMember({"sigmoid", "scaled_sigmoid"}))->capture_default_str();
    command->add_option("--class-names", class_names, "class names of a PyTorch state dict file's model, in label order")->delimiter(',');
  }

  sedensenet::io::TrainedModel load(const std::vector<std::string>& folder_classes = {}) const {
    if (is_checkpoint_weights(weights)) return sedensenet::io::load_trained_model(weights);
    if (preset.empty()) {
      throw UsageError(weights + " is not a SEDenseNet checkpoint; for a PyTorch state dict file "
                       "give its architecture with --preset (and --se-reduction 0 for torchvision)");
    }
    auto options = sedensenet::DenseNetOptions::preset(preset)
                       .se_reduction(se_reduction)
                       .se_gate(se_gate == "sigmoid" ? sedensenet::SEGate::sigmoid : sedensenet::SEGate::scaled_sigmoid)
                       .num_classes(0);
    sedensenet::io::InputSpec input;
    input.size = image_size > 0 ? image_size : (options.small_inputs() ? 32 : 224);
    auto classes = class_names.empty() ? folder_classes : class_names;
    auto trained = sedensenet::io::load_state_dict_model(weights, options, input, classes);
    if (!trained.classes.empty() && static_cast<int64_t>(trained.classes.size()) != trained.options.num_classes()) {
      throw UsageError(weights + " has " + std::to_string(trained.options.num_classes()) +
                       " classes but " + std::to_string(trained.classes.size()) + " class names were given");
    }
    return trained;
  }
};

struct EvaluateArgs {
  ModelSource model;
  std::string data_dir;
  int64_t batch_size = 64;
  int64_t workers = 0;
  int threads = 0;
  std::string output;
};

int run_evaluate(const EvaluateArgs& a) {
  sedensenet::set_num_threads(a.threads);
  auto splits = [&] {
    try {
      return std::optional<data::ImageFolderSplits>(data::ImageFolder::split(a.data_dir));
    } catch (const c10::Error&) {
      return std::optional<data::ImageFolderSplits>();
    }
  }();
  // train/ + test/ folders: evaluate the test side; otherwise every image of the folder.
  data::ImageFolder folder = splits && splits->predefined ? splits->test : data::ImageFolder(a.data_dir);
  auto trained = a.model.load(folder.classes());
  // Map the folder's classes to the model's by name.
  if (!trained.classes.empty() && folder.classes() != trained.classes) {
    throw UsageError("the classes of " + a.data_dir + " differ from the ones " + a.model.weights +
                     " was trained on (" + std::to_string(trained.classes.size()) + " classes)");
  }
  folder.validate(false, static_cast<int>(a.workers));
  data::ImageLoader loader(folder, trained.input.eval_transform(),
                           data::LoaderOptions().batch_size(a.batch_size).workers(a.workers).shuffle(false));
  sedensenet::ImageLoaderSource source(loader);
  sedensenet::Trainer evaluator(trained.model, sedensenet::TrainerOptions().threads(a.threads));
  auto result = evaluator.evaluate(source);
  const auto& names = folder.classes();
  auto report = result.confusion.to_json(names);
  fmt::print("{}: {} images, loss {:.4f}, accuracy {:.2f}%{}\n", folder.root().string(),
             result.images, result.loss, 100 * result.accuracy,
             std::isnan(result.top5) ? "" : fmt::format(", top-5 {:.2f}%", 100 * result.top5));
  fmt::print("{:<16} {:>9} {:>9} {:>9} {:>8}\n", "class", "precision", "recall", "F1", "support");
  for (const auto& name : names) {
    const auto& c = report["per_class"][name];
    fmt::print("{:<16} {:>9.4f} {:>9.4f} {:>9.4f} {:>8}\n", name, c["precision"].get<double>(),
               c["recall"].get<double>(), c["f1"].get<double>(), c["support"].get<int64_t>());
  }
  fmt::print("confusion matrix (rows: true, columns: predicted):\n{}", result.confusion.to_csv(names));
  if (!a.output.empty()) {
    report["loss"] = result.loss;
    report["images"] = result.images;
    sedensenet::io::write_file_atomically(a.output, report.dump(2) + "\n");
    fmt::print("wrote {}\n", a.output);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// predict
// ---------------------------------------------------------------------------------------------

struct PredictArgs {
  ModelSource model;
  std::vector<std::string> inputs;
  int64_t top_k = 3;
  bool as_json = false;
  int threads = 0;
  int64_t batch_size = 64;
};

int run_predict(const PredictArgs& a) {
  sedensenet::set_num_threads(a.threads);
  auto trained = a.model.load();
  std::vector<fs::path> files;
  for (const auto& input : a.inputs) {
    if (fs::is_directory(input)) {
      std::vector<fs::path> found;
      for (const auto& entry : fs::recursive_directory_iterator(input)) {
        auto ext = entry.path().extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
        if (entry.is_regular_file() && data::image_extensions().count(ext)) found.push_back(entry.path());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(input)) {
      files.emplace_back(input);
    } else {
      throw UsageError(input + ": no such file or folder");
    }
  }
  if (files.empty()) throw UsageError("predict: no image files found in the given paths");
  const auto transform = trained.input.eval_transform();
  const auto k = std::min<int64_t>(a.top_k, trained.options.num_classes());
  json results = json::array();
  torch::NoGradGuard no_grad;
  data::Rng rng(0);
  for (size_t start = 0; start < files.size(); start += static_cast<size_t>(a.batch_size)) {
    const size_t end = std::min(files.size(), start + static_cast<size_t>(a.batch_size));
    std::vector<torch::Tensor> images;
    for (size_t i = start; i < end; ++i) images.push_back(transform->apply(data::read_image(files[i]), rng));
    auto probabilities = torch::softmax(trained.model->forward(torch::stack(images)), 1);
    auto [values, indices] = probabilities.topk(k, 1);
    for (size_t i = start; i < end; ++i) {
      const auto row = static_cast<int64_t>(i - start);
      json top = json::array();
      std::string line = files[i].string() + ":";
      for (int64_t j = 0; j < k; ++j) {
        const auto index = indices[row][j].item<int64_t>();
        const auto name = static_cast<size_t>(index) < trained.classes.size()
                              ? trained.classes[static_cast<size_t>(index)]
                              : std::to_string(index);
        const double p = values[row][j].item<double>();
        top.push_back({{"class", name}, {"index", index}, {"probability", p}});
        line += fmt::format(" {} {:.1f}%", name, 100 * p);
        if (j + 1 < k) line += ",";
      }
      results.push_back({{"file", files[i].string()}, {"top", top}});
      if (!a.as_json) fmt::print("{}\n", line);
    }
  }
  if (a.as_json) fmt::print("{}\n", results.dump(2));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// prepare, info
// ---------------------------------------------------------------------------------------------

struct PrepareArgs {
  std::string out = "data/fashion-mnist";
  std::string source = data::kFashionMnistSource;
  int64_t max_train = -1;
  int64_t max_test = -1;
};

int run_prepare(const PrepareArgs& a) {
  auto prepared = data::prepare_fashion_mnist(a.out, a.source, a.max_train, a.max_test);
  fmt::print("Fashion-MNIST {} {}: {} training and {} test images in train/ and test/ (10 classes)\n",
             prepared.reused ? "already prepared in" : "written to", prepared.root.string(),
             prepared.train_images, prepared.test_images);
  return 0;
}

struct InfoArgs {
  std::string preset = "densenet_bc_100";
  std::string weights;
  int64_t image_size = 0;
  int64_t classes = 10;
  int64_t se_reduction = 16;
};

int run_info(const InfoArgs& a) {
  sedensenet::set_num_threads(0);
  sedensenet::DenseNet net{nullptr};
  int64_t size = a.image_size;
  if (!a.weights.empty()) {
    auto trained = sedensenet::io::load_trained_model(a.weights);
    net = trained.model;
    if (size == 0) size = trained.input.size;
    fmt::print("{}: {} classes, input {}x{}, trained {} epoch(s)\n", a.weights,
               trained.options.num_classes(), trained.input.size, trained.input.size,
               trained.state.value("epoch", 0));
  } else {
    auto options = sedensenet::DenseNetOptions::preset(a.preset).num_classes(a.classes).se_reduction(a.se_reduction);
    net = sedensenet::DenseNet(options);
    if (size == 0) size = options.small_inputs() ? 32 : 224;
    fmt::print("{} ({}SE)\n", a.preset, a.se_reduction > 0 ? "" : "no ");
  }
  std::cout << sedensenet::summary(net, {3, size, size});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  g_arguments.assign(argv, argv + argc);
  CLI::App app{"sedensenet: train and run SE-DenseNet image classifiers (LibTorch)"};
  app.set_version_flag("--version", std::string("sedensenet ") + sedensenet::version());
  app.require_subcommand(1);
  app.footer("Run `sedensenet <command> --help` for a command's options. Documentation: docs/cli.md");

  TrainArgs train_args;
  add_train(app, train_args);

  EvaluateArgs eval_args;
  auto* evaluate = app.add_subcommand("evaluate", "metrics and confusion matrix of trained weights on an image folder");
  eval_args.model.add_options(evaluate);
  evaluate->add_option("data", eval_args.data_dir, "image folder (its test/ or val/ side if it has train/ and test/)")->required();
  evaluate->add_option("--batch-size", eval_args.batch_size, "images per batch")->check(CLI::Range(int64_t{1}, int64_t{65536}));
  evaluate->add_option("--workers", eval_args.workers, "data-loading threads (0 = one per core)")->check(CLI::NonNegativeNumber);
  evaluate->add_option("--threads", eval_args.threads, "LibTorch threads (0 = one per core)")->check(CLI::NonNegativeNumber);
  evaluate->add_option("--output", eval_args.output, "also write the metrics as JSON to this file");

  PredictArgs predict_args;
  auto* predict = app.add_subcommand("predict", "top-k classes for image files or folders");
  predict_args.model.add_options(predict);
  predict->add_option("inputs", predict_args.inputs, "image files and/or folders (searched recursively)")->required();
  predict->add_option("--top-k", predict_args.top_k, "classes to show per image")->check(CLI::Range(int64_t{1}, int64_t{100000}));
  predict->add_flag("--json", predict_args.as_json, "print JSON instead of text");
  predict->add_option("--threads", predict_args.threads, "LibTorch threads (0 = one per core)")->check(CLI::NonNegativeNumber);

  PrepareArgs prepare_args;
  auto* prepare = app.add_subcommand("prepare", "prepare a dataset as an image folder");
  prepare->require_subcommand(1);
  auto* fmnist = prepare->add_subcommand("fashion-mnist", "Debian's dataset-fashion-mnist as train/ and test/ PNG folders");
  fmnist->add_option("--out", prepare_args.out, "output folder")->capture_default_str();
  fmnist->add_option("--source", prepare_args.source, "folder with the four gzip'd IDX files")->capture_default_str();
  fmnist->add_option("--max-train", prepare_args.max_train, "write only the first N training images (-1 = all 60000)");
  fmnist->add_option("--max-test", prepare_args.max_test, "write only the first N test images (-1 = all 10000)");

  InfoArgs info_args;
  auto* info = app.add_subcommand("info", "architecture summary: parameters, stage shapes, MACs");
  info->add_option("--preset", info_args.preset, "architecture (see train --help)")->capture_default_str();
  info->add_option("--weights", info_args.weights, "summarise the model of a checkpoint instead");
  info->add_option("--image-size", info_args.image_size, "input size (default: 32 CIFAR style, 224 ImageNet style)")->check(CLI::Range(int64_t{0}, int64_t{4096}));
  info->add_option("--classes", info_args.classes, "number of classes")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  info->add_option("--se-reduction", info_args.se_reduction, "SE reduction ratio (0 = no SE)")->check(CLI::Range(int64_t{0}, int64_t{65536}));

  std::string convert_old, convert_new;
  bool convert_trusted = false;
  auto* convert = app.add_subcommand("convert-checkpoint", "convert a checkpoint of SEDenseNet 0.1 "
                                     "(format version 1) that you trust to the current format");
  convert->add_option("old", convert_old, "the old best.pt or last.pt")->required();
  convert->add_option("new", convert_new, "the file to write (must not exist)")->required();
  convert->add_flag("--trust-old-format", convert_trusted,
                    "required: the old format is read through LibTorch's TorchScript loader, which "
                    "runs code stored in the file; give it only for files you made or trust");

  reject_integer_overflow(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // A file-size limit (ulimit -f) must surface as a write error naming the file, not kill us.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    if (app.got_subcommand("train")) return run_train(app.get_subcommand("train"), train_args);
    if (app.got_subcommand("evaluate")) return run_evaluate(eval_args);
    if (app.got_subcommand("predict")) return run_predict(predict_args);
    if (app.got_subcommand("prepare")) return run_prepare(prepare_args);
    if (app.got_subcommand("info")) return run_info(info_args);
    if (app.got_subcommand("convert-checkpoint")) {
      if (!convert_trusted) {
        throw UsageError("convert-checkpoint reads " + convert_old + " through LibTorch's "
                         "TorchScript loader, which runs code stored in the file; if you made "
                         "the file or trust its source, add --trust-old-format");
      }
      sedensenet::convert_legacy_checkpoint(convert_old, convert_new);
      fmt::print("converted {} to {} (checkpoint format version {})\n", convert_old, convert_new,
                 sedensenet::io::kCheckpointVersion);
      return 0;
    }
  } catch (const std::exception& e) {
    if (g_rank >= 0) {
      // A distributed worker: say which rank, and leave at once (a process group whose peers
      // are gone may block in its destructor).
      std::fprintf(stderr, "sedensenet: error (rank %lld): %s\n", static_cast<long long>(g_rank),
                   sedensenet::error_message(e).c_str());
      std::fflush(nullptr);
      std::_Exit(1);
    }
    std::fflush(stdout);  // what was printed before comes first
    std::fprintf(stderr, "sedensenet: error: %s\n", sedensenet::error_message(e).c_str());
    return 1;
  }
  return 0;
}
