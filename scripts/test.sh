#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (library, examples, benchmarks,
# tests) and runs the whole suite through CTest. Idempotent; re-running rebuilds incrementally.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -R densenet     only the CTest tests matching a regex (extra args go to ctest)
#
# Three builds, one per row of the README's support matrix plus the reliability build:
#  1. build/: Debian's LibTorch 1.13 (CPU), the whole suite, compared with Debian's python3-torch;
#  2. build-torch2/: LibTorch 2.x from PyPI's `torch` wheel (CUDA build; scripts/setup-torch2.sh
#     installs it in .cache/torch2-venv), the whole suite again, compared with that wheel's torch;
#     the CUDA tests compile and are skipped without a GPU;
#  3. build-sanitize/: clang with AddressSanitizer and UndefinedBehaviorSanitizer, the data, I/O,
#     training and CLI tests under the sanitizers and each libFuzzer target for a bounded time
#     (docs/reliability.md).
#
# Environment: BUILD_DIR (default build), TORCH2_DIR (default build-torch2), TORCH2=0 skips the
#              LibTorch 2.x build, SANITIZE_DIR (default build-sanitize), SANITIZE=0 skips the
#              sanitizer build, FUZZ_SECONDS (per fuzz target, default 20),
#              JOBS (build jobs, default: cores), CTEST_JOBS (tests in parallel, default 2),
#              CCACHE=0 compiles without ccache (scripts/compiler-cache.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
source scripts/compiler-cache.sh

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
CTEST_JOBS=${CTEST_JOBS:-2}

status=0
start=$(date +%s)
# One build of the project and its CTest suite: build_and_test NAME DIR [cmake arguments...].
# A failing suite sets the exit status; the other builds still run.
build_and_test() {
  local name=$1 dir=$2; shift 2
  local began built rc
  began=$(date +%s)
  cmake -S . -B "$dir" "${compiler_cache_args[@]}" "$@"
  cmake --build "$dir" -j "$JOBS"
  built=$(date +%s)
  set +e
  (cd "$dir" && ctest --output-on-failure -j "$CTEST_JOBS" "${ctest_args[@]}")
  rc=$?
  set -e
  [[ $rc -eq 0 ]] || status=$rc
  echo "test.sh: $name: build $((built - began)) s, tests $(( $(date +%s) - built)) s"
}
ctest_args=("$@")

# The virtual environment of the LibTorch 2.x build also holds onnx and onnxruntime, which the
# ONNX export tests of every build run the exported files in.
began=$(date +%s)
python2=$(scripts/setup-torch2.sh)
echo "test.sh: LibTorch 2.x / ONNX Runtime set-up $(( $(date +%s) - began)) s"

# Every build compiles the crash-safety tests' fault injection (a test-only option).
build_and_test "LibTorch 1.13 (Debian)" "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSEDENSENET_FAULT_INJECTION=ON \
  -DSEDENSENET_ONNX_PYTHON="$python2"

if [[ "${TORCH2:-1}" != 0 ]]; then
  build_and_test "LibTorch 2.x (PyPI wheel)" "${TORCH2_DIR:-build-torch2}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$("$python2" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
    -DSEDENSENET_PYTHON="$python2" -DSEDENSENET_FAULT_INJECTION=ON
fi

if [[ "${SANITIZE:-1}" != 0 ]]; then
  # LibTorch is not instrumented; its one-time allocations at exit are not leaks of ours.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  build_and_test "sanitizers and fuzzing (LibTorch 1.13, clang)" "${SANITIZE_DIR:-build-sanitize}" \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" -DSEDENSENET_SANITIZE=ON -DSEDENSENET_FUZZ=ON \
    -DSEDENSENET_FUZZ_SECONDS="${FUZZ_SECONDS:-20}" -DSEDENSENET_BUILD_EXAMPLES=OFF \
    -DSEDENSENET_BUILD_BENCHMARKS=OFF -DSEDENSENET_INSTALL=OFF -DSEDENSENET_FAULT_INJECTION=ON
fi
end=$(date +%s)
echo "test.sh: total $((end - start)) s"
exit $status
