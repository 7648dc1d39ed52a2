// Untrusted files: the checkpoint format this library owns (read by its own unpickler, never by
// LibTorch's TorchScript loader), the conversion of trusted old checkpoints, and every hostile
// input of tests/hostile/make_hostile.py through each library loader, plus the limits on
// configs, thread counts, model sizes and folder scans.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <ctime>
#include <filesystem>
#include <fstream>

#include "sedensenet/sedensenet.hpp"
#include "support/python.hpp"

using namespace sedensenet;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const DenseNetOptions kTiny = DenseNetOptions::densenet_bc(10, 4).num_classes(3);

struct Run {
  DenseNet net{nullptr};
  io::NamedTensors optimizer_tensors;
};

/// `epochs` epochs of the tiny model with `optimizer`, in `run_dir` (resumed when `resume`).
Run train(const fs::path& run_dir, OptimizerKind optimizer, int64_t epochs, bool resume) {
  torch::manual_seed(1);
  DenseNet net(kTiny);
  auto images = torch::randn({24, 3, 8, 8});
  auto labels = torch::randint(0, 3, {24}, torch::kLong);
  TensorSource train_source(images, labels, 8), test(images, labels, 8, false);
  auto options = TrainerOptions().epochs(epochs).threads(2).run_dir(run_dir.string()).optimizer(optimizer);
  if (optimizer == OptimizerKind::sgd) options.momentum(0.9).nesterov(true);
  Trainer trainer(net, options);
  trainer.set_metadata(io::densenet_metadata(kTiny, io::InputSpec{8}));
  if (resume) trainer.resume(run_dir);
  trainer.fit(train_source, &test);
  return {net, optimizer_state(trainer.optimizer(), optimizer).second};
}

bool same(const io::NamedTensors& a, const io::NamedTensors& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || !torch::equal(a[i].second, b[i].second)) return false;
  }
  return true;
}

/// The hostile inputs, made once per test process.
const fs::path& hostile_dir() {
  static const test::TempDir scratch;  // removed at exit
  static const fs::path dir = [] {
    const auto d = scratch / "hostile";
    const auto made = test::run_command(test::python_interpreter() + " " +
                                        SEDENSENET_TEST_HOSTILE_DIR "/make_hostile.py " +
                                        d.string() + " " + (d / "MARKER").string());
    REQUIRE(made.exit_code == 0);
    return d;
  }();
  return dir;
}

}  // namespace

TEST_CASE("Checkpoints: a torch.save file of our own format, read back exactly and by Python's "
          "weights_only loader",
          "[untrusted][checkpoint]") {
  const test::TempDir scratch;  // removed however the test ends
  const auto dir = scratch / "run";
  auto run = train(dir, OptimizerKind::adamw, 2, false);
  const auto last = io::read_checkpoint_file(dir / "last.pt");
  CHECK(last.state.at("epoch").get<int64_t>() == 2);
  CHECK(same(last.model, io::module_tensors(*run.net)));
  CHECK(last.optimizer.at("kind") == "adamw");
  CHECK(same(last.optimizer_tensors, run.optimizer_tensors));
  CHECK(last.extra_tensor("rng_cpu").defined());
  const auto best = io::read_checkpoint_file(dir / "best.pt");
  CHECK(best.optimizer.is_null());
  CHECK(io::is_checkpoint_file(dir / "last.pt"));

  // Python: torch.load(weights_only=True) returns the dict; "model" is the state dict.
  const auto out = test::run_command(
      test::python_interpreter() + " -c \"import torch, json, sys; c = torch.load(sys.argv[1], "
      "weights_only=True); m = c['model']; print(c['format'], c['version'], len(m), "
      "json.loads(c['state'])['epoch'], float(m['classifier.weight'].double().sum()))\" " +
      (dir / "last.pt").string());
  REQUIRE(out.exit_code == 0);
  std::istringstream fields(out.output);
  std::string format;
  int64_t version = 0, tensors = 0, epoch = 0;
  double sum = 0;
  fields >> format >> version >> tensors >> epoch >> sum;
  CHECK(format == io::kCheckpointFormat);
  CHECK(version == io::kCheckpointVersion);
  CHECK(tensors == static_cast<int64_t>(last.model.size()));
  CHECK(epoch == 2);
  CHECK(sum == Approx(run.net->named_parameters()["classifier.weight"].sum().item<double>()).epsilon(1e-6));
}

TEST_CASE("Resume restores each optimizer's state exactly from the new format",
          "[untrusted][checkpoint][resume]") {
  const auto kind = GENERATE(OptimizerKind::adam, OptimizerKind::adamw, OptimizerKind::sgd);
  CAPTURE(to_string(kind));
  const test::TempDir scratch;  // removed however the test ends
  const auto base = scratch.path();
  auto straight = train(base / "straight", kind, 3, false);
  train(base / "split", kind, 2, false);
  auto resumed = train(base / "split", kind, 3, true);
  CHECK(same(io::module_tensors(*resumed.net), io::module_tensors(*straight.net)));
  CHECK(same(resumed.optimizer_tensors, straight.optimizer_tensors));
  CHECK(!straight.optimizer_tensors.empty());
  // Another optimizer than the run's: refused naming the file.
  DenseNet net(kTiny);
  const auto other = kind == OptimizerKind::sgd ? OptimizerKind::adam : OptimizerKind::sgd;
  Trainer trainer(net, TrainerOptions().epochs(3).threads(2).optimizer(other));
  REQUIRE_THROWS_WITH(trainer.resume(base / "split"),
                      Contains("last.pt") && Contains("optimizer is " + std::string(to_string(kind))));
}

TEST_CASE("Old-format checkpoints are refused unread; a trusted one converts exactly",
          "[untrusted][checkpoint][legacy]") {
  const test::TempDir scratch;  // removed however the test ends
  const auto dir = scratch.path();
  fs::create_directories(dir);
  // A version-1 last.pt as SEDenseNet 0.1 wrote it: LibTorch archives of the model and the
  // optimizer, the run state as JSON text, the random state.
  auto run = train(dir / "run", OptimizerKind::adamw, 2, false);
  const auto options = TrainerOptions().epochs(2).threads(2).optimizer(OptimizerKind::adamw);
  Trainer trainer(run.net, options);
  trainer.resume(dir / "run");  // the optimizer state of epoch 2
  auto state = io::read_checkpoint_file(dir / "run" / "last.pt").state;
  state["format"] = "sedensenet-checkpoint-1";
  torch::serialize::OutputArchive archive, model, optimizer;
  archive.write("state", c10::IValue(state.dump()));
  run.net->save(model);
  archive.write("model", model);
  trainer.optimizer().save(optimizer);
  archive.write("optimizer", optimizer);
  archive.write("rng_cpu", c10::IValue(at::detail::getDefaultCPUGenerator().get_state()));
  archive.save_to((dir / "old.pt").string());

  REQUIRE(io::is_checkpoint_file(dir / "old.pt"));
  REQUIRE_THROWS_WITH(io::load_trained_model(dir / "old.pt"),
                      Contains("old.pt") && Contains("old format") &&
                          Contains("sedensenet convert-checkpoint --trust-old-format"));
  convert_legacy_checkpoint(dir / "old.pt", dir / "new" / "last.pt");
  REQUIRE_THROWS_WITH(convert_legacy_checkpoint(dir / "old.pt", dir / "new" / "last.pt"),
                      Contains("exists"));
  const auto converted = io::read_checkpoint_file(dir / "new" / "last.pt");
  CHECK(same(converted.model, io::module_tensors(*run.net)));
  CHECK(same(converted.optimizer_tensors, optimizer_state(trainer.optimizer(), OptimizerKind::adamw).second));
  CHECK(converted.state.at("epoch").get<int64_t>() == 2);
  CHECK_FALSE(converted.state.contains("format"));
  auto loaded = io::load_trained_model(dir / "new" / "last.pt");
  CHECK(same(io::module_tensors(*loaded.model), io::module_tensors(*run.net)));
}

TEST_CASE("Every hostile file is refused by every library loader, naming it, quickly, without "
          "running code",
          "[untrusted][hostile]") {
  const auto& dir = hostile_dir();
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".pt") continue;
    ++files;
    const auto path = entry.path();
    const auto name = path.filename().string();
    INFO(name);
    const std::clock_t start = std::clock();
    CHECK_NOTHROW(io::is_checkpoint_file(path));
    CHECK_THROWS_WITH(io::load_trained_model(path), Contains(name));
    // A well-formed torch.save file with a "model" state dict is a state dict (what
    // --init-weights reads); anything else is refused naming the file.
    try {
      io::read_state_dict(path);
    } catch (const std::exception& e) {
      CHECK_THAT(std::string(e.what()), Contains(name));
    }
    // The file level: refused naming the file, or (a well-formed file whose content is absurd or
    // foreign) returned, for load_trained_model and resume to refuse.
    try {
      io::read_checkpoint_file(path);
    } catch (const std::exception& e) {
      CHECK_THAT(std::string(e.what()), Contains(name));
    }
    // As a run's last.pt.
    const auto run = dir / ("run-" + name);
    fs::create_directories(run);
    fs::copy_file(path, run / "last.pt", fs::copy_options::overwrite_existing);
    DenseNet net(kTiny);
    Trainer trainer(net, TrainerOptions().epochs(1).threads(1));
    CHECK_THROWS_WITH(trainer.resume(run), Contains("cannot resume") && Contains("last.pt"));
    const double seconds = static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
    CHECK(seconds < 20.0);
  }
  CHECK(files >= 24);
  CHECK_FALSE(fs::exists(dir / "MARKER"));
}

TEST_CASE("Limits on what a file or flag can ask for: JSON depth, threads, model size",
          "[untrusted][limits]") {
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  CHECK_THROWS_WITH(util::parse_json(deep, "deep.json"), Contains("deep.json") && Contains("nested deeper"));
  std::string ok(util::kMaxJsonDepth, '[');
  ok += std::string(util::kMaxJsonDepth, ']');
  CHECK(util::parse_json(ok, "ok.json").is_array());
  CHECK(util::parse_json(R"({"a": "[[[[{{{{"})", "strings.json")["a"] == "[[[[{{{{");
  CHECK_THROWS_WITH(util::parse_json("{\"a\": ", "cut.json"), Contains("cut.json") && Contains("not valid JSON"));

  CHECK(thread_count(1000000, "--workers") == max_threads());
  CHECK(thread_count(0, "--workers") == hardware_threads());
  CHECK(thread_count(3, "--workers") == 3);

  CHECK_THROWS_WITH(DenseNet(DenseNetOptions::preset("densenet_bc_1000006")), Contains("dense layers"));
  CHECK_THROWS_WITH(DenseNet(DenseNetOptions().growth_rate(1 << 20).block_config({2})),
                    Contains("parameters"));
  // The largest published shapes stay well inside the limits.
  CHECK_NOTHROW(check_model_size(DenseNetOptions::densenet_bc(250, 24)));
  CHECK_NOTHROW(check_model_size(DenseNetOptions::densenet161().num_classes(1000)));
  // The estimate is the real count for SE-free torchvision shapes.
  auto options = DenseNetOptions::densenet_bc(40, 12).num_classes(10).se_reduction(0);
  DenseNet net(options);
  int64_t real = 0;
  for (const auto& p : net->parameters()) real += p.numel();
  CHECK(estimated_parameters(options) == Approx(static_cast<double>(real)).epsilon(0.01));
}

TEST_CASE("The folder scan reads each real folder once: symlink loops of any shape end at once",
          "[untrusted][scan]") {
  const auto loops = hostile_dir() / "loops";
  const std::clock_t start = std::clock();
  data::ImageFolder folder(loops);
  CHECK(static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC < 5.0);
  // Each class: its 4 images and, through its link to the other class's folder, those 4; every
  // real folder listed once per class however many links and loops lead to it.
  CHECK(folder.size().value() == 16);
  CHECK(folder.summary().folders_repeated > 0);
}

TEST_CASE("Every byte of a checkpoint's records is covered: a flipped bit is refused or changes "
          "nothing",
          "[untrusted][checkpoint][archive]") {
  // A real checkpoint (the fuzz seed best.pt, 27 KB): flip one bit of each byte before the table
  // of contents in turn (headers, names, padding, data, data descriptors). Each flip must be
  // refused, except where the flipped field still says what the table of contents says (a zero
  // size field of a header turning into the real size): then the content read is the original.
  const auto path = fs::path(SEDENSENET_TEST_FUZZ_DIR) / "corpus" / "checkpoint" / "best.pt";
  const auto good = io::read_text_file(path);
  const auto original = io::decode_checkpoint(good, path);
  const auto records = io::list_archive(reinterpret_cast<const uint8_t*>(good.data()), good.size(), path);
  uint64_t directory = 0;
  for (const auto& r : records) directory = std::max<uint64_t>(directory, r.data_offset + r.size);
  // Past the last record's data: its data descriptor (16 bytes), then the table of contents.
  directory += 16;
  REQUIRE(directory < good.size());
  int64_t refused = 0, harmless = 0;
  for (uint64_t at = 0; at < directory; ++at) {
    auto bad = good;
    bad[at] = static_cast<char>(bad[at] ^ (1 << (at % 8)));
    try {
      const auto read = io::decode_checkpoint(bad, path);
      INFO("a flip at byte " << at << " was accepted");
      CHECK(read.state == original.state);
      CHECK(same(read.model, original.model));
      ++harmless;
    } catch (const std::runtime_error&) {
      ++refused;
    }
  }
  CHECK(harmless <= 4);
  CHECK(refused + harmless == static_cast<int64_t>(directory));
}
