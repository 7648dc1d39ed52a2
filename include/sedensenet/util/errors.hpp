#pragma once
/// \file
/// Turning exceptions into the one-line messages users should see.

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace sedensenet {

/// The message of an exception without LibTorch's C++ stack trace (c10::Error appends one to
/// what()): the text a command-line tool prints before exiting non-zero.
inline std::string error_message(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    std::string text = c10_error->what_without_backtrace();
    // TORCH_CHECK failures carry the message on the first line only.
    const auto newline = text.find('\n');
    return newline == std::string::npos ? text : text.substr(0, newline);
  }
  return e.what();
}

}  // namespace sedensenet
