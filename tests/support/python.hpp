#pragma once
// Runs the Python reference (torch / torchvision of the LibTorch's version) from a test.
// The interpreter is CMake's SEDENSENET_PYTHON (default /usr/bin/python3, Debian's python3-torch),
// never the first python3 on PATH, which may have no torch. A missing interpreter or module fails
// the test with the install command; it is never skipped.

#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#ifndef SEDENSENET_TEST_PYTHON
#error "SEDENSENET_TEST_PYTHON must name the reference Python (CMake's SEDENSENET_PYTHON)"
#endif
#ifndef SEDENSENET_TEST_PYTHON_DIR
#error "SEDENSENET_TEST_PYTHON_DIR must point at tests/python"
#endif

namespace sedensenet::test {

inline std::string python_interpreter() { return SEDENSENET_TEST_PYTHON; }

inline std::filesystem::path python_script(const std::string& name) {
  return std::filesystem::path(SEDENSENET_TEST_PYTHON_DIR) / name;
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buffer{};
  while (fgets(buffer.data(), static_cast<int>(buffer.size()), pipe.get()) != nullptr) {
    result.output += buffer.data();
  }
  const int status = pclose(pipe.release());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

/// Runs tests/python/<script> with `args`; fails the test (printing the output) if it fails.
inline std::string run_python(const std::string& script, const std::string& args) {
  const auto path = python_script(script);
  REQUIRE(std::filesystem::exists(python_interpreter()));
  const auto result =
      run_command(python_interpreter() + " " + path.string() + " " + args);
  INFO(python_interpreter() << " " << path.string() << " " << args << " exited with "
                             << result.exit_code << ":\n" << result.output
                             << "\n(needs torch and torchvision of the LibTorch's version in that "
                                "Python: Debian's python3-torch python3-torchvision, or "
                                "scripts/setup-torch2.sh for the 2.x build; CMake's SEDENSENET_PYTHON)");
  REQUIRE(result.exit_code == 0);
  return result.output;
}

/// A fresh temporary directory, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "sedensenet-test-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace sedensenet::test
