// Archive integrity: CRC-32 against Python's zlib, verify_archive on files written by LibTorch,
// torch.save and Python's zipfile (zip64 too), and clear refusals of truncated, corrupted and
// foreign files by every loader (resume, load_trained_model, load_state_dict).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "sedensenet/sedensenet.hpp"
#include "support/python.hpp"

using namespace sedensenet;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) { return io::read_text_file(p); }

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void check_file(const fs::path& p) {
  const auto bytes = slurp(p);
  io::verify_archive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), p);
}

/// A checkpoint as Trainer writes it: 2 epochs of a tiny model on random tensors.
fs::path make_run(const fs::path& run_dir) {
  torch::manual_seed(1);
  DenseNet net(DenseNetOptions::densenet_bc(10, 4).num_classes(3));
  auto images = torch::randn({24, 3, 8, 8});
  auto labels = torch::randint(0, 3, {24}, torch::kLong);
  TensorSource train(images, labels, 8), test(images, labels, 8, false);
  Trainer trainer(net, TrainerOptions().epochs(2).threads(2).run_dir(run_dir.string()));
  trainer.set_metadata(io::densenet_metadata(DenseNetOptions::densenet_bc(10, 4).num_classes(3),
                                             io::InputSpec{8}));
  trainer.fit(train, &test);
  return run_dir;
}

}  // namespace

TEST_CASE("crc32 equals zlib's on the check value and on random data", "[archive]") {
  const std::string check = "123456789";
  CHECK(io::crc32(check.data(), check.size()) == 0xCBF43926u);
  CHECK(io::crc32(nullptr, 0) == 0u);
  test::TempDir dir;
  auto data = torch::randint(0, 256, {100003}, torch::kUInt8);
  std::string bytes(reinterpret_cast<const char*>(data.data_ptr<uint8_t>()), 100003);
  spit(dir / "blob", bytes);
  const auto out = test::run_command(test::python_interpreter() +
                                     " -c \"import zlib,sys; print(zlib.crc32(open(sys.argv[1],'rb').read()))\" " +
                                     (dir / "blob").string());
  REQUIRE(out.exit_code == 0);
  CHECK(io::crc32(bytes.data(), bytes.size()) == std::stoul(out.output));
  // Continuing a CRC over two parts gives the CRC of the whole.
  const auto first = io::crc32(bytes.data(), 5001);
  CHECK(io::crc32(bytes.data() + 5001, bytes.size() - 5001, first) == std::stoul(out.output));
}

TEST_CASE("verify_archive accepts LibTorch checkpoints, torch.save and zip64 files", "[archive]") {
  test::TempDir dir;
  const auto run = make_run(dir / "run");
  check_file(run / "last.pt");
  check_file(run / "best.pt");
  const auto made = test::run_command(
      test::python_interpreter() + " -c \"" +
      "import torch, zipfile, sys; d = sys.argv[1]\n"
      "torch.save({'w': torch.arange(1000.0), 'b': torch.ones(3, dtype=torch.int64)}, d + '/sd.pt')\n"
      "z = zipfile.ZipFile(d + '/z64.zip', 'w', allowZip64=True)\n"
      "z.writestr('first', b'x' * 1000)\n"
      "with z.open('forced', 'w', force_zip64=True) as f: f.write(b'y' * 5000)\n"
      "z.close()\" " + dir.path().string());
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
  check_file(dir / "sd.pt");
  check_file(dir / "z64.zip");
  const auto bytes = slurp(dir / "z64.zip");
  const auto records = io::list_archive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "z64.zip");
  REQUIRE(records.size() == 2);
  CHECK(records[1].name == "forced");
  CHECK(records[1].size == 5000);
}

TEST_CASE("verify_archive refuses empty, foreign, truncated and corrupted files naming them",
          "[archive][errors]") {
  test::TempDir dir;
  const auto run = make_run(dir / "run");
  const auto good = slurp(run / "last.pt");
  auto refuse = [&](const std::string& bytes, const std::string& expected) {
    spit(dir / "bad.pt", bytes);
    REQUIRE_THROWS_WITH(check_file(dir / "bad.pt"), Contains("bad.pt") && Contains(expected));
  };
  refuse("", "the file is empty");
  refuse("hello, not a checkpoint", "not a PyTorch archive");
  // Cut at many places, from the first bytes to the last one.
  for (const double fraction : {0.01, 0.2, 0.5, 0.9, 0.999}) {
    refuse(good.substr(0, static_cast<size_t>(fraction * static_cast<double>(good.size()))), "truncated");
  }
  refuse(good.substr(0, good.size() - 1), "truncated");
  // One flipped bit inside a tensor's data.
  const auto records = io::list_archive(reinterpret_cast<const uint8_t*>(good.data()), good.size(), "last.pt");
  const io::ArchiveRecord* tensor = nullptr;
  for (const auto& r : records) {
    if (r.name.find("/data/") != std::string::npos && r.size >= 64) tensor = &r;
  }
  REQUIRE(tensor != nullptr);
  auto flipped = good;
  flipped[tensor->data_offset + tensor->size / 2] ^= 0x01;
  refuse(flipped, "corrupted: record '" + tensor->name + "' fails its CRC-32 check");
}

TEST_CASE("Damaged checkpoints are refused by resume, load_trained_model and load_state_dict",
          "[archive][errors]") {
  test::TempDir dir;
  const auto run = make_run(dir / "run");
  const auto good = slurp(run / "last.pt");
  auto flipped = good;
  flipped[good.size() / 2] ^= 0x10;  // somewhere in the weights or the zip structure

  DenseNet net(DenseNetOptions::densenet_bc(10, 4).num_classes(3));
  Trainer trainer(net, TrainerOptions().epochs(3).threads(2));
  spit(run / "last.pt", flipped);
  REQUIRE_THROWS_WITH(trainer.resume(run), Contains("cannot resume") && Contains("last.pt"));
  REQUIRE_THROWS_WITH(io::load_trained_model(run / "last.pt"), Contains("last.pt"));
  spit(run / "last.pt", good);
  CHECK_NOTHROW(io::load_trained_model(run / "last.pt"));
  // best.pt damaged: resume says which file and what to do.
  const auto best = slurp(run / "best.pt");
  spit(run / "best.pt", best.substr(0, best.size() / 3));
  REQUIRE_THROWS_WITH(trainer.resume(run), Contains("best.pt") && Contains("truncated"));

  // A Python state dict with a flipped bit in a tensor.
  const auto made = test::run_command(test::python_interpreter() +
                                      " -c \"import torch, sys; torch.save({'w': torch.arange(4096.0)}, sys.argv[1])\" " +
                                      (dir / "sd.pt").string());
  REQUIRE(made.exit_code == 0);
  auto sd = slurp(dir / "sd.pt");
  const auto records = io::list_archive(reinterpret_cast<const uint8_t*>(sd.data()), sd.size(), "sd.pt");
  for (const auto& r : records) {
    if (r.name.find("/data/0") != std::string::npos) sd[r.data_offset + 100] ^= 0x40;
  }
  spit(dir / "sd.pt", sd);
  REQUIRE_THROWS_WITH(io::read_state_dict(dir / "sd.pt"), Contains("sd.pt") && Contains("CRC-32"));
}
