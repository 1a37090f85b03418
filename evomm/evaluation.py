"""Scoring a model handle on several tasks, and suites: weighted groups of tasks as one objective.

A suite is written in a recipe as ``japanese_skill = mean(ja_mc, ja_vqa)``: a name, a reducer
(``mean`` — weighted — ``sum`` or ``min``) and members ``task[.metric][*weight]`` (or
``weight*task``). A member without ``.metric`` uses the task's primary metric.

Example:
    >>> suite = parse_suite("japanese_skill = mean(ja_mc*2, ja_vqa.rougeL)")
    >>> suite.task_names()
    ['ja_mc', 'ja_vqa']
    >>> suite.combine({"ja_mc": {"accuracy": 0.6}, "ja_vqa": {"rougeL": 0.3}}, {"ja_mc": "accuracy"})
    0.5
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evomm.errors import ConfigError, TaskError
from evomm.handle import ModelHandle
from evomm.registry import Registry
from evomm.tasks import Task, TaskResult

#: Reducers a suite may use.
REDUCERS = ("mean", "sum", "min")
_NAME = r"[A-Za-z_][\w\-]*"
_SUITE = re.compile(rf"^\s*(?:(?P<name>{_NAME})\s*=\s*)?(?P<fn>\w+)\s*\((?P<body>.*)\)\s*$", re.S)
_MEMBER = re.compile(
    rf"^(?:(?P<w1>[0-9.eE+-]+)\s*\*\s*)?(?P<task>{_NAME})(?:\.(?P<metric>{_NAME}))?(?:\s*\*\s*(?P<w2>[0-9.eE+-]+))?$"
)


@dataclass(frozen=True)
class SuiteMember:
    """One task in a suite: its name (a key of the tasks mapping), metric and weight."""

    task: str
    weight: float = 1.0
    metric: str | None = None


@dataclass(frozen=True)
class Suite:
    """A weighted group of tasks reduced to one number (an objective).

    Attributes:
        name: objective name (``japanese_skill``).
        members: the tasks with weights and optional metrics.
        reduce: ``mean`` (weighted mean: sum(w*s)/sum(w)), ``sum`` (sum(w*s)) or ``min``
            (min over members of w*s).
    """

    name: str
    members: tuple[SuiteMember, ...]
    reduce: str = "mean"

    def __post_init__(self) -> None:
        if self.reduce not in REDUCERS:
            raise ConfigError(f"suite {self.name!r}: reducer {self.reduce!r} is unknown; use one of {REDUCERS}")
        if not self.members:
            raise ConfigError(f"suite {self.name!r} has no tasks; write e.g. mean(ja_mc, ja_vqa)")
        if self.reduce == "mean" and sum(m.weight for m in self.members) <= 0:
            raise ConfigError(f"suite {self.name!r}: weights sum to <= 0; give positive weights")

    @classmethod
    def from_weights(cls, name: str, weights: Mapping[str, float], reduce: str = "mean") -> Suite:
        """A suite from ``{"task" or "task.metric": weight}`` (the recipe's mapping form).

        Example:
            >>> Suite.from_weights("ja", {"ja_mc": 1, "ja_vqa.rougeL": 2}).members[1]
            SuiteMember(task='ja_vqa', weight=2.0, metric='rougeL')
        """
        members = []
        for key, weight in weights.items():
            task, _, metric = str(key).partition(".")
            try:
                members.append(SuiteMember(task, float(weight), metric or None))
            except (TypeError, ValueError):
                raise ConfigError(f"suite {name!r}: weight {weight!r} of {key!r} is not a number") from None
        return cls(name, tuple(members), reduce)

    def task_names(self) -> list[str]:
        """Member task names, in order, without duplicates."""
        return list(dict.fromkeys(m.task for m in self.members))

    def combine(self, metrics: Mapping[str, Mapping[str, float]], primary: Mapping[str, str]) -> float:
        """Reduce per-task metrics to the suite's value.

        Args:
            metrics: ``{task: {metric: value}}`` (e.g. ``{name: result.metrics}``).
            primary: ``{task: metric}`` used for members without an explicit metric.

        Raises:
            TaskError: a member's task or metric is missing from ``metrics``.
        """
        values = []
        for m in self.members:
            metric = m.metric or primary.get(m.task)
            try:
                values.append((m.weight, float(metrics[m.task][metric])))  # type: ignore[index]
            except KeyError:
                raise TaskError(
                    f"suite {self.name!r}: no value for task {m.task!r} metric {metric!r}; "
                    f"have {({k: sorted(v) for k, v in metrics.items()})}"
                ) from None
        if self.reduce == "sum":
            return sum(w * v for w, v in values)
        if self.reduce == "min":
            return min(w * v for w, v in values)
        return sum(w * v for w, v in values) / sum(w for w, _ in values)


def parse_suite(text: str, *, name: str | None = None) -> Suite:
    """Parse ``"NAME = REDUCER(member, ...)"`` (``NAME =`` optional when ``name`` is given).

    Args:
        text: e.g. ``"japanese_skill = mean(ja_mc, ja_vqa)"``, ``"mean(ja_mc*2, ja_vqa.rougeL)"``,
            ``"min(0.5*ja_math, ja_mc)"``.
        name: the suite's name when ``text`` has none (a recipe's objective key).

    Returns:
        The :class:`Suite`.

    Raises:
        ConfigError: malformed text, unknown reducer, or no name.

    Example:
        >>> parse_suite("s = mean(a, b.f1*3)").members[1]
        SuiteMember(task='b', weight=3.0, metric='f1')
    """
    m = _SUITE.match(text)
    if not m:
        raise ConfigError(
            f"suite {text!r} is malformed; write NAME = mean(task1, task2.metric, task3*2) "
            f"(reducers: {', '.join(REDUCERS)})"
        )
    suite_name = m["name"] or name
    if not suite_name:
        raise ConfigError(f"suite {text!r} has no name; write NAME = {text.strip()}")
    members = []
    for raw in (p.strip() for p in m["body"].split(",")):
        mm = _MEMBER.match(raw)
        if not mm or (mm["w1"] and mm["w2"]):
            raise ConfigError(
                f"suite {suite_name!r}: member {raw!r} is malformed; write task, task.metric, task*2 or 2*task"
            )
        weight_text = mm["w1"] or mm["w2"] or "1"
        try:
            weight = float(weight_text)
        except ValueError:
            raise ConfigError(f"suite {suite_name!r}: weight {weight_text!r} of {raw!r} is not a number") from None
        members.append(SuiteMember(mm["task"], weight, mm["metric"]))
    return Suite(suite_name, tuple(members), m["fn"])


def parse_suites(spec: Mapping[str, Any] | Sequence[str]) -> dict[str, Suite]:
    """Parse several suites: a list of ``"NAME = ..."`` strings, or a mapping from name to
    ``"mean(...)"``, ``{task: weight, ...}`` (weighted mean) or
    ``{"tasks": {task: weight, ...}, "reduce": "mean"}``.

    Example:
        >>> sorted(parse_suites({"ja": "mean(ja_mc, ja_vqa)", "m": {"tasks": {"ja_math": 1}}}))
        ['ja', 'm']
    """
    items: list[Suite] = []
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if isinstance(value, str):
                items.append(parse_suite(value, name=key))
            elif isinstance(value, Mapping) and isinstance(value.get("tasks"), Mapping):
                items.append(Suite.from_weights(key, value["tasks"], value.get("reduce", "mean")))
            elif isinstance(value, Mapping) and value:
                items.append(Suite.from_weights(key, value))
            else:
                raise ConfigError(
                    f"suite {key!r}: {value!r} is neither 'mean(a, b)' nor {{a: 1, b: 1}} nor {{tasks: {{a: 1}}, reduce: min}}"
                )
    else:
        items = [parse_suite(s) for s in spec]
    out: dict[str, Suite] = {}
    for s in items:
        if s.name in out:
            raise ConfigError(f"suite {s.name!r} is defined twice; give each suite its own name")
        out[s.name] = s
    return out


@dataclass
class SuiteResult:
    """A suite's value and the task results it came from."""

    suite: str
    value: float
    results: dict[str, TaskResult] = field(default_factory=dict)


def make_task(registry: Registry[Any], name: str, **kwargs: Any) -> Task:
    """Instantiate the registered task ``name`` (``kwargs``: data, split, limit, seed, options).

    Example:
        >>> task = make_task(get_plugins().tasks, "ja_math", data="mgsm_ja.jsonl", limit=50)  # doctest: +SKIP
    """
    cls = registry.get(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"task {name!r}: bad arguments {sorted(kwargs)}: {exc}") from exc


def check_capabilities(task: Task, handle: ModelHandle) -> None:
    """Raise :class:`TaskError` when ``handle`` lacks a capability ``task.requires``."""
    missing = set(getattr(task, "requires", ())) - set(getattr(handle, "capabilities", ()))
    if missing:
        raise TaskError(
            f"task {task.name!r} needs {sorted(missing)} but the model handle "
            f"({type(handle).__name__}) offers {sorted(getattr(handle, 'capabilities', ()))}; "
            "use a model of the right kind (e.g. a VLM for image tasks, CLIP for classification)"
        )


def evaluate_tasks(
    handle: ModelHandle,
    tasks: Mapping[str, Task],
    *,
    subsets: Mapping[str, Sequence[int] | None] | None = None,
) -> dict[str, TaskResult]:
    """Score ``handle`` on every task; ``subsets`` maps task key -> example indices (cheap-first).

    Returns:
        ``{key: TaskResult}`` with ``seconds`` set to each task's wall time.

    Example:
        >>> evaluate_tasks(handle, {"ja_math": task})["ja_math"].metrics   # doctest: +SKIP
        {'accuracy': 0.25, 'japanese': 1.0}
    """
    out: dict[str, TaskResult] = {}
    for key, task in tasks.items():
        check_capabilities(task, handle)
        start = time.perf_counter()
        result = task.evaluate(handle, (subsets or {}).get(key))
        result.seconds = time.perf_counter() - start
        out[key] = result
    return out


def evaluate_suite(
    handle: ModelHandle,
    suite: Suite,
    tasks: Mapping[str, Task],
    *,
    subsets: Mapping[str, Sequence[int] | None] | None = None,
    cache: dict[str, TaskResult] | None = None,
) -> SuiteResult:
    """Score ``handle`` on the suite's tasks and reduce them to one value.

    Args:
        handle: the model.
        suite: the suite.
        tasks: task instances by the names the suite uses.
        subsets: optional example indices per task.
        cache: results already computed for this handle (shared by several suites over the same
            tasks); new results are added to it.

    Raises:
        TaskError: a member names a task that is not in ``tasks``.
    """
    missing = [t for t in suite.task_names() if t not in tasks]
    if missing:
        raise TaskError(f"suite {suite.name!r} uses tasks {missing} that are not configured; have {sorted(tasks)}")
    cache = {} if cache is None else cache
    todo = {t: tasks[t] for t in suite.task_names() if t not in cache}
    cache.update(evaluate_tasks(handle, todo, subsets=subsets))
    results = {t: cache[t] for t in suite.task_names()}
    primary = {t: tasks[t].primary_metric for t in results}
    value = suite.combine({t: r.metrics for t, r in results.items()}, primary)
    return SuiteResult(suite.name, value, results)
