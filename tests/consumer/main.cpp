// Builds against the installed package only: one include, one imported target.
#include <sedensenet/sedensenet.hpp>

#include <iostream>

int main() {
  sedensenet::set_num_threads(1);
  sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet_bc(16, 6).num_classes(3));
  net->eval();
  torch::NoGradGuard no_grad;
  auto logits = net->forward(torch::randn({2, 3, 32, 32}));
  std::cout << "SEDenseNet " << sedensenet::version() << " consumer: logits " << logits.sizes()
            << "\n";
  return logits.sizes() == torch::IntArrayRef({2, 3}) ? 0 : 1;
}
