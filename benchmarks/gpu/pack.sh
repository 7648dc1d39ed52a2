#!/usr/bin/env bash
# On a Debian machine with the project's packages: copies the header-only dependencies the GPU
# build needs (fmt, CLI11, nlohmann/json, Catch2 for the CUDA tests, and zlib's two headers:
# the GPU machine has libz.so.1, which Python's zlib module loads, but maybe not its headers) into
# .gpu-deps/include,
# a git-ignored folder that travels with the working tree (the device tool's `carry`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=.gpu-deps/include
rm -rf .gpu-deps
mkdir -p "$out"
cp -r /usr/include/fmt /usr/include/CLI /usr/include/nlohmann /usr/include/catch2 "$out/"
cp /usr/include/zlib.h /usr/include/x86_64-linux-gnu/zconf.h "$out/" 2>/dev/null \
  || cp /usr/include/zlib.h /usr/include/zconf.h "$out/"
du -sh .gpu-deps
