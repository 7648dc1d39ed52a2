#pragma once
// The bodies of the fuzz targets. Each takes arbitrary bytes, runs them through a parser the
// library exposes to untrusted input, and returns normally when the input is rejected with the
// library's documented exception. Anything else (a crash, a sanitizer report, another exception
// type, an output that breaks the function's contract) is a bug.
//
// fuzz_*.cpp wrap them for libFuzzer (clang, -fsanitize=fuzzer); test_fuzz_corpus.cpp replays
// the seed corpora and every saved regression input through them in the regular test suite.

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "sedensenet/sedensenet.hpp"

namespace sedensenet::fuzz {

/// A contract violation: abort so that libFuzzer records the input.
inline void expect(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz contract violated: %s\n", what);
    std::abort();
  }
}

/// Image decoding plus the augmentation and evaluation transforms. The first byte seeds the
/// random transforms and, when its top bit is set, asks for decode-time downscaling (a JPEG
/// decoded at 1/2 to 1/8); the rest is the file.
inline int image(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  torch::Tensor decoded;
  try {
    // A small pixel limit keeps each run fast; the limit check itself is part of what is fuzzed.
    const int64_t min_size = (data[0] & 0x80) != 0 ? (data[0] & 0x0f) + 1 : 0;
    decoded = data::decode_image(data + 1, size - 1, "fuzz-input",
                                 data::DecodeOptions().max_pixels(1 << 18).min_size(min_size));
  } catch (const data::ImageError&) {
    return 0;  // rejected with a reason: the documented outcome
  }
  expect(decoded.dim() == 3 && (decoded.size(0) == 1 || decoded.size(0) == 3), "decoded shape");
  expect(decoded.size(1) >= 1 && decoded.size(2) >= 1, "decoded size");
  expect(decoded.size(1) * decoded.size(2) <= (1 << 18), "pixel limit");
  data::Rng rng(data[0]);
  auto train = data::compose({std::make_shared<data::RandomResizedCrop>(12),
                              std::make_shared<data::RandomRotation>(25.0),
                              std::make_shared<data::ColorJitter>(0.4, 0.4, 0.4, 0.1),
                              std::make_shared<data::RandomHorizontalFlip>(),
                              std::make_shared<data::ToTensor>(),
                              std::make_shared<data::Normalize>(data::imagenet_mean(),
                                                                data::imagenet_std())});
  auto eval = data::compose({std::make_shared<data::Resize>(14),
                             std::make_shared<data::CenterCrop>(12),
                             std::make_shared<data::RandomCrop>(10, 2),
                             std::make_shared<data::ToTensor>()});
  const std::pair<data::TransformPtr, int64_t> pipelines[] = {{train, 12}, {eval, 10}};
  for (const auto& [pipeline, side] : pipelines) {
    auto out = pipeline->apply(decoded, rng);
    expect(out.dim() == 3 && (out.size(0) == 1 || out.size(0) == 3), "transformed channels");
    expect(out.size(1) == side && out.size(2) == side, "transformed size");
    expect(out.scalar_type() == torch::kFloat, "float output");
    expect(out.isfinite().all().item<bool>(), "finite output");
  }
  return 0;
}

/// State-dict loading: torch.save archives (zip checks, our unpickler, tensor rebuilding), then a
/// non-strict load into a small SE-DenseNet.
inline int state_dict(const uint8_t* data, size_t size) {
  std::map<std::string, torch::Tensor> tensors;
  try {
    tensors = io::read_state_dict_bytes(std::string(reinterpret_cast<const char*>(data), size),
                                        "fuzz-input.pt");
  } catch (const io::PickleError&) {
    return 0;
  }
  for (const auto& [key, tensor] : tensors) expect(tensor.defined(), "defined tensors");
  static DenseNet net = [] {
    torch::manual_seed(0);
    return DenseNet(DenseNetOptions::densenet_bc(10, 4).num_classes(3));
  }();
  try {
    io::load_state_dict(*net, tensors, "fuzz-input.pt", io::LoadOptions().strict(false));
  } catch (const c10::Error&) {
    return 0;  // e.g. a dtype that cannot be copied into a float parameter
  }
  return 0;
}

/// Checkpoint loading, the whole `load_trained_model` path: the archive, our unpickler, the
/// checkpoint format, the JSON run state, the recorded model (size-checked, then built when small
/// enough for a fuzz iteration) and the weights loaded into it.
inline int checkpoint(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  io::CheckpointFile file;
  try {
    file = io::decode_checkpoint(bytes, "fuzz-input.pt");
  } catch (const std::runtime_error&) {
    return 0;  // refused with a message: the documented outcome
  }
  expect(file.state.is_object(), "the run state is an object");
  for (const auto& [name, tensor] : file.model) expect(tensor.defined(), "defined tensors");
  try {
    const auto& metadata = file.state.value("metadata", nlohmann::json());
    if (metadata.is_object() && metadata.contains("model")) {
      const auto options = io::densenet_options_from_json(metadata.at("model"));
      check_model_size(options);
      if (estimated_parameters(options) > 2e6) return 0;  // valid, but too big to build per input
    }
    auto trained = io::trained_model_from(std::move(file), "fuzz-input.pt");
    expect(trained.model->parameters().size() > 0, "a built model");
  } catch (const c10::Error&) {
  } catch (const std::runtime_error&) {
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}

/// The JSON configuration the library reads back from run folders and config files: trainer
/// options, model options (validated, never built), the input spec and the history.
inline int config(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto attempt = [](auto&& fn) {
    try {
      fn();
    } catch (const c10::Error&) {        // TORCH_CHECK: invalid option, named
    } catch (const nlohmann::json::exception&) {  // missing key or wrong type
    } catch (const std::invalid_argument&) {
    } catch (const std::runtime_error&) {
    }
  };
  attempt([&] { TrainerOptions::from_json(j.is_object() && j.contains("trainer") ? j["trainer"] : j).validate(); });
  attempt([&] {
    const auto options = io::densenet_options_from_json(j.is_object() && j.contains("model") ? j["model"] : j);
    detail::check_densenet_options(options);
  });
  attempt([&] { io::InputSpec::from_json(j.is_object() && j.contains("input") ? j["input"] : j); });
  attempt([&] { History::from_json(j.is_object() && j.contains("history") ? j["history"] : j); });
  return 0;
}

}  // namespace sedensenet::fuzz
