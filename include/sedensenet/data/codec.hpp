#pragma once
/// \file
/// Declarations of the library's compiled part (src/data/image_codec.cpp, jpeg_codec.cpp): the
/// stb_image and stb_image_write calls, libjpeg-turbo and zlib. Users call the functions of image.hpp instead.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sedensenet::data::codec {

/// What stb_image reads from a header, without decoding.
struct HeaderInfo {
  bool ok = false;
  std::string error;  ///< stb's reason when !ok
  int width = 0;
  int height = 0;
  int channels = 0;   ///< as stored: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
  bool sixteen_bit = false;
};

/// Pixels as decoded, 8 bits per channel: interleaved in `pixels` with `channels` as stored
/// (stb_image), or planar (channels, height, width) in `planes` (libjpeg-turbo, which writes
/// each row straight into the planes: no interleaved copy of the image).
struct DecodedPixels {
  bool ok = false;
  std::string error;
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;
  std::unique_ptr<uint8_t[]> planes;  ///< when set, `pixels` is not the image
  bool unsupported = false;  ///< a variant this decoder leaves to another
};

HeaderInfo stb_header(const uint8_t* data, size_t size);
/// Whether stb_image's TGA reader accepts the header (TGA has no signature; PIL, too, tries its
/// TGA reader on files no other format claims). A file it accepts is no other stb format.
bool stb_is_tga(const uint8_t* data, size_t size);
DecodedPixels stb_decode(const uint8_t* data, size_t size);
/// JPEG through libjpeg-turbo with PIL's settings, into `planes`: 1 (grey) or 3 (RGB) channels, decoded at
/// 1/`scale_denominator` of the size (1, 2, 4 or 8: libjpeg's DCT scaling, PIL's `draft`).
/// CMYK and YCCK files are converted to RGB as PIL's convert("RGB") does.
DecodedPixels jpeg_decode(const uint8_t* data, size_t size, int scale_denominator = 1);
bool stb_write_png(const std::string& path, int width, int height, int channels,
                   const uint8_t* pixels);
/// Inflates a gzip stream (CRC and length checked); on failure returns {} and sets *error.
std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, std::string* error);

}  // namespace sedensenet::data::codec

namespace sedensenet::detail {
/// Makes LibTorch run intra-op work of the calling thread on that thread alone (OpenMP builds):
/// data-loading workers call it so that they do not each start a team of threads next to the
/// training thread's. Defined in src/util/threading.cpp.
void use_single_intra_op_thread();
}  // namespace sedensenet::detail
