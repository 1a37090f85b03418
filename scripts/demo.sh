#!/usr/bin/env bash
# Set up a virtualenv, then run the demo on the toy zoo (offline; builds the zoo on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/evomm demo "$@"
