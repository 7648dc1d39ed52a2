#pragma once
// The tool's subcommands (one file each) and what they share with main.cpp.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sedensenet::cli {

/// A one-line failure for the user (no stack trace): printed, and exit code 1.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// One subcommand: its options, then its work.
class Command {
 public:
  virtual ~Command() = default;
  /// Adds the subcommand and its options to `app`; returns the subcommand.
  virtual CLI::App* add_to(CLI::App& app) = 0;
  /// Runs it after the command line was parsed into its options; returns the exit code.
  virtual int run(CLI::App& command) = 0;
};

std::unique_ptr<Command> train_command();
std::unique_ptr<Command> evaluate_command();
std::unique_ptr<Command> predict_command();
std::unique_ptr<Command> prepare_command();
std::unique_ptr<Command> info_command();
std::unique_ptr<Command> convert_command();
std::unique_ptr<Command> export_command();

/// The command line as given (the distributed launcher starts its workers with it).
extern std::vector<std::string> g_arguments;
/// This process's rank in a distributed run (-1: not distributed).
extern int64_t g_rank;

/// Sets every option of `command` named in `values` (keys: long option names without dashes,
/// '_' or '-') that was not given on the command line, except those in `ignored`. Unknown keys
/// are an error naming the key and `source`.
void apply_json_defaults(CLI::App* command, const nlohmann::json& values, const std::string& source,
                         const std::vector<std::string>& ignored = {});
/// Reports a command-line mistake (usage_errors.cpp): the closest flag for a misspelt one, the
/// usage for a bare command, the tool's prefix and a pointer to --help otherwise. Returns the
/// exit status (0 for a bare `sedensenet`, 2 otherwise; --help and --version: CLI11's).
int report_usage_error(CLI::App& app, const CLI::ParseError& error, const std::vector<std::string>& arguments);
/// The long flag of `command` closest to `typed` ("--epochs" for "--epoch"), or "" if none is close.
std::string closest_flag(const CLI::App& command, const std::string& typed);
/// The device `name` ("cpu", "cuda", "cuda:N") if this process can use it, else a UsageError
/// naming `flag`, the value and what to do; checked before any data is read.
torch::Device checked_device(const std::string& name, const std::string& flag);
/// A JSON file (config file, config.json), or a UsageError naming it.
nlohmann::json read_json_file(const std::string& path);
/// Every integer option of `app` and its subcommands rejects a value its type cannot hold
/// ("--epochs 99999999999999999999") instead of saturating it.
void reject_integer_overflow(CLI::App& app);
/// Whether a weights file is a run checkpoint (of any version: its reader explains old ones) or
/// else a state dict; a file that is missing, truncated, corrupted or not a PyTorch archive gets
/// one message naming it here, before it is taken for a state dict.
bool is_checkpoint_weights(const std::string& path);

}  // namespace sedensenet::cli
