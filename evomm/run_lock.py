"""One process per run: an exclusive lock on the run directory.

``evomm evolve`` (a fresh start and ``--resume``) holds ``RUN_DIR/.lock`` with
:func:`fcntl.flock` (``LOCK_EX | LOCK_NB``) for the whole run and writes its pid, host and start
time into it. A second process that tries to write the same run gets a
:class:`~evomm.errors.RunLockedError` naming the holder at once, instead of evaluating archived
candidates again and appending duplicate ids. The operating system drops the lock when the
holder's file descriptor closes, so a process killed with ``kill -9`` (or a crashed machine)
never leaves a stale lock; the file itself stays (deleting it while another process opens it
would let two processes hold two different files). Readers (``evomm front``, ``evomm export``)
take no lock.

Where :mod:`fcntl` does not exist (Windows) the lock is a no-op. ``flock`` works between
processes on one machine; some network file systems do not support it.

Example:
    >>> with RunLock(Path("runs/r1")):      # doctest: +SKIP
    ...     ...                              # only this process writes runs/r1
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from evomm.errors import RunLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The lock file inside a run directory.
LOCK_NAME = ".lock"
_HOLDER_WAIT_S = 0.2  # the holder writes its pid right after locking: wait that long for it


def _holder(path: Path) -> dict[str, Any]:
    """The holder's ``{"pid", "host", "since"}`` as written in the lock file (``{}`` if unknown)."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.02)


class RunLock:
    """The exclusive lock of a run directory (a context manager).

    Args:
        run_dir: an existing run directory.

    Raises:
        RunLockedError: another process holds the lock (on :meth:`acquire`).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now or raise :class:`RunLockedError`; records this process in the file."""
        if fcntl is None or self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            h = _holder(self.path)
            who = f"pid {h.get('pid', '?')} on host {h.get('host', '?')}"
            since = f", since {h['since']}" if h.get("since") else ""
            raise RunLockedError(
                f"{self.run_dir} is in use by another evomm process ({who}{since}); only one "
                f"process may write a run: wait for it to finish, or stop it (`kill {h.get('pid', 'PID')}` "
                f"on {h.get('host', 'that host')}; Ctrl-C there stops it after the candidate in flight), "
                f"then `evomm evolve --resume {self.run_dir}`"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # the run directory may have been removed (a failed start)
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
