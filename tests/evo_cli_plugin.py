"""A one-file plugin (copied into a ``--plugins-dir`` by tests) that lets ``evomm evolve`` run the
synthetic space of :mod:`evo_synthetic` in a subprocess, counts evaluations and crashes on cue.

``tests/`` must be on ``PYTHONPATH``. Environment variables (all optional):

* ``EVO_COUNT``: file that gets one line ``id plan_hash`` per ``evomm_candidate_evaluated`` call.
* ``EVO_SLEEP``: seconds each candidate's evaluation takes (a slow run).
* ``EVO_KILL_AT``: SIGKILL this process right after ``archive.jsonl`` holds this many records.
* ``EVO_KILL_IN_SAVE``: SIGKILL halfway through writing the N-th checkpoint of this process.
* ``EVO_KILL_IN_APPEND``: SIGKILL halfway through writing the N-th archive record of this process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import cloudpickle
from evo_synthetic import SynthSpace, evomm_register_search_spaces, evomm_register_tasks  # noqa: F401 - hook implementations

from evomm import hookimpl
from evomm.archive import Archive
from evomm.search import EvolutionLoop

_calls = {"save": 0, "append": 0}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("EVO_SLEEP"):
    _materialize = SynthSpace.materialize

    def _slow(self: SynthSpace, candidate: Any) -> Any:
        time.sleep(float(os.environ["EVO_SLEEP"]))
        return _materialize(self, candidate)

    SynthSpace.materialize = _slow  # type: ignore[method-assign]

if os.environ.get("EVO_KILL_IN_SAVE"):
    _save = EvolutionLoop._save

    def _torn_save(self: EvolutionLoop, state: Any) -> None:
        _calls["save"] += 1
        if _calls["save"] == int(os.environ["EVO_KILL_IN_SAVE"]):
            blob = cloudpickle.dumps(state)
            with self._checkpoint_path().with_suffix(".tmp").open("wb") as fh:
                fh.write(blob[: len(blob) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            _die()
        _save(self, state)

    EvolutionLoop._save = _torn_save  # type: ignore[method-assign]

if os.environ.get("EVO_KILL_IN_APPEND"):
    _append = Archive.append

    def _torn_append(self: Archive, rec: Any) -> None:
        _calls["append"] += 1
        if _calls["append"] == int(os.environ["EVO_KILL_IN_APPEND"]):
            import json

            line = json.dumps(rec.to_json(), sort_keys=True, default=float).encode()
            with self.path.open("ab") as fh:
                fh.write(line[: len(line) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            _die()
        _append(self, rec)

    Archive.append = _torn_append  # type: ignore[method-assign]


@hookimpl
def evomm_candidate_evaluated(run: Any, record: Any) -> None:
    if os.environ.get("EVO_COUNT"):
        with open(os.environ["EVO_COUNT"], "a", encoding="utf-8") as fh:
            fh.write(f"{record.id} {record.plan_hash}\n")
    kill_at = os.environ.get("EVO_KILL_AT")
    if kill_at:
        lines = Path(run.run_dir, "archive.jsonl").read_bytes().count(b"\n")
        if lines >= int(kill_at):
            _die()
