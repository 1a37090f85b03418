"""The ``irt`` strategy: score anchor items, estimate the rest with an item-response model.

Model (1PL, Rasch): candidate ``j`` answers item ``i`` right with probability
``sigmoid(theta_j - b_i)``. Before each generation the item difficulties ``b`` of every 0/1
metric the objectives use are fitted, with scikit-learn's L2-regularised logistic regression on
one-hot (candidate, item) features, to the item results of the candidates scored on every item
so far (the parents and the earlier generations' full evaluations). The ``anchors`` items are
the items at evenly spaced quantiles of difficulty (plus a seeded spread when nothing is fitted
yet). A new candidate scores the anchors; its ability ``theta`` is the maximum-likelihood value
given ``b`` (:func:`scipy.optimize.minimize_scalar`, with a weak normal prior so that an
all-right or all-wrong anchor set stays finite); its full-set estimate is the anchors' results
plus ``sigmoid(theta - b_i)`` for every other item (the p-IRT estimator of tinyBenchmarks and
MERGE3). A candidate whose estimate, ``margin`` more optimistic, could enter the front is then
scored on every item (its record keeps the estimate in ``extra.irt_estimate``: the estimation
error against full evaluations); so is every ``check_every``-th candidate of a generation,
held back for checking. The others are archived with ``evaluation: estimate``.

Metrics that are not 0/1 per item, and tasks without per-item values, are estimated by the mean
of the anchors (as ``subset``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evomm.errors import ConfigError
from evomm.fitness import Estimate, item_order
from evomm.racing import SubsetStrategy

if TYPE_CHECKING:
    from evomm.item_store import CandidateItems, ItemStore
    from evomm.records import CandidateRecord

#: Every how many candidates of a generation one is scored in full whatever its estimate.
CHECK_EVERY = 8
_PRIOR = 0.1  # weight of the N(0, 1) prior on theta (keeps a perfect anchor score finite)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_difficulties(rows: Sequence[dict[int, float]], n: int) -> np.ndarray | None:
    """Item difficulties ``b`` (length ``n``) of a 1PL model fitted to complete 0/1 results
    (one ``{item: 0/1}`` per candidate), or ``None`` when fewer than two candidates differ."""
    from scipy.sparse import csr_matrix

    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ConfigError('fitness.strategy: irt needs scikit-learn: pip install "evomm[irt]"') from None

    rows = [r for r in rows if len(r) == n]
    if len(rows) < 2:
        return None
    y = np.array([r[i] for r in rows for i in range(n)], dtype=int)
    if y.min() == y.max():
        return None
    m = len(rows)
    r_idx = np.repeat(np.arange(m * n), 2)
    c_idx = np.stack([np.repeat(np.arange(m), n), m + np.tile(np.arange(n), m)], axis=1).ravel()
    X = csr_matrix((np.tile([1.0, -1.0], m * n), (r_idx, c_idx)), shape=(m * n, m + n))
    clf = LogisticRegression(C=10.0, fit_intercept=False, max_iter=2000).fit(X, y)
    return clf.coef_[0, m:].copy()  # columns of items carry -b: their coefficient is b


def ability(values: dict[int, float], b: np.ndarray) -> float:
    """The maximum-likelihood ``theta`` of 0/1 ``values`` on items of difficulties ``b``."""
    from scipy.optimize import minimize_scalar

    ids = np.array(sorted(values))
    y = np.array([values[i] for i in ids])

    def nll(theta: float) -> float:
        p = np.clip(_sigmoid(theta - b[ids]), 1e-9, 1 - 1e-9)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum() + _PRIOR * theta**2 / 2)

    return float(minimize_scalar(nll, bounds=(-10, 10), method="bounded").x)


def pirt_estimate(values: dict[int, float], b: np.ndarray) -> float:
    """The full-set mean: the scored items as they are, the others ``sigmoid(theta - b)``."""
    theta = ability(values, b)
    rest = np.setdiff1d(np.arange(len(b)), np.array(sorted(values), dtype=int))
    return float((sum(values.values()) + _sigmoid(theta - b[rest]).sum()) / len(b))


class IrtStrategy(SubsetStrategy):
    """Anchors, an IRT estimate, the rest only for promising candidates (module docstring)."""

    name = "irt"

    def __init__(self, cfg: Any, seed: int) -> None:
        super().__init__(cfg, seed)
        self.b: dict[tuple[str, str], np.ndarray] = {}
        self.anchor_ids: dict[str, list[int]] = {}

    def prepare(self, store: ItemStore, stage: str, records: Sequence[CandidateRecord],
                metrics: Sequence[tuple[str, str]], sizes: dict[str, int]) -> None:
        """Fit difficulties on the complete results of ``records`` and choose each task's anchors."""
        full = [store.get(stage, r.plan_hash) for r in records if r.evaluation == "full"]
        self.b = {}
        for task, metric in metrics:
            rows = [c[task].values.get(metric, {}) for c in full if task in c]
            if rows and all(v in (0.0, 1.0) for r in rows for v in r.values()):
                b = fit_difficulties(rows, sizes[task])
                if b is not None:
                    self.b[(task, metric)] = b
        self.anchor_ids = {}
        for task, n in sizes.items():
            k = min(n, self.cfg.anchors)
            fitted = [b for (t, _), b in self.b.items() if t == task]
            if not fitted:
                self.anchor_ids[task] = list(item_order(task, n, self.seed)[:k])
                continue
            ranked = np.argsort(np.mean(fitted, axis=0), kind="stable")  # easy -> hard
            picks = np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))
            self.anchor_ids[task] = sorted(int(ranked[q]) for q in picks)

    def order(self, task: str, n: int) -> Sequence[int]:
        anchors = self.anchor_ids.get(task) or list(item_order(task, n, self.seed)[: min(n, self.cfg.anchors)])
        chosen = set(anchors)
        return [*anchors, *[i for i in range(n) if i not in chosen]]

    def upto(self, round_: int, n: int) -> int:
        return min(n, self.cfg.anchors) if round_ == 0 else n

    def irt_values(self, est: Estimate, objs: Any) -> dict[str, float]:
        """Objective values with every 0/1 metric estimated by the fitted model."""
        metrics = {t: dict(m) for t, m in est.metrics.items()}
        items: CandidateItems = est.items or {}
        for (task, metric), b in self.b.items():
            per = items.get(task).values.get(metric) if task in items else None
            if per and len(per) < len(b):
                metrics[task][metric] = pirt_estimate(per, b)
        return objs.values(metrics)

    def drops(self, ests, refs, infos, objs, round_):  # type: ignore[no-untyped-def]
        shown = [Estimate(e.metrics, self.irt_values(e, objs)) for e in ests]
        out = super().drops(shown, refs, infos, objs, round_)
        return [d and (i % CHECK_EVERY != 0) for i, d in enumerate(out)]

    def final(self, est: Estimate, objs: Any) -> tuple[dict[str, float], dict[str, float], str, dict[str, Any]]:
        if est.complete:  # what the anchors alone estimated: the estimation error, checked
            anchors = _restrict(est.items or {}, self.anchor_ids)
            shown = Estimate({t: {m: float(np.mean(list(v.values()))) for m, v in ti.values.items() if v}
                              for t, ti in anchors.items()} | {}, {}, items=anchors)
            try:
                return est.values, {}, "full", {"irt_estimate": self.irt_values(shown, objs)}
            except Exception:  # noqa: BLE001 - an aggregate-only task: no anchor estimate to report
                return est.values, {}, "full", {}
        return self.irt_values(est, objs), est.stderr, "estimate", {}

    def note(self) -> dict[str, Any]:
        return {"anchors": self.cfg.anchors}


def _restrict(items: CandidateItems, anchors: dict[str, list[int]]) -> CandidateItems:
    """A candidate's items limited to the anchors (what it had after round 0)."""
    from evomm.item_store import TaskItems

    out: CandidateItems = {}
    for task, ti in items.items():
        keep = set(anchors.get(task, []))
        out[task] = TaskItems(ti.n, {m: {i: v for i, v in per.items() if i in keep} for m, per in ti.values.items()})
    return out


def estimation_error(records: Sequence[CandidateRecord]) -> dict[str, float]:
    """Mean absolute error of the IRT estimates of fully scored candidates, per objective."""
    errs: dict[str, list[float]] = {}
    for r in records:
        for name, v in (r.extra.get("irt_estimate") or {}).items():
            errs.setdefault(name, []).append(abs(v - r.objectives[name]))
    return {k: float(np.mean(v)) if v else math.nan for k, v in errs.items()}
