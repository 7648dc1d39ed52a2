// Runner of the CUDA tests (sedensenet_cuda_tests). Built whenever the LibTorch in use has CUDA;
// on a machine without a CUDA device it prints why and exits 77, which CTest reports as a skip.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <torch/cuda.h>

#include <cstdio>

#include "sedensenet/util/threads.hpp"

int main(int argc, char* argv[]) {
  if (!torch::cuda::is_available()) {
    std::printf("SKIPPED: no CUDA device (torch::cuda::is_available() is false); these tests run "
                "on a GPU machine (benchmarks/gpu/run.sh runs them)\n");
    return 77;
  }
  sedensenet::set_num_threads(2);
  return Catch::Session().run(argc, argv);
}
