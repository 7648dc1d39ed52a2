#include "sedensenet/io/archive.hpp"

namespace sedensenet::io::detail {

uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

uint64_t le64(const uint8_t* p) {
  return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32);
}

void check_local_header(const uint8_t* data, size_t size, const uint8_t* entry,
                        uint64_t local, const ArchiveRecord& record, uint64_t compressed,
                        uint64_t uncompressed, const std::filesystem::path& name) {
  auto damaged = [&](const std::string& what) {
    return FileError(name, "corrupted: the local header of record '" + record.name + "' " + what +
                               "; the file was damaged after it was written. Use another copy, "
                               "e.g. the run's other checkpoint");
  };
  const uint8_t* header = data + local;
  if (std::memcmp(header + 4, entry + 6, 10) != 0) {
    throw damaged("does not match the table of contents");
  }
  const uint16_t name_length = le16(header + 26), extra_length = le16(header + 28);
  if (name_length != record.name.size() ||
      std::memcmp(header + 30, record.name.data(), name_length) != 0) {
    throw damaged("names another record");
  }
  const uint8_t* extra = header + 30 + name_length;
  for (uint32_t e = 0; e + 4 <= extra_length;) {
    const uint16_t id = le16(extra + e), length = le16(extra + e + 2);
    if (e + 4u + length > extra_length) throw damaged("has a damaged extra field");
    if (id == 0x4246) {  // "FB": PyTorch's alignment padding
      for (uint16_t k = 0; k < length; ++k) {
        if (extra[e + 4 + k] != 'Z') throw damaged("has damaged padding");
      }
    } else if (id != 0x0001) {  // zip64 sizes; PyTorch writes nothing else
      throw damaged("has an unknown extra field");
    }
    e += 4u + length;
  }
  const bool descriptor = (le16(header + 6) & 0x08) != 0;
  if (descriptor) {
    // The header's own CRC-32 and sizes are zeros (PyTorch) or the real values.
    for (int field = 0; field < 3; ++field) {
      const uint32_t local_value = le32(header + 14 + 4 * field);
      if (local_value != 0 && local_value != le32(entry + 16 + 4 * field)) {
        throw damaged("does not match the table of contents (checksum or sizes)");
      }
    }
  } else {
    if (std::memcmp(header + 14, entry + 16, 12) != 0) {
      throw damaged("does not match the table of contents (checksum or sizes)");
    }
    return;
  }
  // The data descriptor: [signature] CRC-32, compressed and uncompressed size (4 or 8 bytes).
  uint64_t at = record.data_offset + record.size;
  if (at + 4 <= size && le32(data + at) == 0x08074b50u) at += 4;
  const bool zip64 = compressed >= 0xFFFFFFFFu || uncompressed >= 0xFFFFFFFFu;
  const uint64_t length = zip64 ? 20 : 12;
  if (at > size || size - at < length) throw damaged("has no data descriptor");
  const uint64_t d_compressed = zip64 ? le64(data + at + 4) : le32(data + at + 4);
  const uint64_t d_uncompressed = zip64 ? le64(data + at + 12) : le32(data + at + 8);
  if (le32(data + at) != record.crc || d_compressed != compressed || d_uncompressed != uncompressed) {
    throw damaged("has a data descriptor that does not match the table of contents");
  }
}

}  // namespace sedensenet::io::detail

namespace sedensenet::io {

std::vector<ArchiveRecord> list_archive(const uint8_t* data, size_t size,
                                        const std::filesystem::path& name) {
  using detail::le16;
  using detail::le32;
  using detail::le64;
  auto truncated = [&](const std::string& what) {
    return FileError(name, "truncated or damaged archive: " + what +
                               " (was it cut short by a crash or a full disk?); use another "
                               "copy, e.g. the run's other checkpoint");
  };
  if (size < 4 || std::memcmp(data, "PK\x03\x04", 4) != 0) {
    throw FileError(name, size == 0 ? std::string("the file is empty")
                                    : "not a PyTorch archive (a zip file written by torch.save "
                                      "or a SEDenseNet checkpoint)");
  }
  // The end-of-central-directory record: 22 bytes plus a comment of up to 65535 bytes.
  if (size < 22) throw truncated("no end-of-archive record");
  size_t eocd = size;
  const size_t lowest = size >= 22 + 65535 ? size - 22 - 65535 : 0;
  for (size_t pos = size - 22 + 1; pos-- > lowest;) {
    if (le32(data + pos) == 0x06054b50u && pos + 22 + le16(data + pos + 20) <= size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == size) throw truncated("no end-of-archive record");
  uint64_t entries = le16(data + eocd + 10);
  uint64_t directory_size = le32(data + eocd + 12);
  uint64_t directory_offset = le32(data + eocd + 16);
  if (entries == 0xFFFF || directory_size == 0xFFFFFFFFu || directory_offset == 0xFFFFFFFFu) {
    // Zip64: a locator right before the end record points at the 64-bit end record.
    if (eocd < 20 || le32(data + eocd - 20) != 0x07064b50u) throw truncated("no zip64 locator");
    const uint64_t record = le64(data + eocd - 20 + 8);
    if (record > size || size - record < 56 || le32(data + record) != 0x06064b50u) {
      throw truncated("no zip64 end-of-archive record");
    }
    entries = le64(data + record + 32);
    directory_size = le64(data + record + 40);
    directory_offset = le64(data + record + 48);
  }
  if (directory_offset > size || directory_size > size - directory_offset) {
    throw truncated("the table of contents lies past the end of the file (" + std::to_string(size) +
                    " bytes)");
  }
  if (entries > directory_size / 46) throw truncated("the table of contents is inconsistent");

  std::vector<ArchiveRecord> records;
  records.reserve(static_cast<size_t>(entries));
  uint64_t pos = directory_offset;
  const uint64_t directory_end = directory_offset + directory_size;
  for (uint64_t i = 0; i < entries; ++i) {
    if (directory_end - pos < 46 || le32(data + pos) != 0x02014b50u) {
      throw truncated("table-of-contents entry " + std::to_string(i) + " is damaged");
    }
    const uint8_t* entry = data + pos;
    ArchiveRecord record;
    record.method = le16(entry + 10);
    record.crc = le32(entry + 16);
    uint64_t compressed = le32(entry + 20);
    uint64_t uncompressed = le32(entry + 24);
    const uint16_t name_length = le16(entry + 28), extra_length = le16(entry + 30),
                   comment_length = le16(entry + 32);
    uint64_t local = le32(entry + 42);
    const uint64_t entry_size = 46ull + name_length + extra_length + comment_length;
    if (directory_end - pos < entry_size) {
      throw truncated("table-of-contents entry " + std::to_string(i) + " is cut short");
    }
    record.name.assign(reinterpret_cast<const char*>(entry + 46), name_length);
    // Zip64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in this order.
    const uint8_t* extra = entry + 46 + name_length;
    for (uint32_t e = 0; e + 4 <= extra_length;) {
      const uint16_t id = le16(extra + e), length = le16(extra + e + 2);
      if (e + 4u + length > extra_length) break;
      if (id == 0x0001) {
        const uint8_t* field = extra + e + 4;
        uint32_t left = length;
        auto take = [&](uint64_t& value) {
          if (value != 0xFFFFFFFFu) return;
          if (left < 8) throw truncated("record '" + record.name + "' has a damaged zip64 field");
          value = le64(field);
          field += 8;
          left -= 8;
        };
        take(uncompressed);
        take(compressed);
        take(local);
      }
      e += 4u + length;
    }
    if (local > size || size - local < 30 || le32(data + local) != 0x04034b50u) {
      throw truncated("record '" + record.name + "' starts past the end of the file");
    }
    record.data_offset = local + 30 + le16(data + local + 26) + le16(data + local + 28);
    record.size = compressed;
    if (record.data_offset > size || record.size > size - record.data_offset) {
      throw truncated("record '" + record.name + "' (" + std::to_string(record.size) +
                      " bytes) extends past the end of the file (" + std::to_string(size) + " bytes)");
    }
    detail::check_local_header(data, size, entry, local, record, compressed, uncompressed, name);
    if (record.method == 0 && compressed != uncompressed) {
      throw truncated("record '" + record.name + "' has inconsistent sizes");
    }
    records.push_back(std::move(record));
    pos += entry_size;
  }
  return records;
}

std::vector<ArchiveRecord> verify_archive(const uint8_t* data, size_t size,
                                          const std::filesystem::path& name,
                                          bool allow_compressed) {
  auto records = list_archive(data, size, name);
  for (const auto& record : records) {
    if (record.method != 0 && allow_compressed) continue;  // left to the trusted reader
    if (record.method != 0) {
      throw FileError(name, "record '" + record.name + "' is compressed (zip method " +
                                std::to_string(record.method) + "); PyTorch writes its records "
                                "uncompressed, so this file was not written by torch.save or "
                                "SEDenseNet");
    }
    const uint32_t actual = crc32(data + record.data_offset, static_cast<size_t>(record.size));
    if (actual != record.crc) {
      char hex[64];
      std::snprintf(hex, sizeof hex, "stored 0x%08x, computed 0x%08x", record.crc, actual);
      throw FileError(name, "corrupted: record '" + record.name + "' fails its CRC-32 check (" +
                                hex + "); the file was damaged after it was written. Use another "
                                "copy, e.g. the run's other checkpoint");
    }
  }
  return records;
}

std::string read_verified_archive(const std::filesystem::path& path,
                                  bool allow_compressed) {
  std::string bytes = read_regular_file(path);
  verify_archive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path,
                 allow_compressed);
  return bytes;
}

}  // namespace sedensenet::io


