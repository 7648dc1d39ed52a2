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
#              JOBS (build jobs, default: cores), CTEST_JOBS (tests in parallel, default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
CTEST_JOBS=${CTEST_JOBS:-2}

start=$(date +%s)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "$JOBS"
built=$(date +%s)

set +e
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$CTEST_JOBS" "$@")
status=$?
set -e
tested=$(date +%s)
echo "test.sh: build $((built - start)) s, tests $((tested - built)) s"

if [[ "${TORCH2:-1}" != 0 ]]; then
  torch2_start=$(date +%s)
  python2=$(scripts/setup-torch2.sh)
  TORCH2_DIR=${TORCH2_DIR:-build-torch2}
  prefix=$("$python2" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S . -B "$TORCH2_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DSEDENSENET_PYTHON="$python2"
  cmake --build "$TORCH2_DIR" -j "$JOBS"
  torch2_built=$(date +%s)
  set +e
  (cd "$TORCH2_DIR" && ctest --output-on-failure -j "$CTEST_JOBS" "$@")
  torch2_status=$?
  set -e
  [[ $torch2_status -eq 0 ]] || status=$torch2_status
  tested=$(date +%s)
  echo "test.sh: LibTorch 2.x set-up and build $((torch2_built - torch2_start)) s, tests $((tested - torch2_built)) s"
fi

if [[ "${SANITIZE:-1}" != 0 ]]; then
  SANITIZE_DIR=${SANITIZE_DIR:-build-sanitize}
  # LibTorch is not instrumented; its one-time allocations at exit are not leaks of ours.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  cmake -S . -B "$SANITIZE_DIR" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" -DSEDENSENET_SANITIZE=ON -DSEDENSENET_FUZZ=ON \
    -DSEDENSENET_FUZZ_SECONDS="${FUZZ_SECONDS:-20}" -DSEDENSENET_BUILD_EXAMPLES=OFF \
    -DSEDENSENET_BUILD_BENCHMARKS=OFF -DSEDENSENET_INSTALL=OFF
  cmake --build "$SANITIZE_DIR" -j "$JOBS"
  sanitize_built=$(date +%s)
  set +e
  (cd "$SANITIZE_DIR" && ctest --output-on-failure -j "$CTEST_JOBS" "$@")
  sanitize_status=$?
  set -e
  [[ $sanitize_status -eq 0 ]] || status=$sanitize_status
  echo "test.sh: sanitizer build $((sanitize_built - tested)) s, sanitizer tests and fuzzing $(( $(date +%s) - sanitize_built)) s"
fi
end=$(date +%s)
echo "test.sh: total $((end - start)) s"
exit $status
