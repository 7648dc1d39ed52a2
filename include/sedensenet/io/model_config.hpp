#pragma once
/// \file
/// `DenseNetOptions` to and from JSON: how run folders and checkpoints record the architecture.

#include <nlohmann/json.hpp>

#include "sedensenet/util/json.hpp"
#include "sedensenet/nn/options.hpp"

namespace sedensenet::io {

inline nlohmann::json to_json(const DenseNetOptions& o) {
  return {{"growth_rate", o.growth_rate()},
          {"block_config", o.block_config()},
          {"num_init_features", o.num_init_features()},
          {"compression", o.compression()},
          {"bn_size", o.bn_size()},
          {"drop_rate", o.drop_rate()},
          {"num_classes", o.num_classes()},
          {"small_inputs", o.small_inputs()},
          {"se_reduction", o.se_reduction()},
          {"se_min_hidden", o.se_min_hidden()},
          {"se_gate", o.se_gate() == SEGate::sigmoid ? "sigmoid" : "scaled_sigmoid"},
          {"memory", to_string(o.memory())}};
}

/// Reads DenseNetOptions; missing keys keep their defaults, unknown keys are an error.
inline DenseNetOptions densenet_options_from_json(const nlohmann::json& j,
                                                  DenseNetOptions o = {}) {
  TORCH_CHECK(j.is_object(), "model config: expected a JSON object");
  for (const auto& [key, value] : j.items()) {
    try {
      if (key == "growth_rate") o.growth_rate(util::json_integer<int64_t>(value, "model config '" + key + "'"));
      else if (key == "block_config") o.block_config(util::json_integers<int64_t>(value, "model config '" + key + "'"));
      else if (key == "num_init_features") o.num_init_features(util::json_integer<int64_t>(value, "model config '" + key + "'"));
      else if (key == "compression") o.compression(value.get<double>());
      else if (key == "bn_size") o.bn_size(util::json_integer<int64_t>(value, "model config '" + key + "'"));
      else if (key == "drop_rate") o.drop_rate(value.get<double>());
      else if (key == "num_classes") o.num_classes(util::json_integer<int64_t>(value, "model config '" + key + "'"));
      else if (key == "small_inputs") o.small_inputs(value.get<bool>());
      else if (key == "se_reduction") o.se_reduction(util::json_integer<int64_t>(value, "model config '" + key + "'"));
      else if (key == "se_min_hidden") o.se_min_hidden(util::json_integer<int64_t>(value, "model config '" + key + "'"));
      else if (key == "se_gate") {
        const auto gate = value.get<std::string>();
        TORCH_CHECK(gate == "sigmoid" || gate == "scaled_sigmoid", "model config: se_gate must be "
                    "sigmoid or scaled_sigmoid, got '", gate, "'");
        o.se_gate(gate == "sigmoid" ? SEGate::sigmoid : SEGate::scaled_sigmoid);
      } else if (key == "memory") o.memory(memory_mode_from_string(value.get<std::string>()));
      else TORCH_CHECK(false, "model config: unknown key '", key, "'");
    } catch (const nlohmann::json::exception&) {
      TORCH_CHECK(false, "model config: '", key, "' has the wrong type (", value.dump(), ")");
    }
  }
  return o;
}

}  // namespace sedensenet::io
