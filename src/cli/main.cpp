// sedensenet: the command-line tool. Train from an image folder, resume, evaluate, predict,
// prepare Fashion-MNIST, show an architecture summary, convert old checkpoints. See docs/cli.md.
// Each subcommand is a file of its own (command.hpp); this one parses and reports errors.
#include <sedensenet/util/errors.hpp>
#include <sedensenet/version.hpp>

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "command.hpp"

int main(int argc, char** argv) {
  using namespace sedensenet::cli;
  g_arguments.assign(argv, argv + argc);
  CLI::App app{"sedensenet: train and run SE-DenseNet image classifiers (LibTorch)"};
  app.set_version_flag("--version", std::string("sedensenet ") + sedensenet::version());
  app.require_subcommand(1);
  app.footer("Run `sedensenet <command> --help` for a command's options. Documentation: docs/cli.md");

  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(train_command());
  commands.push_back(evaluate_command());
  commands.push_back(predict_command());
  commands.push_back(prepare_command());
  commands.push_back(info_command());
  commands.push_back(convert_command());
  commands.push_back(export_command());
  std::vector<CLI::App*> subcommands;
  for (auto& command : commands) subcommands.push_back(command->add_to(app));

  reject_integer_overflow(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return report_usage_error(app, e, g_arguments);
  }
  // A file-size limit (ulimit -f) must surface as a write error naming the file, not kill us.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    for (size_t i = 0; i < commands.size(); ++i) {
      if (subcommands[i]->parsed()) return commands[i]->run(*subcommands[i]);
    }
  } catch (const std::exception& e) {
    if (g_rank >= 0) {
      // A distributed worker: say which rank, and leave at once (a process group whose peers
      // are gone may block in its destructor).
      std::fprintf(stderr, "sedensenet: error (rank %lld): %s\n", static_cast<long long>(g_rank),
                   sedensenet::error_message(e).c_str());
      std::fflush(nullptr);
      std::_Exit(1);
    }
    std::fflush(stdout);  // what was printed before comes first
    std::fprintf(stderr, "sedensenet: error: %s\n", sedensenet::error_message(e).c_str());
    return 1;
  }
  return 0;
}
