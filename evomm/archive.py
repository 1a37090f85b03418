"""The archive: every evaluated candidate, one JSON line each, flushed and fsynced at once.

``archive.jsonl`` is append-only. A crash (even ``kill -9``) loses at most the candidate being
written. On resume the archive is the cache: a candidate whose plan digest is archived is never
evaluated again.

A torn last line (a crash in the middle of a write) is never silently dropped: the run that
resumes (``Archive(path, repair=True)``) moves its bytes to ``archive.jsonl.torn`` (appended when
that file exists), truncates the archive after the last complete record and logs a warning
saying so; readers (``evomm front``, ``evomm export``) skip it and write nothing. A last record
whose final newline is missing is complete and kept; the next append starts on a new line. A
bad line anywhere else is an error naming the line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from evomm.errors import SearchError
from evomm.records import CandidateRecord

ARCHIVE_NAME = "archive.jsonl"
#: Suffix of the file that keeps the bytes of torn last lines (``archive.jsonl.torn``).
TORN_SUFFIX = ".torn"

log = logging.getLogger(__name__)


def _parse(raw: bytes) -> CandidateRecord:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError(f"a record is a JSON object, got {type(data).__name__}")
    return CandidateRecord.from_json(data)


class Archive:
    """Append-only store of :class:`~evomm.records.CandidateRecord` s with a digest index.

    Args:
        path: the ``archive.jsonl`` file (created at the first append when missing).
        repair: move a torn last line aside (the writing run does this on resume); readers
            leave the file untouched and skip the line.

    Raises:
        SearchError: a line other than the last is not a candidate record.

    Example:
        >>> a = Archive(tmp_path / "archive.jsonl")                  # doctest: +SKIP
        >>> a.append(record); a.get(record.plan_hash, record.stage)  # doctest: +SKIP
    """

    def __init__(self, path: Path, *, repair: bool = False) -> None:
        self.path = Path(path)
        self.records: list[CandidateRecord] = []
        self._by_key: dict[tuple[str, str], CandidateRecord] = {}
        self._needs_newline = False  # the file's last record lacks its "\n"
        self.torn: bytes = b""  # a torn last line not (yet) moved aside
        if self.path.exists():
            self._load(repair)

    @property
    def torn_path(self) -> Path:
        return self.path.with_name(self.path.name + TORN_SUFFIX)

    def _load(self, repair: bool) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        start = 0
        for i, raw in enumerate(lines):
            begin, start = start, start + len(raw) + 1
            if not raw.strip():
                continue
            try:
                rec = _parse(raw)
            except (ValueError, TypeError, AttributeError) as exc:
                if any(rest.strip() for rest in lines[i + 1:]):
                    raise SearchError(
                        f"{self.path}: line {i + 1} is not a candidate record ({exc}); the archive was "
                        "edited or damaged: restore it from a backup, or start a new run"
                    ) from None
                self.torn = data[begin:]
                if repair:
                    self._set_aside(begin)
                break
            self._index(rec)
        self._needs_newline = not self.torn and bool(data) and not data.endswith(b"\n")

    def _set_aside(self, offset: int) -> None:
        """Move the torn bytes from ``offset`` to the end into :attr:`torn_path`, then truncate."""
        torn = self.torn
        with self.torn_path.open("ab") as fh:
            fh.write(torn if torn.endswith(b"\n") else torn + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.truncate(self.path, offset)
        log.warning(
            "warning: %s ended in a partial record (a crash while it was written); its %d bytes were "
            "moved to %s and the run goes on from the %d complete records (the candidate is "
            "evaluated again if asked)", self.path, len(torn), self.torn_path, len(self.records))
        self.torn = b""

    def _index(self, rec: CandidateRecord) -> None:
        self.records.append(rec)
        self._by_key[(rec.stage, rec.plan_hash)] = rec

    def append(self, rec: CandidateRecord) -> None:
        """Write ``rec`` as one line (on a new line), flush and fsync before returning.

        Raises:
            SearchError: the archive was opened without ``repair`` and ends in a torn line.
        """
        if self.torn:
            raise SearchError(f"{self.path} ends in a partial record; open it with repair=True to append")
        line = json.dumps(rec.to_json(), sort_keys=True, default=float).encode("utf-8") + b"\n"
        with self.path.open("ab") as fh:
            fh.write(b"\n" + line if self._needs_newline else line)
            fh.flush()
            os.fsync(fh.fileno())
        self._needs_newline = False
        self._index(rec)

    def get(self, plan_hash: str, stage: str) -> CandidateRecord | None:
        """The archived record of a digest in ``stage``, or ``None``."""
        return self._by_key.get((stage, plan_hash))

    def stage_records(self, stage: str, *, parents: bool = False) -> list[CandidateRecord]:
        """Records of ``stage`` in archive order (children only unless ``parents``)."""
        return [r for r in self.records if r.stage == stage and (parents or not r.is_parent)]

    def stages(self) -> list[str]:
        """The stages that have records, in the order they first appear."""
        return list(dict.fromkeys(r.stage for r in self.records))

    def by_id(self, cid: str) -> CandidateRecord:
        for r in self.records:
            if r.id == cid:
                return r
        known = [r.id for r in self.records[-5:]]
        raise SearchError(f"candidate {cid!r} is not in {self.path} (recent ids: {known})")

    def __iter__(self) -> Iterator[CandidateRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)
