#pragma once
/// \file
/// Option schemas: an options struct lists each of its options once, in a static `fields`
/// function, and everything else is derived from that list: range checks, JSON (config.json and
/// `--config` files) and the tool's command-line flags and `--help` (src/cli/option_flags.hpp).
///
/// A schema'd struct provides
/// ```
/// template <typename Visitor> static void fields(Visitor&& visit) {
///   visit("epochs", &TrainerOptions::epochs_, "passes over the training data", schema::at_least(1));
///   ...
/// }
/// ```
/// where the member's type is a number, `bool`, `std::string`, `std::vector<int64_t>` or an enum
/// with `to_string(E)` and `enum_values(E)` overloads. The key is the option's one name: the
/// JSON key and, with '-' for '_', the tool's flag.

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "sedensenet/util/json.hpp"

namespace sedensenet::schema {

/// The values a numeric option may take: [low, high], each end open or closed.
struct Range {
  double low = -INFINITY, high = INFINITY;
  bool low_open = false, high_open = false;

  bool contains(double v) const {
    return std::isfinite(v) && (low_open ? v > low : v >= low) && (high_open ? v < high : v <= high);
  }
  /// ">= 1", "> 0", "in [0, 1)"; empty for any value.
  std::string describe() const {
    std::ostringstream os;
    const bool has_low = std::isfinite(low), has_high = std::isfinite(high);
    if (has_low && has_high) {
      os << "in " << (low_open ? "(" : "[") << low << ", " << high << (high_open ? ")" : "]");
    } else if (has_low) {
      os << (low_open ? "> " : ">= ") << low;
    } else if (has_high) {
      os << (high_open ? "< " : "<= ") << high;
    }
    return os.str();
  }
};

/// Any value.
inline Range any() { return {}; }
/// >= low.
inline Range at_least(double low) { return {low, INFINITY, false, false}; }
/// > low.
inline Range above(double low) { return {low, INFINITY, true, false}; }
/// [low, high) with `high_open`, else [low, high]; `low_open` makes it (low, ...
inline Range between(double low, double high, bool low_open = false, bool high_open = false) {
  return {low, high, low_open, high_open};
}

/// "a, b or c" of an enum's names.
template <typename E>
std::string enum_choices() {
  std::string out;
  const auto values = enum_values(E{});
  for (size_t i = 0; i < values.size(); ++i) {
    out += (i == 0 ? "" : (i + 1 == values.size() ? " or " : ", "));
    out += to_string(values[i]);
  }
  return out;
}

/// The enum value named `name`; `what` names the option in the error.
template <typename E>
E enum_from_string(const std::string& name, const std::string& what) {
  for (auto v : enum_values(E{})) {
    if (name == to_string(v)) return v;
  }
  TORCH_CHECK(false, "unknown ", what, " '", name, "': expected ", enum_choices<E>());
}

/// An option's value as JSON.
template <typename T>
nlohmann::json encode(const T& value) {
  if constexpr (std::is_enum_v<T>) {
    return to_string(value);
  } else {
    return value;
  }
}

/// An option's value from JSON; `what` names it in the error.
template <typename T>
T decode(const nlohmann::json& value, const std::string& what) {
  if constexpr (std::is_same_v<T, bool>) {
    TORCH_CHECK(value.is_boolean(), what, " must be true or false, got ", value.dump());
    return value.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    return util::json_integer<T>(value, what);
  } else if constexpr (std::is_floating_point_v<T>) {
    TORCH_CHECK(value.is_number(), what, " must be a number, got ", value.dump());
    return value.get<T>();
  } else if constexpr (std::is_enum_v<T>) {
    if (value.is_string()) {
      for (auto v : enum_values(T{})) {
        if (value.get<std::string>() == to_string(v)) return v;
      }
    }
    TORCH_CHECK(false, what, " must be ", enum_choices<T>(), ", got ", value.dump());
  } else if constexpr (std::is_same_v<T, std::string>) {
    TORCH_CHECK(value.is_string(), what, " must be a string, got ", value.dump());
    return value.get<std::string>();
  } else {
    static_assert(std::is_same_v<T, std::vector<int64_t>>, "unsupported option type");
    return util::json_integers<int64_t>(value, what);
  }
}

/// The member type behind a pointer to member.
template <typename M>
struct member_type;
template <typename C, typename T>
struct member_type<T C::*> {
  using type = T;
};

/// `options` as a JSON object, one key per option, in schema order.
template <typename Options>
nlohmann::json to_json(const Options& options) {
  nlohmann::json j = nlohmann::json::object();
  Options::fields([&](const char* key, auto member, const char*, const Range&) {
    j[key] = encode(options.*member);
  });
  return j;
}

/// `base` with the options named in `j` set; `what` ("trainer options") names the struct in
/// errors. Unknown keys and values of the wrong type are errors naming the key.
template <typename Options>
Options from_json(const nlohmann::json& j, Options base, const std::string& what) {
  TORCH_CHECK(j.is_object(), what, ": expected a JSON object, got ", j.dump());
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    // Structured bindings cannot be captured in C++17 (clang refuses): init-captures instead.
    Options::fields([&, k = key, &v = value](const char* name, auto member, const char*, const Range&) {
      if (known || k != name) return;
      known = true;
      using T = typename member_type<decltype(member)>::type;
      base.*member = decode<T>(v, what + " '" + k + "'");
    });
    TORCH_CHECK(known, what, ": unknown key '", key, "'");
  }
  return base;
}

/// Throws "<what>: <key> must be <range>, got <value>" for the first numeric option outside its
/// range.
template <typename Options>
void check_ranges(const Options& options, const std::string& what) {
  Options::fields([&](const char* key, auto member, const char*, const Range& range) {
    using T = typename member_type<decltype(member)>::type;
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      const auto value = options.*member;
      std::ostringstream shown;
      shown << value;
      TORCH_CHECK(range.contains(static_cast<double>(value)), what, ": ", key, " must be ",
                  range.describe(), ", got ", shown.str());
    }
  });
}

}  // namespace sedensenet::schema
