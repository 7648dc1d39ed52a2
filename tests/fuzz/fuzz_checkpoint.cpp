// libFuzzer entry point for sedensenet::fuzz::checkpoint (see targets.hpp).
#include "targets.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return sedensenet::fuzz::checkpoint(data, size);
}
