#pragma once
/// \file
/// File writing that never leaves a half-written file behind.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
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
inline void write_file_atomically(const std::filesystem::path& path, const void* data,
                                  size_t size) {
  const auto folder = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const auto temporary =
      folder / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()));
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw FileError(path, std::string("cannot create a file here: ") + std::strerror(errno));
  auto fail = [&](const char* step) {
    const int error = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    throw FileError(path, std::string(step) + " failed: " + std::strerror(error) +
                              "; the previous version of the file is unchanged");
  };
  const auto* bytes = static_cast<const char*>(data);
  size_t written = 0;
  while (written < size) {
    const ssize_t n = ::write(fd, bytes + written, size - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("writing");
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("flushing to disk");
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    throw FileError(path, std::string("closing failed: ") + std::strerror(error));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    throw FileError(path, std::string("renaming into place failed: ") + std::strerror(error));
  }
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

inline void write_file_atomically(const std::filesystem::path& path, const std::string& text) {
  write_file_atomically(path, text.data(), text.size());
}

/// The whole file as a string; throws `FileError` naming the file if it cannot be read.
inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot be opened (does it exist?)");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace sedensenet::io
