#pragma once
/// \file
/// `DenseNetOptions` to and from JSON: how run folders and checkpoints record the architecture.

#include <nlohmann/json.hpp>

#include "sedensenet/util/option_schema.hpp"
#include "sedensenet/nn/options.hpp"

namespace sedensenet::io {

/// The options as JSON, one key per option of `DenseNetOptions::fields`.
inline nlohmann::json to_json(const DenseNetOptions& o) { return schema::to_json(o); }

/// Reads DenseNetOptions; missing keys keep `o`'s values, unknown keys and values of the wrong
/// type are an error naming the key.
DenseNetOptions densenet_options_from_json(const nlohmann::json& j,
                                           DenseNetOptions o = {});

}  // namespace sedensenet::io
