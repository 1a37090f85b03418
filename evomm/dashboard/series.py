"""What a run's progress looks like, per generation: hypervolume, best values, throughput, and
where the time goes (``report.py``'s plots and the dashboard's charts use the same numbers).

Hypervolume is pymoo's :class:`~pymoo.indicators.hv.HV` in normalised objective space (each
objective scaled to [0, 1] over every fully scored model, parents included; reference point 1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evomm.front import ObjectiveInfo, pareto_front
from evomm.objectives import minimize_matrix
from evomm.records import CandidateRecord

#: Timing keys that are the whole time of a candidate (``task:<name>`` keys are parts of them).
PHASES = ("merge", "evaluate_subset", "evaluate")


def _by_generation(children: Sequence[CandidateRecord]) -> dict[int, list[CandidateRecord]]:
    out: dict[int, list[CandidateRecord]] = {}
    for r in children:
        out.setdefault(r.generation, []).append(r)
    return dict(sorted(out.items()))


def progress_series(infos: Sequence[ObjectiveInfo], children: Sequence[CandidateRecord],
                    parents: Sequence[CandidateRecord]) -> tuple[list[int], list[float], dict[str, list[float]]]:
    """Per generation: the hypervolume of the front so far and the best value of each objective.

    The front so far is kept from one generation to the next (the front of the previous front
    and the new generation is the front of everything so far), so a 5,000-candidate run takes
    one non-dominated sort per generation over a few dozen points, not over all of them.

    Returns:
        ``(generations, hypervolumes, {objective: best per generation})``; empty when no child is
        fully evaluated.
    """
    from pymoo.indicators.hv import HV

    full = [r for r in children if r.evaluation == "full"]
    if not full:
        return [], [], {}
    every = minimize_matrix([r.objectives for r in [*full, *parents]], infos)
    every = every[np.isfinite(every).all(axis=1)]
    lo, hi = every.min(axis=0), every.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    hv = HV(ref_point=np.full(len(infos), 1.1))
    gens, hvs = [], []
    best: dict[str, list[float]] = {o.name: [] for o in infos}
    front: list[CandidateRecord] = []
    so_far: dict[str, float] = {}
    for g, recs in _by_generation(children).items():
        front = pareto_front([*front, *recs], infos)
        F = (minimize_matrix([r.objectives for r in front], infos) - lo) / span
        gens.append(g)
        hvs.append(float(hv(F)) if len(F) else 0.0)
        for o in infos:
            vals = [r.objectives[o.name] for r in recs if r.evaluation == "full"]
            if vals:
                new = (max if o.maximize else min)(vals)
                old = so_far.get(o.name)
                so_far[o.name] = new if old is None else (max if o.maximize else min)(old, new)
            best[o.name].append(so_far.get(o.name, float("nan")))
    return gens, hvs, best


def candidate_seconds(rec: CandidateRecord) -> float:
    """The time a candidate took: its merge and evaluation phases (see :data:`PHASES`)."""
    return float(sum(v for k, v in rec.timings.items() if k in PHASES and isinstance(v, (int, float))))


def throughput(children: Sequence[CandidateRecord]) -> dict[str, list[float]]:
    """Per generation: candidates, their summed time and candidates per minute of that time.

    Records carry durations, not clock times, so with several workers the run's wall-clock rate
    is higher than this (the dashboard also shows the rate it sees records arrive at).
    """
    gens, count, seconds, rate = [], [], [], []
    for g, recs in _by_generation(children).items():
        s = sum(candidate_seconds(r) for r in recs)
        gens.append(g)
        count.append(len(recs))
        seconds.append(s)
        rate.append(60.0 * len(recs) / s if s > 0 else float("nan"))
    return {"generation": gens, "candidates": count, "seconds": seconds, "per_minute": rate}


def time_breakdown(children: Sequence[CandidateRecord]) -> dict[str, dict[str, float]]:
    """Mean and total seconds per timing key (``merge``, ``evaluate``, ``task:<name>`` ...)."""
    total: dict[str, float] = {}
    seen: dict[str, int] = {}
    for r in children:
        for k, v in r.timings.items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0.0) + float(v)
                seen[k] = seen.get(k, 0) + 1
    return {k: {"total": total[k], "mean": total[k] / seen[k], "count": seen[k]} for k in sorted(total)}


def worker_seconds(rec: CandidateRecord) -> dict[str, float]:
    """Seconds per worker that scored ``rec`` (``extra.workers``: ``host:pid`` -> seconds; an
    older record's single ``extra.worker`` gets the candidate's whole time)."""
    many = rec.extra.get("workers")
    if isinstance(many, dict):
        return {str(w): float(s) for w, s in many.items() if isinstance(s, (int, float))}
    one = rec.extra.get("worker")
    return {} if one is None else {str(one): candidate_seconds(rec)}


def workers(children: Sequence[CandidateRecord]) -> list[dict[str, Any]]:
    """One row per worker named in the records: candidates, seconds, last generation."""
    rows: dict[str, dict[str, Any]] = {}
    for r in children:
        for w, sec in worker_seconds(r).items():
            row = rows.setdefault(w, {"worker": w, "candidates": 0, "seconds": 0.0, "last_generation": r.generation})
            row["candidates"] += 1
            row["seconds"] += sec
            row["last_generation"] = max(row["last_generation"], r.generation)
    return list(rows.values())
