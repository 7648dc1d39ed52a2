#!/usr/bin/env bash
# Installs what SEDenseNet needs on Debian 12 when it is missing. Idempotent: when everything is
# present it only checks and returns. Sourced or run by scripts/test.sh and scripts/demo.sh.
#
#   scripts/setup.sh            check, and install the missing packages (as root, with apt-get)
#   scripts/setup.sh --check    check only; exit 1 and print the install command if anything is missing
set -euo pipefail

# Build and run: compiler, CMake, LibTorch (CPU, 1.13 on Debian 12) and the headers the library uses.
# libopenblas0-pthread matters: without it Debian's LibTorch runs matrix products on the reference
# BLAS, about 30x slower.
SEDENSENET_PACKAGES=(
  g++ cmake make
  libtorch-dev libopenblas0-pthread
  # Gloo's headers: LibTorch's c10d headers (distributed training) include them.
  libgloo-dev
  libfmt-dev catch2 libcli11-dev nlohmann-json3-dev
  # JPEG decoding: libjpeg-turbo, the decoder PIL uses (pixels identical to torchvision's loader).
  libjpeg62-turbo-dev
  # Reference implementations the tests compare against (run with /usr/bin/python3).
  python3-torch python3-torchvision python3-pil python3-numpy
  # The virtual environment holding LibTorch 2.x for the second build (scripts/setup-torch2.sh).
  python3-venv
  # ONNX export (libonnx-dev, with protobuf), and OpenCV's DNN module, which the tests run the
  # exported files in.
  libonnx-dev libprotobuf-dev libopencv-dnn-dev libopencv-core-dev
  # oneDNN's headers: the inference path runs its convolutions on the oneDNN Debian's LibTorch
  # links, with primitives made once (the library is installed with libtorch-dev already).
  libdnnl-dev
  # Debian's oneDNN CMake package requires OpenCL's headers (libdnnl-dev only recommends them,
  # and recommendations are not installed here).
  ocl-icd-opencl-dev
  # The real dataset the demo trains on.
  dataset-fashion-mnist
  # The sanitizer and fuzzing build of the test command (clang with libFuzzer and ASan/UBSan).
  clang libclang-rt-14-dev
  # A compiler cache: re-runs and other clones of the repository recompile only what changed.
  ccache
)

missing=()
for pkg in "${SEDENSENET_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#SEDENSENET_PACKAGES[@]} required packages are installed"
  exit 0
fi

echo "setup: missing packages: ${missing[*]}"
if [[ "${1:-}" == "--check" ]]; then
  echo "setup: install them with: sudo apt-get install -y ${missing[*]}"
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "setup: not running as root, so nothing was installed. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: installed ${missing[*]}"
