// The recommended training recipe against the reference's (Adam 1e-4, constant learning rate) at
// equal epochs, on the same model, data, initial weights and data order. Prints the curves side by
// side and writes CSV and an SVG plot.
//
//   recipe_comparison [--data DIR] [--preset densenet_bc_22_k12] [--image-size 28] [--epochs 4]
//                     [--batch 64] [--augment flip] [--max-train N] [--out DIR]
#include <sedensenet/sedensenet.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>

namespace data = sedensenet::data;

int main(int argc, char** argv) {
  CLI::App app{"Recommended recipe vs the reference recipe, same model and data"};
  std::string data_dir, preset = "densenet_bc_22_k12", augment = "flip", out = "recipe_comparison";
  int64_t image_size = 28, epochs = 4, batch = 64, max_train = -1;
  int threads = 0;
  app.add_option("--data", data_dir, "image folder with train/ and test/ (default: Fashion-MNIST)");
  app.add_option("--preset", preset, "architecture");
  app.add_option("--image-size", image_size, "input size");
  app.add_option("--epochs", epochs, "epochs for both recipes")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--augment", augment, "none or flip")->check(CLI::IsMember({"none", "flip"}));
  app.add_option("--max-train", max_train, "use only the first N training images (-1 = all)");
  app.add_option("--threads", threads, "LibTorch threads (0 = one per core)");
  app.add_option("--out", out, "output folder (run folders, CSV, SVG)");
  CLI11_PARSE(app, argc, argv);

  try {
    sedensenet::set_num_threads(threads);
    sedensenet::keep_freed_memory();
    if (data_dir.empty()) data_dir = data::prepare_fashion_mnist("data/fashion-mnist").root.string();
    auto splits = data::ImageFolder::split(data_dir);
    if (max_train > 0 && max_train < static_cast<int64_t>(splits.train.samples().size())) {
      // A class-balanced prefix is not needed for a comparison: both recipes see the same images.
      std::vector<data::Sample> subset(splits.train.samples().begin(),
                                       splits.train.samples().begin() + max_train);
      splits.train = splits.train.subset(subset);
    }
    sedensenet::io::InputSpec input;
    input.size = image_size;
    std::vector<data::TransformPtr> steps = {std::make_shared<data::Resize>(image_size, image_size)};
    if (augment == "flip") steps.push_back(std::make_shared<data::RandomHorizontalFlip>());
    steps.push_back(std::make_shared<data::ToTensor>());
    steps.push_back(std::make_shared<data::Normalize>(input.mean, input.std));
    auto train_transform = data::compose(steps);

    std::map<std::string, sedensenet::History> histories;
    for (const std::string recipe : {"reference", "recommended"}) {
      auto options = (recipe == "reference" ? sedensenet::TrainerOptions::reference()
                                            : sedensenet::TrainerOptions::recommended())
                         .epochs(epochs)
                         .min_steps(0)  // exactly --epochs for both recipes
                         .threads(threads)
                         .run_dir((std::filesystem::path(out) / recipe).string());
      data::ImageLoader train_loader(splits.train, train_transform,
                                     data::LoaderOptions().batch_size(batch).seed(1));
      data::ImageLoader test_loader(splits.test, input.eval_transform(),
                                    data::LoaderOptions().batch_size(batch).shuffle(false));
      auto model_options = sedensenet::DenseNetOptions::preset(preset).num_classes(
          static_cast<int64_t>(splits.train.classes().size()));
      torch::manual_seed(0);  // identical initial weights for both recipes
      sedensenet::DenseNet net(model_options);
      sedensenet::Trainer trainer(net, options);
      trainer.set_class_names(splits.train.classes());
      trainer.set_metadata(sedensenet::io::densenet_metadata(model_options, input));
      sedensenet::ProgressPrinter progress(stdout, 0, 60.0);
      progress.attach(trainer);
      fmt::print("== {} recipe: {} ==\n", recipe, options.to_json().dump());
      sedensenet::ImageLoaderSource train(train_loader), test(test_loader);
      histories[recipe] = trainer.fit(train, &test).history;
    }

    const auto& ref = histories["reference"].epochs();
    const auto& rec = histories["recommended"].epochs();
    fmt::print("\n{:>5} | {:>14} {:>14} | {:>15} {:>15}\n", "epoch", "reference acc",
               "recommended acc", "reference loss", "recommended loss");
    std::ofstream csv(std::filesystem::path(out) / "recipe_comparison.csv");
    csv << "epoch,reference_test_accuracy,recommended_test_accuracy,reference_test_loss,"
           "recommended_test_loss\n";
    for (size_t i = 0; i < ref.size() && i < rec.size(); ++i) {
      fmt::print("{:>5} | {:>13.2f}% {:>13.2f}% | {:>15.4f} {:>15.4f}\n", i + 1,
                 100 * ref[i].test_accuracy, 100 * rec[i].test_accuracy, ref[i].test_loss,
                 rec[i].test_loss);
      csv << fmt::format("{},{:.4f},{:.4f},{:.4f},{:.4f}\n", i + 1, ref[i].test_accuracy,
                         rec[i].test_accuracy, ref[i].test_loss, rec[i].test_loss);
    }
    std::vector<sedensenet::svg::Series> series;
    for (const auto& [name, history] : histories) {
      sedensenet::svg::Series s;
      s.name = name + " (test)";
      for (const auto& m : history.epochs()) {
        s.x.push_back(static_cast<double>(m.epoch));
        s.y.push_back(100 * m.test_accuracy);
      }
      series.push_back(s);
      s.name = name + " (train)";
      s.dashed = true;
      s.y.clear();
      for (const auto& m : history.epochs()) s.y.push_back(100 * m.train_accuracy);
      series.push_back(s);
    }
    sedensenet::svg::ChartOptions chart;
    chart.title = fmt::format("{} on {}: recipes at equal epochs", preset, data_dir);
    chart.x_label = "epoch";
    chart.y_label = "accuracy (%)";
    std::ofstream(std::filesystem::path(out) / "recipe_comparison.svg")
        << sedensenet::svg::line_plot(series, chart);
    fmt::print("wrote {}/recipe_comparison.csv and .svg\n", out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "recipe_comparison: {}\n", sedensenet::error_message(e));
    return 1;
  }
  return 0;
}
