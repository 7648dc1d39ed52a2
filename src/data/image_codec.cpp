// stb_image's and stb_image_write's implementation units (the vendored copy in third_party/stb,
// with the fuzz-found checks) and zlib for gzip, behind the declarations in
// sedensenet/data/codec.hpp. Compiled alone: stb's code is not part of the unity build.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "sedensenet/data/codec.hpp"

namespace sedensenet::data::codec {

HeaderInfo stb_header(const uint8_t* data, size_t size) {
  HeaderInfo info;
  if (size > static_cast<size_t>(INT32_MAX)) {
    info.error = "file larger than 2 GiB";
    return info;
  }
  const int length = static_cast<int>(size);
  int width = 0, height = 0, channels = 0;
  if (stbi_info_from_memory(data, length, &width, &height, &channels) == 0) {
    const char* reason = stbi_failure_reason();
    info.error = reason ? reason : "unknown image type";
    return info;
  }
  info.ok = true;
  info.width = width;
  info.height = height;
  info.channels = channels;
  info.sixteen_bit = stbi_is_16_bit_from_memory(data, length) != 0;
  return info;
}

bool stb_is_tga(const uint8_t* data, size_t size) {
  if (size > static_cast<size_t>(INT32_MAX)) return false;
  stbi__context context;
  stbi__start_mem(&context, data, static_cast<int>(size));
  return stbi__tga_test(&context) != 0;
}

DecodedPixels stb_decode(const uint8_t* data, size_t size) {
  DecodedPixels out;
  int width = 0, height = 0, channels = 0;
  // Native channel count (0 = as stored): grey stays one channel; the caller drops alpha.
  stbi_uc* pixels =
      stbi_load_from_memory(data, static_cast<int>(size), &width, &height, &channels, 0);
  if (pixels == nullptr) {
    const char* reason = stbi_failure_reason();
    out.error = reason ? reason : "decoding failed";
    return out;
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> owner(pixels, stbi_image_free);
  out.ok = true;
  out.width = width;
  out.height = height;
  out.channels = channels;
  out.pixels.assign(pixels, pixels + static_cast<size_t>(width) * height * channels);
  return out;
}

bool stb_write_png(const std::string& path, int width, int height, int channels,
                   const uint8_t* pixels) {
  return stbi_write_png(path.c_str(), width, height, channels, pixels, width * channels) != 0;
}

std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, std::string* error) {
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) {  // 16: expect a gzip wrapper
    *error = "zlib initialisation failed";
    return {};
  }
  std::vector<uint8_t> out;
  stream.next_in = const_cast<Bytef*>(data);
  stream.avail_in = static_cast<uInt>(size);
  constexpr size_t kChunk = 1 << 20;
  int status = Z_OK;
  while (status == Z_OK) {
    const size_t used = out.size();
    out.resize(used + kChunk);
    stream.next_out = out.data() + used;
    stream.avail_out = static_cast<uInt>(kChunk);
    status = inflate(&stream, Z_NO_FLUSH);
    out.resize(used + kChunk - stream.avail_out);
    if (status == Z_BUF_ERROR && stream.avail_in == 0) break;  // input ended early
  }
  inflateEnd(&stream);
  if (status != Z_STREAM_END) {
    *error = status == Z_DATA_ERROR ? std::string("corrupt gzip data (") +
                                          (stream.msg ? stream.msg : "bad data") + ")"
                                    : "truncated gzip data";
    return {};
  }
  return out;
}


}  // namespace sedensenet::data::codec
