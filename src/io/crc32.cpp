// CRC-32 of archive records: zlib's.
#include <zlib.h>

#include <algorithm>

#include "sedensenet/io/archive.hpp"

namespace sedensenet::io {

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  auto value = static_cast<uLong>(crc);
  const auto* p = static_cast<const Bytef*>(data);
  while (size > 0) {  // zlib takes at most 4 GiB - 1 per call
    const auto chunk = static_cast<uInt>(std::min<size_t>(size, size_t{1} << 30));
    value = ::crc32(value, p, chunk);
    p += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(value);
}

}  // namespace sedensenet::io
