// prepare_fashion_mnist from Debian's dataset-fashion-mnist package.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "sedensenet/data/fashion_mnist.hpp"
#include "sedensenet/data/image_folder.hpp"
#include "support/python.hpp"

using namespace sedensenet::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

TEST_CASE("Fashion-MNIST becomes train/ and test/ PNG folders with the ten class names",
          "[fashion_mnist]") {
  sedensenet::test::TempDir dir;
  const auto out = dir / "fmnist";
  auto prepared = prepare_fashion_mnist(out, kFashionMnistSource, 300, 100, 2);
  CHECK(prepared.train_images == 300);
  CHECK(prepared.test_images == 100);
  CHECK_FALSE(prepared.reused);
  auto splits = ImageFolder::split(out);
  REQUIRE(splits.predefined);
  CHECK(splits.train.classes() ==
        std::vector<std::string>{"Ankle_boot", "Bag", "Coat", "Dress", "Pullover", "Sandal",
                                 "Shirt", "Sneaker", "T-shirt_top", "Trouser"});
  CHECK(splits.train.size().value() == 300);
  CHECK(splits.test.size().value() == 100);
  // The pixels are the IDX file's: image 0 of the training set is an ankle boot (label 9).
  const auto raw = sedensenet::data::detail::read_idx_images(fs::path(kFashionMnistSource) / "train-images-idx3-ubyte.gz");
  auto first = read_image(out / "train" / "Ankle_boot" / "00000.png");
  CHECK(first.sizes() == torch::IntArrayRef({1, 28, 28}));
  CHECK(torch::equal(first[0], raw[0]));
  // Idempotent: a second call reuses the folder.
  CHECK(prepare_fashion_mnist(out, kFashionMnistSource, 300, 100).reused);
  // Other limits replace it.
  CHECK(prepare_fashion_mnist(out, kFashionMnistSource, 50, 10).train_images == 50);
  CHECK(ImageFolder::split(out).train.size().value() == 50);
}

TEST_CASE("prepare_fashion_mnist refuses to touch a user's folder and names missing files",
          "[fashion_mnist][errors]") {
  sedensenet::test::TempDir dir;
  fs::create_directories(dir / "mine");
  std::ofstream(dir / "mine" / "thesis.tex") << "precious";
  REQUIRE_THROWS_WITH(prepare_fashion_mnist(dir / "mine", kFashionMnistSource, 10, 10),
                      Contains("was not written by prepare_fashion_mnist"));
  CHECK(fs::exists(dir / "mine" / "thesis.tex"));
  REQUIRE_THROWS_WITH(prepare_fashion_mnist(dir / "out", dir / "nowhere", 10, 10),
                      Contains("train-images-idx3-ubyte.gz not found") &&
                          Contains("apt-get install dataset-fashion-mnist"));
}
