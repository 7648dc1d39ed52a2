#pragma once
/// \file
/// Reading integers from JSON that may come from anywhere (config files, checkpoints).
///
/// nlohmann::json converts a floating-point value to an integer with a plain cast, which is
/// undefined behaviour when the value is out of range (found by fuzzing: `"epochs": 3e20`) and
/// silently truncates 2.5 to 2. These helpers accept only JSON integers that fit the type.

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace sedensenet::util {

/// `value` as integer type T; `what` names it in the error ("TrainerOptions: 'epochs'").
template <typename T>
T json_integer(const nlohmann::json& value, const std::string& what) {
  static_assert(std::is_integral_v<T>, "json_integer reads integer types");
  TORCH_CHECK(value.is_number_integer(), what, " must be an integer, got ", value.dump());
  if (value.is_number_unsigned()) {
    const auto v = value.get<uint64_t>();
    TORCH_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<T>::max()), what, " is out of range: ",
                value.dump());
    return static_cast<T>(v);
  }
  const auto v = value.get<int64_t>();
  if constexpr (std::is_unsigned_v<T>) {
    TORCH_CHECK(v >= 0, what, " must not be negative, got ", value.dump());
    return static_cast<T>(v);
  } else {
    TORCH_CHECK(v >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                    v <= static_cast<int64_t>(std::numeric_limits<T>::max()),
                what, " is out of range: ", value.dump());
    return static_cast<T>(v);
  }
}

/// The deepest nesting of arrays and objects that `parse_json` accepts.
inline constexpr int kMaxJsonDepth = 64;

/// Parses JSON from a file or checkpoint (`what` names it in errors). The nesting depth is
/// checked first, in one pass over the text, so that no deeply nested document reaches the
/// parser, its destructor or `dump`; syntax errors become one-line messages.
inline nlohmann::json parse_json(const std::string& text, const std::string& what) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      TORCH_CHECK(++depth <= kMaxJsonDepth, what, ": JSON nested deeper than ", kMaxJsonDepth,
                  " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, what, ": not valid JSON (", e.what(), ")");
  }
  return nullptr;
}

/// A JSON array of integers.
template <typename T>
std::vector<T> json_integers(const nlohmann::json& value, const std::string& what) {
  TORCH_CHECK(value.is_array(), what, " must be an array of integers, got ", value.dump());
  std::vector<T> out;
  for (const auto& item : value) out.push_back(json_integer<T>(item, what));
  return out;
}

}  // namespace sedensenet::util
