#!/usr/bin/env bash
# The main job on its embedded default: installs what is missing, builds the tool, prepares
# Fashion-MNIST (Debian's dataset-fashion-mnist) as an image folder, trains an SE-DenseNet on it
# (the small-image preset), evaluates the best weights on the 10,000 official test images, and
# predicts a few of them.
#
# Environment: BUILD_DIR (default build), DATA_DIR (default data/fashion-mnist),
#              RUN_DIR (default runs/demo; replaced on every run),
#              MINUTES (default 13: the training's time budget; the epoch count is fixed after the
#              first epoch to what fits), EPOCHS (default 30: at most this many).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
source scripts/compiler-cache.sh

BUILD_DIR=${BUILD_DIR:-build}
DATA_DIR=${DATA_DIR:-data/fashion-mnist}
RUN_DIR=${RUN_DIR:-runs/demo}
MINUTES=${MINUTES:-13}
EPOCHS=${EPOCHS:-30}

cmake -S . -B "$BUILD_DIR" "${compiler_cache_args[@]}" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "$(nproc)" --target sedensenet_tool
tool="$BUILD_DIR/src/sedensenet"

start=$(date +%s)
echo "== 1. Fashion-MNIST as an image folder"
"$tool" prepare fashion-mnist --out "$DATA_DIR"

echo "== 2. Train SE-DenseNet (small-image preset: stride-2 stem, 2 blocks of 6 layers, k = 16, SE r = 16)"
echo "      at 28x28, recommended recipe, as many epochs as fit $MINUTES minutes (at most $EPOCHS)"
rm -rf "$RUN_DIR"
"$tool" train "$DATA_DIR" --preset densenet_small --image-size 28 --augment flip \
  --epochs "$EPOCHS" --time-budget-minutes "$MINUTES" --batch-size 64 --run-dir "$RUN_DIR"

echo "== 3. Evaluate the best weights on the 10,000 test images"
"$tool" evaluate --weights "$RUN_DIR/best.pt" "$DATA_DIR" --output "$RUN_DIR/evaluation.json"

echo "== 4. Predict a few test images"
images=()
for class in Ankle_boot Bag Dress Sneaker Trouser; do
  # The first test image of the class (a glob, sorted: no `| head` that pipefail would trip on).
  files=("$DATA_DIR/test/$class"/*.png)
  images+=("${files[0]}")
done
"$tool" predict --weights "$RUN_DIR/best.pt" "${images[@]}"

end=$(date +%s)
echo
echo "demo: done in $((end - start)) s (after the build)."
echo "Run folder: $RUN_DIR (config.json, history.csv, best.pt, last.pt, metrics.json)"
echo "Plots: $RUN_DIR/accuracy.svg $RUN_DIR/loss.svg $RUN_DIR/lr.svg $RUN_DIR/confusion_matrix.svg"
