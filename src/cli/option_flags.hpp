#pragma once
// The tool's flags for a schema'd options struct (util/option_schema.hpp): one flag per option,
// named "--" + its key with '-' for '_', checked against its range, with its help. A flag given
// on the command line (or set from a config file) replaces the base's value in `apply`; the
// others keep it, so the base (a recipe) supplies the defaults.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "sedensenet/util/option_schema.hpp"

namespace sedensenet::cli {

/// "--grad-clip-norm" for "grad_clip_norm".
inline std::string flag_name(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return "--" + key;
}

template <typename Options>
class OptionFlags {
 public:
  /// Adds the flags of every option of `Options` but those in `skip` to `command`, in `group`.
  /// `shown` gives the defaults printed by --help; `aliases` maps a key to former flag names
  /// that still work ("grad_clip_norm" -> {"--grad-clip"}).
  OptionFlags(CLI::App* command, const Options& shown, const std::string& group,
              const std::set<std::string>& skip = {},
              const std::map<std::string, std::vector<std::string>>& aliases = {}) {
    Options::fields([&](const char* key, auto member, const char* help, const schema::Range& range) {
      if (skip.count(key) > 0) return;
      using T = typename schema::member_type<decltype(member)>::type;
      std::string names = flag_name(key);
      if (auto it = aliases.find(key); it != aliases.end()) {
        for (const auto& alias : it->second) names += "," + alias;
      }
      std::string description = help;
      const std::string limits = range.describe();
      if (!limits.empty() && description.find(limits) == std::string::npos) description += " (" + limits + ")";
      CLI::Option* option = nullptr;
      if constexpr (std::is_same_v<T, bool>) {
        auto value = std::make_shared<bool>(shown.*member);
        option = command->add_flag(names, *value, description);
        setters_.push_back([option, value, member](Options& o) {
          if (option->count() > 0) o.*member = *value;
        });
      } else if constexpr (std::is_enum_v<T>) {
        auto value = std::make_shared<std::string>(to_string(shown.*member));
        std::vector<std::string> choices;
        for (auto v : enum_values(T{})) choices.emplace_back(to_string(v));
        option = command->add_option(names, *value, description)->check(CLI::IsMember(choices));
        const std::string what = key;
        setters_.push_back([option, value, member, what](Options& o) {
          if (option->count() > 0) o.*member = schema::enum_from_string<T>(*value, what);
        });
      } else {
        auto value = std::make_shared<T>(shown.*member);
        option = command->add_option(names, *value, description);
        if constexpr (std::is_arithmetic_v<T>) {
          if (!limits.empty()) {
            option->check(CLI::Validator(
                [range, limits](std::string& text) -> std::string {
                  std::istringstream in(text);
                  double v = 0;
                  in >> v;
                  return !in.fail() && range.contains(v) ? std::string() : "out of range: must be " + limits + ", got " + text;
                },
                ""));
          }
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          option->delimiter(',');
        }
        setters_.push_back([option, value, member](Options& o) {
          if (option->count() > 0) o.*member = *value;
        });
      }
      option->group(group);
      option->default_str(shown_value(shown.*member));
    });
  }

  /// `base` with the value of every flag that was given.
  Options apply(Options base) const {
    for (const auto& set : setters_) set(base);
    return base;
  }

 private:
  template <typename T>
  static std::string shown_value(const T& value) {
    const auto j = schema::encode(value);
    if (j.is_string()) return j.template get<std::string>();
    if (j.is_array()) {  // as given on the command line: comma-separated
      std::string out;
      for (const auto& item : j) out += (out.empty() ? "" : ",") + item.dump();
      return out;
    }
    return j.dump();
  }

  std::vector<std::function<void(Options&)>> setters_;
};

}  // namespace sedensenet::cli
