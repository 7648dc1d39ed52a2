// The Trainer's checkpoints: resuming a run from its last.pt (and best.pt), and writing them.
// The file format is io/checkpoint_file.hpp's, the run state inside it RunState's.
#include "sedensenet/train/trainer.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include "sedensenet/io/files.hpp"
#include "sedensenet/train/optimizer_state.hpp"
#include "sedensenet/train/run_folder.hpp"
#include "sedensenet/util/errors.hpp"

namespace sedensenet {

namespace {

// last.pt's extra tensors holding the weight average: this prefix and the module's names.
constexpr const char* kAveragePrefix = "average/";

// The reader's messages start with the file's name: say it once.
std::string without_prefix(std::string reason, const std::filesystem::path& path) {
  const std::string prefix = path.string() + ": ";
  if (reason.rfind(prefix, 0) == 0) reason = reason.substr(prefix.size());
  return reason;
}

}  // namespace

void Trainer::resume(const std::filesystem::path& run_dir) {
  const RunFolder folder(run_dir);
  const auto path = folder.last_checkpoint(), best_path = folder.best_checkpoint();
  // Distributed: rank 0 reads the files and sends them, so other machines need no copy.
  const std::string last_bytes = parallel_.from_root([&] {
    TORCH_CHECK(std::filesystem::exists(path), "cannot resume: ", path.string(),
                " not found (no completed epoch in that run folder?)");
    try {
      return io::read_regular_file(path);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "cannot resume: ", error_message(e));
    }
    return std::string();
  });
  const std::string best_bytes = parallel_.from_root([&] {
    if (!std::filesystem::exists(best_path)) return std::string();
    try {
      return io::read_regular_file(best_path);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "cannot resume: ", error_message(e), "; move it away to resume without it");
    }
    return std::string();
  });
  io::CheckpointFile last;
  RunState state;
  try {
    last = io::decode_checkpoint(last_bytes, path);
    state = RunState::from_json(last.state, path.string());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "cannot resume: ", path.string(), " is not a readable checkpoint: ",
                without_prefix(error_message(e), path));
  }
  TORCH_CHECK(!last.optimizer.is_null(), "cannot resume: ", path.string(), " holds weights only "
              "(a best.pt, or a converted old checkpoint): its optimizer state is missing. "
              "Start a new run with --init-weights ", path.string(), " instead");
  try {
    io::load_module_tensors(*module_, last.model, path.string());
    load_optimizer_state(*optimizer_, options_.optimizer(), last.optimizer, last.optimizer_tensors,
                         path.string());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "cannot resume: ", error_message(e), ". Resume with the run's own "
                "model and settings (its config.json)");
  }
  module_->to(device_);
  restore_average(last, state.average_updates, path.string());
  // What the program set before resuming wins over what the checkpoint recorded.
  if (!state_.metadata.is_null()) state.metadata = state_.metadata;
  if (!state_.classes.empty()) state.classes = state_.classes;
  DataParallel::RankState saved{last.extra_tensor("rng_cpu"), state.partial};
  TORCH_CHECK(saved.rng.defined() && saved.rng.scalar_type() == torch::kUInt8 &&
                  saved.rng.numel() == at::detail::getDefaultCPUGenerator().get_state().numel(),
              "cannot resume: ", path.string(), " has no valid random state (damaged checkpoint?)");
  // Each rank continues with its own random state and epoch metrics when the run had as many
  // ranks; a run resumed on another number of ranks continues at an epoch boundary only.
  auto mine = parallel_.restore_rank_state(last, path.string(), *module_, state.epoch, state.batch,
                                           std::move(saved));
  rng_state_ = mine.rng;
  state.partial = mine.partial;
  if (!best_bytes.empty()) {
    // Keep the best weights in memory as the uninterrupted run would have: loaded into the model
    // (a strict check that works for any module, Cloneable or not), then the current weights go back.
    try {
      auto best = io::decode_checkpoint(best_bytes, best_path);
      const auto current = io::module_tensors(*module_);
      io::load_module_tensors(*module_, best.model, best_path.string());
      io::load_module_tensors(*module_, current, "the current weights");
      best_weights_ = std::move(best.model);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "cannot resume: ", error_message(e), "; move it away to resume without it");
    }
  }
  state_ = std::move(state);
  resumed_ = true;
}

void Trainer::restore_average(const io::CheckpointFile& last, int64_t updates, const std::string& name) {
  io::NamedTensors saved;
  const std::string prefix = kAveragePrefix;
  for (const auto& [key, t] : last.extra) {
    if (key.rfind(prefix, 0) == 0) saved.emplace_back(key.substr(prefix.size()), t);
  }
  average_.reset();
  if (options_.ema_decay() == 0) {
    TORCH_CHECK(saved.empty(), "cannot resume: ", name, " holds a moving average of the weights, but "
                "ema_decay is 0: resume with the run's own options (its config.json), or start a new "
                "run with --init-weights ", name);
    return;
  }
  TORCH_CHECK(!saved.empty(), "cannot resume: ", name, " holds no moving average of the weights, but "
              "ema_decay is ", options_.ema_decay(), ": resume with the run's own options (its "
              "config.json), or start a new run with --init-weights ", name);
  average_.emplace(*module_, options_.ema_decay());
  try {
    average_->load(saved, updates, name);
  } catch (const std::exception& e) {
    average_.reset();
    TORCH_CHECK(false, "cannot resume: ", error_message(e));
  }
}

void Trainer::write_checkpoint(const std::filesystem::path& path, bool full) {
  state_.average_updates = average_ ? average_->updates() : 0;
  auto state = state_.to_json(options_);
  io::NamedTensors rank_tensors;
  if (full) rank_tensors = parallel_.gather_rank_state(state, *module_, state_.batch > 0, state_.partial);
  if (rank() != 0) return;
  io::CheckpointFile file;
  file.state = std::move(state);
  // best.pt: the best epoch's weights (the average's with ema_decay); last.pt: the trained ones.
  file.model = full ? io::module_tensors(*module_) : best_weights_;
  if (full) {
    std::tie(file.optimizer, file.optimizer_tensors) = optimizer_state(*optimizer_, options_.optimizer());
    file.extra.emplace_back("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
    if (average_) {
      for (auto& [name, t] : average_->tensors()) file.extra.emplace_back(kAveragePrefix + name, std::move(t));
    }
    for (auto& t : rank_tensors) file.extra.push_back(std::move(t));
  }
  io::write_checkpoint_file(path, file);
}

void Trainer::write_config(const std::filesystem::path& run_dir) {
  nlohmann::json config = {{"trainer", options_.to_json()}, {"metadata", state_.metadata},
                           {"classes", state_.classes}};
  if (parallel_.distributed()) config["distributed"] = parallel_.describe();
  RunFolder(run_dir).write_config(config);
}

}  // namespace sedensenet
