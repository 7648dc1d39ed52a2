// Serving: the inference graph against the training model's eval-mode logits, the Classifier's
// inputs (files, decoded images, raw pixel buffers) and threads, and the exported files run by
// other runtimes: TorchScript in C++ and in Python's torch.jit.load, ONNX in ONNX Runtime and in
// OpenCV's DNN module.
#include <catch2/catch.hpp>
#include <torch/csrc/jit/serialization/import.h>
#include <omp.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "sedensenet/data/image.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/io/trained_model.hpp"
#include "sedensenet/nn.hpp"
#include "sedensenet/serve.hpp"
#include "support/bundle.hpp"
#include "support/python.hpp"

using namespace sedensenet;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// Parameters and batch-norm statistics away from their initial values, so that every folding
// (scale, shift, conv bias) matters; scaled-sigmoid SE gates are no longer the identity.
void randomise(torch::nn::Module& module, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) {
    if (p.key().find("norm") != std::string::npos) {
      if (p.key().find("weight") != std::string::npos) p.value().uniform_(0.5, 1.5);
      else p.value().uniform_(-0.2, 0.2);
    } else if (p.key().find("fc2") != std::string::npos) {
      p.value().normal_(0, 0.3);
    }
  }
  for (auto& b : module.named_buffers()) {
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    else if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.3, 0.3);
  }
}

// A model as training leaves one: moved parameters and statistics, and logits of a trained
// classifier's size (up to about 10; random deep networks give hundreds, where float32 rounding
// alone exceeds the 1e-4 the exports are held to).
DenseNet make_model(const DenseNetOptions& options, int64_t size, uint64_t seed = 1) {
  torch::manual_seed(seed);
  DenseNet net(options);
  randomise(*net, seed + 100);
  net->eval();
  torch::NoGradGuard no_grad;
  const auto probe = net->forward(torch::randn({4, 3, size, size}));
  const double scale = 10.0 / std::max(1e-6, probe.abs().max().item<double>());
  net->classifier->weight.mul_(scale);
  net->classifier->bias.mul_(scale);
  return net;
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

torch::Tensor eval_logits(DenseNet& net, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  net->eval();
  return net->forward(x);
}

struct Shape {
  std::string name;
  DenseNetOptions options;
  int64_t size;
};

// SE-DenseNet-BC (32x32), DenseNet-121 + SE (ImageNet stem; 64x64 keeps it quick), DenseNet-BC
// without SE, the scaled-sigmoid gate at a size whose pooling floors (30 -> 15 -> 7), and the
// stride-2 stem of the small-image preset on 28x28 (28 -> 14 -> 7 -> 3).
std::vector<Shape> shapes() {
  return {{"SE-DenseNet-BC-16 k8", DenseNetOptions::densenet_bc(16, 8).num_classes(5), 32},
          {"DenseNet-121 + SE", DenseNetOptions::densenet121().num_classes(7), 64},
          {"DenseNet-BC-10 k4, no SE", DenseNetOptions::densenet_bc(10, 4).se_reduction(0).num_classes(3), 32},
          {"scaled-sigmoid SE", DenseNetOptions::densenet_bc(10, 6).se_gate(SEGate::scaled_sigmoid).num_classes(4), 30},
          {"stride-2 stem", DenseNetOptions::densenet_bc(10, 6).stem_stride(2).num_classes(3), 28}};
}

io::TrainedModel trained_model(const DenseNetOptions& options, int64_t size, uint64_t seed = 1) {
  io::TrainedModel t;
  t.model = make_model(options, size, seed);
  t.options = options;
  t.input.size = size;
  for (int64_t i = 0; i < options.num_classes(); ++i) t.classes.push_back("class_" + std::to_string(i));
  return t;
}

std::vector<torch::Tensor> random_images(int n, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> images;
  for (int i = 0; i < n; ++i) {
    images.push_back(torch::randint(0, 256, {3, 20 + 7 * i, 26 + 5 * i}, torch::kUInt8));
  }
  return images;
}

void check_same(const std::vector<Prediction>& a, const std::vector<Prediction>& b, double tolerance) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].top.size() == b[i].top.size());
    for (size_t j = 0; j < a[i].top.size(); ++j) {
      CHECK(a[i].top[j].index == b[i].top[j].index);
      CHECK(a[i].top[j].name == b[i].top[j].name);
      CHECK(std::abs(a[i].top[j].probability - b[i].top[j].probability) <= tolerance);
    }
  }
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("The inference graph computes the training model's eval-mode logits", "[serve]") {
  for (const auto& shape : shapes()) {
    INFO(shape.name);
    auto net = make_model(shape.options, shape.size);
    torch::manual_seed(7);
    const auto x = torch::randn({3, 3, shape.size, shape.size});
    const auto expected = eval_logits(net, x);
    const auto graph = serve::InferenceGraph::lower(net);
    const auto logits = graph.forward(x);
    INFO("max abs difference " << max_abs(logits, expected) << ", logits up to "
                               << expected.abs().max().item<double>());
    CHECK(max_abs(logits, expected) <= 1e-4);
    CHECK_FALSE(logits.requires_grad());
    // Lowering leaves the model as it was (eval mode, same logits).
    CHECK(max_abs(eval_logits(net, x), expected) == 0);
  }
}

TEST_CASE("The graph's own oneDNN convolutions match LibTorch's and follow weights changed later",
          "[serve]") {
  for (const auto& shape : {shapes()[0], shapes()[1]}) {  // BC with SE; the ImageNet stem
    INFO(shape.name);
    auto net = make_model(shape.options, shape.size);
    auto graph = serve::InferenceGraph::lower(net);
#if defined(SEDENSENET_EXPECT_ONEDNN)
    REQUIRE(graph.stem.plans != nullptr);  // this build runs them
#else
    REQUIRE(graph.stem.plans == nullptr);
#endif
    const auto reference = graph.with_libtorch_convolutions();  // shares the weight tensors
    REQUIRE(reference.stem.plans == nullptr);
    REQUIRE(reference.blocks[0].layers[0].conv2.plans == nullptr);
    for (int64_t batch : {1, 3, 1}) {
      torch::manual_seed(static_cast<uint64_t>(batch));
      const auto x = torch::randn({batch, 3, shape.size, shape.size});
      CHECK(max_abs(graph.forward(x), reference.forward(x)) <= 1e-5);
    }
    torch::manual_seed(11);
    const auto x = torch::randn({2, 3, shape.size, shape.size});
    const auto before = graph.forward(x);
    {
      torch::NoGradGuard no_grad;
      graph.blocks[0].layers[0].conv2.weight.mul_(1.5);  // in place: seen by both graphs
      graph.blocks[0].layers[0].conv1.bias.add_(0.25);
    }
    const auto changed = graph.forward(x);
    CHECK(max_abs(changed, before) > 1e-3);
    CHECK(max_abs(changed, reference.forward(x)) <= 1e-5);
    // A weight replaced by another tensor (the old one stays alive in `reference`).
    auto replaced = reference;
    replaced.blocks[1].layers[0].conv1.weight = graph.blocks[1].layers[0].conv1.weight * 0.5;
    graph.blocks[1].layers[0].conv1.weight = replaced.blocks[1].layers[0].conv1.weight;
    CHECK(max_abs(graph.forward(x), replaced.forward(x)) <= 1e-5);
    CHECK(max_abs(graph.forward(x), changed) > 1e-3);
  }
}

#if defined(SEDENSENET_EXPECT_ONEDNN)
TEST_CASE("The system's oneDNN shares LibTorch's OpenMP runtime: one runtime in the process",
          "[serve]") {
  // The plans' oneDNN (libdnnl.so.2) and LibTorch both load GNU OpenMP as libgomp.so.1 (PyPI's
  // LibTorch ships its own copy under that soname): a second runtime would run a second thread
  // pool beside LibTorch's. The files mapped into this process say which were loaded.
  auto net = make_model(DenseNetOptions::densenet_bc(10, 4).num_classes(3), 16);
  serve::InferenceGraph::lower(net).forward(torch::randn({1, 3, 16, 16}));
  std::ifstream maps("/proc/self/maps");
  REQUIRE(maps);
  std::set<std::string> runtimes, dnnl;
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string name = fs::path(path).filename().string();
    if (name.rfind("libgomp", 0) == 0 || name.rfind("libiomp", 0) == 0 || name.rfind("libomp", 0) == 0) {
      runtimes.insert(path);
    }
    if (name.rfind("libdnnl", 0) == 0) dnnl.insert(path);
  }
  INFO("OpenMP runtimes mapped: " << runtimes.size());
  for (const auto& r : runtimes) UNSCOPED_INFO(r);
  CHECK(runtimes.size() == 1);
  CHECK(dnnl.size() == 1);
  // oneDNN takes its thread count from that runtime, which LibTorch's setting governs.
  const int before = torch::get_num_threads();
  torch::set_num_threads(1);
  CHECK(omp_get_max_threads() == 1);
  torch::set_num_threads(before);
}
#endif

TEST_CASE("The graph's oneDNN plans stay bounded and correct when threads feed it many input sizes",
          "[serve][threads]") {
  // More sizes than a convolution keeps plans for (64): the cache is emptied while other threads
  // run plans it held; each call must still give LibTorch's result.
  auto net = make_model(DenseNetOptions::densenet_bc(10, 4).num_classes(3), 16);
  const auto graph = serve::InferenceGraph::lower(net);
  const auto reference = graph.with_libtorch_convolutions();
  std::vector<torch::Tensor> inputs, expected;
  torch::manual_seed(5);
  for (int64_t size = 8; size < 8 + 80; ++size) {
    inputs.push_back(torch::randn({1, 3, size, 8 + (size * 7) % 23}));
    expected.push_back(reference.forward(inputs.back()));
  }
  std::vector<double> worst(4, 0.0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < worst.size(); ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < inputs.size(); ++i) {
        const size_t k = (i * (t + 1) + t * 17) % inputs.size();  // each thread its own order
        worst[t] = std::max(worst[t], max_abs(graph.forward(inputs[k]), expected[k]));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (double w : worst) CHECK(w <= 1e-5);
}

TEST_CASE("Efficient and standard models lower to the same graph; training mode does not matter",
          "[serve]") {
  auto net = make_model(DenseNetOptions::densenet_bc(16, 8).num_classes(5), 32);
  const auto standard = serve::InferenceGraph::lower(net).named_tensors();
  net->set_memory(MemoryMode::efficient);
  net->train();
  const auto efficient = serve::InferenceGraph::lower(net).named_tensors();
  REQUIRE(standard.size() == efficient.size());
  for (size_t i = 0; i < standard.size(); ++i) {
    CHECK(standard[i].first == efficient[i].first);
    CHECK(torch::equal(standard[i].second, efficient[i].second));
  }
  CHECK(net->is_training());  // the model's mode is its own
}

namespace {
struct OwnGateImpl : torch::nn::Module {
  explicit OwnGateImpl(int64_t channels) : scale(register_parameter("scale", torch::ones({channels}))) {}
  torch::Tensor forward(torch::Tensor x) { return x * scale.view({1, -1, 1, 1}); }
  torch::Tensor scale;
};
TORCH_MODULE(OwnGate);
}  // namespace

TEST_CASE("A model the lowering does not know is refused, naming the module", "[serve]") {
  DenseNet net(DenseNetOptions::densenet_bc(10, 4).num_classes(3),
               block_builder<DenseLayer<OwnGate>>(), "own-gate");
  CHECK_THROWS_WITH(serve::InferenceGraph::lower(net),
                    Contains("features.denseblock1.denselayer1") && Contains("own forward in eval mode"));
}

TEST_CASE("Classifier: files, decoded images and pixel buffers give the same top-k", "[serve]") {
  test::TempDir dir;
  auto trained = trained_model(DenseNetOptions::densenet_bc(10, 4).num_classes(5), 32);
  io::save_trained_model(dir / "model.pt", trained.model, trained.input, trained.classes);
  const auto classifier = Classifier::load(dir / "model.pt", ClassifierOptions().batch_size(2));
  CHECK(classifier.classes() == trained.classes);

  const auto images = random_images(5, 11);
  std::vector<fs::path> files;
  for (size_t i = 0; i < images.size(); ++i) {
    files.push_back(dir / ("image" + std::to_string(i) + ".png"));
    data::write_png(files.back(), images[i]);
  }
  const auto from_files = classifier.predict(files, 3);
  const auto from_images = classifier.predict(images, 3);
  check_same(from_files, from_images, 1e-6);
  REQUIRE(from_files.size() == 5);
  CHECK(from_files[0].top.size() == 3);

  // What the training model says, preprocessed one image at a time.
  std::vector<torch::Tensor> batch;
  for (const auto& image : images) batch.push_back(classifier.preprocess(image));
  const auto probabilities = torch::softmax(eval_logits(trained.model, torch::stack(batch)), 1);
  for (size_t i = 0; i < images.size(); ++i) {
    const auto best = probabilities[static_cast<int64_t>(i)].argmax().item<int64_t>();
    CHECK(from_images[i].top[0].index == best);
    CHECK(from_images[i].top[0].name == trained.classes[static_cast<size_t>(best)]);
    CHECK(std::abs(from_images[i].top[0].probability -
                   probabilities[static_cast<int64_t>(i)][best].item<double>()) <= 1e-5);
  }

  // A BGR buffer with padded rows (as an OpenCV cv::Mat may have) of the first image.
  const auto& image = images[0];
  const int64_t h = image.size(1), w = image.size(2), row_bytes = w * 3 + 5;
  std::vector<uint8_t> bgr(static_cast<size_t>(h * row_bytes), 0xAB);
  auto hwc = image.permute({1, 2, 0}).contiguous();
  const auto* rgb = hwc.data_ptr<uint8_t>();
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      for (int64_t c = 0; c < 3; ++c) {
        bgr[static_cast<size_t>(y * row_bytes + x * 3 + (2 - c))] = rgb[(y * w + x) * 3 + c];
      }
    }
  }
  const auto from_pixels = classifier.predict_pixels(bgr.data(), w, h, row_bytes, PixelFormat::bgr, 3);
  check_same({from_pixels}, {from_images[0]}, 1e-6);

  CHECK_THROWS_WITH(classifier.predict({dir / "missing.png"}), Contains("missing.png"));
  CHECK_THROWS_WITH(classifier.predict_pixels(bgr.data(), w, h, w * 2, PixelFormat::bgr),
                    Contains("row_bytes"));

  // Unusable files among good ones, across batches of 2: skipped with their reason, the others
  // classified as before; the error policy throws naming the first.
  std::ofstream(dir / "cut.png") << "\x89PNG";
  auto mixed = files;
  mixed.insert(mixed.begin() + 1, dir / "cut.png");
  mixed.push_back(dir / "missing.png");
  const auto skipping = classifier.predict(mixed, 3, data::BadFilePolicy::skip);
  REQUIRE(skipping.size() == 7);
  CHECK_THAT(skipping[1].error, Contains("cut.png"));
  CHECK(skipping[1].top.empty());
  CHECK_THAT(skipping[6].error, Contains("missing.png"));
  std::vector<Prediction> good = {skipping[0], skipping[2], skipping[3], skipping[4], skipping[5]};
  for (const auto& p : good) CHECK(p.error.empty());
  check_same(good, from_files, 1e-6);
  CHECK_THROWS_WITH(classifier.predict(mixed, 3, data::BadFilePolicy::error), Contains("cut.png"));
}

TEST_CASE("Classifier: RGBA pixels follow the checkpoint's alpha policy, as files do", "[serve]") {
  test::TempDir dir;
  auto trained = trained_model(DenseNetOptions::densenet_bc(10, 4).num_classes(3), 32);
  trained.input.alpha = data::Alpha::white;
  io::save_trained_model(dir / "model.pt", trained.model, trained.input, trained.classes);
  const auto classifier = Classifier::load(dir / "model.pt");
  torch::manual_seed(5);
  const auto rgba = torch::randint(0, 256, {4, 17, 23}, torch::kUInt8);
  data::write_png(dir / "rgba.png", rgba);
  const auto from_file = classifier.predict(std::vector<fs::path>{dir / "rgba.png"}, 3);
  const auto hwc = rgba.permute({1, 2, 0}).contiguous();
  const auto from_pixels =
      classifier.predict_pixels(hwc.data_ptr<uint8_t>(), 23, 17, 23 * 4, PixelFormat::rgba, 3);
  check_same({from_pixels}, from_file, 1e-6);
  // Dropping alpha instead gives another input and other logits: the policy was applied.
  const auto white = classifier.preprocess(data::read_image(dir / "rgba.png", trained.input.decode_options()));
  const auto dropped = classifier.preprocess(rgba.narrow(0, 0, 3).clone());
  CHECK(max_abs(classifier.logits(white.unsqueeze(0)), classifier.logits(dropped.unsqueeze(0))) > 1e-3);
}

TEST_CASE("Classifier: concurrent callers get the serial results", "[serve][threads]") {
  auto trained = trained_model(DenseNetOptions::densenet_bc(16, 8).num_classes(5), 32);
  const Classifier classifier(trained, ClassifierOptions().batch_size(3));
  const auto images = random_images(7, 21);
  const auto serial = classifier.predict(images, 2);
  std::vector<std::vector<Prediction>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int repeat = 0; repeat < 3; ++repeat) results[t] = classifier.predict(images, 2);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) check_same(r, serial, 1e-6);
}

TEST_CASE("TorchScript export runs in C++ torch::jit::load and Python torch.jit.load with the same logits",
          "[serve][torchscript][python]") {
  for (const auto& shape : shapes()) {
    if (shape.name == "scaled-sigmoid SE") continue;  // the gate is covered by the ONNX test
    INFO(shape.name);
    test::TempDir dir;
    auto trained = trained_model(shape.options, shape.size);
    const Classifier classifier(trained);
    serve::export_torchscript(trained, dir / "model.ts");

    torch::manual_seed(9);
    const auto x = torch::randn({3, 3, shape.size, shape.size});
    const auto expected = eval_logits(trained.model, x);
    CHECK(max_abs(classifier.logits(x), expected) <= 1e-4);

    auto module = torch::jit::load((dir / "model.ts").string());
    torch::NoGradGuard no_grad;
    const auto cpp = module.forward({x}).toTensor();
    CHECK(max_abs(cpp, expected) <= 1e-4);
    CHECK(module.attr("input_size").toInt() == shape.size);
    CHECK(module.attr("classes").toList().size() == trained.classes.size());

    test::save_bundle(dir / "io", {{"x", x}});
    test::run_python("serve_reference.py", "torchscript " + (dir / "model.ts").string() + " " +
                                               (dir / "io").string());
    const auto python = test::load_bundle(dir / "io").at("logits");
    INFO("Python torch.jit.load: max abs difference " << max_abs(python, expected) << ", logits up to " << expected.abs().max().item<double>());
    CHECK(max_abs(python, expected) <= 1e-4);
    CHECK(nlohmann::json::parse(read_bytes(dir / "io" / "classes.json")) == nlohmann::json(trained.classes));
  }
}

TEST_CASE("Exports never overwrite a file unasked", "[serve]") {
  test::TempDir dir;
  const auto trained = trained_model(DenseNetOptions::densenet_bc(10, 4).num_classes(3), 32);
  io::write_file_atomically(dir / "model.ts", std::string("keep me"));
  CHECK_THROWS_WITH(serve::export_torchscript(trained, dir / "model.ts"),
                    Contains("model.ts") && Contains("already exists"));
  CHECK(read_bytes(dir / "model.ts") == "keep me");
  serve::ExportOptions overwrite;
  overwrite.overwrite = true;
  serve::export_torchscript(trained, dir / "model.ts", overwrite);
  CHECK(read_bytes(dir / "model.ts") != "keep me");
  if (serve::onnx_export_available()) {
    io::write_file_atomically(dir / "model.onnx", std::string("keep me"));
    CHECK_THROWS_WITH(serve::export_onnx(trained, dir / "model.onnx"), Contains("already exists"));
    CHECK(read_bytes(dir / "model.onnx") == "keep me");
  }
}

#ifdef SEDENSENET_TEST_ONNX_PYTHON
TEST_CASE("ONNX export passes onnx.checker and runs in ONNX Runtime and OpenCV with LibTorch's logits",
          "[serve][onnx][python]") {
  REQUIRE(serve::onnx_export_available());
  for (const auto& shape : shapes()) {
    INFO(shape.name);
    test::TempDir dir;
    auto trained = trained_model(shape.options, shape.size);
    serve::export_onnx(trained, dir / "model.onnx");

    torch::manual_seed(9);
    const auto x = torch::randn({3, 3, shape.size, shape.size});
    const auto expected = eval_logits(trained.model, x);

    test::save_bundle(dir / "io", {{"x", x}});
    const std::string python = SEDENSENET_TEST_ONNX_PYTHON;
    const auto run = test::run_command(python + " " + test::python_script("serve_reference.py").string() +
                                       " onnx " + (dir / "model.onnx").string() + " " + (dir / "io").string());
    INFO(run.output << "\n(needs onnx and onnxruntime in " << python
                    << ": scripts/setup-torch2.sh installs them)");
    REQUIRE(run.exit_code == 0);
    const auto ort = test::load_bundle(dir / "io").at("logits");
    INFO("ONNX Runtime: max abs difference " << max_abs(ort, expected));
    CHECK(max_abs(ort, expected) <= 1e-4);
    CHECK(nlohmann::json::parse(read_bytes(dir / "io" / "classes.json")) == nlohmann::json(trained.classes));

    // OpenCV's DNN module, in a program that links OpenCV and not LibTorch.
    const auto input = x.contiguous();
    io::write_file_atomically(dir / "x.bin", input.data_ptr<float>(), static_cast<size_t>(input.numel()) * sizeof(float));
    const auto cv = test::run_command(std::string(SEDENSENET_TEST_OPENCV_ONNX) + " " + (dir / "model.onnx").string() +
                                      " " + (dir / "x.bin").string() + " 3 " + std::to_string(shape.size) + " " +
                                      (dir / "cv.bin").string());
    INFO(cv.output);
    REQUIRE(cv.exit_code == 0);
    auto bytes = read_bytes(dir / "cv.bin");
    REQUIRE(bytes.size() == static_cast<size_t>(expected.numel()) * sizeof(float));
    const auto opencv = torch::from_blob(bytes.data(), expected.sizes(), torch::kFloat32).clone();
    INFO("OpenCV DNN: max abs difference " << max_abs(opencv, expected));
    CHECK(max_abs(opencv, expected) <= 1e-4);

    // The efficient model exports the same file, byte for byte.
    trained.model->set_memory(MemoryMode::efficient);
    serve::export_onnx(trained, dir / "efficient.onnx");
    CHECK(read_bytes(dir / "efficient.onnx") == read_bytes(dir / "model.onnx"));
  }
}
#endif
