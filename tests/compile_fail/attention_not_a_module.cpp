// Must NOT compile: the attention type is not a module holder.
#include "sedensenet/nn/dense_layer.hpp"

int main() {
  sedensenet::DenseLayer<int> layer(sedensenet::DenseLayerOptions(8, 4));
  return 0;
}
