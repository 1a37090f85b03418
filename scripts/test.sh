#!/usr/bin/env bash
# Set up a virtualenv with the dev, ja and lmeval extras, then run the test suite (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,ja,lmeval]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m pytest -q "$@"
