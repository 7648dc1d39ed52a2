// Must NOT compile: the attention module has no Tensor forward(Tensor). The test checks that the
// compiler prints DenseLayer's plain-English static_assert message.
#include "sedensenet/nn/dense_layer.hpp"

struct NoForwardImpl : torch::nn::Module {
  explicit NoForwardImpl(int64_t) {}
};
TORCH_MODULE(NoForward);

int main() {
  sedensenet::DenseLayer<NoForward> layer(sedensenet::DenseLayerOptions(8, 4));
  return 0;
}
