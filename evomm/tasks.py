"""The fitness-task interface. Tasks themselves are plugins (``tasks/``).

A task declares its name, modality and metrics, loads its examples with ``datasets`` (a local
file or directory, or a hub dataset for users who are online), queries a
:class:`~evomm.handle.ModelHandle` and scores the answers. Tasks never touch weights or
architectures. ``limit``, ``seed`` and ``subset`` let the evolution score cheaply first.

Example (a one-file plugin)::

    from evomm import hookimpl
    from evomm.tasks import MetricSpec, Task, TaskResult

    class Echo(Task):
        name = "echo"
        description = "repeat a word"
        modality = "text"
        metrics = (MetricSpec("accuracy", higher_is_better=True),)

        def load(self):
            import datasets
            return datasets.Dataset.from_list([{"prompt": "Say hi: ", "answer": "hi"}])

        def score(self, handle, examples):
            outs = handle.generate([e["prompt"] for e in examples], max_new_tokens=4)
            return TaskResult.from_items({"accuracy": [o.strip() == e["answer"] for o, e in zip(outs, examples)]})

    @hookimpl
    def evomm_register_tasks(registry):
        registry.add(Echo)
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from evomm.errors import TaskError

if TYPE_CHECKING:
    import datasets

    from evomm.handle import ModelHandle


@dataclass(frozen=True)
class MetricSpec:
    """A metric a task reports."""

    name: str
    higher_is_better: bool = True
    description: str = ""


@dataclass
class TaskResult:
    """Scores of one model on one task, per item and aggregated.

    Attributes:
        metrics: metric name -> value (the aggregate the objectives use).
        n: number of examples scored.
        details: optional per-example records (predictions, references, scores).
        seconds: wall time of the evaluation (set by :func:`evomm.evaluation.evaluate_tasks`).
        items: metric name -> one value per scored example, in scoring order; the metric is their
            mean. A metric missing here has no per-item values (a corpus-level metric such as
            BLEU): the task says so by leaving it out.
        item_ids: the index of each scored example in :meth:`Task.examples` (after ``limit`` and
            ``seed``), set by :meth:`Task.evaluate`.
        model_seconds: seconds spent inside the model handle, per method (``generate``,
            ``loglikelihood``, ``classify``), set by :meth:`Task.evaluate`; the rest of
            ``seconds`` is the task's own work (prompts, scoring).

    Example:
        >>> r = TaskResult.from_items({"accuracy": [1.0, 0.0, 1.0, 1.0]})
        >>> r.metrics, r.n
        ({'accuracy': 0.75}, 4)
    """

    metrics: dict[str, float]
    n: int
    details: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    items: dict[str, list[float]] = field(default_factory=dict)
    item_ids: list[int] = field(default_factory=list)
    model_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_items(
        cls,
        items: Mapping[str, Sequence[float]],
        details: Sequence[dict[str, Any]] = (),
        **aggregates: float,
    ) -> TaskResult:
        """A result whose metrics are the means of per-item values (``aggregates``: metrics that
        are not a mean over items, reported without per-item values).

        Raises:
            TaskError: no items, or metrics with different numbers of items.
        """
        sizes = {len(v) for v in items.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise TaskError(f"per-item values need the same positive count for every metric; got {sorted(sizes)}")
        per = {k: [float(x) for x in v] for k, v in items.items()}
        metrics = {k: sum(v) / len(v) for k, v in per.items()} | {k: float(v) for k, v in aggregates.items()}
        return cls(metrics, n=sizes.pop(), details=list(details), items=per)

    def item_values(self, metric: str) -> dict[int, float]:
        """``{item id: value}`` of ``metric`` for the items scored.

        Raises:
            TaskError: the task gives no per-item values for ``metric``.
        """
        if metric not in self.items:
            raise TaskError(
                f"metric {metric!r} has no per-item values (the task reports {sorted(self.items) or 'none'} "
                "per item); it is an aggregate only"
            )
        return dict(zip(self.item_ids, self.items[metric]))


class Task(ABC):
    """Base class of fitness tasks.

    Class attributes:
        name: registry name used in recipes.
        description: one line for ``evomm tasks``.
        modality: ``"text"``, ``"image+text"`` or ``"image"`` (classification).
        metrics: the metrics :meth:`score` reports; the first is the default objective.
        default_data: where :meth:`load` reads when the recipe gives no ``data`` (a hub id or
            a description of the default local location).
        default_config: the hub dataset configuration used with ``default_data`` (``"ja"``).
        default_split: the split scored when the recipe gives none (``"test"``).
        requires: handle capabilities the task uses (``{"generate"}``, ``{"classify"}``...);
            :func:`evomm.evaluation.evaluate_tasks` checks them before any example is scored.

    Args:
        data: a local file/directory or a hub dataset id; ``None`` uses ``default_data``.
        split: which split to score (default: ``default_split``).
        limit: score at most this many examples (after shuffling with ``seed`` when set).
        seed: seed for the subset choice.
        options: task-specific options from the recipe (prompt template, max_new_tokens...);
            ``config`` (hub configuration) and ``format`` (force a ``datasets`` builder for local
            data) are read by the default :meth:`load`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    modality: ClassVar[str] = "text"
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    default_data: ClassVar[str | None] = None
    default_config: ClassVar[str | None] = None
    default_split: ClassVar[str] = "test"
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        data: str | None = None,
        *,
        split: str | None = None,
        limit: int | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise TaskError(f"task {self.name!r}: limit={limit!r}; use a positive integer or leave it unset")
        self.data = data if data is not None else self.default_data
        self.split = split if split is not None else self.default_split
        self.limit = limit
        self.seed = seed
        self.options = options
        self._examples: datasets.Dataset | None = None

    @property
    def primary_metric(self) -> str:
        if not self.metrics:
            raise TaskError(f"task {self.name!r} declares no metrics")
        return self.metrics[0].name

    @property
    def config(self) -> str | None:
        """The hub dataset configuration: the ``config`` option, else ``default_config`` when
        ``data`` is the default source."""
        if "config" in self.options:
            return self.options["config"]
        return self.default_config if self.data == self.default_data else None

    def describe_data(self) -> str:
        """Where the examples come from, for ``evomm tasks`` (``hub juletxara/mgsm (ja)``)."""
        from evomm.data import describe_source

        return describe_source(self.data, self.config) + f" [{self.split}]"

    def splits(self) -> list[str] | None:
        """The splits this task's data offers, or ``None`` when that cannot be told without
        loading (a single local file, a hub dataset while offline).

        The default asks ``datasets`` how it would split ``self.data``: a local directory's
        file names (``train.jsonl``, ``dev.jsonl`` -> ``validation``...), or a hub dataset's
        split names. A task with its own data layout overrides it (the toy tasks list their
        ``<split>.jsonl`` files). ``evomm rescore`` uses it to refuse a split the task lacks.
        """
        return _split_names(self.data, self.config)

    def load(self) -> datasets.Dataset:
        """Load all examples of ``self.split`` (before ``limit``).

        The default reads ``self.data`` with :func:`evomm.data.load_examples` (a local
        file/directory or a hub id, with ``config``); override it to build or reshape examples.
        """
        from evomm.data import load_examples

        return load_examples(self.data, split=self.split, config=self.config, format=self.options.get("format"))

    @abstractmethod
    def score(self, handle: ModelHandle, examples: Sequence[dict[str, Any]]) -> TaskResult:
        """Query ``handle`` on ``examples`` and return the metrics: build the result with
        :meth:`TaskResult.from_items` (one value per example for each metric that is a mean over
        examples) so that per-item results reach the search; a metric that is not a mean goes in
        ``metrics`` only."""

    def _order(self) -> list[int]:
        """Indices into the loaded data of the examples scored, ``seed`` and ``limit`` applied."""
        if self._examples is None:
            self._examples = self.load()
        rows = list(range(len(self._examples)))
        if self.seed is not None:
            random.Random(self.seed).shuffle(rows)
        return rows if self.limit is None else rows[: self.limit]

    def size(self) -> int:
        """How many examples the task scores in full (``limit`` applied), without converting the
        rows from Arrow (counting through :meth:`examples` converted every row again: 6% of a
        demo candidate's evaluation in cProfile)."""
        return len(self._order())

    def examples(self, subset: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The examples to score: ``limit``/``seed`` applied, then ``subset`` (indices into them)."""
        rows = self._order()
        if subset is not None:
            bad = [i for i in subset if not -len(rows) <= i < len(rows)]
            if bad:
                raise TaskError(
                    f"task {self.name!r}: subset indices {bad[:5]} are out of range for "
                    f"{len(rows)} examples (after limit={self.limit}); use indices below {len(rows)}"
                )
            rows = [rows[i] for i in subset]
        return [self._examples[i] for i in rows]

    def evaluate(self, handle: ModelHandle, subset: Sequence[int] | None = None) -> TaskResult:
        """Score ``handle`` on this task (optionally only on ``subset``); the result's
        ``item_ids`` name the examples scored.

        Raises:
            TaskError: no examples, or per-item values that do not match the examples scored.
        """
        examples = self.examples(subset)
        if not examples:
            raise TaskError(f"task {self.name!r} has no examples to score (data={self.data!r})")
        from evomm.evaluation import TimedHandle

        timed = TimedHandle(handle)
        result = self.score(timed, examples)  # type: ignore[arg-type] - forwards the handle's protocol
        result.model_seconds = dict(timed.seconds)
        bad = {k: len(v) for k, v in result.items.items() if len(v) != len(examples)}
        if bad:
            raise TaskError(
                f"task {self.name!r}: per-item values {bad} for {len(examples)} examples; "
                "score must give one value per example (TaskResult.from_items)"
            )
        n = self.size()
        result.item_ids = [i % n for i in subset] if subset is not None else list(range(n))
        return result


def _split_names(source: str | None, config: str | None) -> list[str] | None:
    """The split names ``datasets`` finds in ``source`` (see :meth:`Task.splits`), or ``None``."""
    if not source:
        return None
    from pathlib import Path

    from evomm.data import looks_like_path
    from evomm.hub import is_offline

    if looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            return None  # one file is whichever split the task asks for
        from datasets.data_files import get_data_patterns
        from datasets.exceptions import DataFilesNotFoundError

        try:
            patterns = get_data_patterns(str(path))
        except (DataFilesNotFoundError, FileNotFoundError):
            return []
        if list(patterns.values()) == [["**"]]:
            return None  # no split in the file names: the directory is one split
        return [str(name) for name in patterns]
    if is_offline("datasets"):
        return None
    import datasets

    try:
        return list(datasets.get_dataset_split_names(source, config))
    except Exception:  # the library's many error types (network, name, config): cannot tell
        return None

