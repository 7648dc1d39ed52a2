// sedensenet prepare fashion-mnist: Debian's dataset-fashion-mnist as train/ and test/ PNG folders.
#include <sedensenet/data/fashion_mnist.hpp>

#include <fmt/format.h>

#include "command.hpp"

namespace sedensenet::cli {
namespace {

namespace data = sedensenet::data;

class Prepare : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* prepare = app.add_subcommand("prepare", "prepare a dataset as an image folder");
    prepare->require_subcommand(1);
    auto* fmnist = prepare->add_subcommand("fashion-mnist", "Debian's dataset-fashion-mnist as train/ and test/ PNG folders");
    fmnist->add_option("--out", out, "output folder")->capture_default_str();
    fmnist->add_option("--source", source, "folder with the four gzip'd IDX files")->capture_default_str();
    fmnist->add_option("--max-train", max_train, "write only the first N training images (-1 = all 60000)");
    fmnist->add_option("--max-test", max_test, "write only the first N test images (-1 = all 10000)");
    return prepare;
  }

  int run(CLI::App&) override {
    auto prepared = data::prepare_fashion_mnist(out, source, max_train, max_test);
    fmt::print("Fashion-MNIST {} {}: {} training and {} test images in train/ and test/ (10 classes)\n",
               prepared.reused ? "already prepared in" : "written to", prepared.root.string(),
               prepared.train_images, prepared.test_images);
    return 0;
  }

 private:
  std::string out = "data/fashion-mnist";
  std::string source = data::kFashionMnistSource;
  int64_t max_train = -1;
  int64_t max_test = -1;
};

}  // namespace

std::unique_ptr<Command> prepare_command() { return std::make_unique<Prepare>(); }

}  // namespace sedensenet::cli
