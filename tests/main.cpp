// Catch2 runner for the whole suite. LibTorch's thread count is set explicitly (Debian's starts
// with one thread): SEDENSENET_TEST_THREADS, default 2.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "sedensenet/util/threads.hpp"

int main(int argc, char* argv[]) {
  const char* env = std::getenv("SEDENSENET_TEST_THREADS");
  sedensenet::set_num_threads(env ? std::stoi(env) : 2);
  return Catch::Session().run(argc, argv);
}
