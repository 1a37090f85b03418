"""Cheap-fitness strategies: which items each round scores and which candidates stop.

A generation's new candidates are scored in rounds of items (:class:`evomm.generation`); after
each round a strategy says which candidates stop. Every strategy is a :class:`Strategy`:

* ``full``: one round, every item (the exact search; nothing stops early).
* ``subset``: the first ``subset`` items of each task, then the rest only for candidates whose
  subset values, made ``margin`` more optimistic, are not dominated by the front of the earlier
  generations (today's cheap-first; the subset's items are reused, never scored again).
* ``racing``: rounds over each task's items shuffled once with the run seed (by default 20
  items, doubling, then the rest: :data:`evomm.evolve_recipe.DEFAULT_ROUNDS`; or
  ``rounds: [20, 50, 100%]``); after a round a candidate stops when its optimistic bound
  (:func:`evomm.fitness.estimate`, at ``confidence``) is infeasible or dominated by the front of
  the earlier generations or by the pessimistic bound of another candidate of the generation.
  With ``confidence: 1`` the bounds are the item range and no candidate that full evaluation
  would put on the front ever stops; below 1 each bound holds with that probability.
* ``irt``: :mod:`evomm.irt`.

Decisions use only item results (never timings), so every executor takes the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evomm.fitness import Estimate, item_order, round_size
from evomm.objectives import minimize_matrix

if TYPE_CHECKING:
    from evomm.evolve_recipe import Fitness
    from evomm.front import ObjectiveInfo
    from evomm.objectives import ObjectiveSet


def _dominated(f: np.ndarray, refs: np.ndarray) -> bool:
    """Whether some row of ``refs`` dominates ``f`` (all minimised)."""
    if not len(refs):
        return False
    return bool(((refs <= f).all(axis=1) & (refs < f).any(axis=1)).any())


class Strategy:
    """The ``full`` strategy, and the interface of the others.

    Args:
        cfg: the recipe's ``fitness`` section.
        seed: the run seed (item order).
    """

    name = "full"
    #: Decisions use confidence bounds: a task whose needed metric has no per-item values gives
    #: none on part of its items, so it is scored whole at once (``subset`` decides on the
    #: aggregate of its subset instead, as cheap-first always did).
    bounds = True

    def __init__(self, cfg: Fitness, seed: int) -> None:
        self.cfg, self.seed = cfg, seed

    @property
    def n_rounds(self) -> int:
        return 1

    def order(self, task: str, n: int) -> Sequence[int]:
        """The order in which rounds take the task's items."""
        return range(n)

    def upto(self, round_: int, n: int) -> int:
        """How many items of a task of ``n`` items round ``round_`` has scored by its end."""
        return n

    def drops(self, ests: Sequence[Estimate], refs: Sequence[Mapping[str, float]], infos: Sequence[ObjectiveInfo],
              objs: ObjectiveSet, round_: int) -> list[bool]:
        """Which of ``ests`` (candidates still running after ``round_``) stop now; ``refs`` are
        exact, feasible objective values (the earlier front, this generation's finished ones)."""
        return [False] * len(ests)

    def note(self) -> dict[str, Any]:
        """What a record's ``extra`` says about how it was scored."""
        return {}

    def prepare(self, store: Any, stage: str, records: Sequence[Any], metrics: Sequence[tuple[str, str]],
                sizes: dict[str, int]) -> None:
        """Called before each generation with the records of the earlier ones (``irt`` fits here)."""

    def final(self, est: Estimate, objs: ObjectiveSet) -> tuple[dict[str, float], dict[str, float], str, dict[str, Any]]:
        """A done candidate's archived ``(objectives, stderr, evaluation, extra)``: ``full`` when
        every item was scored, else ``subset`` (the mean of the items scored, with standard errors)."""
        if est.complete:
            return est.values, {}, "full", {}
        return est.values, est.stderr, "subset", {}


class SubsetStrategy(Strategy):
    """Cheap-first: the first ``subset`` items, then the rest if the candidate could enter the front."""

    name = "subset"
    bounds = False

    @property
    def n_rounds(self) -> int:
        return 2

    def upto(self, round_: int, n: int) -> int:
        return min(n, int(self.cfg.subset or n)) if round_ == 0 else n

    def drops(self, ests, refs, infos, objs, round_):  # type: ignore[no-untyped-def]
        m = self.cfg.margin
        F = minimize_matrix(list(refs), infos)
        out = []
        for e in ests:
            opt = {o.name: e.values[o.name] + (m if o.maximize else -m) for o in infos}
            out.append(_dominated(minimize_matrix([opt], infos)[0], F))
        return out

    def note(self) -> dict[str, Any]:
        return {"subset": self.cfg.subset}


class RacingStrategy(Strategy):
    """Racing on confidence bounds (see the module docstring)."""

    name = "racing"

    @property
    def n_rounds(self) -> int:
        return len(self.cfg.rounds)

    def order(self, task: str, n: int) -> Sequence[int]:
        return item_order(task, n, self.seed)

    def upto(self, round_: int, n: int) -> int:
        return n if round_ >= len(self.cfg.rounds) - 1 else round_size(self.cfg.rounds[round_], n)

    def drops(self, ests, refs, infos, objs, round_):  # type: ignore[no-untyped-def]
        return bound_drops(ests, refs, infos, objs)


def _bound_rows(ests: Sequence[Estimate], infos: Sequence[ObjectiveInfo], optimistic: bool) -> list[dict[str, float]]:
    rows = []
    for e in ests:
        rows.append({o.name: (e.high if o.maximize == optimistic else e.low)[o.name] for o in infos})
    return rows


def bound_drops(ests: Sequence[Estimate], exact: Sequence[Mapping[str, float]], infos: Sequence[ObjectiveInfo],
                objs: ObjectiveSet) -> list[bool]:
    """Which candidates stop: their optimistic bound cannot meet a constraint, or is dominated by
    ``exact`` values or by another candidate's pessimistic bound (that one feasible at both of
    its bounds)."""
    opt, pess = _bound_rows(ests, infos, True), _bound_rows(ests, infos, False)
    feasible_pess = [objs.feasible(p) and objs.feasible(o) for p, o in zip(pess, opt)]
    refs = list(exact) + [p for p, ok in zip(pess, feasible_pess) if ok]
    R = minimize_matrix(refs, infos) if refs else np.zeros((0, len(infos)))
    out = []
    for e, row in zip(ests, opt):
        can_meet = all(o.constraint is None or min(o.constraint.violation(e.low[o.name]),
                                                   o.constraint.violation(e.high[o.name])) <= 0
                       for o in objs.objectives)  # conditions are half-lines: an end meets it if any point does
        out.append(not can_meet or _dominated(minimize_matrix([row], infos)[0], R))
    return out


def make_strategy(cfg: Fitness, seed: int) -> Strategy:
    """The :class:`Strategy` the recipe's ``fitness.strategy`` names."""
    if cfg.strategy == "irt":
        from evomm.irt import IrtStrategy

        return IrtStrategy(cfg, seed)
    return {"full": Strategy, "subset": SubsetStrategy, "racing": RacingStrategy}[cfg.strategy](cfg, seed)
