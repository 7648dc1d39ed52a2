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
  const int64_t epochs = argc > 3 ? std::stoll(argv[3]) : 5;
  const int64_t size = argc > 4 ? std::stoll(argv[4]) : 32;
  sedensenet::set_num_threads(0);  // one LibTorch thread per core

  // The data (class folders -> train and test sides, the reference's pipelines), the model
  // (SE-DenseNet-BC, depth 40, k = 12, one output per class), the recommended recipe and a run
  // folder, set up in one call; it prints what it found and, while training, the progress.
  sedensenet::Experiment experiment(argv[1], sedensenet::DenseNetOptions::densenet_bc(40, 12),
                                    sedensenet::TrainerOptions::recommended().epochs(epochs).run_dir(run_dir),
                                    sedensenet::DataOptions().image_size(size));
  auto result = experiment.fit();
  std::cout << "best test accuracy " << 100 * result.best_accuracy << "% at epoch "
            << result.best_epoch << "; weights in " << run_dir << "/best.pt\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "train_image_folder: " << sedensenet::error_message(e) << "\n";
  return 1;
}
