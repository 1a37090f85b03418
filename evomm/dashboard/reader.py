"""Reading a run's ``archive.jsonl`` while it grows, leniently.

:class:`evomm.archive.Archive` is the writer's reader: a bad line other than the last is an
error there, which is right for a run that resumes. A dashboard must keep showing what it can
instead: :class:`ArchiveTail` reads only the bytes appended since its last call, keeps every
line that is a JSON object with an ``id`` and numeric ``objectives``, and lists the others
(``skipped``: line number and reason) without failing. A last line without its newline is read
when it parses (a JSON object cannot parse half-written) and otherwise waited for. A file that
shrank (a resumed run set a torn line aside) is read again from the start.

Records are plain dicts here, not :class:`~evomm.records.CandidateRecord`: fields that newer
writers add (``items_evaluated``, a standard error, worker names) pass through untouched, and a
missing optional field gets its default (:func:`normalise`).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

#: Defaults of the optional fields of an archive record (see evomm.records.CandidateRecord).
DEFAULTS: dict[str, Any] = {"generation": -1, "genome": [], "plan_hash": "", "metrics": {}, "timings": {},
                            "extra": {}, "stage": "", "genes": {}, "evaluation": "full"}


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, Inf) replaced by ``None``, recursively.

    The browser's ``JSON.parse`` refuses the ``NaN`` that Python's :mod:`json` writes.

    Example:
        >>> finite_or_none({"a": [1.0, float("nan")], "b": float("inf")})
        {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def normalise(data: Any) -> dict[str, Any]:
    """An archive record with its defaults filled in.

    Raises:
        ValueError: ``data`` is not a JSON object with a string ``id`` and an ``objectives``
            mapping of numbers (the reason is the message).

    Example:
        >>> normalise({"id": "c1", "objectives": {"a": 1}})["evaluation"]
        'full'
    """
    if not isinstance(data, dict):
        raise ValueError(f"a record is a JSON object, got {type(data).__name__}")
    if not isinstance(data.get("id"), str):
        raise ValueError("no string 'id'")
    objectives = data.get("objectives")
    if not isinstance(objectives, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in objectives.values()):
        raise ValueError("no 'objectives' mapping of numbers")
    rec = {**DEFAULTS, **data}
    for key in ("metrics", "timings", "extra", "genes"):
        if not isinstance(rec[key], dict):
            rec[key] = {}
    if not isinstance(rec["generation"], int) or isinstance(rec["generation"], bool):
        rec["generation"] = -1
    return rec


class ArchiveTail:
    """The records of a growing ``archive.jsonl``, read incrementally and leniently.

    Args:
        path: the archive (it may not exist yet).

    Example:
        >>> tail = ArchiveTail(run_dir / "archive.jsonl")   # doctest: +SKIP
        >>> tail.refresh(); len(tail.records), tail.skipped  # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.records: list[dict[str, Any]] = []
        #: ``{"line": n, "reason": text}`` for each line that is not a record (1-based lines).
        self.skipped: list[dict[str, Any]] = []
        #: Bytes of a last line still being written (not yet a record).
        self.pending = 0
        self._offset = 0
        self._line = 0

    def refresh(self) -> bool:
        """Read what was appended since the last call; ``True`` when records were added."""
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size < self._offset:
                self._reset()  # the file shrank (a torn line set aside on resume): start again
            if size == self._offset:
                return False
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read(size - self._offset)
            before = len(self.records)
            self._consume(data)
            return len(self.records) > before

    def _consume(self, data: bytes) -> None:
        *lines, last = data.split(b"\n")
        for raw in lines:
            self._offset += len(raw) + 1
            self._line += 1
            self._take(raw, complete=True)
        self.pending = 0
        if last.strip():
            if self._take(last, complete=False):
                self._offset += len(last)
            else:
                self.pending = len(last)

    def _take(self, raw: bytes, *, complete: bool) -> bool:
        """Parse one line into :attr:`records` (or :attr:`skipped` when ``complete``)."""
        if not raw.strip():
            return True
        try:
            rec = normalise(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            if complete:
                self.skipped.append({"line": self._line, "reason": str(exc)[:200]})
            return False
        if not complete:
            self._line += 1
        rec["index"] = len(self.records)
        self.records.append(rec)
        return True
