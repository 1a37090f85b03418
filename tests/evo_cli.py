"""Run ``evomm`` in a subprocess on the synthetic space (tests of locks, kills and Ctrl-C).

The subprocess loads only :mod:`evo_cli_plugin` (copied into a ``--plugins-dir``; entry-point
autoload is off, so it starts fast). Helpers compare archives the way the issue asks: ids,
genomes, objectives and order.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import evo_synthetic as S
import yaml

HERE = Path(__file__).parent


def plugin_dir(tmp: Path) -> Path:
    """A ``--plugins-dir`` holding only the test plugin."""
    d = tmp / "plugins"
    d.mkdir(exist_ok=True)
    shutil.copy(HERE / "evo_cli_plugin.py", d / "evo_cli_plugin.py")
    return d


def write_recipe(path: Path, **kw: Any) -> Path:
    path.write_text(yaml.safe_dump(S.recipe_dict(**kw)))
    return path


def command(plugins: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from evomm.cli import entry; entry()", "--plugins-dir", str(plugins), *args]


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                EVOMM_DISABLE_PLUGIN_AUTOLOAD="1", **extra)


def run(plugins: Path, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(plugins, *args), capture_output=True, text=True, env=env(**extra),
                          timeout=timeout)


def popen(plugins: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(command(plugins, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(**extra))


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "archive.jsonl").read_text().splitlines() if line.strip()]


def essence(run_dir: Path) -> list[tuple]:
    """What must equal an uninterrupted run's: (id, stage, genome, plan_hash, objectives) in order."""
    return [(r["id"], r["stage"], tuple(r["genome"]), r["plan_hash"], tuple(sorted(r["objectives"].items())))
            for r in records(run_dir)]


def front(run_dir: Path) -> list[tuple]:
    from evomm.report import load_front

    _, _, fr, _ = load_front(run_dir)
    return [(r.id, r.plan_hash, tuple(sorted(r.objectives.items()))) for r in fr]


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
