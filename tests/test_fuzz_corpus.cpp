// The fuzz targets' seed corpora and saved regression inputs (tests/fuzz/), replayed through the
// same target functions in the regular suite: every crash a fuzzer ever found stays fixed even in
// builds without clang or sanitizers.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "fuzz/targets.hpp"

namespace fs = std::filesystem;

namespace {
std::vector<fs::path> inputs(const std::string& kind, const std::string& target) {
  std::vector<fs::path> files;
  const fs::path folder = fs::path(SEDENSENET_TEST_FUZZ_DIR) / kind / target;
  if (!fs::exists(folder)) return files;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <typename Target>
size_t replay(const std::string& target, Target fn) {
  size_t n = 0;
  for (const auto& kind : {"corpus", "regressions"}) {
    for (const auto& file : inputs(kind, target)) {
      INFO(file.string());
      const auto data = bytes_of(file);
      CHECK(fn(data.data(), data.size()) == 0);
      ++n;
    }
  }
  return n;
}
}  // namespace

TEST_CASE("Fuzz seeds and regressions: image decoding and transforms", "[fuzz][data]") {
  CHECK(replay("image", sedensenet::fuzz::image) >= 10);
  // The seeds are valid images (so the fuzzer starts from inputs that reach the transforms).
  for (const auto& file : inputs("corpus", "image")) {
    INFO(file.string());
    const auto data = bytes_of(file);
    CHECK_NOTHROW(sedensenet::data::decode_image(data.data() + 1, data.size() - 1, file.string()));
  }
}

TEST_CASE("Fuzz seeds and regressions: state-dict loading", "[fuzz][io]") {
  CHECK(replay("state_dict", sedensenet::fuzz::state_dict) >= 4);
  for (const auto& file : inputs("corpus", "state_dict")) {
    INFO(file.string());
    const auto data = bytes_of(file);
    CHECK_FALSE(sedensenet::io::read_state_dict_bytes(std::string(data.begin(), data.end()),
                                                      file.string()).empty());
  }
}

TEST_CASE("Fuzz seeds and regressions: JSON configuration", "[fuzz][io]") {
  CHECK(replay("config", sedensenet::fuzz::config) >= 4);
}

TEST_CASE("Fuzz seeds and regressions: checkpoint loading", "[fuzz][io]") {
  CHECK(replay("checkpoint", sedensenet::fuzz::checkpoint) >= 8);
  // The real checkpoints among the seeds load as models.
  for (const char* name : {"best.pt", "last.pt"}) {
    const auto file = fs::path(SEDENSENET_TEST_FUZZ_DIR) / "corpus" / "checkpoint" / name;
    INFO(file.string());
    CHECK(sedensenet::io::load_trained_model(file).model->parameters().size() > 0);
  }
}
