"""kill -9 a run mid-way (subprocess), resume it: nothing archived is re-evaluated and the final
front equals an uninterrupted run's with the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPT = HERE / "evo_synthetic.py"


def _run(run_dir: Path, mode: str, crash_after: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(SCRIPT), str(run_dir), mode, str(crash_after)],
                          capture_output=True, text=True, env=env, timeout=120)


def _archive(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "archive.jsonl").read_text().splitlines() if line.strip()]


def _front(run_dir: Path) -> list[tuple]:
    data = json.loads((run_dir / "front.json").read_text())
    return sorted((r["id"], r["plan_hash"], tuple(sorted(r["objectives"].items()))) for r in data["front"])


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    whole = _run(tmp_path / "whole", "start")
    assert whole.returncode == 0, whole.stderr

    # 2 parents + 21 children archived, then SIGKILL in the middle of generation 3 (pop 8)
    crashed = _run(tmp_path / "crash", "start", crash_after=21)
    assert crashed.returncode == -9, crashed.stderr
    before = _archive(tmp_path / "crash")
    assert len(before) == 2 + 21
    assert not (tmp_path / "crash" / "front.json").exists()

    resumed = _run(tmp_path / "crash", "resume")
    assert resumed.returncode == 0, resumed.stderr
    after = _archive(tmp_path / "crash")
    # the archive only grew: nothing archived was evaluated again
    assert after[: len(before)] == before
    hashes = [r["plan_hash"] for r in after]
    assert len(hashes) == len(set(hashes))
    evaluated_on_resume = int(resumed.stdout.split("evaluated")[-1])
    assert evaluated_on_resume == len(after) - len(before)
    # same archive and same front as the uninterrupted run
    whole_archive = _archive(tmp_path / "whole")
    assert [r["plan_hash"] for r in whole_archive] == hashes
    assert _front(tmp_path / "crash") == _front(tmp_path / "whole")
