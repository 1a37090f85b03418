"""Where a candidate's time goes: ``evomm evolve RECIPE --profile``.

Evaluation is nearly the whole bill of an evolution run; before a long run (or to see what a
speed-up changed) :func:`profile_candidate` merges and scores a few candidates of the recipe's
first stage exactly as the run would (the space's in-place merge, the one evaluation API) and
splits each one's time into the merge, and per task the model's own calls (``generate``,
``loglikelihood``, ``classify``; timed by :class:`evomm.evaluation.TimedHandle`) and the task's
own work (prompts, scoring). Nothing is written.

Example:
    >>> prof = profile_candidate(recipe, plugins)      # doctest: +SKIP
    >>> print(format_profile(prof))                    # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evomm.evaluation import evaluate_tasks
from evomm.objectives import ObjectiveSet

if TYPE_CHECKING:
    from evomm.evolve_recipe import EvolveRecipe
    from evomm.plugins import Plugins
    from evomm.tasks import TaskResult


@dataclass
class TaskTime:
    """One task's share of a candidate: items scored, seconds in all, seconds per model method."""

    items: int
    seconds: float
    model: dict[str, float] = field(default_factory=dict)

    @property
    def own(self) -> float:
        """Seconds outside the model (prompts, scoring)."""
        return max(0.0, self.seconds - sum(self.model.values()))


@dataclass
class CandidateProfile:
    """The time of one candidate (the last profiled; the model already resident), and of the
    first merge, which also loads the parents."""

    stage: str
    first_merge: float
    merge: float
    tasks: dict[str, TaskTime]

    @property
    def total(self) -> float:
        return self.merge + sum(t.seconds for t in self.tasks.values())


def _task_times(results: dict[str, TaskResult]) -> dict[str, TaskTime]:
    return {k: TaskTime(len(r.item_ids), r.seconds, dict(r.model_seconds)) for k, r in results.items()}


def profile_candidate(recipe: EvolveRecipe, plugins: Plugins, *, candidates: int = 2) -> CandidateProfile:
    """Merge and score ``candidates`` candidates of the first stage (its initial point, then
    random genomes from the recipe's seed) and time their parts.

    Args:
        recipe: the evolve recipe.
        plugins: the registries.
        candidates: how many to score (>= 2 shows a candidate after the first, as in a run,
            where the model stays resident and is merged in place).
    """
    from evomm.runner import build_space

    objs = ObjectiveSet(recipe.objectives, recipe.tasks, plugins)
    space = build_space(recipe, 0, Path("."), plugins, [])
    rng = np.random.default_rng(recipe.seed)
    merges: list[float] = []
    try:
        for k in range(max(1, candidates)):
            x = space.initial_point() if k == 0 else rng.random(space.dim)
            start = time.perf_counter()
            handle = space.materialize(space.decode(x))
            merges.append(time.perf_counter() - start)
            results = evaluate_tasks(handle, objs.tasks)
    finally:
        space.close()
    return CandidateProfile(recipe.stages[0].name, merges[0], merges[-1], _task_times(results))


def format_profile(prof: CandidateProfile) -> str:
    """The profile as a table: one row per part, seconds and share of the candidate."""
    total = prof.total or 1.0
    rows = [("merge (in place, model resident)", "", prof.merge)]
    for name, t in prof.tasks.items():
        rows += [(f"{name}: {method}", str(t.items), s) for method, s in sorted(t.model.items())]
        rows.append((f"{name}: prompts and scoring", "", t.own))
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"where a candidate's time goes (stage {prof.stage!r}; the first merge, which also loads the "
             f"parents, took {prof.first_merge:.2f} s):",
             f"  {'part':<{width}}{'items':>6}{'seconds':>10}{'share':>8}"]
    lines += [f"  {part:<{width}}{items:>6}{s:>10.2f}{100 * s / total:>7.1f}%" for part, items, s in rows]
    lines.append(f"  {'candidate':<{width}}{'':>6}{prof.total:>10.2f}{100.0:>7.1f}%")
    return "\n".join(lines)
