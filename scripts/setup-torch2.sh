#!/usr/bin/env bash
# Installs LibTorch 2.x for the test command's second build: PyPI's `torch` wheel, which carries
# the C++ library and its CMake files (torch.utils.cmake_prefix_path), and the matching
# `torchvision`, in a virtual environment of the project (.cache/torch2-venv, git-ignored; never
# the system Python). Versions: scripts/torch2-requirements.txt. Idempotent: when the pinned
# versions are installed it only checks. Prints the environment's python on its last line.
#
#   scripts/setup-torch2.sh            install what is missing (a few GB from PyPI, once)
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
echo "setup-torch2: installing $(grep -v '^#' "$requirements" | tr '\n' ' ')from PyPI (once; a few GB)" >&2
"$python" -m pip install --disable-pip-version-check -q -r "$requirements" >&2
installed || { echo "setup-torch2: the pinned versions are still not importable in $venv" >&2; exit 1; }
echo "$python"
