#!/usr/bin/env bash
# Installs everything (runtime, embedded model and data, test tools), checks lint and format, and runs the tests.
#   bash scripts/test.sh            everything (CI runs this)
#   bash scripts/test.sh --fast     without the tests marked slow (the embedded model) or browser
# Other arguments go to pytest. The Hub is switched off so a stray download fails fast.
# Two pytest-xdist workers, one test file each at a time (a file's app or model fixtures load once), one torch
# thread each (tests/conftest.py): 16 min 21 s instead of 20 min 22 s on a 2-core machine. PEFTLAB_TEST_WORKERS=0
# runs everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check peftlab tests benchmarks examples app.py
.venv/bin/ruff format --check --quiet peftlab tests benchmarks examples app.py
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
args=(-n "${PEFTLAB_TEST_WORKERS:-2}" --dist loadfile)
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then args+=(-m "not slow and not browser"); else args+=("$arg"); fi
done
exec .venv/bin/python -m pytest "${args[@]}"
