// Version-1 checkpoints to the current format: see include/sedensenet/train/legacy_checkpoint.hpp.
#include "sedensenet/train/legacy_checkpoint.hpp"

#include <torch/serialize.h>

#include <stdexcept>

#include "sedensenet/io/archive.hpp"
#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/io/model_config.hpp"
#include "sedensenet/nn/densenet.hpp"
#include "sedensenet/train/optimizer_state.hpp"
#include "sedensenet/train/trainer.hpp"
#include "sedensenet/util/errors.hpp"
#include "sedensenet/util/json.hpp"

namespace sedensenet {

void convert_legacy_checkpoint(const std::filesystem::path& old_file,
                               const std::filesystem::path& new_file) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(old_file.string() + ": " + what);
  };
  std::error_code ec;
  if (std::filesystem::exists(new_file, ec)) {
    throw std::runtime_error(new_file.string() + " exists; choose another name (nothing was written)");
  }
  const auto bytes = io::read_verified_archive(old_file, /*allow_compressed=*/true);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    fail("not a version-1 SEDenseNet checkpoint (" + error_message(e) + ")");
  }
  c10::IValue state_value;
  if (!archive.try_read("state", state_value) || !state_value.isString()) {
    fail("not a version-1 SEDenseNet checkpoint (no run state)");
  }
  io::CheckpointFile out;
  out.state = util::parse_json(state_value.toStringRef(), old_file.string() + ": run state");
  out.state.erase("format");  // version 1 kept a format tag in the state; the file holds it now
  const auto& metadata = out.state.value("metadata", nlohmann::json());
  if (!metadata.is_object() || !metadata.contains("model")) {
    fail("the checkpoint does not record its model (metadata \"model\"), so it cannot be converted");
  }
  DenseNet model(io::densenet_options_from_json(metadata.at("model")));
  torch::serialize::InputArchive model_archive;
  if (!archive.try_read("model", model_archive)) fail("no model weights");
  model->load(model_archive);
  out.model = io::module_tensors(*model);

  torch::serialize::InputArchive optimizer_archive;
  if (archive.try_read("optimizer", optimizer_archive)) {  // last.pt
    const auto options = TrainerOptions::from_json(out.state.value("options", nlohmann::json::object()));
    Trainer trainer(model, options);
    trainer.optimizer().load(optimizer_archive);
    std::tie(out.optimizer, out.optimizer_tensors) = optimizer_state(trainer.optimizer(), options.optimizer());
    for (const char* key : {"rng_cpu", "rng_cpu_ranks", "buffers_ranks"}) {
      c10::IValue value;
      if (archive.try_read(key, value) && value.isTensor()) out.extra.emplace_back(key, value.toTensor());
    }
  }
  if (new_file.has_parent_path()) std::filesystem::create_directories(new_file.parent_path());
  io::write_checkpoint_file(new_file, out);
}

}  // namespace sedensenet
