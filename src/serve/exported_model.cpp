#include "sedensenet/serve/export.hpp"
#include "sedensenet/version.hpp"

namespace sedensenet::serve {

ExportedModel ExportedModel::from(const io::TrainedModel& trained) {
  ExportedModel out{InferenceGraph::lower(trained.model), trained.input, trained.classes};
  if (out.classes.empty()) {
    for (int64_t i = 0; i < out.graph.num_classes(); ++i) out.classes.push_back(std::to_string(i));
  }
  return out;
}

nlohmann::json ExportedModel::metadata() const {
  return {{"format", "sedensenet.export"},
          {"version", 1},
          {"library_version", SEDENSENET_VERSION_STRING},
          {"classes", classes},
          {"input", input.to_json()}};
}

}  // namespace sedensenet::serve
