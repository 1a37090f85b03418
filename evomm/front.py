"""The Pareto front of a run and picking models from it (decision making by pymoo).

Picks (``evomm front --pick`` / ``evomm export --pick``):
  * ``knee``: pymoo's :class:`~pymoo.mcdm.high_tradeoff.HighTradeoffPoints`; when the front is
    too small for it, the point nearest the ideal point after normalisation.
  * ``weights=a,b,...``: pymoo's :class:`~pymoo.mcdm.pseudo_weights.PseudoWeights` (one weight
    per objective, in objective order; higher weight = that objective matters more).
  * ``best=NAME``: the best value of one objective.
  * ``NAME>=v`` (or ``<=``, ``>``, ``<``): keep candidates meeting the condition, then the best on
    the remaining objective (with several remaining: equal pseudo-weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymoo.mcdm.high_tradeoff import HighTradeoffPoints
from pymoo.mcdm.pseudo_weights import PseudoWeights
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from evomm.conditions import OPS, parse_condition, parse_named_condition
from evomm.errors import ConfigError, SearchError
from evomm.objectives import minimize_matrix
from evomm.records import CandidateRecord


@dataclass(frozen=True)
class ObjectiveInfo:
    """What front-building needs to know about an objective (from ``run.json``)."""

    name: str
    direction: str
    constraint: str | None = None

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def feasible(rec: CandidateRecord, objectives: Sequence[ObjectiveInfo]) -> bool:
    """Whether ``rec`` satisfies every objective constraint of the recipe.

    Raises:
        ConfigError: a constraint (from ``run.json``) is not a condition such as ``>= 0.5``.
    """
    for o in objectives:
        if o.constraint:
            cond = parse_condition(o.constraint, f"run.json: objective {o.name!r} has the constraint")
            if not cond.holds(rec.objectives[o.name]):
                return False
    return True


def pareto_front(
    records: Sequence[CandidateRecord], objectives: Sequence[ObjectiveInfo]
) -> list[CandidateRecord]:
    """Non-dominated, fully evaluated, feasible children (in archive order).

    Example:
        >>> front = pareto_front(archive.stage_records("ps"), objectives)   # doctest: +SKIP
    """
    pool = [
        r for r in records
        if not r.is_parent and r.evaluation == "full" and feasible(r, objectives)
    ]
    if not pool:
        return []
    F = minimize_matrix([r.objectives for r in pool], objectives)
    if not np.isfinite(F).all():
        keep = np.isfinite(F).all(axis=1)
        pool = [r for r, k in zip(pool, keep) if k]
        F = F[keep]
        if not pool:
            return []
    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return [pool[i] for i in sorted(idx)]


def _normalised(F: np.ndarray) -> np.ndarray:
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (F - lo) / span


def pick(
    front: Sequence[CandidateRecord], objectives: Sequence[ObjectiveInfo], how: str
) -> CandidateRecord:
    """Pick one candidate of ``front`` (see the module docstring for ``how``).

    Raises:
        ConfigError: ``how`` is malformed or names an unknown objective.
        SearchError: the front is empty, or no candidate meets the condition.
    """
    if not front:
        raise SearchError("the front is empty: no fully evaluated feasible candidate to pick from")
    names = [o.name for o in objectives]
    F = minimize_matrix([r.objectives for r in front], objectives)
    how = how.strip()
    if how == "knee":
        return front[_knee(F)]
    if how.startswith("weights="):
        w = _weights(how, names)
        if len(front) == 1:
            return front[0]
        return front[int(PseudoWeights(w / w.sum()).do(F))]
    if how.startswith("best="):
        name = how[len("best="):]
        if name not in names:
            raise ConfigError(f"--pick {how!r}: unknown objective {name!r}; objectives are {names}")
        return front[int(np.argmin(F[:, names.index(name)]))]
    if not any(op in how for op in OPS):
        raise ConfigError(
            f"--pick {how!r} is not understood; use knee, weights=a,b, best=NAME or NAME>=VALUE "
            f"(e.g. {names[0]}>=0.5)"
        )
    name, cond = parse_named_condition(how, "--pick", example=f"{names[0]}>=0.5")
    if name not in names:
        raise ConfigError(f"--pick {how!r}: unknown objective {name!r}; objectives are {names}")
    keep = [i for i, r in enumerate(front) if cond.holds(r.objectives[name])]
    if not keep:
        best = max(r.objectives[name] for r in front)
        raise SearchError(f"--pick {how!r}: no candidate on the front meets it (best {name} = {best:.4g})")
    rest = [j for j, n in enumerate(names) if n != name] or [names.index(name)]
    sub = F[np.ix_(keep, rest)]
    if sub.shape[1] == 1:
        return front[keep[int(np.argmin(sub[:, 0]))]]
    if len(keep) == 1:
        return front[keep[0]]
    return front[keep[int(PseudoWeights(np.full(len(rest), 1 / len(rest))).do(sub))]]


def _weights(how: str, names: Sequence[str]) -> np.ndarray:
    """The weights of ``--pick weights=a,b,...``: one finite, non-negative number per
    objective, not all zero."""
    text = how[len("weights="):]
    example = "weights=" + ",".join(["0.5"] * len(names))
    try:
        w = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ConfigError(f"--pick {how!r}: weights must be numbers separated by commas, e.g. {example}") from None
    if len(w) != len(names) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(
            f"--pick {how!r}: give {len(names)} finite, non-negative weights, not all zero, one per "
            f"objective ({', '.join(names)}), e.g. {example}"
        )
    return w


def _knee(F: np.ndarray) -> int:
    n = len(F)
    if n <= 2 or F.shape[1] == 1:
        return int(np.argmin(np.linalg.norm(_normalised(F), axis=1))) if F.shape[1] > 1 else int(np.argmin(F[:, 0]))
    try:
        idx = HighTradeoffPoints().do(_normalised(F))
    except (ValueError, IndexError):  # degenerate fronts (ties): fall back below
        idx = None
    if idx is not None and np.size(idx) > 0:
        cands = np.atleast_1d(idx)
        # several knees: the one nearest the ideal point
        return int(min(cands, key=lambda i: np.linalg.norm(_normalised(F)[i])))
    return int(np.argmin(np.linalg.norm(_normalised(F), axis=1)))


def dominates_parents(
    rec: CandidateRecord, parents: Sequence[CandidateRecord], objectives: Sequence[ObjectiveInfo]
) -> list[str]:
    """Names of the parents ``rec`` weakly dominates (at least as good everywhere, better once)."""
    out = []
    f = minimize_matrix([rec.objectives], objectives)[0]
    for p in parents:
        g = minimize_matrix([p.objectives], objectives)[0]
        if (f <= g).all() and (f < g).any():
            out.append(p.id.split(":", 1)[-1])
    return out
