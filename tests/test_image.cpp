// Decoding: every format against PIL, exact (JPEG too: libjpeg-turbo with PIL's settings), and
// every kind of bad file gives its documented error.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdio>  // before jpeglib.h
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <jpeglib.h>

#include "sedensenet/data/image.hpp"
#include "support/bundle.hpp"
#include "support/python.hpp"

using namespace sedensenet::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
torch::Tensor decode_hwc(const fs::path& path) {
  return to_rgb(read_image(path)).permute({1, 2, 0}).contiguous();
}

double mean_abs_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().mean().item<double>();
}

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

/// A progressive JPEG of `image` (uint8 (3, H, W)), through libjpeg's own encoder.
std::vector<uint8_t> encode_progressive_jpeg(const torch::Tensor& image) {
  auto hwc = image.permute({1, 2, 0}).contiguous();
  jpeg_compress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = static_cast<JDIMENSION>(image.size(2));
  info.image_height = static_cast<JDIMENSION>(image.size(1));
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_simple_progression(&info);
  jpeg_start_compress(&info, TRUE);
  const auto stride = static_cast<int64_t>(image.size(2)) * 3;
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = hwc.data_ptr<uint8_t>() + info.next_scanline * stride;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::vector<uint8_t> bytes(buffer, buffer + size);
  std::free(buffer);
  return bytes;
}

/// `jpeg` with its last scan (SOS marker to the next marker) repeated until it has `scans` scans.
std::vector<uint8_t> with_repeated_last_scan(const std::vector<uint8_t>& jpeg, int scans) {
  std::vector<size_t> starts;  // SOS markers
  for (size_t i = 0; i + 1 < jpeg.size(); ++i) {
    if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xDA) starts.push_back(i);
  }
  REQUIRE(!starts.empty());
  const size_t first = starts.back();
  size_t end = first + 2;
  while (end + 1 < jpeg.size() && !(jpeg[end] == 0xFF && jpeg[end + 1] != 0x00 &&
                                     (jpeg[end + 1] < 0xD0 || jpeg[end + 1] > 0xD7))) {
    ++end;
  }
  const std::vector<uint8_t> scan(jpeg.begin() + static_cast<long>(first),
                                  jpeg.begin() + static_cast<long>(end));
  std::vector<uint8_t> out(jpeg.begin(), jpeg.begin() + static_cast<long>(end));
  for (int i = static_cast<int>(starts.size()); i < scans; ++i) out.insert(out.end(), scan.begin(), scan.end());
  out.insert(out.end(), jpeg.begin() + static_cast<long>(end), jpeg.end());
  return out;
}

std::vector<uint8_t> prefix(const std::vector<uint8_t>& bytes, size_t n) {
  return {bytes.begin(), bytes.begin() + static_cast<long>(std::min(n, bytes.size()))};
}
}  // namespace

TEST_CASE("Every format decodes as PIL's convert('RGB') does", "[image][pil][python]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::run_python("pil_reference.py", "formats " + dir.path().string());
  auto expected = sedensenet::test::load_bundle(dir / "decoded");
  const std::vector<std::string> exact = {
      "rgb.png", "grey.png", "grey_alpha.png", "rgba.png", "palette.png", "rgb.bmp", "grey.bmp",
      "rgb.ppm", "grey.pgm", "rgb.tga", "rgb_tga.img", "palette.gif", "q75.jpg", "q95.jpg", "q90_444.jpg",
      "q90_422.jpg", "grey.jpg", "progressive.jpg", "photo.jpg", "photo_odd.jpg", "cmyk.jpg"};
  for (const auto& name : exact) {
    INFO(name);
    auto key = name;
    std::replace(key.begin(), key.end(), '.', '_');
    auto ours = decode_hwc(dir / name);
    REQUIRE(ours.sizes() == expected.at(key).sizes());
    const auto differing = (ours != expected.at(key)).sum().item<int64_t>();
    INFO(differing << " values differ from PIL's, mean absolute difference "
                   << mean_abs_difference(ours, expected.at(key)));
    CHECK(differing == 0);
  }
  // What PIL cannot identify, we refuse too, naming the file (stb_image alone would decode some).
  std::ifstream refused_list(dir / "refused.txt");
  std::vector<std::string> refused;
  for (std::string name; std::getline(refused_list, name);) {
    if (!name.empty()) refused.push_back(name);
  }
  REQUIRE(refused.size() == 3);
  for (const auto& name : refused) {
    INFO(name);
    REQUIRE_THROWS_WITH(read_image(dir / name), Contains(name) && Contains("not a supported image"));
  }
  REQUIRE_THROWS_WITH(read_image(dir / "fill.jpg"), Contains("fill bytes before the JPEG start marker"));
  // Decode-time downscaling (DecodeOptions::min_size): libjpeg's DCT scaling, the pixels of PIL's
  // draft at the same scale. The scale is the largest that keeps the shorter side >= min_size.
  const auto photo = read_file(dir / "photo.jpg");  // 501 x 375
  const std::pair<int64_t, int> scales[] = {{189, 1}, {188, 2}, {95, 2}, {94, 4}, {48, 4}, {47, 8}, {1, 8}};
  for (const auto& [min_size, denominator] : scales) {
    INFO("min_size " << min_size);
    auto image = decode_image(photo, "photo.jpg", DecodeOptions().min_size(min_size));
    CHECK(image.size(1) == (375 + denominator - 1) / denominator);
    CHECK(image.size(2) == (501 + denominator - 1) / denominator);
    CHECK(std::min(image.size(1), image.size(2)) >= min_size);
    if (denominator > 1) {
      CHECK(torch::equal(image.permute({1, 2, 0}),
                         expected.at("photo_jpg_draft_" + std::to_string(denominator))));
    }
  }
  // Other formats are not scaled.
  CHECK(read_image(dir / "rgb.png").sizes() == decode_image(read_file(dir / "rgb.png"), "rgb.png",
                                                            DecodeOptions().min_size(2)).sizes());
  // Grey stays one channel until ToTensor (a third of the work); values are PIL's.
  CHECK(read_image(dir / "grey.png").size(0) == 1);
  CHECK(read_image(dir / "grey_alpha.png").size(0) == 1);
  CHECK(read_image(dir / "rgba.png").size(0) == 3);
  // 16-bit grey PNG: reduced to the high byte (PIL would clip values above 255 to white).
  auto grey16 = read_image(dir / "grey16.png");
  CHECK(torch::equal(grey16[0].to(torch::kLong), expected.at("grey16_png_raw").floor_divide(256)));
}

TEST_CASE("Images written with stb_image_write read back identically, and PIL agrees",
          "[image][pil][python]") {
  sedensenet::test::TempDir dir;
  torch::manual_seed(0);
  auto rgb = torch::randint(0, 256, {3, 19, 23}, torch::kUInt8);
  auto grey = torch::randint(0, 256, {1, 19, 23}, torch::kUInt8);
  write_png(dir / "rgb.png", rgb);
  write_png(dir / "grey.png", grey);
  CHECK(torch::equal(read_image(dir / "rgb.png"), rgb));
  CHECK(torch::equal(read_image(dir / "grey.png"), grey));
  sedensenet::test::run_python("pil_reference.py", "decode " + dir.path().string());
  auto pil = sedensenet::test::load_bundle(dir / "decoded");
  CHECK(torch::equal(pil.at("rgb_png"), rgb.permute({1, 2, 0})));
  CHECK(torch::equal(pil.at("grey_png"), to_rgb(grey).permute({1, 2, 0})));
}

TEST_CASE("Bad files give errors that name the file and the problem", "[image][errors]") {
  sedensenet::test::TempDir dir;
  auto good = dir / "good.png";
  write_png(good, torch::randint(0, 256, {3, 32, 32}, torch::kUInt8));
  const auto png = read_file(good);

  SECTION("zero bytes") {
    write_bytes(dir / "empty.png", {});
    REQUIRE_THROWS_WITH(read_image(dir / "empty.png"),
                        Contains("empty.png") && Contains("file is empty (0 bytes)"));
  }
  SECTION("text behind an image extension") {
    std::ofstream(dir / "notes.jpg") << "these are not pixels\n";
    REQUIRE_THROWS_WITH(read_image(dir / "notes.jpg"),
                        Contains("notes.jpg") && Contains("not a supported image"));
    // A .tga name is no signature: the header is checked as TGA's.
    std::ofstream(dir / "notes.tga") << "these are not pixels\n";
    REQUIRE_THROWS_WITH(read_image(dir / "notes.tga"),
                        Contains("notes.tga") && Contains("corrupt TGA header"));
  }
  SECTION("corrupt data after a valid signature") {
    auto bytes = png;
    for (size_t i = 40; i < bytes.size() - 20; ++i) bytes[i] ^= 0x5A;
    write_bytes(dir / "corrupt.png", bytes);
    REQUIRE_THROWS_AS(read_image(dir / "corrupt.png"), ImageError);
  }
  SECTION("truncated files of every format with a length check") {
    write_bytes(dir / "cut.png", prefix(png, png.size() / 2));
    REQUIRE_THROWS_WITH(read_image(dir / "cut.png"), Contains("cut.png"));
    // JPEG, BMP, PPM, GIF, TGA through PIL-independent writers: stb for BMP/TGA, raw PPM.
    std::vector<uint8_t> ppm;
    const std::string header = "P6\n16 16\n255\n";
    ppm.insert(ppm.end(), header.begin(), header.end());
    ppm.resize(header.size() + 16 * 16 * 3, 128);
    write_bytes(dir / "whole.ppm", ppm);
    CHECK(read_image(dir / "whole.ppm").sizes() == torch::IntArrayRef({3, 16, 16}));
    write_bytes(dir / "cut.ppm", prefix(ppm, ppm.size() - 10));
    REQUIRE_THROWS_WITH(read_image(dir / "cut.ppm"), Contains("truncated PNM"));

    std::vector<uint8_t> jpeg = {0xFF, 0xD8, 0xFF, 0xE0};
    write_bytes(dir / "cut.jpg", jpeg);
    REQUIRE_THROWS_AS(read_image(dir / "cut.jpg"), ImageError);
  }
  SECTION("decompression bomb: rejected from the header, before decoding") {
    // A PNG header that claims 100000 x 100000 pixels (10^10), with almost no data.
    auto bytes = prefix(png, 33);
    auto put32 = [&](size_t at, uint32_t v) {
      for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
    };
    put32(16, 100000);
    put32(20, 100000);
    write_bytes(dir / "bomb.png", bytes);
    REQUIRE_THROWS_WITH(read_image(dir / "bomb.png"),
                        Contains("bomb.png") && Contains("100000x100000") &&
                            Contains("above the limit of 89478485"));
    // 10000 x 10000: small enough for stb, still above the default limit.
    put32(16, 10000);
    put32(20, 10000);
    write_bytes(dir / "bomb2.png", bytes);
    REQUIRE_THROWS_WITH(read_image(dir / "bomb2.png"), Contains("10000x10000 = 100000000 pixels"));
    // Sides near 2^32 (the product overflows 64-bit integers; found by fuzzing).
    put32(16, 4109694196u);
    put32(20, 4109694196u);
    write_bytes(dir / "bomb3.png", bytes);
    REQUIRE_THROWS_WITH(read_image(dir / "bomb3.png"),
                        Contains("4109694196x4109694196 = 16889586384636086272 pixels, above the limit"));
    // The limit is configurable.
    REQUIRE_THROWS_WITH(read_image(good, DecodeOptions().max_pixels(1000)),
                        Contains("above the limit of 1000"));
  }
  SECTION("missing and unreadable paths") {
    REQUIRE_THROWS_WITH(read_image(dir / "nope.png"), Contains("nope.png: file not found"));
    fs::create_directory(dir / "folder.png");
    REQUIRE_THROWS_WITH(read_image(dir / "folder.png"), Contains("is a directory"));
    fs::create_symlink(dir / "gone.png", dir / "dangling.png");
    REQUIRE_THROWS_WITH(read_image(dir / "dangling.png"), Contains("file not found"));
  }
  SECTION("ASCII PNM is refused with what to do") {
    std::ofstream(dir / "ascii.ppm") << "P3\n2 1\n255\n255 0 0 0 255 0\n";
    REQUIRE_THROWS_WITH(read_image(dir / "ascii.ppm"), Contains("P3") && Contains("not supported"));
  }
}

TEST_CASE("A progressive JPEG with a hostile number of scans is refused, an ordinary one decodes",
          "[image][errors]") {
  auto image = torch::randint(0, 256, {3, 24, 40}, torch::kUInt8);
  const auto ordinary = encode_progressive_jpeg(image);
  auto decoded = decode_image(ordinary, "ordinary.jpg");
  CHECK(decoded.sizes() == image.sizes());
  // libjpeg reads repeated scans (with a warning) and would go through every one of them.
  const auto many = with_repeated_last_scan(ordinary, 500);
  CHECK(decode_image(many, "many.jpg").sizes() == image.sizes());  // at the limit: decoded
  const auto hostile = with_repeated_last_scan(ordinary, 501);
  REQUIRE_THROWS_WITH(decode_image(hostile, "hostile.jpg"),
                      Contains("hostile.jpg") && Contains("more than 500 scans"));
  REQUIRE_THROWS_WITH(decode_image(with_repeated_last_scan(ordinary, 5000), "huge.jpg"),
                      Contains("more than 500 scans"));
}

TEST_CASE("decode_image works on in-memory data and read_header reports format and size",
          "[image]") {
  sedensenet::test::TempDir dir;
  auto image = torch::randint(0, 256, {3, 8, 8}, torch::kUInt8);
  write_png(dir / "a.png", image);
  auto bytes = read_file(dir / "a.png");
  auto decoded = decode_image(bytes, "in-memory.png");
  CHECK(torch::equal(decoded, image));
  auto header = read_header(bytes.data(), bytes.size(), "in-memory.png");
  CHECK(header.format == ImageFormat::png);
  CHECK(header.width == 8);
  CHECK(header.height == 8);
}

TEST_CASE("gunzip checks integrity", "[image][gzip]") {
  const auto bytes = read_file("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
  auto labels = gunzip(bytes, "t10k-labels");
  CHECK(labels.size() == 10008);
  auto cut = std::vector<uint8_t>(bytes.begin(), bytes.begin() + bytes.size() / 2);
  REQUIRE_THROWS_WITH(gunzip(cut, "cut.gz"), Contains("cut.gz") && Contains("truncated"));
  auto flipped = bytes;
  flipped[flipped.size() - 6] ^= 0xFF;  // CRC
  REQUIRE_THROWS_WITH(gunzip(flipped, "flipped.gz"), Contains("corrupt"));
}

TEST_CASE("Transparent images: alpha dropped (torchvision's) or composited over white", "[image][alpha]") {
  sedensenet::test::TempDir dir;
  torch::manual_seed(3);
  const auto rgba = torch::randint(0, 256, {4, 6, 5}, torch::kUInt8);
  rgba[3][0][0] = 0;    // fully transparent
  rgba[3][0][1] = 255;  // opaque
  write_png(dir / "rgba.png", rgba);
  const auto grey_alpha = torch::stack({rgba[0], rgba[3]});
  write_png(dir / "la.png", grey_alpha);

  const auto composite = [](const torch::Tensor& colour, const torch::Tensor& alpha) {
    const auto a = alpha.to(torch::kFloat) / 255.0f;
    return (colour.to(torch::kFloat) * a + 255.0f * (1.0f - a)).round().to(torch::kUInt8);
  };
  // drop: the stored colours (PIL's convert("RGB")).
  CHECK(torch::equal(read_image(dir / "rgba.png"), rgba.narrow(0, 0, 3)));
  CHECK(torch::equal(read_image(dir / "la.png"), grey_alpha.narrow(0, 0, 1)));
  // white: colour * a + 255 * (1 - a); a transparent pixel is white, an opaque one its colour.
  const auto white = read_image(dir / "rgba.png", DecodeOptions().alpha(Alpha::white));
  CHECK(torch::equal(white, composite(rgba.narrow(0, 0, 3), rgba[3].unsqueeze(0))));
  CHECK(white.select(1, 0).select(1, 0).eq(255).all().item<bool>());
  CHECK(torch::equal(white.select(1, 0).select(1, 1), rgba.narrow(0, 0, 3).select(1, 0).select(1, 1)));
  CHECK(torch::equal(read_image(dir / "la.png", DecodeOptions().alpha(Alpha::white)),
                     composite(grey_alpha.narrow(0, 0, 1), grey_alpha[1].unsqueeze(0))));
  // Images without alpha are the same either way.
  write_png(dir / "rgb.png", rgba.narrow(0, 0, 3).contiguous());
  CHECK(torch::equal(read_image(dir / "rgb.png", DecodeOptions().alpha(Alpha::white)), rgba.narrow(0, 0, 3)));
}
