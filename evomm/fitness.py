"""Objective values from item results: estimates, standard errors, confidence bounds, schedules.

A candidate's objective values are computed from what it scored per item
(:mod:`evomm.item_store`): a metric with per-item values is the mean of its item values (the
task's own aggregation, :meth:`evomm.tasks.TaskResult.from_items`); a metric without them (a
corpus-level one) is the value the task reported for a whole evaluation. On part of the items a
value is an *estimate*: the mean of the items scored, with a standard error (finite-population
corrected: the full set is finite and known) and a confidence bound on the full-set value.

Bounds: the full-set mean is ``(S + R * m) / N`` where ``S`` is the known sum of the ``k``
scored items, ``R = N - k`` the items left and ``m`` their unknown mean. ``m`` is bounded by a
Wilson bound (:func:`scipy.stats.binomtest`) when every item is 0/1, by Hoeffding's inequality
when items lie in [0, 1] (``sqrt(ln(1/delta) / 2k)``: a formula, no library offers it for a
sample mean), and not at all otherwise; each bound is one-sided at ``confidence``. ``confidence: 1`` bounds ``m`` by the item range [0, 1]
itself: a guarantee, not a probability.

Item order: each task's items are shuffled once with the run seed (:func:`item_order`); a
round's items are a prefix of that order, so every candidate of a generation is compared on the
same items and a later round only adds items.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from evomm.item_store import CandidateItems, TaskItems
    from evomm.objectives import ObjectiveSet

_INF = float("inf")


@lru_cache(maxsize=256)
def item_order(task: str, n: int, seed: int) -> tuple[int, ...]:
    """The order in which rounds take ``task``'s ``n`` items: one shuffle per task and run seed.

    Example:
        >>> item_order("t", 5, 0) == item_order("t", 5, 0) and sorted(item_order("t", 5, 0)) == [0, 1, 2, 3, 4]
        True
    """
    rng = np.random.default_rng([seed, zlib.crc32(task.encode("utf-8"))])
    return tuple(int(i) for i in rng.permutation(n))


def round_size(spec: int | str, n: int) -> int:
    """Items of a task of ``n`` items in a round given as a count (``20``) or a share (``"50%"``).

    Example:
        >>> round_size(20, 100), round_size("50%", 30), round_size(500, 100)
        (20, 15, 100)
    """
    if isinstance(spec, str):
        return min(n, max(1, math.ceil(n * float(spec.rstrip("%")) / 100)))
    return min(n, int(spec))


@dataclass
class Estimate:
    """A candidate's objective values from its item results.

    Attributes:
        metrics: ``{task: {metric: value}}`` (means over the items scored).
        values: objective -> value, in the user's direction.
        stderr: objective -> standard error (empty when every value is exact).
        low, high: objective -> confidence bounds on the full-set value (equal to the value
            when exact; +-inf when unknown).
        items_evaluated: items scored, summed over tasks.
        complete: every task scored on all its items.
    """

    metrics: dict[str, dict[str, float]]
    values: dict[str, float]
    stderr: dict[str, float] = field(default_factory=dict)
    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)
    items_evaluated: int = 0
    complete: bool = False
    items: Any = None  # the CandidateItems it was computed from


def _remaining_bounds(vals: np.ndarray, confidence: float) -> tuple[float, float]:
    """Bounds on the mean of the items not yet scored, from the ``vals`` scored."""
    k = len(vals)
    if k == 0 or vals.min() < 0 or vals.max() > 1:
        return -_INF, _INF
    if confidence >= 1:
        return 0.0, 1.0
    # each bound is used on its own (a candidate's upper one, a rival's lower one): one-sided
    # bounds at `confidence` are the ends of a two-sided interval at 2 * confidence - 1
    if np.all((vals == 0) | (vals == 1)):
        from scipy.stats import binomtest

        two_sided = max(2 * confidence - 1, 1e-6)
        ci = binomtest(int(vals.sum()), k).proportion_ci(confidence_level=two_sided, method="wilson")
        return float(ci.low), float(ci.high)
    eps = math.sqrt(math.log(1 / (1 - confidence)) / (2 * k))  # Hoeffding, one-sided
    mean = float(vals.mean())
    return max(0.0, mean - eps), min(1.0, mean + eps)


def metric_estimate(task: TaskItems, metric: str, confidence: float) -> tuple[float, float, float, float]:
    """``(value, stderr, low, high)`` of ``metric`` of one task's items.

    A metric without per-item values is exact when the task was scored whole, unknown otherwise.
    """
    per = task.values.get(metric)
    if not per:
        value = task.aggregate.get(metric, math.nan)
        if task.aggregate_n >= task.n:
            return value, 0.0, value, value
        return value, math.nan, -_INF, _INF
    ids = sorted(per)
    vals = np.array([per[i] for i in ids], dtype=float)
    k, n = len(ids), task.n
    value = sum(per[i] for i in ids) / k  # the task's own aggregation (a mean in id order)
    if k >= n:
        return value, 0.0, value, value
    se = float(vals.std(ddof=1) / math.sqrt(k) * math.sqrt(1 - k / n)) if k > 1 else math.nan
    lo_r, hi_r = _remaining_bounds(vals, confidence)
    total = float(vals.sum())
    return value, se, (total + (n - k) * lo_r) / n, (total + (n - k) * hi_r) / n


def estimate(items: CandidateItems, objs: ObjectiveSet, confidence: float) -> Estimate:
    """The :class:`Estimate` of a candidate's items for ``objs``.

    Raises:
        TaskError: a metric the objectives need is in no result (via :meth:`ObjectiveSet.values`).
    """
    metrics: dict[str, dict[str, float]] = {}
    se_m: dict[tuple[str, str], tuple[float, float, float]] = {}
    for task, ti in items.items():
        names = dict.fromkeys([*ti.values, *ti.aggregate])
        for metric in names:
            value, se, lo, hi = metric_estimate(ti, metric, confidence)
            metrics.setdefault(task, {})[metric] = value
            se_m[(task, metric)] = (se, lo, hi)
    values = objs.values(metrics)
    needed = {t: [m for o in objs.objectives for tt, m, _ in o.terms if tt == t] for t in items}
    complete = bool(items) and all(ti.complete_for(needed[t]) for t, ti in items.items())
    est = Estimate(metrics, values, items_evaluated=sum(ti.evaluated for ti in items.values()), complete=complete,
                   items=items)
    for o in objs.objectives:
        total = sum(w for _, _, w in o.terms) or 1.0
        parts = [(w / total, *se_m.get((t, m), (math.nan, -_INF, _INF))) for t, m, w in o.terms]
        lo = sum(w * (lo_ if w >= 0 else hi_) for w, _, lo_, hi_ in parts)
        hi = sum(w * (hi_ if w >= 0 else lo_) for w, _, lo_, hi_ in parts)
        est.low[o.name], est.high[o.name] = lo, hi
        if not complete:
            est.stderr[o.name] = math.sqrt(sum((w * se) ** 2 for w, se, _, _ in parts))
    return est


def missing(task: TaskItems | None, order: Sequence[int], upto: int, metrics: Sequence[str] = ()) -> list[int] | None:
    """The ids of ``order[:upto]`` not yet scored (``None``: score the task whole, because one of
    the ``metrics`` needed has no per-item values (a metric that is not a mean over items) or
    nothing was scored and ``upto`` covers every item)."""
    if task is not None and task.complete_for(metrics):
        return []
    if task is not None and (task.aggregate_n or task.values) and task.needs_whole(metrics):
        return None  # only a whole evaluation gives this metric: per-item values cannot add up to it
    if (task is None or not task.values) and upto >= len(order):
        return None
    have = task.ids if task is not None else set()
    return [i for i in order[:upto] if i not in have]


def objective_values(items: CandidateItems, objs: ObjectiveSet) -> Mapping[str, float]:
    """The objective values of a candidate's items (a shortcut of :func:`estimate`)."""
    return estimate(items, objs, 1.0).values
