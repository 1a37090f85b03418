"""Records passed to lifecycle hooks (and stored in a run's ``archive.jsonl``)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """

    id: str
    generation: int
    genome: list[float]
    plan_hash: str
    metrics: dict[str, dict[str, float]]
    objectives: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
