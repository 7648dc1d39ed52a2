#!/usr/bin/env bash
# GPU benchmark, one prepared command for a lent GPU machine (one device call of at most 9 minutes,
# build included: each run below is capped at 150 s, the CUDA tests at 120 s). It builds the
# library, benchmarks/efficient_memory and the CUDA tests against the CUDA LibTorch inside
# PyTorch's Python package, runs the CUDA tests, then measures on the same
# GPU in the same run, for SE-DenseNet-BC-100 and -250 (k = 12, 32x32, batch 64) and
# DenseNet-121 + SE (224x224, batch 64):
#   - standard against efficient dense layers, and PyTorch eager against PyTorch with
#     torch.utils.checkpoint (use_reentrant=False) on the same model (python/sedensenet.py);
#   - peak CUDA memory (caching allocator: live tensor peak and reserved peak) and median step time;
#   - float32 and bf16 autocast (training throughput in img/s for both);
#   - once more with the modes in the other order, to show the figures do not depend on it.
# The machine needs no Debian packages: header-only dependencies come from .gpu-deps/include
# (benchmarks/gpu/pack.sh makes it on a Debian machine; the device tool carries it).
#
#   benchmarks/gpu/run.sh [--dry-run] [OUT_DIR]     (OUT_DIR gets CSV, SVG and logs; default .)
#
# --dry-run: the same pipeline on the CPU with tiny models (depth 16, batch 4, 16x16), to check the
# script end to end on a machine without a GPU (the CUDA tests then report themselves skipped).
# Environment: PYTHON (the Python whose torch is used; default python3), BUILD (default build-gpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
out=$(realpath -m "${1:-.}")
mkdir -p "$out"
[[ -d .gpu-deps/include ]] || { echo "run benchmarks/gpu/pack.sh first (on a Debian machine)" >&2; exit 1; }
python=$(command -v "${PYTHON:-python3}")
build=${BUILD:-build-gpu}
prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
{
  date -u +"%Y-%m-%d %H:%M UTC"
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} | tee "$out/environment.txt"

# zlib: the system's headers if any, else the packed ones; the runtime library Python loads.
zlib=()
if [[ ! -f /usr/include/zlib.h ]]; then
  libz=$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')
  [[ -z "$libz" ]] && libz=$("$python" -c 'import zlib, re; print(re.search(r"\S*libz\.so\S*", open("/proc/self/maps").read()).group(0))')
  zlib=(-DZLIB_INCLUDE_DIR="$PWD/.gpu-deps/include" -DZLIB_LIBRARY="$libz")
fi
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
start=$(date +%s)
# Hopper (sm_90) for the H200; LibTorch's own CMake files read TORCH_CUDA_ARCH_LIST.
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DSEDENSENET_VENDORED_HEADERS="$PWD/.gpu-deps/include" \
  -DSEDENSENET_PYTHON="$python" -DTORCH_CUDA_ARCH_LIST="9.0" -DCMAKE_CUDA_ARCHITECTURES=90 \
  "${zlib[@]}" -DSEDENSENET_BUILD_TESTS=ON -DSEDENSENET_BUILD_EXAMPLES=OFF \
  -DSEDENSENET_BUILD_TOOLS=OFF -DSEDENSENET_INSTALL=OFF \
  > "$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
targets=(--target efficient_memory sedensenet_memory_probe)
grep -q "CUDA support: ON" "$out/configure.log" && targets+=(sedensenet_cuda_tests)
cmake --build "$build" "${targets[@]}" -j "$(nproc)" > "$out/build.log" 2>&1 \
  || { grep -E "error" -A3 "$out/build.log" | head -60; exit 1; }
echo "built in $(( $(date +%s) - start )) s"

if [[ -x "$build/tests/sedensenet_cuda_tests" ]]; then
  set +e
  timeout 120 "$build/tests/sedensenet_cuda_tests" 2>&1 | tee "$out/cuda_tests.log"
  echo "CUDA tests exit code: ${PIPESTATUS[0]} (77 = skipped, no device)" | tee -a "$out/cuda_tests.log"
  set -e
fi

if [[ $dry_run == 1 ]]; then
  sizes=(--device cpu --threads 2 --depths 16 --batch 4 --size 16 --no-densenet121 --steps 1 --warmup 0)
else
  sizes=(--device cuda --threads 8 --depths 100,250 --batch 64 --size 32 --densenet121-batch 64
         --steps 10 --warmup 3)
fi
bench="$build/benchmarks/efficient_memory"
failed=0
run() {  # name, extra arguments; a failed run is reported and the next one still runs
  local name=$1; shift
  echo "== $name"
  set +e
  timeout 150 "$bench" "${sizes[@]}" "$@" --csv "$out/$name.csv" --svg "$out/$name.svg" \
    2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc != 0 ]]; then echo "== $name FAILED (exit $rc)"; failed=1; fi
}
run gpu_fp32 --modes standard,efficient --pytorch
run gpu_bf16 --modes standard,efficient --pytorch --bf16
run gpu_fp32_swapped --modes efficient,standard
echo "total $(( $(date +%s) - start )) s; results in $out"
exit $failed
