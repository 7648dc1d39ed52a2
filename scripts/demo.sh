#!/usr/bin/env bash
# The main job on its embedded default: installs what is missing, builds, then runs the model
# tour (every preset's summary and a training step).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "$(nproc)" --target model_tour

"$BUILD_DIR/examples/model_tour" --threads 0
