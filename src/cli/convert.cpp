// sedensenet convert-checkpoint: a trusted checkpoint of SEDenseNet 0.1 (format version 1) to the
// current format.
#include <sedensenet/io/checkpoint_file.hpp>
#include <sedensenet/train/legacy_checkpoint.hpp>

#include <fmt/format.h>

#include "command.hpp"

namespace sedensenet::cli {
namespace {

class Convert : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* convert = app.add_subcommand("convert-checkpoint", "convert a checkpoint of SEDenseNet 0.1 "
                                       "(format version 1) that you trust to the current format");
    convert->add_option("old", old_path, "the old best.pt or last.pt")->required();
    convert->add_option("new", new_path, "the file to write (must not exist)")->required();
    convert->add_flag("--trust-old-format", trusted,
                      "required: the old format is read through LibTorch's TorchScript loader, which "
                      "runs code stored in the file; give it only for files you made or trust");
    return convert;
  }

  int run(CLI::App&) override {
    if (!trusted) {
      throw UsageError("convert-checkpoint reads " + old_path + " through LibTorch's "
                       "TorchScript loader, which runs code stored in the file; if you made "
                       "the file or trust its source, add --trust-old-format");
    }
    convert_legacy_checkpoint(old_path, new_path);
    fmt::print("converted {} to {} (checkpoint format version {})\n", old_path, new_path,
               io::kCheckpointVersion);
    return 0;
  }

 private:
  std::string old_path, new_path;
  bool trusted = false;
};

}  // namespace

std::unique_ptr<Command> convert_command() { return std::make_unique<Convert>(); }

}  // namespace sedensenet::cli
