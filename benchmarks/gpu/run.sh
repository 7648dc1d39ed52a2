#!/usr/bin/env bash
# GPU benchmark: builds the library and benchmarks/efficient_memory against the CUDA LibTorch
# inside PyTorch's Python package, on a machine without Debian's packages, and prints the GPU
# table (DenseNet-BC depth 40/100/160/250, batch 64, 32x32; DenseNet-121 at 224x224, batch 64;
# standard against efficient). Header-only dependencies come from .gpu-deps/include
# (benchmarks/gpu/pack.sh makes it on a Debian machine).
#
#   benchmarks/gpu/run.sh [OUT_DIR]       (OUT_DIR gets the CSV, SVG and log; default .)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:-.}
mkdir -p "$out"
[ -d .gpu-deps/include ] || { echo "run benchmarks/gpu/pack.sh first (on a Debian machine)" >&2; exit 1; }
python=${PYTHON:-python3}
prefix=$($python -c 'import torch; print(torch.utils.cmake_prefix_path)')
$python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
start=$(date +%s)
cmake -S . -B build-gpu "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DSEDENSENET_VENDORED_HEADERS="$PWD/.gpu-deps/include" \
  -DSEDENSENET_WITH_ZLIB=OFF -DSEDENSENET_BUILD_TESTS=OFF -DSEDENSENET_BUILD_EXAMPLES=OFF \
  -DSEDENSENET_BUILD_TOOLS=OFF -DSEDENSENET_INSTALL=OFF -DCMAKE_CUDA_ARCHITECTURES=native \
  > "$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
cmake --build build-gpu --target efficient_memory -j "$(nproc)" > "$out/build.log" 2>&1 \
  || { grep -E "error" -A3 "$out/build.log" | head -60; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
build-gpu/benchmarks/efficient_memory --device cuda --threads 8 --steps 5 --warmup 2 \
  --densenet121-batch 64 --csv "$out/efficient_memory_gpu.csv" --svg "$out/efficient_memory_gpu.svg" \
  2>&1 | tee "$out/efficient_memory_gpu.log"
