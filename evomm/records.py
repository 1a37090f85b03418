"""Records passed to lifecycle hooks (and stored in a run's ``archive.jsonl``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class RunInfo:
    """The run a lifecycle hook is called for.

    Attributes:
        run_dir: the run directory (archive, checkpoints, plots, report).
        objectives: objective names, in order.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        seed: the run's seed.
    """

    run_dir: Path
    objectives: list[str]
    directions: list[str]
    seed: int = 0


@dataclass
class CandidateRecord:
    """One evaluated candidate, as appended to ``archive.jsonl``.

    Attributes:
        id: candidate id, unique within the run (``c000123``; parents are ``parent:<name>``).
        generation: generation that asked for it (-1 for parents).
        genome: point in [0, 1]^d (empty for parents).
        plan_hash: :meth:`evomm.plan.MergePlan.digest` of its merge plan.
        metrics: ``{task: {metric: value}}``.
        objectives: objective name -> value, in the user's direction (higher is better
            when maximised).
        timings: seconds per phase (``merge``, ``evaluate``...).
        extra: anything else (which subset cheap-first evaluation used, ...).
        stage: the search stage that produced it (``ps``, ``dfs``...).
        genes: gene name -> native value (the readable form of ``genome``).
        evaluation: ``"full"`` (every example of every task), ``"subset"`` (cheap-first
            only) or ``"failed"`` (its merged weights held NaN/Inf: no metrics, the worst
            objective values, the reason in ``extra["failed"]``); only ``"full"`` records can be
            on the front. Racing's stopped candidates are ``"subset"`` too; ``"estimate"`` is
            an item-response estimate (strategy ``irt``).
        items_evaluated: items scored for it, summed over tasks (0 in archives before it existed).
        stderr: objective -> standard error of a value computed from part of the items (empty
            when every value is exact).
    """

    id: str
    generation: int
    genome: list[float]
    plan_hash: str
    metrics: dict[str, dict[str, float]]
    objectives: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    stage: str = ""
    genes: dict[str, float] = field(default_factory=dict)
    evaluation: str = "full"
    items_evaluated: int = 0
    stderr: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of ``archive.jsonl``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateRecord:
        """Inverse of :meth:`to_json`; unknown keys go to ``extra`` (newer archives load)."""
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        rec.extra.update({k: v for k, v in data.items() if k not in known})
        return rec

    @property
    def is_parent(self) -> bool:
        return self.id.startswith("parent:")
