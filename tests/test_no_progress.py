"""``evomm evolve --no-progress`` silences every bar, the model handles' inner ``generate`` bars
and the Hugging Face libraries' included (issue 17, class 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

#: A one-file plugin that records every tqdm bar made in the process and makes the handles'
#: ``generate`` bar appear for every call (it normally needs more than 64 requests and 2 s).
SPY = '''
import json, os
import tqdm.std
import evomm_hf.handle_utils

evomm_hf.handle_utils.PROGRESS_MIN = 0
_init = tqdm.std.tqdm.__init__


def _spy(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    with open(os.environ["EVO_BARS"], "a") as fh:
        fh.write(json.dumps({"desc": str(kwargs.get("desc", "")), "disable": bool(self.disable)}) + "\\n")


tqdm.std.tqdm.__init__ = _spy
'''


def test_no_progress_silences_every_bar(micro_zoo, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "bar_spy.py").write_text(SPY)
    recipe = {
        "parents": [{"name": "ja", "path": str(micro_zoo / "models/ja")},
                    {"name": "math", "path": str(micro_zoo / "models/math")}],
        "base_model": {"name": "base", "path": str(micro_zoo / "models/base")},
        "merge": {"method": "task_arithmetic", "parameters": {"weight": {"evolve": True}}},
        "objectives": [{"name": "ja", "task": "toy_ja_skill"}],
        "tasks": {"toy_ja_skill": {"data": str(micro_zoo), "split": "dev", "limit": 3}},
        "algorithm": {"name": "random", "pop_size": 2}, "budget": {"generations": 1},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    bars = tmp_path / "bars.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOMM_NO_PROGRESS", "TQDM_", "HF_HUB_DISABLE",
                                                                     "HF_DATASETS_DISABLE"))}
    res = subprocess.run(
        [sys.executable, "-c", "from evomm.cli import entry; entry()", "--plugins-dir", str(plugins), "evolve",
         str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True, text=True, env=env | {"EVO_BARS": str(bars)}, timeout=300)
    assert res.returncode == 0, res.stderr
    made = [json.loads(line) for line in bars.read_text().splitlines()]
    assert any(b["desc"] == "generate" for b in made)  # the inner bars were there to silence
    assert [b for b in made if not b["disable"]] == []
    for mark in ("it/s", "%|", "\u2588", "\r"):
        assert mark not in res.stderr, res.stderr
    assert Path(tmp_path / "run" / "archive.jsonl").is_file()


def test_no_progress_lasts_only_for_its_command(monkeypatch):
    # evomm.cli.main called in one process (a notebook, a test): the switch must not outlive
    # the command, or every later bar of the process stays silenced.
    import transformers.utils.logging as tf_logging

    from evomm import progress

    monkeypatch.delenv(progress.ENV_NO_PROGRESS, raising=False)
    for var in progress._HF_ENV:
        monkeypatch.delenv(var, raising=False)
    with progress.disabled():
        assert not progress.enabled() and not tf_logging.is_progress_bar_enabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert progress.enabled() and tf_logging.is_progress_bar_enabled()
    assert not any(v in os.environ for v in (progress.ENV_NO_PROGRESS, *progress._HF_ENV))
    assert not progress.bar(range(1)).disable
