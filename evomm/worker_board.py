"""What the run's workers are doing, for the dashboard: ``workers.json`` in the run directory.

The driver of an evolution (:mod:`evomm.search`) is the only writer: it counts the jobs it hands
to the executor and the results that come back (each names the worker that produced it,
``host:pid``), and rewrites the file atomically (a temporary file, then :func:`os.replace`) at
most once a second while jobs finish, and at the end of every round. ``evomm serve`` reads it
(``/api/run``'s ``workers``) and shows it beside the per-worker totals of the archive.

Example of the file::

    {"executor": "processes", "workers": 2, "in_flight": 3, "busy": 2, "lost_jobs": 0,
     "state": "running", "updated": 1765112345.2,
     "rows": [{"worker": "vm:4121", "jobs": 7, "seconds": 21.4, "last_candidate": "3f0c...",
               "last_seen": 1765112344.9}]}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The file's name in the run directory.
WORKERS_NAME = "workers.json"


class WorkerBoard:
    """Counts jobs handed out and results back, per worker, and writes ``workers.json``.

    Args:
        path: the file to write (``RUN_DIR/workers.json``).
        executor: the executor's name (``local``, ``processes``, ``ray``, a plugin's).
        workers: how many workers the executor runs.
        clock: wall-clock seconds (tests pass a fake one).
        every: the least seconds between two writes while jobs finish.
    """

    def __init__(self, path: Path, executor: str, workers: int, clock: Callable[[], float] = time.time,
                 every: float = 1.0) -> None:
        self.path, self.executor, self.workers, self.clock, self.every = path, executor, workers, clock, every
        self.in_flight, self.lost_jobs = 0, 0
        self.rows: dict[str, dict[str, Any]] = {}
        self._written = float("-inf")

    def submitted(self, n: int) -> None:
        """``n`` jobs were handed to the executor."""
        self.in_flight += n
        self.write()

    def finished(self, worker: str, key: str, seconds: float, lost_jobs: int = 0) -> None:
        """A job of candidate ``key`` came back from ``worker`` after ``seconds`` of its work;
        ``lost_jobs``: the executor's count of jobs it had to run again (a worker died)."""
        self.in_flight = max(self.in_flight - 1, 0)
        self.lost_jobs = lost_jobs
        row = self.rows.setdefault(worker or "?", {"worker": worker or "?", "jobs": 0, "seconds": 0.0})
        row["jobs"] += 1
        row["seconds"] = round(row["seconds"] + seconds, 3)
        row["last_candidate"], row["last_seen"] = key, self.clock()
        if self.clock() - self._written >= self.every:
            self.write()

    def round_done(self) -> None:
        """Every job of a round is back (or was dropped): nothing is in flight."""
        self.in_flight = 0
        self.write()

    def payload(self) -> dict[str, Any]:
        return {"executor": self.executor, "workers": self.workers, "in_flight": self.in_flight,
                "busy": min(self.in_flight, self.workers), "lost_jobs": self.lost_jobs,
                "state": "running" if self.in_flight else "idle", "updated": self.clock(),
                "rows": list(self.rows.values())}

    def write(self) -> None:
        """Replace the file at once (a reader sees the old or the new one, never a mix). A failed
        write (full disk) is not the run's failure: the dashboard shows the last good file."""
        self._written = self.clock()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.payload()), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass


def read_workers(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``workers.json``, or ``None`` when it is missing or not a JSON object.

    Example:
        >>> read_workers(Path("/nonexistent")) is None
        True
    """
    try:
        data = json.loads((Path(run_dir) / WORKERS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
