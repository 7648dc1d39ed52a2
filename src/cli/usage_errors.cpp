// Command-line mistakes, reported in the tool's words: a misspelt flag names the closest one, a
// bare command prints its usage, every CLI11 message gets the tool's prefix and a pointer to
// --help.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "command.hpp"

namespace sedensenet::cli {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// The subcommand named on the command line (nullptr: none).
CLI::App* chosen_subcommand(CLI::App& app, const std::vector<std::string>& arguments) {
  for (size_t i = 1; i < arguments.size(); ++i) {
    for (auto* sub : app.get_subcommands({})) {
      if (sub->get_name() == arguments[i]) return sub;
    }
  }
  return nullptr;
}

}  // namespace

std::string closest_flag(const CLI::App& command, const std::string& typed) {
  std::string name = typed.substr(0, typed.find('='));
  std::string best;
  size_t best_distance = std::string::npos;
  for (const auto* option : command.get_options()) {
    for (const auto& long_name : option->get_lnames()) {
      const std::string flag = "--" + long_name;
      // A prefix ("--epoch" for "--epochs") or a few edits away.
      const size_t distance = flag.rfind(name, 0) == 0 ? 1 : edit_distance(name, flag);
      if (distance < best_distance) {
        best_distance = distance;
        best = flag;
      }
    }
  }
  return best_distance <= std::max<size_t>(2, name.size() / 3) ? best : std::string();
}

int report_usage_error(CLI::App& app, const CLI::ParseError& error, const std::vector<std::string>& arguments) {
  // --help, --version: CLI11 prints them.
  if (dynamic_cast<const CLI::CallForHelp*>(&error) != nullptr ||
      dynamic_cast<const CLI::CallForAllHelp*>(&error) != nullptr ||
      dynamic_cast<const CLI::CallForVersion*>(&error) != nullptr) {
    return app.exit(error);
  }
  CLI::App* command = chosen_subcommand(app, arguments);
  // A bare `sedensenet` or `sedensenet <command>`: its usage.
  if (arguments.size() <= 1 || (command != nullptr && arguments.size() == 2)) {
    std::fputs((command != nullptr ? command : &app)->help().c_str(), stdout);
    return arguments.size() <= 1 ? 0 : 2;
  }
  const std::string name = command != nullptr ? "sedensenet " + command->get_name() : std::string("sedensenet");
  std::string message = error.what();
  // A misspelt flag is the likely cause of any parse error (an unexpected argument, or a required
  // option "missing" because it was misspelt): name each one and the flag it probably meant.
  const CLI::App& scope = command != nullptr ? *command : app;
  std::vector<std::string> unknown;
  for (size_t i = 1; i < arguments.size(); ++i) {
    const auto& word = arguments[i];
    if (word.rfind("--", 0) != 0 || word == "--") continue;
    const auto flag = word.substr(2, word.find('=') == std::string::npos ? std::string::npos : word.find('=') - 2);
    bool known = false;
    for (const auto* option : scope.get_options()) {
      for (const auto& name : option->get_lnames()) known = known || name == flag;
    }
    if (!known) unknown.push_back("--" + flag);
  }
  if (!unknown.empty()) {
    std::ostringstream out;
    for (size_t i = 0; i < unknown.size(); ++i) {
      const auto suggestion = closest_flag(scope, unknown[i]);
      out << (i > 0 ? "; " : "") << "unknown option " << unknown[i] << " for `" << name << "`";
      if (!suggestion.empty()) out << ": did you mean " << suggestion << "?";
    }
    message = out.str();
  } else if (dynamic_cast<const CLI::ExtrasError*>(&error) != nullptr) {
    // "The following arguments were not expected: a b": positional arguments too many.
    const std::string marker = "not expected:";
    const auto at = message.find(marker);
    message = "unexpected argument(s)" + (at == std::string::npos ? std::string() : message.substr(at + marker.size())) +
              " for `" + name + "`";
  }
  std::fprintf(stderr, "sedensenet: error: %s (`%s --help` lists the options)\n", message.c_str(), name.c_str());
  return 2;
}

}  // namespace sedensenet::cli
