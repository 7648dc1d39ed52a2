#include "sedensenet/train/run_state.hpp"

#include "sedensenet/util/json.hpp"

namespace sedensenet {

nlohmann::json RunState::to_json(const TrainerOptions& options) const {
  return {{"epoch", epoch},
          {"batch", batch},
          {"partial", partial},
          {"history", history.to_json()},
          {"best_epoch", best_epoch},
          {"best_accuracy", std::isnan(best_accuracy) ? nlohmann::json(nullptr) : nlohmann::json(best_accuracy)},
          {"epochs_without_improvement", epochs_without_improvement},
          {"schedule", schedule},
          {"planned_epochs", planned_epochs},
          {"average_updates", average_updates},
          {"options", options.to_json()},
          {"metadata", metadata},
          {"classes", classes}};
}

RunState RunState::from_json(const nlohmann::json& state, const std::string& name) {
  TORCH_CHECK(state.is_object(), name, ": the run state is not an object (damaged checkpoint?)");
  auto field = [&](const char* key) -> const nlohmann::json& {
    TORCH_CHECK(state.contains(key), name, ": no '", key, "' in the run state (damaged checkpoint?)");
    return state.at(key);
  };
  auto integer = [&](const nlohmann::json& value, const char* key) {
    return util::json_integer<int64_t>(value, name + ": run state '" + key + "'");
  };
  RunState s;
  s.epoch = integer(field("epoch"), "epoch");
  s.batch = integer(state.value("batch", nlohmann::json(0)), "batch");
  TORCH_CHECK(s.epoch >= 0 && s.batch >= 0, name, ": a negative epoch or batch in the run state (damaged checkpoint?)");
  s.partial = state.value("partial", nlohmann::json());
  s.history = History::from_json(field("history"));
  s.best_epoch = integer(field("best_epoch"), "best_epoch");
  s.best_accuracy = field("best_accuracy").is_number() ? field("best_accuracy").get<double>() : NAN;
  s.epochs_without_improvement = integer(field("epochs_without_improvement"), "epochs_without_improvement");
  s.schedule = field("schedule");
  s.planned_epochs = integer(state.value("planned_epochs", nlohmann::json(0)), "planned_epochs");
  TORCH_CHECK(s.planned_epochs >= 0, name, ": a negative planned_epochs in the run state (damaged checkpoint?)");
  s.average_updates = integer(state.value("average_updates", nlohmann::json(0)), "average_updates");
  TORCH_CHECK(s.average_updates >= 0, name, ": a negative average_updates in the run state (damaged checkpoint?)");
  s.metadata = state.value("metadata", nlohmann::json());
  if (state.contains("classes") && !state.at("classes").is_null()) {
    TORCH_CHECK(state.at("classes").is_array(), name, ": run state 'classes' is not a list of names");
    for (const auto& c : state.at("classes")) {
      TORCH_CHECK(c.is_string(), name, ": run state 'classes' holds a non-string entry ", c.dump());
      s.classes.push_back(c.get<std::string>());
    }
  }
  return s;
}

}  // namespace sedensenet
