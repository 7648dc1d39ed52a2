// Warm start: an SE-DenseNet-121 initialised from torchvision's DenseNet-121 weights, then
// fine-tuned on a small image folder.
//
//   fine_tune TORCHVISION_WEIGHTS DATA [EPOCHS] [IMAGE_SIZE]
//
// TORCHVISION_WEIGHTS is what Python writes with
//   torch.save(torchvision.models.densenet121(weights="IMAGENET1K_V1").state_dict(), "densenet121.pth")
// (this machine cannot download the ImageNet weights; the tests use seeded random ones).
#include <sedensenet/sedensenet.hpp>

#include <iostream>

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: fine_tune TORCHVISION_WEIGHTS DATA [EPOCHS] [IMAGE_SIZE]\n";
    return 2;
  }
  const int64_t epochs = argc > 3 ? std::stoll(argv[3]) : 3;
  const int64_t size = argc > 4 ? std::stoll(argv[4]) : 224;
  sedensenet::set_num_threads(0);
  namespace data = sedensenet::data;

  // 1. The data and its classes.
  auto splits = data::ImageFolder::split(argv[2]);
  const auto classes = static_cast<int64_t>(splits.train.classes().size());

  // 2. SE-DenseNet-121 whose SE blocks start as the identity: with the ScaledSigmoid gate
  //    (2 * sigmoid) and fc2 at zero, every gate is exactly 1, so with torchvision's weights the
  //    network computes torchvision's function until training moves the gates.
  auto options = sedensenet::DenseNetOptions::densenet121()
                     .num_classes(classes)
                     .se_gate(sedensenet::SEGate::scaled_sigmoid)
                     .memory(sedensenet::MemoryMode::efficient);
  sedensenet::DenseNet net(options);

  // 3. Load what fits: everything but the SE blocks (new) and the classifier (1000 classes in
  //    the file, `classes` here). The report lists both.
  auto report = sedensenet::io::load_state_dict(*net, argv[1], sedensenet::io::LoadOptions().strict(false));
  std::cout << "warm start: " << report.loaded.size() << " tensors from " << argv[1] << ", "
            << report.missing.size() << " new SE tensors, " << report.mismatched.size()
            << " classifier tensors re-initialised\n";

  // 4. Fine-tune with a gentle recipe: AdamW, small learning rate, cosine decay.
  sedensenet::io::InputSpec input;
  input.size = size;
  data::ImageLoader train_loader(splits.train, data::train_transform(size), data::LoaderOptions().batch_size(32));
  data::ImageLoader test_loader(splits.test, input.eval_transform(), data::LoaderOptions().batch_size(32).shuffle(false));
  auto recipe = sedensenet::TrainerOptions()
                    .optimizer(sedensenet::OptimizerKind::adamw)
                    .lr(3e-4)
                    .weight_decay(0.01)
                    .scheduler(sedensenet::ScheduleKind::cosine)
                    .epochs(epochs)
                    .run_dir("runs/fine_tune");
  sedensenet::Trainer trainer(net, recipe);
  trainer.set_class_names(splits.train.classes());
  trainer.set_metadata(sedensenet::io::densenet_metadata(options, input));
  sedensenet::ProgressPrinter progress;
  progress.attach(trainer);
  sedensenet::ImageLoaderSource train(train_loader), test(test_loader);
  auto result = trainer.fit(train, &test);
  std::cout << "best test accuracy " << 100 * result.best_accuracy << "%; weights in runs/fine_tune/best.pt\n";

  // 5. Back to Python: the twin (python/sedensenet.py) loads this file strictly.
  sedensenet::io::save_state_dict(*net, "runs/fine_tune/state_dict.pt");
  std::cout << "state dict for PyTorch: runs/fine_tune/state_dict.pt\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "fine_tune: " << sedensenet::error_message(e) << "\n";
  return 1;
}
