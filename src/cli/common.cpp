// What the subcommands share: config files, integer checks, weights-file kinds.
#include "command.hpp"

#include <sedensenet/io/archive.hpp>
#include <sedensenet/io/checkpoint_file.hpp>
#include <sedensenet/io/files.hpp>
#include <sedensenet/util/errors.hpp>
#include <sedensenet/util/json.hpp>

#include <torch/cuda.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <filesystem>

namespace sedensenet::cli {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> g_arguments;
int64_t g_rank = -1;

namespace {

std::string json_scalar(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

}  // namespace

void apply_json_defaults(CLI::App* command, const json& values, const std::string& source,
                         const std::vector<std::string>& ignored) {
  if (!values.is_object()) throw UsageError(source + ": expected a JSON object of option values");
  for (const auto& [key, value] : values.items()) {
    if (std::find(ignored.begin(), ignored.end(), key) != ignored.end()) continue;
    std::string name = key;
    std::replace(name.begin(), name.end(), '_', '-');
    CLI::Option* option = command->get_option_no_throw("--" + name);
    if (option == nullptr) option = command->get_option_no_throw(name);  // positionals
    if (option == nullptr) {
      throw UsageError(source + ": unknown option '" + key + "' (see sedensenet " +
                       command->get_name() + " --help)");
    }
    if (option->count() > 0 || value.is_null()) continue;  // the command line wins
    // An empty list (milestones []) is the default of every recipe: nothing to set, and CLI11
    // takes a list option given no value for a mistake.
    if (value.is_array() && value.empty()) continue;
    option->clear();
    if (value.is_array()) {
      for (const auto& item : value) option->add_result(json_scalar(item));
    } else {
      option->add_result(json_scalar(value));
    }
    try {
      option->run_callback();
    } catch (const CLI::Error& e) {
      throw UsageError(source + ": option '" + key + "': " + e.what());
    }
  }
}

json read_json_file(const std::string& path) {
  std::string text;
  try {
    text = sedensenet::io::read_regular_file(path);
  } catch (const std::exception& e) {
    throw UsageError("config file " + sedensenet::error_message(e));
  }
  try {
    return sedensenet::util::parse_json(text, "config file " + path);
  } catch (const std::exception& e) {
    throw UsageError(sedensenet::error_message(e));
  }
}

void reject_integer_overflow(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    // The type name carries validator descriptions after a colon ("INT:NONNEGATIVE").
    const std::string type = option->get_type_name();
    const bool is_unsigned = type.rfind("UINT", 0) == 0;
    if (!is_unsigned && type.rfind("INT", 0) != 0) continue;
    option->check(CLI::Validator(
        [is_unsigned](std::string& value) -> std::string {
          const char* first = value.data();
          const char* last = value.data() + value.size();
          std::errc ec;
          if (is_unsigned) {
            uint64_t v = 0;
            ec = std::from_chars(first, last, v).ec;
          } else {
            int64_t v = 0;
            ec = std::from_chars(first, last, v).ec;
          }
          if (ec == std::errc::result_out_of_range) return "the value " + value + " is out of range";
          return std::string();
        },
        ""));
  }
  for (CLI::App* sub : app.get_subcommands({})) reject_integer_overflow(*sub);
}
torch::Device checked_device(const std::string& name, const std::string& flag) {
  std::optional<torch::Device> device;
  try {
    device = torch::Device(name);
  } catch (const std::exception&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda())) {
    throw UsageError(flag + " " + name + ": expected cpu, cuda or cuda:N");
  }
  if (device->is_cuda()) {
    if (!torch::cuda::is_available()) {
      throw UsageError(flag + " " + name + ": no CUDA device is usable here (this LibTorch " +
                       (torch::cuda::device_count() == 0 && !at::hasCUDA() ? "was built without CUDA"
                                                                         : "sees no GPU") +
                       "); use " + flag + " cpu");
    }
    const auto count = static_cast<int64_t>(torch::cuda::device_count());
    if (device->has_index() && device->index() >= count) {
      throw UsageError(flag + " " + name + ": this machine has " + std::to_string(count) +
                       " CUDA device(s), cuda:0 .. cuda:" + std::to_string(count - 1));
    }
  }
  return *device;
}

bool is_checkpoint_weights(const std::string& path) {
  if (!fs::exists(path)) throw UsageError("weights file " + path + " not found");
  if (fs::is_directory(path)) {
    const auto best = fs::path(path) / "best.pt";
    throw UsageError("--weights " + path + " is a folder; give a weights file" +
                     (fs::exists(best) ? ", such as " + best.string() : std::string(" (a run folder's best.pt)")));
  }
  if (sedensenet::io::is_checkpoint_file(path)) return true;
  sedensenet::io::read_verified_archive(path);
  return false;
}
}  // namespace sedensenet::cli
