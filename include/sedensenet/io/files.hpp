#pragma once
/// \file
/// File writing that never leaves a half-written file behind, and reading that names the file.
/// Compiled in src/io/files.cpp.

#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace sedensenet::io {

/// An I/O failure that names the file and the system's reason.
class FileError : public std::runtime_error {
 public:
  FileError(const std::filesystem::path& path, const std::string& what)
      : std::runtime_error(path.string() + ": " + what) {}
};

/// Writes `size` bytes to `path` atomically: a temporary file in the same folder is written,
/// flushed to disk (fsync) and renamed over `path`, then the folder is synced. Readers see the old
/// file or the new one, never a mix; on failure (disk full, ...) the old file is untouched and
/// the temporary is removed.
void write_file_atomically(const std::filesystem::path& path, const void* data, size_t size);
/// `write_file_atomically` of a string.
void write_file_atomically(const std::filesystem::path& path, const std::string& text);

/// Removes the temporary files `write_file_atomically` leaves in `folder` when a process is killed
/// in the middle of a write (.<name>.tmp-<pid>, from processes other than this one). The files
/// they were replacing are intact. Returns how many were removed.
int remove_stale_temporaries(const std::filesystem::path& folder);

/// The whole file as a string; throws `FileError` naming the file if it cannot be read.
std::string read_text_file(const std::filesystem::path& path);

/// The whole of a regular file (after following links) as a string. A folder, a device, a FIFO or
/// a missing file is refused with a `FileError` that says what the path is, so that a mistyped
/// path never blocks on a pipe or reads as "empty".
std::string read_regular_file(const std::filesystem::path& path);

}  // namespace sedensenet::io
