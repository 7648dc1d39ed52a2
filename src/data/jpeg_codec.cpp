// JPEG decoding through libjpeg-turbo's libjpeg API, set up as PIL's JpegDecode.c sets it up
// (integer DCT, fancy upsampling, YCbCr to RGB in the library, grey kept as one channel), so that
// the pixels are PIL's. Each decoded row goes straight into the image's planes.
//
// libjpeg reports fatal errors through error_exit, which must not return: it longjmps back into
// run_decoder. That function creates nothing with a destructor after its setjmp, and reaches
// everything it fills through pointers, so the jump skips no C++ object's clean-up.
#include <algorithm>
#include <array>
#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE and size_t
#include <cstring>
#include <string>

#include <jpeglib.h>
#include <jerror.h>  // message codes (JWRN_JPEG_EOF)

#include "sedensenet/data/codec.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <tmmintrin.h>
#endif

namespace sedensenet::data::codec {
namespace {

struct ErrorManager {
  jpeg_error_mgr base;  // first member: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool premature_end;
};

[[noreturn]] void on_error(j_common_ptr info) {
  auto* errors = reinterpret_cast<ErrorManager*>(info->err);
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings (level -1) about corrupt data are ignored as PIL ignores them, except the end of the
// data before the end of the image, which PIL reports as a truncated file.
void on_message(j_common_ptr info, int level) {
  auto* errors = reinterpret_cast<ErrorManager*>(info->err);
  if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) errors->premature_end = true;
}

/// The most scans a progressive JPEG may have. Each scan is a pass over all the image's
/// coefficients, so a small hostile file with thousands of (bogus, repeated) scans keeps a worker
/// busy: a flat 4096x4096 image with a 33-byte scan repeated to 5000 scans is a 257 KB file that
/// PIL takes 86 s to decode. Ordinary progressive files have about 10 scans. libjpeg-turbo's own tools
/// use this limit for untrusted input (djpeg and tjbench `-maxscans`/`-limitscans`).
constexpr int kMaxScans = 500;

// Called by libjpeg as it reads the input: stops at the scan after kMaxScans, through the same
// jump as a fatal error.
void on_progress(j_common_ptr info) {
  auto* decompress = reinterpret_cast<j_decompress_ptr>(info);
  if (!info->is_decompressor || decompress->input_scan_number <= kMaxScans) return;
  auto* errors = reinterpret_cast<ErrorManager*>(info->err);
  std::snprintf(errors->message, sizeof errors->message,
                "progressive JPEG with more than %d scans (ordinary files have about 10); "
                "refused as a possible denial of service",
                kMaxScans);
  std::longjmp(errors->jump, 1);
}

#if defined(__x86_64__) && defined(__GNUC__)
/// RGB RGB ... to three planes, 16 pixels (48 bytes) at a time with byte shuffles; returns how
/// many pixels it did (the rest are left to the caller's loop).
__attribute__((target("ssse3"))) size_t split_rgb_ssse3(const uint8_t* row, size_t width,
                                                         uint8_t* r, uint8_t* g, uint8_t* b) {
  // For output channel c, byte i of each 16-byte input vector goes to position (16 k + i) / 3
  // of the 16 outputs when (16 k + i) % 3 == c; -1 (0x80) zeroes the others.
  alignas(16) static const auto masks = [] {
    std::array<std::array<std::array<int8_t, 16>, 3>, 3> m{};  // [channel][input vector][byte]
    for (int c = 0; c < 3; ++c) {
      for (int k = 0; k < 3; ++k) {
        for (int j = 0; j < 16; ++j) {
          const int source = 3 * j + c - 16 * k;  // output j of channel c reads byte 3j + c
          m[c][k][j] = source >= 0 && source < 16 ? static_cast<int8_t>(source) : int8_t{-128};
        }
      }
    }
    return m;
  }();
  __m128i shuffle[3][3];
  for (int c = 0; c < 3; ++c) {
    for (int k = 0; k < 3; ++k) {
      shuffle[c][k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(masks[c][k].data()));
    }
  }
  uint8_t* planes[3] = {r, g, b};
  size_t x = 0;
  for (; x + 16 <= width; x += 16) {
    const __m128i v[3] = {_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 3 * x)),
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 3 * x + 16)),
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 3 * x + 32))};
    for (int c = 0; c < 3; ++c) {
      const __m128i out = _mm_or_si128(
          _mm_or_si128(_mm_shuffle_epi8(v[0], shuffle[c][0]), _mm_shuffle_epi8(v[1], shuffle[c][1])),
          _mm_shuffle_epi8(v[2], shuffle[c][2]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[c] + x), out);
    }
  }
  return x;
}
#endif

/// One decoded row (`channels` interleaved: 1 grey, 3 RGB, 4 CMYK) into row `y` of the planes
/// (`dst` points at it in the first plane; planes are `plane` bytes apart).
///
/// CMYK: PIL reads CMYK JPEGs as Adobe writes them, inverted ("CMYK;I"), then convert("RGB")
/// computes each channel as (255 - K) - C (255 - K) / 255 with its rounded integer division.
void split_row(const uint8_t* row, int channels, size_t width, uint8_t* dst, size_t plane) {
  uint8_t* r = dst;
  uint8_t* g = dst + plane;
  uint8_t* b = dst + 2 * plane;
  if (channels == 1) {
    std::memcpy(dst, row, width);
  } else if (channels == 3) {
    size_t x = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("ssse3")) x = split_rgb_ssse3(row, width, r, g, b);
#endif
    for (; x < width; ++x) {
      r[x] = row[3 * x];
      g[x] = row[3 * x + 1];
      b[x] = row[3 * x + 2];
    }
  } else {
    auto channel = [](int inverted, int nk) {
      const int tmp = (255 - inverted) * nk + 128;
      const int v = nk - (((tmp >> 8) + tmp) >> 8);
      return static_cast<uint8_t>(std::clamp(v, 0, 255));
    };
    for (size_t x = 0; x < width; ++x) {
      const uint8_t* p = row + 4 * x;
      const int nk = p[3];  // 255 - K, K being inverted in the file
      r[x] = channel(p[0], nk);
      g[x] = channel(p[1], nk);
      b[x] = channel(p[2], nk);
    }
  }
}

// Decodes into `out`. Returns false with `errors->message` set on a fatal error.
bool run_decoder(jpeg_decompress_struct* info, ErrorManager* errors, jpeg_progress_mgr* progress,
                 const uint8_t* data, size_t size, int scale_denominator, DecodedPixels* out) {
  if (setjmp(errors->jump)) return false;
  jpeg_create_decompress(info);
  progress->progress_monitor = on_progress;
  info->progress = progress;
  jpeg_mem_src(info, data, static_cast<unsigned long>(size));
  jpeg_read_header(info, TRUE);
  if (info->num_components != 1 && info->num_components != 3 && info->num_components != 4) {
    out->unsupported = true;
    return true;
  }
  // CMYK and YCCK (libjpeg converts YCCK) come out as CMYK, converted as PIL converts.
  info->out_color_space = info->num_components == 1   ? JCS_GRAYSCALE
                          : info->num_components == 3 ? JCS_RGB
                                                      : JCS_CMYK;
  info->dct_method = JDCT_ISLOW;
  info->do_fancy_upsampling = TRUE;
  info->scale_num = 1;
  info->scale_denom = static_cast<unsigned int>(scale_denominator);
  jpeg_start_decompress(info);
  const int in_channels = info->output_components;
  out->width = static_cast<int>(info->output_width);
  out->height = static_cast<int>(info->output_height);
  out->channels = in_channels == 1 ? 1 : 3;
  const size_t width = info->output_width;
  const size_t plane = width * info->output_height;
  out->planes.reset(new uint8_t[plane * static_cast<size_t>(out->channels)]);
  // Up to kRows scanlines per call: libjpeg decodes a row group (of up to 16 rows) at a time, and
  // asking for one row at a time costs a call through its controllers for each row.
  constexpr int kRows = 16;
  const size_t row_bytes = width * static_cast<size_t>(in_channels);
  out->pixels.resize(row_bytes * kRows);
  JSAMPROW rows[kRows];
  for (int i = 0; i < kRows; ++i) rows[i] = out->pixels.data() + static_cast<size_t>(i) * row_bytes;
  while (info->output_scanline < info->output_height) {
    const size_t y = info->output_scanline;
    const JDIMENSION read = jpeg_read_scanlines(info, rows, kRows);
    for (JDIMENSION i = 0; i < read; ++i) {
      split_row(rows[i], in_channels, width, out->planes.get() + (y + i) * width, plane);
    }
  }
  jpeg_finish_decompress(info);
  return true;
}

}  // namespace

DecodedPixels jpeg_decode(const uint8_t* data, size_t size, int scale_denominator) {
  DecodedPixels out;
  jpeg_decompress_struct info;
  ErrorManager errors;
  info.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = on_error;
  errors.base.emit_message = on_message;
  errors.premature_end = false;
  errors.message[0] = '\0';
  jpeg_progress_mgr progress{};
  const bool decoded = run_decoder(&info, &errors, &progress, data, size, scale_denominator, &out);
  jpeg_destroy_decompress(&info);
  out.pixels.clear();
  if (!decoded || errors.premature_end) {
    out.planes.reset();
    out.error = decoded ? "truncated JPEG (the data ends before the image does)"
                        : std::string(errors.message);
    return out;
  }
  if (out.unsupported) {
    out.error = "JPEG with an unsupported number of colour components";
    return out;
  }
  out.ok = true;
  return out;
}

}  // namespace sedensenet::data::codec
