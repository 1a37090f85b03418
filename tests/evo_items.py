"""Synthetic tasks with known per-item outcomes, for racing and executor tests (issue 19).

The search space is :class:`evo_synthetic.SynthSpace` (a candidate's model is its gene vector).
Task ``items_a`` (``items_b``) has :data:`N_ITEMS` items; item ``i`` of a candidate ``x`` is 1
when a uniform number drawn from ``(task, x, i)`` is below ``p(x) = 1 - 2 * mean((x - t)^2)``
with ``t = 0.2`` (``0.8``): two noisy objectives in trade-off, whose full-set values
:func:`true_values` computes without evomm.

Environment variables (read in whichever process scores):

* ``EVO_ITEM_LOG``: file that gets one line ``task x item`` per item scored (no item twice).
* ``EVO_KILL_WORKER``: a marker path; the first *worker* process to score an item creates it and
  kills itself with SIGKILL (a worker lost mid-candidate).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import types
import zlib
from pathlib import Path
from typing import Any

import evo_synthetic as S
import numpy as np

from evomm import hookimpl
from evomm.tasks import MetricSpec, Task, TaskResult

N_ITEMS = 80


def outcome(task: str, x: np.ndarray, i: int, target: float, salt: str = "") -> float:
    """The known result of item ``i`` of ``task`` for the candidate ``x`` (0 or 1); ``salt``
    (the task option) draws another item set (a held-out split)."""
    p = 1.0 - 2.0 * float(np.mean((np.asarray(x) - target) ** 2))
    seed = zlib.crc32(f"{task}{salt}|{' '.join(f'{v:.4f}' for v in x)}|{i}".encode())
    return float(np.random.default_rng(seed).random() < p)


class _Items(Task):
    target = 0.0
    metrics = (MetricSpec("acc"), MetricSpec("corpus", description="acc squared: not a mean over items"))

    def load(self) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(int(self.options.get("n", N_ITEMS)))]

    def score(self, handle: Any, examples: Any) -> TaskResult:
        ids = [e["i"] for e in examples]
        if os.environ.get("EVO_KILL_WORKER") and multiprocessing.parent_process() is not None:
            marker = Path(os.environ["EVO_KILL_WORKER"])
            try:
                marker.touch(exist_ok=False)
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:
                pass
        if os.environ.get("EVO_ITEM_LOG"):
            x = " ".join(f"{v:.4f}" for v in handle.x)
            with open(os.environ["EVO_ITEM_LOG"], "a", encoding="utf-8") as fh:
                fh.write("".join(f"{self.name} {x} {i}\n" for i in ids))
        salt = str(self.options.get("salt", ""))
        acc = [outcome(self.name, handle.x, i, self.target, salt) for i in ids]
        return TaskResult.from_items({"acc": acc}, corpus=(sum(acc) / len(acc)) ** 2)


class ItemsA(_Items):
    name = "items_a"
    target = 0.2


class ItemsB(_Items):
    name = "items_b"
    target = 0.8


def true_values(x: Any) -> dict[str, float]:
    """The full-set objective values of genome ``x`` (as the space rounds it), without evomm."""
    xr = np.array([round(float(v), 4) for v in x])
    return {o: sum(outcome(cls.name, xr, i, cls.target) for i in range(N_ITEMS)) / N_ITEMS
            for o, cls in (("a", ItemsA), ("b", ItemsB))}


@hookimpl
def evomm_register_tasks(registry: Any) -> None:
    registry.add(ItemsA)
    registry.add(ItemsB)


PLUGIN = types.ModuleType("evo_items_plugin")
PLUGIN.evomm_register_tasks = evomm_register_tasks  # type: ignore[attr-defined]
PLUGIN.evomm_register_search_spaces = S.evomm_register_search_spaces  # type: ignore[attr-defined]


def recipe_dict(strategy: str = "racing", generations: int = 4, pop: int = 10, seed: int = 0,
                **fitness: Any) -> dict[str, Any]:
    d = S.recipe_dict(generations=generations, pop=pop, seed=seed)
    d["objectives"] = [{"name": "a", "task": "items_a"}, {"name": "b", "task": "items_b"}]
    d["fitness"] = {"strategy": strategy, **fitness}
    return d


def plugins() -> Any:
    from evomm.plugins import load_plugins

    return load_plugins(extra=[PLUGIN], autoload=False)
