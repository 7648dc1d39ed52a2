#pragma once
/// \file
/// The inference path: a trained model, its classes and its preprocessing behind one object that
/// turns images into top-k class names.
///
/// Example:
/// ```
/// auto classifier = sedensenet::Classifier::load("runs/densenet_bc_10_k4/best.pt");
/// for (const auto& p : classifier.predict({"cat.jpg", "dog.png"}, /*k=*/3)) {
///   std::cout << p.top[0].name << " " << p.top[0].probability << "\n";
/// }
/// ```
///
/// Threads: every `predict`/`logits` call only reads the classifier, so any number of threads may
/// call one classifier at once, without locks. Each call runs its batch on LibTorch's intra-op
/// thread pool (`sedensenet::set_num_threads`); with many concurrent callers, one intra-op thread
/// each (set_num_threads(1)) gives the best throughput, and one caller with all cores the best
/// latency.

#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "sedensenet/data/image_folder.hpp"
#include "sedensenet/io/trained_model.hpp"
#include "sedensenet/serve/inference_graph.hpp"

namespace sedensenet {

/// One image's result: the k most probable classes, most probable first.
struct Prediction {
  struct Class {
    std::string name;    ///< the class name the checkpoint records (its index if it has none)
    int64_t index = 0;   ///< the classifier output
    double probability = 0;  ///< softmax probability
  };
  std::vector<Class> top;
  /// Set (and `top` empty) when the image could not be read: the file and the reason, from
  /// `predict(files, k, data::BadFilePolicy::skip)`.
  std::string error;
};

/// Layout of a raw pixel buffer passed to `Classifier::predict_pixels`.
enum class PixelFormat { gray, rgb, bgr, rgba, bgra };

/// Options of a `Classifier`.
struct ClassifierOptions {
  /// Where the model runs (images are decoded and preprocessed on the CPU).
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Largest batch one forward pass takes; `predict` splits longer lists.
  TORCH_ARG(int64_t, batch_size) = 32;
};

/// A trained model ready to serve: the inference graph (`serve::InferenceGraph`: batch norm folded,
/// no autograd), the class names and the checkpoint's preprocessing (`io::InputSpec`).
class Classifier {
 public:
  /// From a loaded model (its weights are copied into the inference graph; the model is unchanged).
  explicit Classifier(const io::TrainedModel& trained, ClassifierOptions options = {});

  /// Loads a checkpoint or trained-model file (`io::load_trained_model`): architecture, weights,
  /// classes and preprocessing in one call. Throws `CheckpointError` naming the file if it cannot.
  static Classifier load(const std::filesystem::path& path, ClassifierOptions options = {});

  /// Top-k classes of image files, in order. Throws `data::ImageError` naming the first file that
  /// is missing or cannot be decoded.
  std::vector<Prediction> predict(const std::vector<std::filesystem::path>& files,
                                  int64_t k = 5) const;

  /// The same with a policy for unusable files: `error` throws as above; `skip` classifies the
  /// others and gives each unusable file a result whose `error` names the file and the reason
  /// (a folder of one's own photos often holds a few broken ones).
  std::vector<Prediction> predict(const std::vector<std::filesystem::path>& files, int64_t k,
                                  data::BadFilePolicy on_bad_file) const;

  /// Top-k classes of decoded images: uint8 (C, H, W) with C = 1 or 3, as `data::read_image`
  /// returns them, any size (each is resized as the checkpoint says).
  std::vector<Prediction> predict(const std::vector<torch::Tensor>& images, int64_t k = 5) const;

  /// Top-k classes of one image in a caller's pixel buffer: `height` rows of `width` pixels,
  /// `row_bytes` apart (>= width * channels), 8 bits per channel in `format` (OpenCV's cv::Mat is
  /// `bgr` with row_bytes = mat.step). Alpha is dropped or composited over white as the
  /// checkpoint's preprocessing says. The buffer is only read during the call.
  Prediction predict_pixels(const uint8_t* pixels, int64_t width, int64_t height,
                            int64_t row_bytes, PixelFormat format, int64_t k = 5) const;

  /// The checkpoint's preprocessing of one decoded image: float (3, size, size), normalised.
  torch::Tensor preprocess(const torch::Tensor& image) const;

  /// Logits (N, classes) of preprocessed images (N, 3, size, size), on the classifier's device.
  torch::Tensor logits(const torch::Tensor& batch) const;

  /// Top-k of a batch of preprocessed images.
  std::vector<Prediction> top_k(const torch::Tensor& batch, int64_t k) const;

  const std::vector<std::string>& classes() const { return classes_; }
  const io::InputSpec& input() const { return input_; }
  const serve::InferenceGraph& graph() const { return graph_; }
  const ClassifierOptions& options() const { return options_; }

 private:
  serve::InferenceGraph graph_;
  io::InputSpec input_;
  std::vector<std::string> classes_;
  ClassifierOptions options_;
  data::TransformPtr transform_;
};

}  // namespace sedensenet
