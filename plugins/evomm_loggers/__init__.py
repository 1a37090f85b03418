"""Loggers built on the lifecycle hooks: CSV files in the run directory.

* ``candidates.csv``: one row per evaluated candidate (id, stage, generation, evaluation, each
  objective, merge/evaluate seconds), written as ``evomm_candidate_evaluated`` fires.
* ``generations.csv``: one row per generation (stage, generation, front size, best value of
  each objective on the front), from ``evomm_generation_end``.
* ``run_end.txt``: why the run stopped, from ``evomm_run_end``.

Disable with ``EVOMM_DISABLE_PLUGINS=evomm_loggers``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from evomm import hookimpl


def _append(path: Path, header: list[str], row: list[Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(header)
        w.writerow(row)


@hookimpl
def evomm_candidate_evaluated(run: Any, record: Any) -> None:
    names = list(run.objectives)
    _append(
        Path(run.run_dir) / "candidates.csv",
        ["id", "stage", "generation", "evaluation", *names, "merge_s", "evaluate_s"],
        [record.id, record.stage, record.generation, record.evaluation,
         *[record.objectives.get(n) for n in names],
         round(record.timings.get("merge", 0.0), 4),
         round(record.timings.get("evaluate", record.timings.get("evaluate_subset", 0.0)), 4)],
    )


@hookimpl
def evomm_generation_end(run: Any, generation: int, front: list[Any]) -> None:
    names = list(run.objectives)
    best = []
    for n, d in zip(names, run.directions):
        vals = [r.objectives[n] for r in front]
        best.append((max if d == "maximize" else min)(vals) if vals else None)
    stage = front[0].stage if front else ""
    _append(Path(run.run_dir) / "generations.csv", ["stage", "generation", "front_size", *names],
            [stage, generation, len(front), *best])


@hookimpl
def evomm_run_end(run: Any, front: list[Any], reason: str) -> None:
    (Path(run.run_dir) / "run_end.txt").write_text(f"{reason}\nfront: {' '.join(r.id for r in front)}\n")
