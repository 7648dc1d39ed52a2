// JPEG decoding through libjpeg-turbo's libjpeg API, set up as PIL's JpegDecode.c sets it up
// (integer DCT, fancy upsampling, YCbCr to RGB in the library, grey kept as one channel), so that
// the pixels are PIL's. libjpeg reports fatal errors through error_exit, which must not return:
// it longjmps back here. Nothing with a destructor is created between the setjmp and the last
// libjpeg call, so the jump skips no C++ object's clean-up.
#include <algorithm>
#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE and size_t
#include <string>

#include <jpeglib.h>
#include <jerror.h>  // message codes (JWRN_JPEG_EOF)

#include "sedensenet/data/codec.hpp"

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

// Decodes into `out` (reached through a pointer, so that everything it holds is in memory when
// libjpeg jumps back). Returns false with `errors->message` set on a fatal error.
bool run_decoder(jpeg_decompress_struct* info, ErrorManager* errors, const uint8_t* data,
                 size_t size, int scale_denominator, DecodedPixels* out) {
  if (setjmp(errors->jump)) return false;
  jpeg_create_decompress(info);
  jpeg_mem_src(info, data, static_cast<unsigned long>(size));
  jpeg_read_header(info, TRUE);
  if (info->num_components != 1 && info->num_components != 3 && info->num_components != 4) {
    out->unsupported = true;
    return true;
  }
  // CMYK and YCCK (libjpeg converts YCCK) come out as CMYK, converted below as PIL converts.
  info->out_color_space = info->num_components == 1   ? JCS_GRAYSCALE
                          : info->num_components == 3 ? JCS_RGB
                                                      : JCS_CMYK;
  info->dct_method = JDCT_ISLOW;
  info->do_fancy_upsampling = TRUE;
  info->scale_num = 1;
  info->scale_denom = static_cast<unsigned int>(scale_denominator);
  jpeg_start_decompress(info);
  out->width = static_cast<int>(info->output_width);
  out->height = static_cast<int>(info->output_height);
  out->channels = info->output_components;
  const size_t stride = static_cast<size_t>(out->width) * static_cast<size_t>(out->channels);
  out->pixels.resize(stride * static_cast<size_t>(out->height));
  while (info->output_scanline < info->output_height) {
    JSAMPROW row = out->pixels.data() + stride * info->output_scanline;
    jpeg_read_scanlines(info, &row, 1);
  }
  jpeg_finish_decompress(info);
  return true;
}

// PIL reads CMYK JPEGs as Adobe writes them, inverted ("CMYK;I"), then convert("RGB") computes
// each channel as (255 - K) - (C * (255 - K)) / 255 with its rounded integer division.
void cmyk_to_rgb(DecodedPixels& image) {
  const size_t pixels = image.pixels.size() / 4;
  uint8_t* data = image.pixels.data();
  for (size_t i = 0; i < pixels; ++i) {
    const uint8_t* in = data + 4 * i;
    const int nk = in[3];  // 255 - K, K being inverted in the file
    uint8_t rgb[3];
    for (int c = 0; c < 3; ++c) {
      const int tmp = (255 - in[c]) * nk + 128;
      const int v = nk - (((tmp >> 8) + tmp) >> 8);
      rgb[c] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
    std::copy(rgb, rgb + 3, data + 3 * i);  // in place: pixel i's output ends before its input
  }
  image.pixels.resize(pixels * 3);
  image.channels = 3;
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
  const bool decoded = run_decoder(&info, &errors, data, size, scale_denominator, &out);
  jpeg_destroy_decompress(&info);
  if (!decoded || errors.premature_end) {
    out.pixels.clear();
    out.error = decoded ? "truncated JPEG (the data ends before the image does)"
                        : std::string(errors.message);
    return out;
  }
  if (out.unsupported) {
    out.error = "JPEG with an unsupported number of colour components";
    return out;
  }
  if (out.channels == 4) cmyk_to_rgb(out);
  out.ok = true;
  return out;
}

}  // namespace sedensenet::data::codec
