#!/usr/bin/env bash
# Set up a virtualenv with the dev, ja and lmeval extras, then run the test suite (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,ja,lmeval]"
# The dashboard's browser tests drive Debian's Chromium (Playwright's own browser download needs the
# network); as root on Debian, install it when missing (about a minute), else those tests skip.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium; } >/dev/null ||
        echo "scripts/test.sh: could not install chromium; the browser tests will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m pytest -q "$@"
