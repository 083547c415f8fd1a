#!/usr/bin/env bash
# The CUDA paths on this machine's GPU, as JSON on stdout (benchmarks/gpu_check.py); {"cuda": false} without one.
#   bash scripts/gpu-check.sh [benchmarks/gpu_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-.venv/bin/python}"
if ! "$python_bin" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo '{"cuda": false}'
  exit 0
fi
HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 exec "$python_bin" benchmarks/gpu_check.py "$@"
