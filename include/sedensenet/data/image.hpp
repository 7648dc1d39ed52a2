#pragma once
/// \file
/// Image files to tensors: decoding with libjpeg-turbo (JPEG, as PIL does) and stb_image (PNG,
/// BMP, TGA, GIF first frame, binary PNM, PSD, HDR), the checks that keep hostile or broken files from crashing a run, and PNG
/// writing.
///
/// A decoded image is a uint8 tensor (C, H, W) with C = 3 (RGB) or C = 1 (grey, kept as one
/// channel so that transforms do a third of the work; `to_rgb` or the `ToTensor` transform repeat
/// it, which gives exactly PIL's `convert("RGB")`).

#include <torch/arg.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "sedensenet/data/codec.hpp"

namespace sedensenet::data {

/// A file that cannot be used as an image: which file, and why.
class ImageError : public std::runtime_error {
 public:
  ImageError(std::string source, std::string reason)
      : std::runtime_error(source + ": " + reason), source_(std::move(source)),
        reason_(std::move(reason)) {}
  /// The file (or the name given for in-memory data).
  const std::string& source() const { return source_; }
  /// What is wrong with it.
  const std::string& reason() const { return reason_; }

 private:
  std::string source_;
  std::string reason_;
};

/// Options of `decode_image` / `read_image`.
/// What decoding does with an image's alpha (transparency) channel.
enum class Alpha {
  drop,   ///< discard it, as PIL's convert("RGB") and so torchvision do: pixels keep the colour
          ///< stored under them, which for many icons is one flat colour (the shape is in alpha)
  white,  ///< composite over white, as an image viewer shows it: colour * a + 255 * (1 - a)
};
inline const char* to_string(Alpha a) { return a == Alpha::drop ? "drop" : "white"; }
inline std::vector<Alpha> enum_values(Alpha) { return {Alpha::drop, Alpha::white}; }

struct DecodeOptions {
  /// Largest width * height accepted, checked from the header before any pixel is decoded (a
  /// defence against decompression bombs). Default: PIL's limit, 89,478,485 pixels.
  TORCH_ARG(int64_t, max_pixels) = 89478485;
  /// Largest file size in bytes read from disk (default 1 GiB).
  TORCH_ARG(int64_t, max_file_bytes) = int64_t{1} << 30;
  /// Images with an alpha channel (grey + alpha, RGBA): drop it (torchvision's) or composite
  /// over white.
  TORCH_ARG(Alpha, alpha) = Alpha::drop;
  /// Decode-time downscaling: the shorter side the image is needed at. A JPEG whose shorter
  /// side is at least twice this is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT
  /// scaling, as PIL's `draft`), never below it: several times faster on photos, pixels no
  /// longer torchvision's (docs/benchmarks.md, "Loading", says how far). 0 (the default) decodes at full size.
  TORCH_ARG(int64_t, min_size) = 0;
};

/// Image formats recognised from their first bytes.
enum class ImageFormat { unknown, png, jpeg, gif, bmp, pnm, psd, hdr, tga };

const char* to_string(ImageFormat f);

namespace detail {

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n);

/// Format from magic bytes; TGA has none, so it is assumed from the file name's extension.
/// `read_header` reads a file as TGA only if it has a TGA header, and reads a file that no
/// signature claims (`unknown`) as TGA if it has one, as PIL does; anything else is refused.
ImageFormat sniff_format(const uint8_t* data, size_t size, const std::string& name);

uint32_t big_endian_u32(const uint8_t* p);

uint32_t read_le(const uint8_t* p, int bytes);

/// A byte or pixel count computed in double (exact below 2^53), as an integer string.
std::string format_count(double count);

/// Decoders read zeros past the end of the data rather than fail on some formats; these checks
/// turn a cut-off file into an error instead of an image with a grey or black tail.
/// Returns an empty string when the data is complete, else the reason.
std::string truncation_problem(ImageFormat format, const uint8_t* data, size_t size);
}  // namespace detail

/// Width, height and stored channels of encoded image data, from its header only.
struct ImageHeader {
  ImageFormat format = ImageFormat::unknown;
  int64_t width = 0;
  int64_t height = 0;
  int channels = 0;  ///< as stored: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
  bool sixteen_bit = false;
};

/// Reads the header of encoded image data; throws `ImageError` naming `source` if the data is
/// empty, not a supported image, or larger than `options.max_pixels`.
ImageHeader read_header(const uint8_t* data, size_t size, const std::string& source,
                        const DecodeOptions& options = {});

/// The JPEG scale 1/d (d = 1, 2, 4 or 8) that `decode_image` uses for an image of `header`'s
/// size when `DecodeOptions::min_size` is `min_size` (1 when it is 0).
int jpeg_scale_denominator(const ImageHeader& header, int64_t min_size);

/// Decodes encoded image data into a uint8 tensor (C, H, W), C = 1 for grey and grey+alpha
/// images, 3 otherwise. Alpha is dropped (as PIL's `convert("RGB")` does); 16-bit images are
/// reduced to 8 bits (high byte); a GIF gives its first frame. Throws `ImageError` naming
/// `source` for empty, unsupported, oversized, corrupt or truncated data.
torch::Tensor decode_image(const uint8_t* data, size_t size, const std::string& source,
                           const DecodeOptions& options = {});

/// `decode_image` on a `std::vector` of bytes.
torch::Tensor decode_image(const std::vector<uint8_t>& bytes, const std::string& source,
                           const DecodeOptions& options = {});

/// Pixels as a decoded image: `hwc` is uint8 (H, W, C), any strides, with C = 1 (grey), 2 (grey,
/// alpha), 3 (RGB) or 4 (RGBA). Returns an owned (1 or 3, H, W) image, alpha dropped or composited
/// over white as `alpha` says: what `decode_image` returns for a file with those pixels.
torch::Tensor image_from_pixels(const torch::Tensor& hwc, Alpha alpha = Alpha::drop);

/// Reads a whole file; throws `ImageError` naming the file if it is missing, unreadable, or
/// larger than `max_bytes`.
std::vector<uint8_t> read_file(const std::filesystem::path& path,
                               int64_t max_bytes = int64_t{1} << 30);

/// Reads and decodes an image file (see `decode_image`).
torch::Tensor read_image(const std::filesystem::path& path,
                         const DecodeOptions& options = {});

/// A (1, H, W) grey image as (3, H, W) RGB, other images unchanged: PIL's `convert("RGB")`.
torch::Tensor to_rgb(const torch::Tensor& image);

/// Writes a uint8 image (C, H, W) as PNG: C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA; throws
/// `ImageError` on failure.
void write_png(const std::filesystem::path& path, const torch::Tensor& image);

/// Inflates gzip data (CRC checked); throws `ImageError` naming `source` if corrupt or truncated.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& bytes, const std::string& source);

}  // namespace sedensenet::data
