#include "sedensenet/data/image.hpp"

namespace sedensenet::data {

const char* to_string(ImageFormat f) {
  switch (f) {
    case ImageFormat::png: return "PNG";
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::gif: return "GIF";
    case ImageFormat::bmp: return "BMP";
    case ImageFormat::pnm: return "PNM";
    case ImageFormat::psd: return "PSD";
    case ImageFormat::hdr: return "HDR";
    case ImageFormat::tga: return "TGA";
    default: return "unknown";
  }
}

}  // namespace sedensenet::data

namespace sedensenet::data::detail {

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(data, magic, n) == 0;
}

ImageFormat sniff_format(const uint8_t* data, size_t size, const std::string& name) {
  if (starts_with(data, size, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::png;
  if (starts_with(data, size, "\xff\xd8\xff", 3)) return ImageFormat::jpeg;
  if (starts_with(data, size, "GIF87a", 6) || starts_with(data, size, "GIF89a", 6)) {
    return ImageFormat::gif;
  }
  if (starts_with(data, size, "BM", 2)) return ImageFormat::bmp;
  if (starts_with(data, size, "8BPS", 4)) return ImageFormat::psd;
  if (starts_with(data, size, "#?RADIANCE", 10) || starts_with(data, size, "#?RGBE", 6)) {
    return ImageFormat::hdr;
  }
  if (size >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '7') return ImageFormat::pnm;
  auto ext = std::filesystem::path(name).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".tga") return ImageFormat::tga;
  return ImageFormat::unknown;
}

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

uint32_t read_le(const uint8_t* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string format_count(double count) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0f", count);
  return text;
}

std::string truncation_problem(ImageFormat format, const uint8_t* data, size_t size) {
  switch (format) {
    case ImageFormat::jpeg: {
      // Entropy-coded data never contains FF D9 (bytes FF are stuffed), so an end-of-image
      // marker after the first start-of-scan means the scan is complete.
      size_t sos = 0;
      for (size_t i = 2; i + 1 < size; ++i) {
        if (data[i] == 0xFF && data[i + 1] == 0xDA) {
          sos = i;
          break;
        }
      }
      for (size_t i = size - 1; sos != 0 && i > sos + 1; --i) {
        if (data[i - 1] == 0xFF && data[i] == 0xD9) return "";
      }
      return "truncated JPEG (no end-of-image marker after the scan)";
    }
    case ImageFormat::png: {
      const size_t window = std::min<size_t>(size, 64);
      for (size_t i = size - window; i + 4 <= size; ++i) {
        if (std::memcmp(data + i, "IEND", 4) == 0) return "";
      }
      return "truncated PNG (no IEND chunk)";
    }
    case ImageFormat::gif: {
      const size_t window = std::min<size_t>(size, 16);
      for (size_t i = size - window; i < size; ++i) {
        if (data[i] == 0x3B) return "";
      }
      return "truncated GIF (no trailer)";
    }
    case ImageFormat::bmp: {
      if (size < 34) return "truncated BMP header";
      const uint32_t offset = read_le(data + 10, 4);
      const int64_t width = static_cast<int32_t>(read_le(data + 18, 4));
      const int64_t height = std::abs(static_cast<int64_t>(static_cast<int32_t>(read_le(data + 22, 4))));
      const uint32_t bpp = read_le(data + 28, 2);
      const uint32_t compression = read_le(data + 30, 4);
      if (compression == 0 || compression == 3) {  // uncompressed (BI_RGB, BI_BITFIELDS)
        // In double: a hostile header's width * bpp * height overflows 64-bit integers.
        const double row = std::floor((static_cast<double>(width) * bpp + 31) / 32) * 4;
        const double expected = offset + row * static_cast<double>(height);
        if (static_cast<double>(size) < expected) {
          return "truncated BMP (" + std::to_string(size) + " bytes, the header promises " +
                 format_count(expected) + ")";
        }
      }
      return "";
    }
    case ImageFormat::pnm: {
      // Binary P5 (grey) / P6 (RGB): magic, width, height, maxval, one whitespace, pixels.
      if (data[1] != '5' && data[1] != '6') return "";  // stb rejects the others itself
      size_t i = 2;
      int64_t fields[3] = {0, 0, 0};
      for (int f = 0; f < 3; ++f) {
        while (i < size && (std::isspace(data[i]) || data[i] == '#')) {
          if (data[i] == '#') {
            while (i < size && data[i] != '\n') ++i;
          } else {
            ++i;
          }
        }
        while (i < size && std::isdigit(data[i])) {
          if (fields[f] > (int64_t{1} << 31)) return "corrupt PNM header: a size larger than 2^31";
          fields[f] = fields[f] * 10 + (data[i++] - '0');
        }
      }
      ++i;  // the single whitespace before the pixels
      const int64_t channels = data[1] == '6' ? 3 : 1;
      const int64_t bytes_per_sample = fields[2] > 255 ? 2 : 1;
      const double expected = static_cast<double>(i) + static_cast<double>(fields[0]) *
                                                           static_cast<double>(fields[1]) *
                                                           channels * bytes_per_sample;
      if (static_cast<double>(size) < expected) {
        return "truncated PNM (" + std::to_string(size) + " bytes, the header promises " +
               format_count(expected) + ")";
      }
      return "";
    }
    case ImageFormat::tga: {
      if (size < 18) return "truncated TGA header";
      const uint8_t type = data[2];
      if (type == 1 || type == 2 || type == 3) {  // uncompressed colour-mapped, true-colour, grey
        const int64_t id_length = data[0];
        const int64_t map_bytes = data[1] ? read_le(data + 5, 2) * ((data[7] + 7) / 8) : 0;
        const int64_t width = read_le(data + 12, 2), height = read_le(data + 14, 2);
        const int64_t expected = 18 + id_length + map_bytes + width * height * ((data[16] + 7) / 8);
        if (static_cast<int64_t>(size) < expected) {
          return "truncated TGA (" + std::to_string(size) + " bytes, the header promises " +
                 std::to_string(expected) + ")";
        }
      }
      return "";
    }
    default:
      return "";
  }
}

}  // namespace sedensenet::data::detail

namespace sedensenet::data {

ImageHeader read_header(const uint8_t* data, size_t size, const std::string& source,
                        const DecodeOptions& options) {
  if (size == 0) throw ImageError(source, "file is empty (0 bytes)");
  ImageHeader header;
  header.format = detail::sniff_format(data, size, source);
  auto check_pixels = [&](int64_t width, int64_t height) {
    // Headers declare up to 2^32 - 1 per side: the product can overflow int64 (found by fuzzing),
    // so compare in floating point, which is exact enough for a limit check.
    const double pixels = static_cast<double>(width) * static_cast<double>(height);
    if (pixels > static_cast<double>(options.max_pixels())) {
      throw ImageError(source, "image is " + std::to_string(width) + "x" + std::to_string(height) +
                                   " = " + detail::format_count(pixels) + " pixels, above the limit of " +
                                   std::to_string(options.max_pixels()) +
                                   " (DecodeOptions::max_pixels, a guard against decompression "
                                   "bombs); raise the limit if you trust the file");
    }
  };
  // Sizes declared in fixed header fields, checked before stb looks at the file (stb refuses
  // some huge sizes itself, with a less helpful message).
  if (header.format == ImageFormat::png && size >= 24) {
    check_pixels(detail::big_endian_u32(data + 16), detail::big_endian_u32(data + 20));
  } else if (header.format == ImageFormat::gif && size >= 10) {
    check_pixels(detail::read_le(data + 6, 2), detail::read_le(data + 8, 2));
  } else if (header.format == ImageFormat::bmp && size >= 26) {
    check_pixels(std::abs(static_cast<int64_t>(static_cast<int32_t>(detail::read_le(data + 18, 4)))),
                 std::abs(static_cast<int64_t>(static_cast<int32_t>(detail::read_le(data + 22, 4)))));
  }
  // TGA has no signature: a file no signature claims is read as TGA if it has a TGA header (PIL
  // tries its TGA reader on such files too), and is refused otherwise, rather than left to stb,
  // which would also take a JPEG after fill bytes or a Softimage PIC that PIL refuses.
  if (header.format == ImageFormat::unknown || header.format == ImageFormat::tga) {
    if (!codec::stb_is_tga(data, size)) {
      if (size >= 2 && data[0] == 0xFF && data[1] == 0xFF) {
        throw ImageError(source, "not a supported image: it starts with 0xFF fill bytes before "
                                 "the JPEG start marker (a JPEG starts with FF D8 FF), which "
                                 "PIL refuses too; re-save it with an image editor");
      }
      throw ImageError(source, header.format == ImageFormat::tga
                                   ? std::string("corrupt TGA header (unsupported colour map, "
                                                 "image type, size or bits per pixel)")
                                   : std::string("not a supported image (JPEG, PNG, BMP, TGA, GIF, "
                                                 "PNM, PSD, HDR): no known signature"));
    }
    header.format = ImageFormat::tga;
  }
  const auto info = codec::stb_header(data, size);
  if (!info.ok) {
    if (header.format == ImageFormat::pnm && (data[1] != '5' && data[1] != '6')) {
      throw ImageError(source, std::string("PNM variant P") + static_cast<char>(data[1]) +
                                   " (ASCII or PAM) is not supported: convert it to binary "
                                   "PPM/PGM (P6/P5) or PNG");
    }
    throw ImageError(source, std::string("corrupt ") + to_string(header.format) + " header: " +
                                 info.error);
  }
  header.width = info.width;
  header.height = info.height;
  header.channels = info.channels;
  header.sixteen_bit = info.sixteen_bit;
  if (header.width <= 0 || header.height <= 0) {
    throw ImageError(source, "image has no pixels (" + std::to_string(header.width) + "x" +
                                 std::to_string(header.height) + ")");
  }
  check_pixels(header.width, header.height);
  return header;
}

int jpeg_scale_denominator(const ImageHeader& header, int64_t min_size) {
  if (min_size <= 0) return 1;
  const int64_t shorter = std::min(header.width, header.height);
  // The largest 1/d whose shorter side (libjpeg rounds up) is still at least min_size.
  for (int d : {8, 4, 2}) {
    if ((shorter + d - 1) / d >= min_size) return d;
  }
  return 1;
}

torch::Tensor decode_image(const uint8_t* data, size_t size, const std::string& source,
                           const DecodeOptions& options) {
  const auto header = read_header(data, size, source, options);
  const auto truncated = detail::truncation_problem(header.format, data, size);
  if (!truncated.empty()) throw ImageError(source, truncated);

  // JPEG through libjpeg-turbo, as PIL decodes it (CMYK JPEGs through stb_image); the rest
  // through stb_image.
  codec::DecodedPixels decoded;
  if (header.format == ImageFormat::jpeg) {
    decoded = codec::jpeg_decode(data, size, jpeg_scale_denominator(header, options.min_size()));
  }
  if (header.format != ImageFormat::jpeg || decoded.unsupported) {
    decoded = codec::stb_decode(data, size);
  }
  if (!decoded.ok) {
    throw ImageError(source, std::string("corrupt ") + to_string(header.format) + " data: " +
                                 decoded.error);
  }
  if (decoded.planes) {
    // Planar already: the tensor takes the buffer over.
    return torch::from_blob(
        decoded.planes.release(), {decoded.channels, decoded.height, decoded.width},
        [](void* planes) { delete[] static_cast<uint8_t*>(planes); }, torch::kUInt8);
  }
  auto hwc = torch::from_blob(decoded.pixels.data(),
                              {decoded.height, decoded.width, decoded.channels}, torch::kUInt8);
  // A new tensor: `decoded` is freed on return.
  return image_from_pixels(hwc, options.alpha());
}

torch::Tensor image_from_pixels(const torch::Tensor& hwc, Alpha alpha) {
  TORCH_CHECK(hwc.dim() == 3 && hwc.scalar_type() == torch::kUInt8 && hwc.size(2) >= 1 &&
                  hwc.size(2) <= 4,
              "image_from_pixels: expected uint8 pixels (H, W, C) with C = 1 to 4, got ",
              hwc.sizes(), " ", hwc.scalar_type());
  const int64_t channels = hwc.size(2);
  const int64_t keep = channels <= 2 ? 1 : 3;
  const bool has_alpha = channels == 2 || channels == 4;
  if (has_alpha && alpha == Alpha::white) {
    // colour * a + 255 * (1 - a), in float, rounded to the nearest.
    const auto chw = hwc.permute({2, 0, 1}).to(torch::kFloat);
    const auto a = chw.narrow(0, keep, 1) / 255.0f;
    return (chw.narrow(0, 0, keep) * a + 255.0f * (1.0f - a)).round_().clamp_(0, 255).to(torch::kUInt8);
  }
  // Drop alpha. Always a copy (contiguous() alone would not copy a single channel).
  auto image = torch::empty({keep, hwc.size(0), hwc.size(1)}, torch::kUInt8);
  if (hwc.is_contiguous()) {
    // Interleaved to planar by hand: a third of the time of LibTorch's strided copy, which
    // matters on every decoded photo.
    const int64_t pixels = hwc.size(0) * hwc.size(1);
    const uint8_t* src = hwc.data_ptr<uint8_t>();
    uint8_t* dst = image.data_ptr<uint8_t>();
    if (channels == 1) {
      std::memcpy(dst, src, static_cast<size_t>(pixels));
    } else if (keep == 1) {
      for (int64_t i = 0; i < pixels; ++i) dst[i] = src[i * channels];
    } else if (channels == 3) {
      for (int64_t i = 0; i < pixels; ++i) {
        dst[i] = src[3 * i];
        dst[pixels + i] = src[3 * i + 1];
        dst[2 * pixels + i] = src[3 * i + 2];
      }
    } else {
      for (int64_t i = 0; i < pixels; ++i) {
        dst[i] = src[4 * i];
        dst[pixels + i] = src[4 * i + 1];
        dst[2 * pixels + i] = src[4 * i + 2];
      }
    }
    return image;
  }
  image.copy_(hwc.narrow(2, 0, keep).permute({2, 0, 1}));
  return image;
}

torch::Tensor decode_image(const std::vector<uint8_t>& bytes, const std::string& source,
                           const DecodeOptions& options) {
  return decode_image(bytes.data(), bytes.size(), source, options);
}

std::vector<uint8_t> read_file(const std::filesystem::path& path,
                               int64_t max_bytes) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) throw ImageError(path.string(), "file not found");
  if (std::filesystem::is_directory(status)) throw ImageError(path.string(), "is a directory");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw ImageError(path.string(), "cannot be opened for reading (permissions?)");
  const auto size = static_cast<int64_t>(in.tellg());
  if (size < 0) throw ImageError(path.string(), "cannot be read");
  if (size > max_bytes) {
    throw ImageError(path.string(), "file is " + std::to_string(size) +
                                        " bytes, above the limit of " + std::to_string(max_bytes));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) {
    throw ImageError(path.string(), "read error");
  }
  return bytes;
}

torch::Tensor read_image(const std::filesystem::path& path,
                         const DecodeOptions& options) {
  const auto bytes = read_file(path, options.max_file_bytes());
  return decode_image(bytes, path.string(), options);
}

torch::Tensor to_rgb(const torch::Tensor& image) {
  TORCH_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3),
              "to_rgb expects (1, H, W) or (3, H, W), got ", image.sizes());
  return image.size(0) == 1 ? image.expand({3, image.size(1), image.size(2)}).contiguous() : image;
}

void write_png(const std::filesystem::path& path, const torch::Tensor& image) {
  TORCH_CHECK(image.dim() == 3 && image.size(0) >= 1 && image.size(0) <= 4 &&
                  image.scalar_type() == torch::kUInt8,
              "write_png expects a uint8 tensor (1 to 4 channels: grey, grey + alpha, RGB, RGBA; H, W), got ",
              image.sizes(), " ",
              image.scalar_type());
  auto hwc = image.permute({1, 2, 0}).contiguous();
  if (!codec::stb_write_png(path.string(), static_cast<int>(image.size(2)),
                            static_cast<int>(image.size(1)), static_cast<int>(image.size(0)),
                            hwc.data_ptr<uint8_t>())) {
    throw ImageError(path.string(), "cannot write the PNG file (folder missing or not writable?)");
  }
}

std::vector<uint8_t> gunzip(const std::vector<uint8_t>& bytes, const std::string& source) {
  std::string error;
  auto out = codec::gunzip(bytes.data(), bytes.size(), &error);
  if (!error.empty()) throw ImageError(source, error);
  return out;
}

}  // namespace sedensenet::data


