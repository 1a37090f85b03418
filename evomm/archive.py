"""The archive: every evaluated candidate, one JSON line each, flushed and fsynced at once.

``archive.jsonl`` is append-only. A crash (even ``kill -9``) loses at most the candidate being
written: a torn last line is ignored on load. On resume the archive is the cache: a candidate
whose plan digest is archived is never evaluated again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from evomm.errors import SearchError
from evomm.records import CandidateRecord

ARCHIVE_NAME = "archive.jsonl"


class Archive:
    """Append-only store of :class:`~evomm.records.CandidateRecord` s with a digest index.

    Args:
        path: the ``archive.jsonl`` file (created when missing).

    Example:
        >>> a = Archive(tmp_path / "archive.jsonl")                  # doctest: +SKIP
        >>> a.append(record); a.get(record.plan_hash, record.stage)  # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: list[CandidateRecord] = []
        self._by_key: dict[tuple[str, str], CandidateRecord] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = CandidateRecord.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                if i >= len(lines) - 2:  # torn last line after a crash: drop it
                    self._truncate_to_valid(lines[:i])
                    break
                raise SearchError(f"{self.path}: line {i + 1} is not a candidate record ({exc})") from None
            self._index(rec)

    def _truncate_to_valid(self, good: list[str]) -> None:
        text = "".join(line + "\n" for line in good if line.strip())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)

    def _index(self, rec: CandidateRecord) -> None:
        self.records.append(rec)
        self._by_key[(rec.stage, rec.plan_hash)] = rec

    def append(self, rec: CandidateRecord) -> None:
        """Write ``rec`` as one line, flush and fsync before returning."""
        line = json.dumps(rec.to_json(), sort_keys=True, default=float)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._index(rec)

    def get(self, plan_hash: str, stage: str) -> CandidateRecord | None:
        """The archived record of a digest in ``stage``, or ``None``."""
        return self._by_key.get((stage, plan_hash))

    def stage_records(self, stage: str, *, parents: bool = False) -> list[CandidateRecord]:
        """Records of ``stage`` in archive order (children only unless ``parents``)."""
        return [r for r in self.records if r.stage == stage and (parents or not r.is_parent)]

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
