"""The dashboard's one write: the export button runs ``evomm export`` into ``RUN_DIR/exports/``.

Each click starts the same command the page shows, in a child process (an export merges a whole
model: the server keeps answering meanwhile), into a directory that does not exist yet
(``exports/<id>``, else ``exports/<id>-2`` ...). ``evomm export`` itself applies the output rule
of :mod:`evomm.outputs` (a new directory, written whole or not at all, never overwritten).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .state import export_command, new_export_dir

#: Characters of a job's output kept for the page.
LOG_TAIL = 4000


@dataclass
class ExportJob:
    """One export started from the page."""

    id: int
    candidate: str
    out: Path
    command: str
    started: float = field(default_factory=time.time)
    returncode: int | None = None
    log: str = ""

    def to_json(self) -> dict[str, Any]:
        state = "running" if self.returncode is None else ("done" if self.returncode == 0 else "failed")
        return {"id": self.id, "candidate": self.candidate, "out": str(self.out), "command": self.command,
                "state": state, "returncode": self.returncode, "log": self.log[-LOG_TAIL:]}


class Exporter:
    """Starts and tracks exports of one run.

    Args:
        run_dir: the run directory.
        plugins_dirs: ``--plugins-dir`` values to pass on (the run's one-file plugins).
    """

    def __init__(self, run_dir: Path, plugins_dirs: tuple[str, ...] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.plugins_dirs = plugins_dirs
        self.jobs: list[ExportJob] = []
        self._lock = threading.Lock()

    def start(self, cid: str) -> ExportJob:
        """Start exporting candidate ``cid``; returns at once (the job runs in the background)."""
        with self._lock:
            running = {j.out for j in self.jobs if j.returncode is None}
            out = new_export_dir(self.run_dir, cid, running)
            job = ExportJob(len(self.jobs) + 1, cid, out, export_command(self.run_dir, cid, out))
            self.jobs.append(job)
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        return job

    def _run(self, job: ExportJob) -> None:
        argv = [sys.executable, "-c", "from evomm.cli import entry; entry()"]
        for d in self.plugins_dirs:
            argv += ["--plugins-dir", d]
        argv += ["export", str(self.run_dir), "--candidate", job.candidate, "--out", str(job.out)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:
            job.log, job.returncode = str(exc), -1
            return
        job.log = (proc.stdout + proc.stderr).strip()
        job.returncode = proc.returncode

    def payload(self) -> list[dict[str, Any]]:
        """``/api/exports``: every export started, newest last."""
        with self._lock:
            return [j.to_json() for j in self.jobs]
