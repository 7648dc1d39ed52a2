// sedensenet info: architecture summary (parameters, stage shapes, MACs) of a preset or a checkpoint.
#include <sedensenet/io/trained_model.hpp>
#include <sedensenet/nn/summary.hpp>
#include <sedensenet/util/threads.hpp>

#include <fmt/format.h>

#include <iostream>

#include "command.hpp"

namespace sedensenet::cli {
namespace {

class Info : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* info = app.add_subcommand("info", "architecture summary: parameters, stage shapes, MACs");
    info->add_option("--preset", preset, "architecture (see train --help)")->capture_default_str();
    info->add_option("--weights", weights, "summarise the model of a checkpoint instead");
    info->add_option("--image-size", image_size, "input size (default: 32 CIFAR style, 224 ImageNet style)")->check(CLI::Range(int64_t{0}, int64_t{4096}));
    info->add_option("--classes", classes, "number of classes")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
    info->add_option("--se-reduction", se_reduction, "SE reduction ratio (0 = no SE)")->check(CLI::Range(int64_t{0}, int64_t{65536}));
    return info;
  }

  int run(CLI::App&) override {
    sedensenet::set_num_threads(0);
    sedensenet::DenseNet net{nullptr};
    int64_t size = image_size;
    if (!weights.empty()) {
      auto trained = sedensenet::io::load_trained_model(weights);
      net = trained.model;
      if (size == 0) size = trained.input.size;
      fmt::print("{}: {} classes, input {}x{}, trained {} epoch(s)\n", weights,
                 trained.options.num_classes(), trained.input.size, trained.input.size,
                 trained.state.value("epoch", 0));
    } else {
      auto options = sedensenet::DenseNetOptions::preset(preset).num_classes(classes).se_reduction(se_reduction);
      net = sedensenet::DenseNet(options);
      if (size == 0) size = options.small_inputs() ? 32 : 224;
      fmt::print("{} ({}SE)\n", preset, se_reduction > 0 ? "" : "no ");
    }
    std::cout << sedensenet::summary(net, {3, size, size});
    return 0;
  }

 private:
  std::string preset = "densenet_bc_100";
  std::string weights;
  int64_t image_size = 0;
  int64_t classes = 10;
  int64_t se_reduction = 16;
};

}  // namespace

std::unique_ptr<Command> info_command() { return std::make_unique<Info>(); }

}  // namespace sedensenet::cli
