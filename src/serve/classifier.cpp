#include "sedensenet/serve/classifier.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "sedensenet/data/image.hpp"
#include "sedensenet/data/rng.hpp"

namespace sedensenet {

Classifier::Classifier(const io::TrainedModel& trained, ClassifierOptions options)
    : graph_(serve::InferenceGraph::lower(trained.model).to(options.device())),
      input_(trained.input),
      classes_(trained.classes),
      options_(options),
      transform_(trained.input.eval_transform()) {
  TORCH_CHECK(options_.batch_size() >= 1, "ClassifierOptions: batch_size must be >= 1, got ",
              options_.batch_size());
  if (classes_.empty()) {
    for (int64_t i = 0; i < graph_.num_classes(); ++i) classes_.push_back(std::to_string(i));
  }
  TORCH_CHECK(static_cast<int64_t>(classes_.size()) == graph_.num_classes(), "Classifier: ",
              classes_.size(), " class names for a model with ", graph_.num_classes(), " outputs");
}

Classifier Classifier::load(const std::filesystem::path& path, ClassifierOptions options) {
  return Classifier(io::load_trained_model(path, torch::kCPU), options);
}

torch::Tensor Classifier::preprocess(const torch::Tensor& image) const {
  data::Rng rng(0);  // the eval transform draws nothing
  return transform_->apply(image, rng);
}

torch::Tensor Classifier::logits(const torch::Tensor& batch) const {
  return graph_.forward(batch.to(options_.device()));
}

std::vector<Prediction> Classifier::top_k(const torch::Tensor& batch, int64_t k) const {
  TORCH_CHECK(k >= 1, "Classifier: k must be >= 1, got ", k);
  k = std::min<int64_t>(k, graph_.num_classes());
  const auto probabilities = torch::softmax(logits(batch), 1).to(torch::kCPU, torch::kFloat64);
  const auto top = probabilities.topk(k, 1);
  const auto values = std::get<0>(top).contiguous();
  const auto indices = std::get<1>(top).contiguous();
  const auto* p = values.data_ptr<double>();
  const auto* index = indices.data_ptr<int64_t>();
  std::vector<Prediction> out(static_cast<size_t>(batch.size(0)));
  for (size_t row = 0; row < out.size(); ++row) {
    for (int64_t j = 0; j < k; ++j) {
      const auto at = static_cast<int64_t>(row) * k + j;
      out[row].top.push_back({classes_[static_cast<size_t>(index[at])], index[at], p[at]});
    }
  }
  return out;
}

std::vector<Prediction> Classifier::predict(const std::vector<torch::Tensor>& images,
                                            int64_t k) const {
  std::vector<Prediction> out;
  out.reserve(images.size());
  const auto batch = static_cast<size_t>(options_.batch_size());
  for (size_t start = 0; start < images.size(); start += batch) {
    const size_t end = std::min(images.size(), start + batch);
    std::vector<torch::Tensor> prepared(end - start);
    at::parallel_for(0, static_cast<int64_t>(end - start), 1, [&](int64_t begin, int64_t stop) {
      for (int64_t i = begin; i < stop; ++i) {
        prepared[static_cast<size_t>(i)] = preprocess(images[start + static_cast<size_t>(i)]);
      }
    });
    for (auto& p : top_k(torch::stack(prepared), k)) out.push_back(std::move(p));
  }
  return out;
}

std::vector<Prediction> Classifier::predict(const std::vector<std::filesystem::path>& files,
                                            int64_t k) const {
  return predict(files, k, data::BadFilePolicy::error);
}

std::vector<Prediction> Classifier::predict(const std::vector<std::filesystem::path>& files,
                                            int64_t k, data::BadFilePolicy on_bad_file) const {
  std::vector<Prediction> out(files.size());
  const auto batch = static_cast<size_t>(options_.batch_size());
  const auto decode = input_.decode_options();
  for (size_t start = 0; start < files.size(); start += batch) {
    const size_t end = std::min(files.size(), start + batch);
    std::vector<torch::Tensor> prepared(end - start);
    // Decoding and resizing dominate for small models: one file per intra-op thread. Under the
    // error policy an unusable file's error is rethrown here, naming the file.
    at::parallel_for(0, static_cast<int64_t>(end - start), 1, [&](int64_t begin, int64_t stop) {
      for (int64_t i = begin; i < stop; ++i) {
        const auto& file = files[start + static_cast<size_t>(i)];
        try {
          prepared[static_cast<size_t>(i)] = preprocess(data::read_image(file, decode));
        } catch (const data::ImageError& e) {
          if (on_bad_file == data::BadFilePolicy::error) throw;
          out[start + static_cast<size_t>(i)].error = e.what();
        }
      }
    });
    std::vector<torch::Tensor> usable;
    std::vector<size_t> where;
    for (size_t i = 0; i < prepared.size(); ++i) {
      if (!prepared[i].defined()) continue;
      usable.push_back(std::move(prepared[i]));
      where.push_back(start + i);
    }
    if (usable.empty()) continue;
    auto predictions = top_k(torch::stack(usable), k);
    for (size_t i = 0; i < where.size(); ++i) out[where[i]] = std::move(predictions[i]);
  }
  return out;
}

Prediction Classifier::predict_pixels(const uint8_t* pixels, int64_t width, int64_t height,
                                      int64_t row_bytes, PixelFormat format, int64_t k) const {
  const int64_t channels = format == PixelFormat::gray                              ? 1
                           : format == PixelFormat::rgb || format == PixelFormat::bgr ? 3
                                                                                      : 4;
  if (pixels == nullptr || width < 1 || height < 1 || row_bytes < width * channels) {
    throw std::invalid_argument(
        "Classifier::predict_pixels: need a pixel buffer of height >= 1 rows of width >= 1 "
        "pixels with row_bytes >= width * channels; got width " + std::to_string(width) +
        ", height " + std::to_string(height) + ", row_bytes " + std::to_string(row_bytes) +
        ", " + std::to_string(channels) + " channels");
  }
  // A view of the caller's buffer; image_from_pixels copies it out.
  auto hwc = torch::from_blob(const_cast<uint8_t*>(pixels), {height, width, channels},
                              {row_bytes, channels, 1}, torch::kUInt8);
  if (format == PixelFormat::bgr || format == PixelFormat::bgra) {
    // Reorder to RGB(A): B and R swap, alpha stays.
    std::vector<int64_t> order = {2, 1, 0};
    if (channels == 4) order.push_back(3);
    hwc = hwc.index_select(2, torch::tensor(order));
  }
  const auto image = data::image_from_pixels(hwc, input_.alpha);
  return top_k(preprocess(image).unsqueeze(0), k).front();
}

}  // namespace sedensenet
