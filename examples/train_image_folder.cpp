// Train an SE-DenseNet on a folder of images, from scratch, with the recommended recipe.
//
//   train_image_folder DATA [RUN_DIR] [EPOCHS] [IMAGE_SIZE]
//
// DATA holds one sub-folder per class (or train/ and test/ sub-folders). The run folder gets
// config.json, history.csv, best.pt, last.pt, metrics and plots.
#include <sedensenet/sedensenet.hpp>

#include <iostream>
#include <string>

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: train_image_folder DATA [RUN_DIR] [EPOCHS] [IMAGE_SIZE]\n";
    return 2;
  }
  const std::string run_dir = argc > 2 ? argv[2] : "runs/example";
  const int64_t size = argc > 4 ? std::stoll(argv[4]) : 32;
  sedensenet::set_num_threads(0);  // one LibTorch thread per core

  // The data (class folders -> train and test sides, the reference's pipelines), the model
  // (SE-DenseNet-BC, depth 40, k = 12, one output per class), the recommended recipe and a run
  // folder, set up in one call; it prints what it found and, while training, the progress.
  // Without EPOCHS, the recipe's: 10, or more on a small folder to make its 3,000 steps
  // (TrainerOptions::min_steps). With EPOCHS, exactly that many.
  auto options = sedensenet::TrainerOptions::recommended().run_dir(run_dir);
  if (argc > 3) options.epochs(std::stoll(argv[3])).min_steps(0);
  sedensenet::Experiment experiment(argv[1], sedensenet::DenseNetOptions::densenet_bc(40, 12), options,
                                    sedensenet::DataOptions().image_size(size));
  auto result = experiment.fit();
  std::cout << "best test accuracy " << 100 * result.best_accuracy << "% at epoch "
            << result.best_epoch << "; weights in " << run_dir << "/best.pt\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "train_image_folder: " << sedensenet::error_message(e) << "\n";
  return 1;
}
