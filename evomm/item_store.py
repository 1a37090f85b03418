"""Per-item results of every evaluated candidate: ``items.jsonl`` next to ``archive.jsonl``.

A task scores items; the search keeps what each candidate scored on each item so that no item is
ever evaluated twice for the same candidate (racing rounds, a subset then the rest, a resumed
run) and so that objective values are computed from item results (:mod:`evomm.fitness`).

One JSON line per evaluation of one candidate on one task, appended, flushed and fsynced before
the candidate's record reaches ``archive.jsonl`` (so every archived candidate's items are on
disk)::

    {"stage": "ps", "key": "<plan digest>", "task": "toy_math", "n": 100,
     "ids": [17, 3, ...], "items": {"strict": [1, 0, ...], "loose": [1, 1, ...]},
     "aggregate": {}}

``ids`` are indices into :meth:`evomm.tasks.Task.examples` (after ``limit``/``seed``), ``items``
one value per id for each metric that has per-item values, ``aggregate`` the task's reported
metrics for a task evaluated whole whose metrics have no per-item values (``"whole": true``).
Integral values are written as integers, so a bit costs two bytes.

A line ``{"stage", "decision": generation, "round", "stopped": [keys]}`` records which candidates
a strategy stopped after a round, so that a resumed run takes the same decisions.

A torn last line (a crash while it was written) is dropped when the writing run opens the file
(``repair=True``): those items are evaluated again, as the candidate was not archived.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evomm.errors import SearchError

ITEMS_NAME = "items.jsonl"

log = logging.getLogger(__name__)


@dataclass
class TaskItems:
    """What one candidate scored on one task, accumulated over evaluations.

    Attributes:
        n: the task's full number of items.
        values: metric -> {item id: value} for metrics with per-item values.
        aggregate: metric -> value reported by a task evaluated whole (no per-item values).
        aggregate_n: how many items ``aggregate`` was computed on (``n`` when whole).
    """

    n: int
    values: dict[str, dict[int, float]] = field(default_factory=dict)
    aggregate: dict[str, float] = field(default_factory=dict)
    aggregate_n: int = 0

    @property
    def ids(self) -> set[int]:
        """The item ids scored (per-item metrics)."""
        out: set[int] = set()
        for per in self.values.values():
            out.update(per)
        return out

    @property
    def evaluated(self) -> int:
        """Items evaluated for this task (the larger of the per-item and the whole counts)."""
        return max(len(self.ids), self.aggregate_n)

    @property
    def complete(self) -> bool:
        """Every item scored (per item or in one whole evaluation)."""
        return self.aggregate_n >= self.n or (bool(self.values) and len(self.ids) >= self.n)

    def complete_for(self, metrics: Iterable[str]) -> bool:
        """Every item scored and each of ``metrics`` known for the whole set."""
        return self.complete and not self.needs_whole(metrics)

    def needs_whole(self, metrics: Iterable[str]) -> bool:
        """Whether one of ``metrics`` has no per-item values, so only a whole evaluation gives it."""
        return self.aggregate_n < self.n and any(m not in self.values for m in metrics)

    def add(self, ids: Sequence[int], items: Mapping[str, Sequence[float]], aggregate: Mapping[str, float],
            whole: bool) -> None:
        for metric, vals in items.items():
            self.values.setdefault(metric, {}).update(zip((int(i) for i in ids), (float(v) for v in vals)))
        if aggregate and (whole or len(ids) >= self.aggregate_n):
            self.aggregate = {k: float(v) for k, v in aggregate.items()}
            self.aggregate_n = self.n if whole else len(ids)


#: A candidate's items: task -> :class:`TaskItems`.
CandidateItems = dict[str, TaskItems]


def _compact(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


class ItemStore:
    """Append-only store of per-item results, indexed by ``(stage, plan digest)``.

    Args:
        path: the ``items.jsonl`` file (created at the first append).
        repair: drop a torn last line (the writing run); readers skip it.

    Example:
        >>> store = ItemStore(tmp_path / "items.jsonl")                       # doctest: +SKIP
        >>> store.append("ps", "abc", "toy_math", 100, [3, 7], {"strict": [1, 0]}, {}, whole=False)
        ...                                                                   # doctest: +SKIP
        >>> store.get("ps", "abc")["toy_math"].values["strict"]               # doctest: +SKIP
        {3: 1.0, 7: 0.0}
    """

    def __init__(self, path: Path, *, repair: bool = False) -> None:
        self.path = Path(path)
        self._by_key: dict[tuple[str, str], CandidateItems] = {}
        self._decisions: dict[tuple[str, int, int], list[str]] = {}
        if self.path.exists():
            self._load(repair)

    def _load(self, repair: bool) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        offset = 0
        for i, raw in enumerate(lines):
            begin, offset = offset, offset + len(raw) + 1
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                self._index(row)
            except (ValueError, TypeError, KeyError) as exc:
                if any(rest.strip() for rest in lines[i + 1:]):
                    raise SearchError(f"{self.path}: line {i + 1} is not an item record ({exc}); the file was "
                                      "edited or damaged: delete it to evaluate items again") from None
                if repair:
                    os.truncate(self.path, begin)
                    log.warning("warning: %s ended in a partial line (a crash while it was written); "
                                "it was dropped and its items will be evaluated again", self.path)
                break
        if repair and data and not data.endswith(b"\n") and self.path.stat().st_size == len(data):
            with self.path.open("ab") as fh:
                fh.write(b"\n")

    def _index(self, row: dict[str, Any]) -> None:
        if "decision" in row:
            self._decisions[(row["stage"], int(row["decision"]), int(row["round"]))] = list(row["stopped"])
            return
        cand = self._by_key.setdefault((row["stage"], row["key"]), {})
        task = cand.setdefault(row["task"], TaskItems(int(row["n"])))
        task.add(row["ids"], row["items"], row.get("aggregate", {}), bool(row.get("whole")))

    def append(self, stage: str, key: str, task: str, n: int, ids: Sequence[int],
               items: Mapping[str, Sequence[float]], aggregate: Mapping[str, float], *, whole: bool) -> None:
        """Add one evaluation's results (flushed and fsynced before returning)."""
        self.append_many([{"stage": stage, "key": key, "task": task, "n": int(n), "ids": [int(i) for i in ids],
                           "items": {m: [_compact(v) for v in vals] for m, vals in items.items()},
                           "aggregate": {m: float(v) for m, v in aggregate.items()}, "whole": bool(whole)}])

    def append_many(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows (the dicts :meth:`append` writes) with one fsync."""
        rows = list(rows)
        if not rows:
            return
        blob = b"".join(json.dumps(r, sort_keys=True).encode("utf-8") + b"\n" for r in rows)
        with self.path.open("ab") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        for r in rows:
            self._index(r)

    def append_decision(self, stage: str, generation: int, round_: int, stopped: Sequence[str]) -> None:
        """Record which candidates a strategy stopped after a round (a resumed run replays it)."""
        self.append_many([{"stage": stage, "decision": int(generation), "round": int(round_),
                           "stopped": list(stopped)}])

    def decision(self, stage: str, generation: int, round_: int) -> list[str] | None:
        """The stored decision of a round, or ``None`` when it was not taken yet."""
        return self._decisions.get((stage, generation, round_))

    def get(self, stage: str, key: str) -> CandidateItems:
        """The items of a candidate (an empty dict when none were evaluated)."""
        return self._by_key.get((stage, key), {})

    def evaluations(self) -> int:
        """Item evaluations stored over every candidate and task."""
        return sum(t.evaluated for cand in self._by_key.values() for t in cand.values())

    def keys(self) -> list[tuple[str, str]]:
        return list(self._by_key)
