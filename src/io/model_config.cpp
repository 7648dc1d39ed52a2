#include "sedensenet/io/model_config.hpp"

namespace sedensenet::io {

DenseNetOptions densenet_options_from_json(const nlohmann::json& j,
                                           DenseNetOptions o) {
  return schema::from_json(j, std::move(o), "model config");
}

}  // namespace sedensenet::io


