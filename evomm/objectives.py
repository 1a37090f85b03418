"""Objectives: from task metrics to the numbers the optimiser minimises.

Users say "maximize" or "minimize" per objective; pymoo only minimises. The sign flip happens in
exactly one place: :meth:`ObjectiveSet.to_minimize` (and its inverse for display,
:meth:`ObjectiveSet.from_minimize`). Archives, tables and plots always hold values in the user's
direction (higher is better for a maximised objective).

An objective is one task's metric, or a *suite*: a weighted mean of several tasks' metrics
(``suite: {toy_ja_skill: 1, "toy_ja_math.loose": 2}``; ``task.metric`` picks a metric other than
the task's primary one). Constraints (``>= 0.5``) become pymoo inequality constraints
``g(x) <= 0``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evomm.conditions import Condition
from evomm.errors import ConfigError, TaskError
from evomm.evaluation import Metrics, check_capabilities, evaluate_tasks
from evomm.evolve_recipe import Objective, TaskOptions

if TYPE_CHECKING:
    from evomm.handle import ModelHandle
    from evomm.plugins import Plugins
    from evomm.tasks import Task, TaskResult

#: The objective value archived for a candidate that could not be evaluated (its merged weights
#: held NaN/Inf): ``-FAILED_PENALTY`` for a maximised objective, ``+FAILED_PENALTY`` for a
#: minimised one. Tasks declare no bounds for their metrics, so this is a large *finite* value
#: (pymoo needs finite objectives, JSON has no portable Inf) worse than any real score; the
#: record is marked ``evaluation: "failed"`` and never enters a front.
FAILED_PENALTY = 1e9


@dataclass(frozen=True)
class ResolvedObjective:
    """An objective with its terms resolved: ``((task, metric, weight), ...)`` and direction."""

    name: str
    terms: tuple[tuple[str, str, float], ...]
    maximize: bool
    constraint: Condition | None

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"


class ObjectiveSet:
    """The recipe's objectives, bound to task instances.

    Args:
        objectives: the recipe's ``objectives``.
        task_options: the recipe's ``tasks`` (data, split, limit, seed, task options).
        plugins: where task classes are registered.

    Example:
        >>> objs = ObjectiveSet(recipe.objectives, recipe.tasks, plugins)   # doctest: +SKIP
        >>> results = objs.evaluate(handle)                                  # doctest: +SKIP
        >>> objs.to_minimize(objs.values(metrics_of(results)))               # doctest: +SKIP
    """

    def __init__(
        self,
        objectives: Sequence[Objective],
        task_options: Mapping[str, TaskOptions],
        plugins: Plugins,
    ) -> None:
        self.tasks: dict[str, Task] = {}
        self.objectives: list[ResolvedObjective] = []
        for i, obj in enumerate(objectives):
            where = f"objectives[{i}]"
            raw: dict[str, float] = {obj.task: 1.0} if obj.task else dict(obj.suite or {})
            terms = []
            directions = set()
            for key, weight in raw.items():
                task_name, _, metric = key.partition(".")
                if obj.task and obj.metric:
                    metric = obj.metric
                task = self._task(task_name, task_options, plugins, where)
                declared = {m.name: m for m in task.metrics}
                metric = metric or task.primary_metric
                if metric not in declared:
                    raise ConfigError(
                        f"{where}.metric: task {task_name!r} has no metric {metric!r}; "
                        f"it reports {sorted(declared)}"
                    )
                directions.add(declared[metric].higher_is_better)
                terms.append((task_name, metric, float(weight)))
            if obj.direction is not None:
                maximize = obj.direction == "maximize"
            elif len(directions) == 1:
                maximize = directions.pop()
            else:
                raise ConfigError(f"{where}.direction: the suite mixes metric directions; say maximize or minimize")
            self.objectives.append(ResolvedObjective(obj.name, tuple(terms), maximize, obj.constraint_parts()))

    def _task(self, name: str, options: Mapping[str, TaskOptions], plugins: Plugins, where: str) -> Task:
        if name not in self.tasks:
            cls = plugins.tasks.get(name)  # RegistryError with did-you-mean when unknown
            opts = options.get(name, TaskOptions()).model_dump()
            data, split, limit, seed = (opts.pop(k) for k in ("data", "split", "limit", "seed"))
            try:
                self.tasks[name] = cls(data, split=split, limit=limit, seed=seed, **opts)
            except TypeError as exc:
                raise ConfigError(f"tasks.{name}: bad option for task {name!r}: {exc}") from None
        return self.tasks[name]

    # --------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def n_constraints(self) -> int:
        return sum(o.constraint is not None for o in self.objectives)

    def task_size(self, name: str) -> int:
        """Number of examples the task scores in full (after ``limit``)."""
        return len(self.tasks[name].examples())

    def evaluate(self, handle: ModelHandle, subset: int | None = None) -> dict[str, TaskResult]:
        """Score ``handle`` on every task the objectives use (:func:`evomm.evaluation.evaluate_tasks`:
        capabilities checked first, then per-item results and timings).

        Args:
            handle: the model.
            subset: score only the first ``subset`` examples of each task (cheap-first).

        Returns:
            ``{task: TaskResult}``; :func:`evomm.evaluation.metrics_of` gives ``{task: {metric: value}}``.
        """
        return evaluate_tasks(handle, self.tasks, subset=subset)

    def evaluate_items(self, handle: ModelHandle, items: Mapping[str, Sequence[int] | None]) -> dict[str, TaskResult]:
        """Score ``handle`` on the given items of some tasks: the item-level form of
        :meth:`evaluate` (capabilities of those tasks checked first, then each task scored and timed).

        Args:
            handle: the model.
            items: task -> item ids (indices into :meth:`evomm.tasks.Task.examples`), or ``None``
                for every item.

        Returns:
            ``{task: TaskResult}`` with ``item_ids`` and ``seconds`` set.
        """
        tasks = {t: self.tasks[t] for t in items}
        check_capabilities(tasks, handle)
        out: dict[str, TaskResult] = {}
        for key, task in tasks.items():
            start = time.perf_counter()
            ids = items[key]
            result = task.evaluate(handle, None if ids is None else list(ids))
            result.seconds = time.perf_counter() - start
            out[key] = result
        return out

    def values(self, metrics: Metrics) -> dict[str, float]:
        """Objective values in the user's direction (a suite is a weighted mean of its terms)."""
        out = {}
        for o in self.objectives:
            total = sum(w for _, _, w in o.terms)
            try:
                v = sum(w * metrics[t][m] for t, m, w in o.terms) / (total or 1.0)
            except KeyError as exc:
                raise TaskError(f"objective {o.name!r}: metric {exc} missing from the task's result") from None
            out[o.name] = float(v)
        return out

    def to_minimize(self, values: Mapping[str, float]) -> np.ndarray:
        """User-direction values -> what pymoo minimises (see :func:`minimize_matrix`)."""
        return minimize_matrix([values], self.objectives)[0]


    def failed_values(self) -> dict[str, float]:
        """The worst values (:data:`FAILED_PENALTY`) in the user's direction, for a candidate
        that could not be evaluated; they also violate every constraint.

        Example:
            >>> objs.failed_values()          # doctest: +SKIP
            {'ja_skill': -1000000000.0, 'loss': 1000000000.0}
        """
        return {o.name: -FAILED_PENALTY if o.maximize else FAILED_PENALTY for o in self.objectives}

    def constraint_values(self, values: Mapping[str, float]) -> np.ndarray:
        """pymoo inequality constraints ``g <= 0`` for the objectives that have one."""
        g = []
        for o in self.objectives:
            if o.constraint is None:
                continue
            g.append(o.constraint.violation(values[o.name]))
        return np.array(g, dtype=float)

    def feasible(self, values: Mapping[str, float]) -> bool:
        return bool(np.all(self.constraint_values(values) <= 0))

    def info(self) -> list[dict[str, Any]]:
        """Objectives as plain dicts (for run metadata and reports)."""
        return [
            {"name": o.name, "direction": o.direction, "terms": [list(t) for t in o.terms],
             "constraint": None if o.constraint is None else str(o.constraint)}
            for o in self.objectives
        ]


def minimize_matrix(values: Sequence[Mapping[str, float]], objectives: Sequence[Any]) -> np.ndarray:
    """THE sign flip, the only one in evomm: rows of user-direction objective values -> the
    matrix pymoo minimises (maximised objectives negated; NaN -> +inf, i.e. worst).

    Args:
        values: one ``{objective name: value}`` per candidate.
        objectives: objects with ``name`` and ``maximize`` (ResolvedObjective, ObjectiveInfo).

    Example:
        >>> from evomm.front import ObjectiveInfo
        >>> minimize_matrix([{"a": 0.5, "b": 2.0}],
        ...                 [ObjectiveInfo("a", "maximize"), ObjectiveInfo("b", "minimize")])
        array([[-0.5,  2. ]])
    """
    F = np.array(
        [[-float(v[o.name]) if o.maximize else float(v[o.name]) for o in objectives] for v in values],
        dtype=float,
    ).reshape(len(values), len(objectives))
    return np.where(np.isnan(F), np.inf, F)
