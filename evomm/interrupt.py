"""Ctrl-C during a run: stop after the candidate in flight, or at once on a second Ctrl-C.

Inside :class:`GracefulStop` (``evomm evolve`` enters it for the whole run) the first SIGINT
only sets :attr:`GracefulStop.requested` and says so on stderr; the evolution loop checks it
before it starts each new candidate and stops there (the run ends as ``interrupted``, exit code
130, and ``--resume`` continues it). Nothing in flight is lost, and a task or library that
catches ``KeyboardInterrupt`` cannot swallow the request. A second SIGINT raises
``KeyboardInterrupt`` at once: the candidate in flight is dropped (it was not archived), which
``--resume`` also handles.

The handler is installed only in the main thread (Python delivers signals there); elsewhere
:class:`GracefulStop` does nothing and Ctrl-C behaves as usual.

Example:
    >>> with GracefulStop() as stop:                  # doctest: +SKIP
    ...     for cand in candidates:
    ...         stop.check()                          # KeyboardInterrupt once Ctrl-C was pressed
    ...         evaluate(cand)
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any


class GracefulStop:
    """A context manager that turns the first Ctrl-C into a request (see the module docstring)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nevomm: stopping after the candidate in flight (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
