"""Test-session settings shared by every test module.

Tests run offline (as CI does) and on one torch thread per process.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def micro_zoo(tmp_path_factory):
    """The micro toy zoo (text and, when installed, vision parts), built once per test session.

    Returns the zoo directory (``zoo.json``, ``tokenizer/``, ``models/<name>``, ``data/<task>``).
    """
    from evomm_zoo import build_zoo

    return build_zoo("micro", out=tmp_path_factory.mktemp("zoo") / "micro", seed=0, progress=False)
