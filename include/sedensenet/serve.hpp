#pragma once
/// \file
/// Serving a trained model: the inference path (`Classifier`, over `serve::InferenceGraph`) and the
/// TorchScript and ONNX exporters. docs/deploy.md shows the three ways to ship a model.

#include "sedensenet/serve/classifier.hpp"
#include "sedensenet/serve/export.hpp"
#include "sedensenet/serve/inference_graph.hpp"
