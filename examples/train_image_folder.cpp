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
  namespace data = sedensenet::data;

  // 1. Data: class folders -> train and test sides, with the reference's pipelines.
  auto splits = data::ImageFolder::split(argv[1]);
  sedensenet::io::InputSpec input;
  input.size = size;
  data::ImageLoader train_loader(splits.train, data::train_transform(size),
                                 data::LoaderOptions().batch_size(64));
  data::ImageLoader test_loader(splits.test, input.eval_transform(),
                                data::LoaderOptions().batch_size(64).shuffle(false));

  // 2. Model: SE-DenseNet-BC, depth 40, k = 12, one output per class.
  auto options = sedensenet::DenseNetOptions::densenet_bc(40, 12)
                     .num_classes(static_cast<int64_t>(splits.train.classes().size()));
  sedensenet::DenseNet net(options);

  // 3. Trainer: recommended recipe, a run folder, progress on stdout.
  sedensenet::Trainer trainer(net, sedensenet::TrainerOptions::recommended().epochs(epochs).run_dir(run_dir));
  trainer.set_class_names(splits.train.classes());
  trainer.set_metadata(sedensenet::io::densenet_metadata(options, input));
  sedensenet::ProgressPrinter progress;
  progress.attach(trainer);

  sedensenet::ImageLoaderSource train(train_loader), test(test_loader);
  auto result = trainer.fit(train, &test);
  std::cout << "best test accuracy " << 100 * result.best_accuracy << "% at epoch "
            << result.best_epoch << "; weights in " << run_dir << "/best.pt\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "train_image_folder: " << sedensenet::error_message(e) << "\n";
  return 1;
}
