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

  // 1. SE-DenseNet-121 whose SE blocks start as the identity: with the ScaledSigmoid gate
  //    (2 * sigmoid) and fc2 at zero, every gate is exactly 1, so with torchvision's weights the
  //    network computes torchvision's function until training moves the gates.
  auto model = sedensenet::DenseNetOptions::densenet121()
                   .se_gate(sedensenet::SEGate::scaled_sigmoid)
                   .memory(sedensenet::MemoryMode::efficient);

  // 2. A gentle recipe: AdamW, small learning rate, cosine decay.
  auto recipe = sedensenet::TrainerOptions()
                    .optimizer(sedensenet::OptimizerKind::adamw)
                    .lr(3e-4)
                    .weight_decay(0.01)
                    .scheduler(sedensenet::ScheduleKind::cosine)
                    .epochs(epochs)
                    .run_dir("runs/fine_tune");

  // 3. The data, the model with one output per class, the Trainer (Experiment sets them up).
  sedensenet::Experiment experiment(argv[2], model, recipe,
                                    sedensenet::DataOptions().image_size(size).batch_size(32));

  // 4. Load what fits: everything but the SE blocks (new) and the classifier (1000 classes in
  //    the file, one per folder class here). The report lists both.
  auto report = experiment.warm_start(argv[1]);
  std::cout << "warm start: " << report.loaded.size() << " tensors from " << argv[1] << ", "
            << report.missing.size() << " new SE tensors, " << report.mismatched.size()
            << " classifier tensors re-initialised\n";

  auto result = experiment.fit();
  std::cout << "best test accuracy " << 100 * result.best_accuracy << "%; weights in runs/fine_tune/best.pt\n";
  auto& net = experiment.model();

  // 5. Back to Python: the twin (python/sedensenet.py) loads this file strictly.
  sedensenet::io::save_state_dict(*net, "runs/fine_tune/state_dict.pt");
  std::cout << "state dict for PyTorch: runs/fine_tune/state_dict.pt\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "fine_tune: " << sedensenet::error_message(e) << "\n";
  return 1;
}
