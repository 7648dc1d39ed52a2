#!/usr/bin/env bash
# Installs LibTorch 2.x for the test command's second build: PyPI's `torch` wheel, which carries
# the C++ library and its CMake files (torch.utils.cmake_prefix_path), and the matching
# `torchvision`, in a virtual environment of the project (.cache/torch2-venv, git-ignored; never
# the system Python). Versions: scripts/torch2-requirements.txt. Idempotent: when the pinned
# versions are installed it only checks. Prints the environment's python on its last line.
#
#   scripts/setup-torch2.sh            install what is missing (about 6 GB from PyPI, once)
#   scripts/setup-torch2.sh --check    check only; exit 1 and say what to run if anything is missing
#
# Environment: TORCH2_VENV (default .cache/torch2-venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=${TORCH2_VENV:-$PWD/.cache/torch2-venv}
requirements=scripts/torch2-requirements.txt
python="$venv/bin/python"

installed() {
  [[ -x "$python" ]] || return 1
  # Every pin satisfied, checked by pip's own resolver metadata.
  "$python" - "$requirements" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, wanted = line.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if have.split("+")[0] != wanted:
        sys.exit(1)
PY
}

if installed; then
  echo "setup-torch2: $(tr '\n' ' ' < <(grep -v '^#' "$requirements")) installed in $venv" >&2
  echo "$python"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "setup-torch2: LibTorch 2.x is not installed; run scripts/setup-torch2.sh" >&2
  exit 1
fi

# Debian's python3 (python3-venv is one of scripts/setup.sh's packages).
base_python=${TORCH2_BASE_PYTHON:-/usr/bin/python3}
if [[ ! -x "$python" ]]; then
  echo "setup-torch2: creating the virtual environment $venv" >&2
  "$base_python" -m venv "$venv" >&2 || {
    echo "setup-torch2: could not create a virtual environment with $base_python;" \
         "install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  }
fi
# The wheels take about 6 GB installed (torch's CUDA libraries most of it); pip also needs room
# for the largest download while it unpacks. Say so before starting rather than fail half-way.
need_gb=7
free_gb=$(df -P -BG "$venv" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
if [[ -n "$free_gb" && "$free_gb" -lt "$need_gb" ]]; then
  echo "setup-torch2: installing LibTorch 2.x needs about $need_gb GB free on the disk of $venv;" \
       "it has $free_gb GB. Free some space, or point TORCH2_VENV at a folder on a disk with room." >&2
  exit 1
fi
echo "setup-torch2: installing $(grep -v '^#' "$requirements" | tr '\n' ' ')from PyPI (once; about 6 GB)" >&2
# --no-cache-dir: the environment is the cache; a second copy of the wheels in pip's cache would
# double the disk this takes.
"$python" -m pip install --disable-pip-version-check --no-cache-dir -q -r "$requirements" >&2 || {
  echo "setup-torch2: pip could not install $requirements into $venv (its message is above);" \
       "fix the cause and run scripts/setup-torch2.sh again (it resumes)" >&2
  exit 1
}
installed || { echo "setup-torch2: the pinned versions are still not importable in $venv" >&2; exit 1; }
echo "$python"
