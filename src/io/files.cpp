// Atomic file writes and checked reads: see include/sedensenet/io/files.hpp.
#include "sedensenet/io/files.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

namespace sedensenet::io {

namespace {

#if defined(SEDENSENET_FAULT_INJECTION)
/// Fault injection for the crash-safety tests (tests/reliability), compiled only with the CMake
/// option SEDENSENET_FAULT_INJECTION (the test command's builds): with the environment variable
/// SEDENSENET_FAULT_KILL_MID_WRITE=<file name>[:<n>], the process kills itself (SIGKILL) halfway
/// through the n-th (default: first) atomic write of a file with that name, as a power cut or
/// the OOM killer could. Unset, it costs one getenv per process.
void maybe_kill_mid_write(const std::filesystem::path& path) {
  static const auto rule = []() -> std::pair<std::string, long> {
    const char* value = std::getenv("SEDENSENET_FAULT_KILL_MID_WRITE");
    if (value == nullptr || *value == 0) return {"", 0};
    std::string text(value);
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) return {text, 1};
    return {text.substr(0, colon), std::atol(text.c_str() + colon + 1)};
  }();
  if (rule.first.empty() || path.filename() != rule.first) return;
  static std::atomic<long> seen{0};
  if (++seen == rule.second) ::kill(::getpid(), SIGKILL);
}
#else
void maybe_kill_mid_write(const std::filesystem::path&) {}
#endif

}  // namespace

void write_file_atomically(const std::filesystem::path& path, const void* data,
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
  const size_t half = size / 2;  // written in two parts, so that a fault can land between them
  bool injected = false;
  while (written < size) {
    if (!injected && written == half) {
      injected = true;
      maybe_kill_mid_write(path);
    }
    const size_t part = written < half ? half - written : size - written;
    const ssize_t n = ::write(fd, bytes + written, part);
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

int remove_stale_temporaries(const std::filesystem::path& folder) {
  const std::string mine = ".tmp-" + std::to_string(::getpid());
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
    const auto name = entry.path().filename().string();
    const auto mark = name.rfind(".tmp-");
    if (name.size() < 2 || name[0] != '.' || mark == std::string::npos ||
        name.find_first_not_of("0123456789", mark + 5) != std::string::npos ||
        name.compare(mark, std::string::npos, mine) == 0) {
      continue;
    }
    if (std::filesystem::remove(entry.path(), ec)) ++removed;
  }
  return removed;
}

void write_file_atomically(const std::filesystem::path& path, const std::string& text) {
  write_file_atomically(path, text.data(), text.size());
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot be opened (does it exist?)");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::string read_regular_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) throw FileError(path, "file not found");
  if (std::filesystem::is_directory(status)) {
    throw FileError(path, "is a folder, not a file (give the file inside it, e.g. best.pt)");
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw FileError(path, "is not a regular file (a device, pipe or socket)");
  }
  return read_text_file(path);
}

}  // namespace sedensenet::io
