#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (library, examples, benchmarks,
# tests) and runs the whole suite through CTest. Idempotent; re-running rebuilds incrementally.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -R densenet     only the CTest tests matching a regex (extra args go to ctest)
#
# Environment: BUILD_DIR (default build), JOBS (build jobs, default: cores),
#              CTEST_JOBS (tests in parallel, default 2).
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
end=$(date +%s)
echo "test.sh: build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s"
exit $status
