"""The dashboard's view of one run directory: the JSON payloads of its API, computed on demand.

:class:`RunState` re-reads ``run.json`` and the new archive lines at each request (a ``stat`` when
nothing changed) and caches the front and the progress series per stage until the archive grows.
The payloads are documented in ``docs/dashboard.md``; ``report.html`` embeds the same ones.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evomm.errors import SearchError
from evomm.front import ObjectiveInfo, pareto_front, pick
from evomm.records import CandidateRecord
from evomm.rundir import ARCHIVE_NAME, RESCORE_PREFIX, RUN_NAME, objective_infos, read_rescores, read_run
from evomm.worker_board import read_workers

from .reader import ArchiveTail, finite_or_none
from .series import progress_series, throughput, time_breakdown, workers

#: Where the export button writes: ``RUN_DIR/exports/<candidate id>`` (a new directory).
EXPORTS_DIR = "exports"
#: Fields of ``/api/candidates?view=summary`` (what the page needs to plot every candidate).
SUMMARY_FIELDS = ("index", "id", "generation", "stage", "evaluation", "objectives")
#: Record fields (top level or in ``extra``) shown in hover text when present: how a candidate
#: was scored (racing, estimates) and by whom.
EVALUATION_FIELDS = ("strategy", "rounds", "items_evaluated", "stderr", "standard_error", "estimate_error", "worker")


def to_record(data: dict[str, Any]) -> CandidateRecord:
    """A normalised archive dict as a :class:`CandidateRecord` (``index`` kept in ``extra``)."""
    fields = {k: v for k, v in data.items() if k != "index"}
    fields["extra"] = dict(fields["extra"])  # from_json adds unknown keys to it: not to the record served
    rec = CandidateRecord.from_json(fields)
    rec.extra["index"] = data["index"]
    return rec


def summary(rec: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``rec`` the page plots, plus the evaluation details that are present."""
    out = {k: rec[k] for k in SUMMARY_FIELDS}
    details = {k: rec[k] for k in EVALUATION_FIELDS if k in rec and rec[k] not in ({}, None)}
    details.update({k: v for k, v in rec["extra"].items() if k in EVALUATION_FIELDS and v not in ({}, None)})
    if details:
        out["details"] = details
    return out


def export_command(run_dir: Path, cid: str, out: Path) -> str:
    """The exact ``evomm export`` command line for a candidate (shell-quoted)."""
    return shlex.join(["evomm", "export", str(run_dir), "--candidate", cid, "--out", str(out)])


def safe_name(cid: str) -> str:
    """A directory name for a candidate id (``parent:a`` -> ``parent_a``).

    Example:
        >>> safe_name("parent:a/b")
        'parent_a_b'
    """
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in cid)


def new_export_dir(run_dir: Path, cid: str, taken: set[Path]) -> Path:
    """``RUN_DIR/exports/<id>``, or ``<id>-2``, ``<id>-3`` ...: the first that neither exists nor
    is the target of a running export."""
    base = run_dir / EXPORTS_DIR / safe_name(cid)
    out, k = base, 1
    while out.exists() or out in taken:
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def held_out(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {candidate id: {objective: held-out value}}}`` from ``evomm rescore``'s files
    (:func:`evomm.rundir.read_rescores`; rows without ``id`` or ``rescored`` are left out)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, data in read_rescores(run_dir).items():
        rows = data.get("candidates") if isinstance(data, dict) else None
        out[split] = {str(r["id"]): r["rescored"] for r in rows or []
                      if isinstance(r, dict) and "id" in r and isinstance(r.get("rescored"), dict)}
    return out


class RunState:
    """What the dashboard knows of a run directory (thread-safe; see the module docstring).

    Args:
        run_dir: the run directory.

    Raises:
        SearchError: ``run_dir`` is not a run directory, or its ``recipe.yaml`` is damaged.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.recipe, _ = read_run(self.run_dir, need_meta=False)
        self.tail = ArchiveTail(self.run_dir / ARCHIVE_NAME)
        self._lock = threading.RLock()
        self._cache: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._arrivals: list[tuple[float, int]] = []  # (clock, records) at each refresh that added some

    # -- reading ------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """``run.json``, or ``{}`` while it is missing or being replaced."""
        try:
            meta = json.loads((self.run_dir / RUN_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def objectives(self, meta: dict[str, Any]) -> list[ObjectiveInfo]:
        """The objectives of ``run.json``, else of the recipe (direction maximise when unsaid)."""
        try:
            return objective_infos(meta)
        except SearchError:
            return [ObjectiveInfo(o.name, o.direction or "maximize", o.constraint) for o in self.recipe.objectives]

    def refresh(self) -> list[dict[str, Any]]:
        """Read new archive lines; the records so far."""
        with self._lock:
            if self.tail.refresh():
                self._arrivals.append((time.monotonic(), len(self.tail.records)))
                self._arrivals = self._arrivals[-50:]
            return self.tail.records

    def _version(self) -> tuple[Any, ...]:
        """What the cached payloads depend on: the records read and the re-score files."""
        rescores = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(self.run_dir.glob(f"{RESCORE_PREFIX}*.json")))
        return len(self.tail.records), rescores

    def _cached(self, kind: str, stage: str, compute: Any) -> Any:
        version = self._version()
        hit = self._cache.get((kind, stage))
        if hit is None or hit[0] != version:
            hit = (version, compute())
            self._cache[(kind, stage)] = hit
        return hit[1]

    def stages(self) -> list[str]:
        return list(dict.fromkeys(r["stage"] for r in self.tail.records))

    def default_stage(self) -> str:
        return self.tail.records[-1]["stage"] if self.tail.records else ""

    def _split(self, stage: str, infos: Sequence[ObjectiveInfo]) -> tuple[list[CandidateRecord], list[CandidateRecord]]:
        """(children, parents) of ``stage`` that have every objective (``extra["index"]``: the
        record's position in the archive)."""
        names = [o.name for o in infos]

        def compute() -> tuple[list[CandidateRecord], list[CandidateRecord]]:
            recs = [to_record(r) for r in self.tail.records
                    if r["stage"] == stage and all(n in r["objectives"] for n in names)]
            return [r for r in recs if not r.is_parent], [r for r in recs if r.is_parent]

        return self._cached("split:" + ",".join(names), stage, compute)

    def _source(self, recs: Sequence[CandidateRecord], view: str) -> list[dict[str, Any]]:
        """The archive dicts of ``recs`` (as read, or their :func:`summary`)."""
        rows = [self.tail.records[r.extra["index"]] for r in recs]
        return [summary(r) for r in rows] if view == "summary" else rows

    # -- the payloads -------------------------------------------------------------------------

    def run_payload(self) -> dict[str, Any]:
        """``/api/run``: the run's name, recipe, objectives, stages, status and counts."""
        with self._lock:
            records = self.refresh()
            meta = self.meta()
            infos = self.objectives(meta)
            recent = [a for a in self._arrivals if a[0] > time.monotonic() - 300]
            rate = None
            if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
                rate = 60.0 * (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
            return {
                "name": meta.get("name", self.recipe.name), "run_dir": str(self.run_dir),
                "recipe": self.recipe.name, "status": meta.get("status", "starting"),
                "seed": meta.get("seed", self.recipe.seed), "evomm_version": meta.get("evomm_version"),
                "objectives": [{"name": o.name, "direction": o.direction, "constraint": o.constraint} for o in infos],
                "stages": list(dict.fromkeys([*meta.get("stages", []), *self.stages()])),
                "stage": self.default_stage(), "records": len(records), "skipped": self.tail.skipped[-20:],
                "skipped_count": len(self.tail.skipped), "pending_bytes": self.tail.pending,
                "rescores": sorted(held_out(self.run_dir)), "arrival_per_minute": rate,
                "executor": self._executor(), "workers": read_workers(self.run_dir),
                "previous": [{k: p.get(k) for k in ("name", "kind", "candidate", "objectives")}
                             for p in meta.get("previous", []) if isinstance(p, dict)],
            }

    def _executor(self) -> dict[str, Any] | None:
        """The recipe's executor (``name``, ``workers`` ...), when the recipe has one."""
        ex = getattr(self.recipe, "executor", None)
        return ex.model_dump(mode="json") if hasattr(ex, "model_dump") else None

    def front_payload(self, stage: str | None = None, view: str = "full") -> dict[str, Any]:
        """``/api/front``: the stage's front (records), its parents and the knee's id
        (``view=summary``: the records' :func:`summary`)."""
        with self._lock:
            self.refresh()
            stage = self.default_stage() if stage is None else stage
            infos = self.objectives(self.meta())

            def compute() -> dict[str, Any]:
                children, parents = self._split(stage, infos)
                front = pareto_front(children, infos)
                knee = pick(front, infos, "knee").id if front else None
                ids = {r.id for r in [*front, *parents]}
                rescores = {split: {c: v for c, v in s.items() if c in ids}
                            for split, s in held_out(self.run_dir).items()}
                return {"stage": stage, "front": front, "parents": parents, "knee": knee, "rescores": rescores}

            got = self._cached("front", stage, compute)
            return {**got, "front": self._source(got["front"], view), "parents": self._source(got["parents"], view)}

    def progress_payload(self, stage: str | None = None) -> dict[str, Any]:
        """``/api/progress``: hypervolume and best values by generation, throughput, time, workers."""
        with self._lock:
            self.refresh()
            stage = self.default_stage() if stage is None else stage
            infos = self.objectives(self.meta())

            def compute() -> dict[str, Any]:
                children, parents = self._split(stage, infos)
                gens, hvs, best = progress_series(infos, children, parents)
                return {"stage": stage, "generation": gens, "hypervolume": hvs, "best": best,
                        "parents": {p.id: p.objectives for p in parents}, "throughput": throughput(children),
                        "time": time_breakdown(children), "workers": workers(children)}

            return self._cached("progress", stage, compute)

    def candidates_payload(self, since: int = 0, view: str = "full") -> dict[str, Any]:
        """``/api/candidates``: the records after the ``since``-th (``view=summary``: plot fields)."""
        with self._lock:
            records = self.refresh()[max(since, 0):]
            total = len(self.tail.records)
        rows = [summary(r) for r in records] if view == "summary" else records
        return {"since": since, "next": total, "total": total, "records": rows}

    def candidate_payload(self, cid: str) -> dict[str, Any] | None:
        """``/api/candidate/<id>``: the record, its stage's parents, re-scores and export command."""
        with self._lock:
            records = self.refresh()
            rec = next((r for r in reversed(records) if r["id"] == cid), None)
        if rec is None:
            return None
        return self._candidate(rec, held_out(self.run_dir))

    def _candidate(self, rec: dict[str, Any], rescores: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
        out = new_export_dir(self.run_dir, rec["id"], set())
        return {"record": rec, "rescores": {split: s[rec["id"]] for split, s in rescores.items() if rec["id"] in s},
                "export_command": export_command(self.run_dir, rec["id"], out)}

    def rescores_payload(self) -> dict[str, Any]:
        """``/api/rescores``: every ``rescore-<split>.json`` as ``evomm rescore`` wrote it."""
        return read_rescores(self.run_dir)

    def static_answers(self) -> dict[str, Any]:
        """Every API answer the page asks for, keyed by path (what ``report.html`` embeds)."""
        answers: dict[str, Any] = {"/api/run": self.run_payload(), "/api/rescores": self.rescores_payload(),
                                   "/api/candidates?since=0&view=summary": self.candidates_payload(0, "summary")}
        for stage in self.stages():
            answers[f"/api/front?stage={stage}&view=summary"] = self.front_payload(stage, "summary")
            answers[f"/api/progress?stage={stage}"] = self.progress_payload(stage)
        rescores = held_out(self.run_dir)
        for rec in self.tail.records:  # without the genome: the optimiser's copy of the genes
            lean = {k: v for k, v in rec.items() if k != "genome"}
            answers[f"/api/candidate/{rec['id']}"] = self._candidate(lean, rescores)
        return answers


def dumps(payload: Any) -> str:
    """JSON for the browser (non-finite floats as ``null``)."""
    return json.dumps(finite_or_none(payload), separators=(",", ":"), default=str)
