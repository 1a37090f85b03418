"""From a model handle to task results: the one evaluation path of evomm.

:func:`evaluate_tasks` checks that the handle offers every capability the tasks require (before
any example is scored), then scores each task and times it. :class:`evomm.objectives.ObjectiveSet`
turns the results into objective values; the evolution loop, ``evomm export`` and tests all come
through here.

Example:
    >>> results = evaluate_tasks(handle, {"toy_ja_skill": task}, subset=30)   # doctest: +SKIP
    >>> results["toy_ja_skill"].metrics, results["toy_ja_skill"].item_values("strict")  # doctest: +SKIP
    ({'strict': 0.5, 'loose': 0.6}, {0: 1.0, 1: 0.0, ...})
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from evomm.errors import TaskError

if TYPE_CHECKING:
    from evomm.tasks import Task, TaskResult

#: ``{task: {metric: value}}``: the aggregated metrics of several task results.
Metrics = dict[str, dict[str, float]]


#: The :class:`~evomm.handle.ModelHandle` methods that run the model (timed by :class:`TimedHandle`).
MODEL_METHODS = frozenset({"generate", "loglikelihood", "classify"})


class TimedHandle:
    """A model handle that adds up the seconds spent in each model method a task calls; every
    other attribute is the wrapped handle's (what :meth:`evomm.tasks.Task.evaluate` gives
    ``score``, so a result tells model time from the task's own work).

    Example:
        >>> class Echo:
        ...     capabilities = frozenset({"generate"})
        ...     def generate(self, prompts, **kw):
        ...         return list(prompts)
        >>> timed = TimedHandle(Echo())
        >>> timed.generate(["a"]), timed.capabilities, sorted(timed.seconds)
        (['a'], frozenset({'generate'}), ['generate'])
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.handle, name)
        if name not in MODEL_METHODS or not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed


def check_capabilities(tasks: Mapping[str, Task], handle: Any) -> None:
    """Raise :class:`TaskError` when ``handle`` lacks a capability one of ``tasks`` requires.

    Example:
        >>> class Text:
        ...     capabilities = frozenset({"generate"})
        >>> class Clip:
        ...     name, requires = "clip", frozenset({"classify"})
        >>> check_capabilities({"clip": Clip()}, Text())
        Traceback (most recent call last):
        ...
        evomm.errors.TaskError: task 'clip' needs ['classify'] but the model handle (Text) offers ['generate']; use a model of the right kind (e.g. a VLM for image tasks, CLIP for classification)
    """
    offered = frozenset(getattr(handle, "capabilities", ()))
    for key, task in tasks.items():
        missing = set(task.requires) - offered
        if missing:
            raise TaskError(
                f"task {getattr(task, 'name', key)!r} needs {sorted(missing)} but the model handle "
                f"({type(handle).__name__}) offers {sorted(offered)}; "
                "use a model of the right kind (e.g. a VLM for image tasks, CLIP for classification)"
            )


def evaluate_tasks(handle: Any, tasks: Mapping[str, Task], *, subset: int | None = None) -> dict[str, TaskResult]:
    """Score ``handle`` on every task, after checking every task's capabilities.

    Args:
        handle: the model (a :class:`~evomm.handle.ModelHandle`).
        tasks: task instances by key.
        subset: score only the first ``subset`` examples of each task (cheap-first).

    Returns:
        ``{key: TaskResult}`` with ``seconds`` (wall time) and ``item_ids`` set.

    Raises:
        TaskError: a task requires a capability the handle lacks (nothing is scored).
    """
    check_capabilities(tasks, handle)
    out: dict[str, TaskResult] = {}
    for key, task in tasks.items():
        start = time.perf_counter()
        idx = None if subset is None else list(range(min(subset, len(task.examples()))))
        result = task.evaluate(handle, idx)
        result.seconds = time.perf_counter() - start
        out[key] = result
    return out


def metrics_of(results: Mapping[str, TaskResult]) -> Metrics:
    """``{task: {metric: value}}`` of several results (what archives keep as ``metrics``)."""
    return {k: {m: float(v) for m, v in r.metrics.items()} for k, r in results.items()}
