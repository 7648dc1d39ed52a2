// Transforms against torchvision (PIL path) with the same parameters, exact: resize in PIL's
// fixed-point arithmetic included.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "sedensenet/data/image.hpp"
#include "sedensenet/data/transforms.hpp"
#include "support/bundle.hpp"
#include "support/python.hpp"

using namespace sedensenet::data;
using Catch::Matchers::Contains;
namespace F = sedensenet::data::functional;

namespace {
torch::Tensor hwc(const torch::Tensor& chw) { return to_rgb(chw).permute({1, 2, 0}).contiguous(); }

double mad(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().mean().item<double>();
}

struct Reference {
  sedensenet::test::TempDir dir;
  sedensenet::test::TensorBundle expected;
  torch::Tensor source, grey;
  Reference() {
    sedensenet::test::run_python("pil_reference.py", "transforms " + dir.path().string());
    expected = sedensenet::test::load_bundle(dir / "expected");
    source = read_image(dir / "source.png");
    grey = read_image(dir / "grey_source.png");
  }
};

Reference& reference() {
  static Reference r;  // one Python run for all the cases below
  return r;
}
}  // namespace

/// Equal, or how many values differ and by how much at most.
void check_identical(const torch::Tensor& ours, const torch::Tensor& expected) {
  REQUIRE(ours.sizes() == expected.sizes());
  const auto difference = (ours.to(torch::kInt) - expected.to(torch::kInt)).abs();
  INFO((difference > 0).sum().item<int64_t>() << " values differ, by up to "
                                              << difference.max().item<int>());
  CHECK(torch::equal(ours, expected));
}

TEST_CASE("Resize gives torchvision's pixels exactly", "[transforms][resize][python]") {
  auto& r = reference();
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{224, 224}, {20, 30}, {45, 61}, {90, 17}, {7, 7}}) {
    const auto key = "resize_" + std::to_string(h) + "x" + std::to_string(w);
    INFO(key);
    check_identical(hwc(F::resize(r.source, h, w)), r.expected.at(key));
  }
  Rng rng(0);
  for (int64_t size : {32, 50}) {
    INFO("Resize(" << size << ")");
    check_identical(hwc(Resize(size).apply(r.source, rng)),
                    r.expected.at("resize_short_" + std::to_string(size)));
    // A grey image carried as one channel gives what PIL gives on its RGB version.
    auto grey = hwc(Resize(size).apply(r.grey, rng));
    CHECK(r.grey.size(0) == 1);
    check_identical(grey, r.expected.at("resize_grey_short_" + std::to_string(size)));
  }
  // A photo shrunk by up to 54x, an icon enlarged up to 4.7x, one axis at a time.
  const auto photo = read_image(r.dir / "photo.png");
  const auto icon = read_image(r.dir / "icon.png");
  for (int64_t size : {224, 32, 7}) {
    INFO("photo, Resize(" << size << ")");
    check_identical(hwc(Resize(size).apply(photo, rng)),
                    r.expected.at("photo_short_" + std::to_string(size)));
  }
  check_identical(hwc(F::resize(photo, 1, 300)), r.expected.at("photo_1x300"));
  for (int64_t size : {224, 32, 61}) {
    INFO("icon, Resize(" << size << ")");
    check_identical(hwc(Resize(size).apply(icon, rng)),
                    r.expected.at("icon_short_" + std::to_string(size)));
  }
  check_identical(hwc(F::resize(icon, 48, 100)), r.expected.at("icon_48x100"));
  check_identical(hwc(F::resize(icon, 100, 48)), r.expected.at("icon_100x48"));
}

TEST_CASE("Crops, padding and flips are exact", "[transforms][python]") {
  auto& r = reference();
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{20, 20}, {21, 30}, {44, 60}, {50, 70}}) {
    const auto key = "center_crop_" + std::to_string(h) + "x" + std::to_string(w);
    INFO(key);
    CHECK(torch::equal(hwc(F::center_crop(r.source, h, w)), r.expected.at(key)));
  }
  CHECK(torch::equal(hwc(F::crop(r.source, 5, 7, 20, 30)), r.expected.at("crop_5_7_20_30")));
  CHECK(torch::equal(hwc(F::crop(r.source, -3, 50, 20, 30)), r.expected.at("crop_outside")));
  const std::vector<std::pair<std::string, F::PaddingMode>> modes = {
      {"constant", F::PaddingMode::constant}, {"edge", F::PaddingMode::edge},
      {"reflect", F::PaddingMode::reflect}, {"symmetric", F::PaddingMode::symmetric}};
  for (const auto& [name, mode] : modes) {
    INFO("pad " << name);
    CHECK(torch::equal(hwc(F::pad(r.source, 3, 4, 5, 6, 17, mode)), r.expected.at("pad_" + name)));
  }
  CHECK(torch::equal(hwc(F::hflip(r.source)), r.expected.at("hflip")));
  check_identical(hwc(F::resized_crop(r.source, 4, 6, 30, 40, 24, 24)), r.expected.at("resized_crop"));
}

TEST_CASE("Rotation reproduces PIL's nearest-neighbour rotate", "[transforms][python]") {
  auto& r = reference();
  for (const std::string angle : {"17_0", "m33_5", "90_0", "180_0", "270_0", "45_0", "1_0"}) {
    std::string text = angle;
    std::replace(text.begin(), text.end(), '_', '.');
    if (text[0] == 'm') text[0] = '-';
    INFO("angle " << text);
    auto ours = hwc(F::rotate(r.source, std::stod(text)));
    auto& expected = r.expected.at("rotate_" + angle);
    const auto differing = (ours != expected).any(2).sum().item<int64_t>();
    INFO(differing << " pixels differ");
    CHECK(differing == 0);
  }
}

TEST_CASE("Colour adjustments match PIL's ImageEnhance and torchvision's adjust_hue",
          "[transforms][python]") {
  auto& r = reference();
  for (const std::string factor : {"0_0", "0_6", "1_4"}) {
    const double f = std::stod(factor.substr(0, 1) + "." + factor.substr(2));
    INFO("factor " << f);
    CHECK(torch::equal(hwc(F::adjust_brightness(r.source, f)), r.expected.at("brightness_" + factor)));
    CHECK(torch::equal(hwc(F::adjust_contrast(r.source, f)), r.expected.at("contrast_" + factor)));
    CHECK(torch::equal(hwc(F::adjust_saturation(r.source, f)), r.expected.at("saturation_" + factor)));
    CHECK(torch::equal(hwc(F::adjust_contrast(r.grey, f)), r.expected.at("grey_contrast_" + factor)));
  }
  for (const std::string hue : {"m0_4", "m0_1", "0_05", "0_3"}) {
    std::string text = hue;
    std::replace(text.begin(), text.end(), '_', '.');
    if (text[0] == 'm') text[0] = '-';
    INFO("hue " << text);
    auto ours = hwc(F::adjust_hue(r.source, std::stod(text)));
    auto& expected = r.expected.at("hue_" + hue);
    INFO("mean difference " << mad(ours, expected));
    CHECK(torch::equal(ours, expected));
  }
}

TEST_CASE("adjust_hue equals torchvision's for every one of the 2^24 colours",
          "[transforms][python][hue]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::run_python("pil_reference.py", "hue_all " + dir.path().string());
  auto expected = sedensenet::test::load_bundle(dir / "hue_all");
  auto index = torch::arange(1 << 24, torch::kInt32);
  auto colours = torch::stack({index.bitwise_right_shift(16).bitwise_and(255),
                               index.bitwise_right_shift(8).bitwise_and(255), index.bitwise_and(255)})
                     .to(torch::kUInt8)
                     .view({3, 4096, 4096});
  for (const auto& [name, factor] : std::vector<std::pair<std::string, double>>{{"plus", 0.37}, {"minus", -0.21}}) {
    INFO("hue factor " << factor);
    auto ours = hwc(F::adjust_hue(colours, factor));
    const auto differing = (ours != expected.at(name)).any(2).sum().item<int64_t>();
    INFO(differing << " colours differ");
    CHECK(differing == 0);
  }
}

TEST_CASE("ToTensor and Normalize are exact", "[transforms][python]") {
  auto& r = reference();
  Rng rng(0);
  auto tensor = ToTensor().apply(r.source, rng);
  CHECK(torch::equal(tensor, r.expected.at("to_tensor")));
  auto normalized = Normalize(imagenet_mean(), imagenet_std()).apply(tensor, rng);
  CHECK(torch::equal(normalized, r.expected.at("normalize")));
  // Grey goes to three equal channels.
  auto grey = ToTensor().apply(r.grey, rng);
  CHECK(grey.size(0) == 3);
  CHECK(torch::equal(grey[0], grey[2]));
  // The fused path the loader uses (writing into a batch slot) gives the same values.
  auto pipeline = compose({std::make_shared<ToTensor>(),
                           std::make_shared<Normalize>(imagenet_mean(), imagenet_std())});
  for (const auto& image : {r.source, r.grey}) {
    auto slot = torch::empty({3, image.size(1), image.size(2)});
    REQUIRE(pipeline->apply_into(image, rng, slot));
    CHECK(torch::equal(slot, pipeline->apply(image, rng)));
  }
  CHECK(torch::equal(pipeline->apply(r.source, rng), r.expected.at("normalize")));
  // With RandomHorizontalFlip before them, the flip joins the same pass: the values and the
  // random draws are those of the steps one by one, flipped or not.
  auto flipping = compose({std::make_shared<Resize>(17), std::make_shared<RandomHorizontalFlip>(),
                           std::make_shared<ToTensor>(),
                           std::make_shared<Normalize>(imagenet_mean(), imagenet_std())});
  int flipped = 0;
  for (uint64_t seed = 0; seed < 16; ++seed) {
    for (const auto& image : {r.source, r.grey}) {
      Rng fused(seed), stepwise(seed), unflipped(seed);
      auto expected = flipping->apply(image, stepwise);
      auto slot = torch::empty(expected.sizes());
      REQUIRE(flipping->apply_into(image, fused, slot));
      CHECK(torch::equal(slot, expected));
      CHECK(fused.uniform() == stepwise.uniform());  // the same number of draws
      auto plain = compose({std::make_shared<Resize>(17), std::make_shared<ToTensor>(),
                            std::make_shared<Normalize>(imagenet_mean(), imagenet_std())})
                       ->apply(image, unflipped);
      if (!torch::equal(expected, plain)) {
        ++flipped;
        CHECK(torch::equal(expected, plain.flip({2})));
      }
    }
  }
  CHECK(flipped > 4);
  CHECK(flipped < 28);
}

TEST_CASE("Random transforms are deterministic for a seed and cover their range",
          "[transforms]") {
  auto image = torch::randint(0, 256, {3, 40, 50}, torch::kUInt8);
  auto pipeline = compose({std::make_shared<RandomResizedCrop>(24),
                           std::make_shared<RandomHorizontalFlip>(),
                           std::make_shared<RandomRotation>(15.0),
                           std::make_shared<ColorJitter>(0.4, 0.4, 0.4, 0.1),
                           std::make_shared<RandomCrop>(24, 3), std::make_shared<ToTensor>(),
                           std::make_shared<Normalize>(imagenet_mean(), imagenet_std())});
  Rng a(42), b(42), c(43);
  auto first = pipeline->apply(image, a);
  CHECK(first.sizes() == torch::IntArrayRef({3, 24, 24}));
  CHECK(torch::equal(first, pipeline->apply(image, b)));
  CHECK_FALSE(torch::equal(first, pipeline->apply(image, c)));
  // RandomHorizontalFlip(0.5) flips about half the time; p = 0 and 1 never / always.
  int flips = 0;
  Rng rng(7);
  for (int i = 0; i < 400; ++i) {
    flips += torch::equal(RandomHorizontalFlip(0.5).apply(image, rng), image) ? 0 : 1;
  }
  CHECK(flips > 150);
  CHECK(flips < 250);
  CHECK(torch::equal(RandomHorizontalFlip(0.0).apply(image, rng), image));
  CHECK(torch::equal(RandomHorizontalFlip(1.0).apply(image, rng), F::hflip(image)));
  CHECK_THAT(pipeline->describe(), Contains("RandomResizedCrop(24)"));
}

TEST_CASE("Transforms reject what they cannot handle, saying why", "[transforms][errors]") {
  Rng rng(0);
  auto as_float = torch::rand({3, 8, 8});
  REQUIRE_THROWS_WITH(Resize(4).apply(as_float, rng), Contains("Resize expects a uint8 image"));
  REQUIRE_THROWS_WITH(Normalize({0.5}, {0.5}).apply(as_float, rng),
                      Contains("one value per channel"));
  REQUIRE_THROWS_WITH(Normalize({0.5, 0.5, 0.5}, {1, 0, 1}), Contains("std values must be > 0"));
  REQUIRE_THROWS_WITH(RandomCrop(64).apply(torch::zeros({3, 8, 8}, torch::kUInt8), rng),
                      Contains("use pad_if_needed"));
  CHECK(RandomCrop(12, 0, true).apply(torch::zeros({3, 8, 8}, torch::kUInt8), rng).sizes() ==
        torch::IntArrayRef({3, 12, 12}));
  REQUIRE_THROWS_WITH(RandomResizedCrop(8, {0.5, 0.2}), Contains("scale must satisfy"));
  REQUIRE_THROWS_WITH(ColorJitter(0, 0, 0, 0.7), Contains("hue must be in [0, 0.5]"));
}

TEST_CASE("ToTensor + Normalize written into a batch slot in one pass: the values of the two steps",
          "[transforms]") {
  auto& r = reference();
  Rng rng(3);
  const auto normalize = std::make_shared<Normalize>(imagenet_mean(), imagenet_std());
  for (const auto& image : {r.source, r.grey}) {
    for (const auto& pipeline :
         {compose({std::make_shared<RandomHorizontalFlip>(1.0), std::make_shared<ToTensor>(),
                   normalize}),
          compose({std::make_shared<ToTensor>()})}) {
      INFO(pipeline->describe() << " on " << image.size(0) << " channel(s)");
      const auto expected = pipeline->apply(image, rng);
      auto slot = torch::full({3, image.size(1), image.size(2)}, -7.0f);
      REQUIRE(pipeline->apply_into(image, rng, slot));
      CHECK(torch::equal(slot, expected));
    }
  }
  // Against torchvision: the flip, ToTensor and Normalize values, each exact.
  auto slot = torch::empty({3, r.source.size(1), r.source.size(2)});
  REQUIRE(compose({std::make_shared<ToTensor>(), normalize})->apply_into(r.source, rng, slot));
  CHECK(torch::equal(slot, r.expected.at("normalize")));
  CHECK(torch::equal(F::hflip(r.source).permute({1, 2, 0}), r.expected.at("hflip")));
}
