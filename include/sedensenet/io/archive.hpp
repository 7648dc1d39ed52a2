#pragma once
/// \file
/// Integrity checks for PyTorch archives (checkpoints and `torch.save` files) before they are
/// loaded.
///
/// Both LibTorch's `torch::save` / `OutputArchive` and Python's `torch.save` write a zip file whose
/// records are stored uncompressed, each with its CRC-32 in the zip's central directory. PyTorch's
/// reader does not check those checksums (a flipped bit in a tensor loads silently), and reports a
/// cut-short file with an internal error. `verify_archive` walks the central directory, checks
/// that every record lies inside the file and that every stored record matches its CRC-32, and
/// explains what it finds in terms of the file: truncated (a crash or a full disk while writing),
/// corrupted (damaged after writing), or not a PyTorch file at all.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "sedensenet/io/files.hpp"

namespace sedensenet::io {

namespace detail {

inline uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p);
uint64_t le64(const uint8_t* p);

}  // namespace detail

/// CRC-32 as zip, gzip and Python's `zlib.crc32` compute it (zlib's own, in the compiled part);
/// `crc` continues a previous value.
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

/// One record (file) of an archive, as its central directory describes it.
struct ArchiveRecord {
  std::string name;
  uint64_t data_offset = 0;  ///< where the record's bytes start in the file
  uint64_t size = 0;         ///< stored (compressed) size
  uint32_t crc = 0;          ///< CRC-32 of the uncompressed bytes
  uint16_t method = 0;       ///< 0 = stored (what PyTorch writes), 8 = deflate
};

namespace detail {

/// Every byte of a record's local header, its alignment padding and its data descriptor must agree
/// with the table of contents (`entry`), so that damage there is found as damage to the data is
/// (by the CRC-32): the fields version, flags, method, time and date; the name; PyTorch's padding
/// (extra field "FB", filled with 'Z'); the CRC-32 and sizes, in the header or, when flag bit 3 is
/// set (PyTorch's writer), in the data descriptor after the data.
void check_local_header(const uint8_t* data, size_t size, const uint8_t* entry,
                        uint64_t local, const ArchiveRecord& record, uint64_t compressed,
                        uint64_t uncompressed, const std::filesystem::path& name);

}  // namespace detail

/// The records of the zip archive in `data`, checking that each lies inside it. Throws
/// `FileError(name, reason)` when the archive is truncated or malformed.
std::vector<ArchiveRecord> list_archive(const uint8_t* data, size_t size,
                                        const std::filesystem::path& name);

/// Checks the archive in `data` (see the file comment) and returns its records: every record
/// inside the file, stored uncompressed (as torch.save and LibTorch write them: a compressed
/// record is refused, so nothing is ever inflated), and matching its CRC-32. Throws `FileError`
/// naming `name`, the record and what to do. `allow_compressed` is for LibTorch's own archives
/// (SEDenseNet 0.1 checkpoints, which deflate their TorchScript code), read only when trusted.
std::vector<ArchiveRecord> verify_archive(const uint8_t* data, size_t size,
                                          const std::filesystem::path& name,
                                          bool allow_compressed = false);

/// Reads the file at `path` and verifies it (`verify_archive`); returns its bytes, ready for
/// `InputArchive::load_from(bytes.data(), bytes.size())`. Throws `FileError` naming the file.
std::string read_verified_archive(const std::filesystem::path& path,
                                  bool allow_compressed = false);

}  // namespace sedensenet::io
