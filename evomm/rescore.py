"""Held-out re-scoring: the front (and the parents) of a finished run, scored on another split.

The search selects on the fitness split of each task (the recipe's ``tasks.<name>.split``);
over-fitting to it shows only on data the search never saw. :func:`rescore_run` decodes the
chosen candidates again (their digests must equal the archived plan hashes, as for
``evomm export``), scores them and the parents through the one evaluation API
(:func:`evomm.evaluation.evaluate_tasks`) on ``split`` with every other task option kept
(data, limit, seed, options), and writes ``RUN_DIR/rescore-<split>.json`` and
``rescore-<split>.csv`` atomically. It holds the run lock meanwhile (a run being written is
refused) and writes no other file; ``evomm front RUN_DIR`` then shows the re-scores in
``report.html`` beside the fitness values, and ``evomm export`` puts them in the model card.

Example:
    >>> rescore_run("runs/demo", "test")                       # doctest: +SKIP
    (PosixPath('runs/demo/rescore-test.json'), PosixPath('runs/demo/rescore-test.csv'))
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evomm.archive import Archive
from evomm.errors import ConfigError, SearchError, TaskError
from evomm.evaluation import evaluate_tasks, metrics_of
from evomm.evolve_recipe import TaskOptions
from evomm.front import ObjectiveInfo, pareto_front
from evomm.objectives import ObjectiveSet
from evomm.plugins import Plugins, get_plugins
from evomm.records import CandidateRecord
from evomm.run_lock import RunLock
from evomm.rundir import ARCHIVE_NAME, objective_infos, read_run, rescore_paths, write_json, write_text

if TYPE_CHECKING:
    from evomm.evolve_recipe import EvolveRecipe
    from evomm.tasks import Task

#: ``--candidates`` keywords: the last stage's front, or every fully scored child of it.
CANDIDATE_SETS = ("front", "all")


def held_out_objectives(recipe: EvolveRecipe, split: str, tasks: Sequence[str] | None,
                        plugins: Plugins) -> tuple[ObjectiveSet, dict[str, str]]:
    """The recipe's objectives with ``tasks`` (default: every task they use) scoring ``split``;
    every other task option (data, limit, seed, task options) is the recipe's.

    Returns:
        ``(objective set, {task re-scored: its fitness split})``.

    Raises:
        ConfigError: ``tasks`` names a task the objectives do not use.
        TaskError: a task lacks ``split`` (the message names the task, the split and its splits).
    """
    used = recipe.objective_tasks()
    chosen = list(dict.fromkeys(tasks)) if tasks else list(used)
    for name in chosen:
        if name not in used:
            close = difflib.get_close_matches(name, used, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"--tasks {name}: the run's objectives use no task {name!r}; {hint}"
                              f"they use {', '.join(used)}")
    options = dict(recipe.tasks)
    for name in chosen:
        options[name] = options.get(name, TaskOptions()).model_copy(update={"split": split})
    objs = ObjectiveSet(recipe.objectives, options, plugins)
    fitness = ObjectiveSet(recipe.objectives, recipe.tasks, plugins)
    for name in chosen:
        _check_split(objs.tasks[name], fitness.tasks[name])
    return objs, {name: fitness.tasks[name].split for name in chosen}


def _fingerprint(task: Task) -> str:
    """A digest of the examples a task scores (to tell two splits' data apart)."""
    rows = json.dumps(task.examples(), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(rows.encode()).hexdigest()


def _check_split(task: Task, fitness: Task) -> None:
    """Refuse a split the task's data lacks, or one that silently gives the fitness examples.

    Raises:
        TaskError: the split is missing (naming the splits the task has), or its examples are
            the fitness split's (data that holds one split only).
    """
    have = task.splits()
    if have is not None and task.split not in have:
        raise TaskError(f"task {task.name!r} has no split {task.split!r} (data={task.data!r}); its splits: "
                        f"{', '.join(sorted(have)) or 'none'}; choose one of them with --split")
    if task.split != fitness.split and _fingerprint(task) == _fingerprint(fitness):
        raise TaskError(f"task {task.name!r}: split {task.split!r} gives the same examples as the fitness split "
                        f"{fitness.split!r} (data={task.data!r} holds one split); point the task's data at "
                        "a directory with held-out split files (test.jsonl, ...)")


def choose_records(archive: Archive, infos: Sequence[ObjectiveInfo], which: str) -> list[tuple[str, CandidateRecord]]:
    """``(role, record)`` to re-score: the parents, then ``which`` children.

    Args:
        archive: the run's archive.
        infos: the run's objectives.
        which: ``front`` (the last stage's Pareto front), ``all`` (every child of the last stage
            scored in full) or comma-separated ids (``c00012,c00040``).

    Raises:
        ConfigError: an unknown id, or a candidate that was not scored in full.
        SearchError: the archive holds nothing yet.
    """
    if not archive.records:
        raise SearchError(f"{archive.path} holds no scored model yet; nothing to re-score")
    if which in CANDIDATE_SETS:
        stage = archive.records[-1].stage
        children = archive.stage_records(stage)
        picked = pareto_front(children, infos) if which == "front" else \
            [r for r in children if r.evaluation == "full"]
        role = "front" if which == "front" else "candidate"
        chosen = [(role, r) for r in picked]
    else:
        chosen = [("candidate", _scored(archive, cid.strip())) for cid in which.split(",") if cid.strip()]
        if not chosen:
            raise ConfigError(f"--candidates {which!r}: give front, all or candidate ids (c00012,c00040)")
    stages = list(dict.fromkeys(r.stage for _, r in chosen))
    parents = [("parent", r) for s in stages for r in archive.stage_records(s, parents=True) if r.is_parent]
    ids = {r.id for _, r in parents}
    return parents + [(role, r) for role, r in chosen if r.id not in ids]


def _scored(archive: Archive, cid: str) -> CandidateRecord:
    """The record of ``cid``, which must have been scored in full."""
    rec = archive.by_id(cid)
    if rec.evaluation != "full":
        raise ConfigError(f"--candidates {cid}: the candidate was {rec.evaluation!r} in the run (not scored in "
                          "full); re-score candidates of the front, e.g. --candidates front")
    return rec


def score_records(recipe: EvolveRecipe, meta: dict[str, Any], run_dir: Path, plugins: Plugins,
                  objs: ObjectiveSet, tasks: Sequence[str],
                  chosen: Sequence[tuple[str, CandidateRecord]]) -> list[dict[str, Any]]:
    """Score each chosen record on ``tasks``: one row per record (its fitness and re-scored
    objective values, the re-scored metrics and the seconds taken).

    Raises:
        SearchError: a candidate's plan no longer decodes to its archived digest.
    """
    from evomm.runner import build_space

    stage_names = [s.name for s in recipe.stages]
    rescored = [o for o in objs.objectives if all(t in tasks for t, _, _ in o.terms)]
    subset = {name: objs.tasks[name] for name in tasks}
    rows: list[dict[str, Any]] = []
    for stage in dict.fromkeys(r.stage for _, r in chosen):
        idx = stage_names.index(stage)
        space = build_space(recipe, idx, run_dir, plugins, meta.get("previous", [])[:idx])
        try:
            for role, rec in [(role, r) for role, r in chosen if r.stage == stage]:
                t0 = time.perf_counter()
                handle = space.materialize_reference(rec.id.split(":", 1)[1]) if rec.is_parent \
                    else space.materialize(_decode(space, rec))
                metrics = metrics_of(evaluate_tasks(handle, subset))
                values = objs.values({**rec.metrics, **metrics})
                rows.append({"id": rec.id, "role": role, "stage": rec.stage, "generation": rec.generation,
                             "plan_hash": rec.plan_hash, "metrics": metrics,
                             "fitness": {o.name: rec.objectives[o.name] for o in rescored},
                             "rescored": {o.name: values[o.name] for o in rescored},
                             "seconds": time.perf_counter() - t0})
        finally:
            space.close()
    return rows


def _decode(space: Any, rec: CandidateRecord) -> Any:
    """The candidate of ``rec``, decoded again; its digest must be the archived plan hash."""
    cand = space.decode(np.asarray(rec.genome, dtype=float))
    if cand.digest() != rec.plan_hash:
        raise SearchError(f"candidate {rec.id}: its plan decodes to digest {cand.digest()[:12]} but the archive "
                          f"has {rec.plan_hash[:12]}; the parents or plugins changed since the run")
    return cand


def rescore_table(data: dict[str, Any]) -> str:
    """The CSV form of a re-scoring: one row per model, ``NAME:fitness`` beside ``NAME:SPLIT``."""
    names = [o["name"] for o in data["objectives"]]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "role", "stage", *[f"{n}:{c}" for n in names for c in ("fitness", data["split"])]])
    for row in data["candidates"]:
        w.writerow([row["id"], row["role"], row["stage"],
                    *[row[k][n] for n in names for k in ("fitness", "rescored")]])
    return out.getvalue()


def rescore_run(run_dir: str | Path, split: str, *, tasks: Sequence[str] | None = None, candidates: str = "front",
                plugins: Plugins | None = None) -> tuple[Path, Path]:
    """Score the parents and the chosen candidates of a run on ``split``; write the results.

    Args:
        run_dir: a run directory of ``evomm evolve`` (finished, or stopped).
        split: the split to score (``test``); each task must have it.
        tasks: the tasks to re-score (default: every task the objectives use). An objective
            is re-scored when all its tasks are.
        candidates: ``front``, ``all`` or comma-separated ids (see :func:`choose_records`).
        plugins: registries (default: the loaded plugins).

    Returns:
        The paths of ``rescore-<split>.json`` and ``rescore-<split>.csv``.

    Raises:
        RunLockedError: a process is writing the run (nothing is scored).
        TaskError: a task lacks ``split``.
        ConfigError: bad ``tasks`` or ``candidates``.
        SearchError: not a run directory; a plan that no longer decodes to its digest.
    """
    run_dir = Path(run_dir)
    recipe, meta = read_run(run_dir)
    with RunLock(run_dir):
        plugins = plugins or get_plugins()
        objs, fitness_splits = held_out_objectives(recipe, split, tasks, plugins)
        infos = objective_infos(meta)
        chosen = choose_records(Archive(run_dir / ARCHIVE_NAME), infos, candidates)
        rows = score_records(recipe, meta, run_dir, plugins, objs, list(fitness_splits), chosen)
        done = set(rows[0]["rescored"]) if rows else set()
        data = {"split": split,
                "tasks": {n: {"split": split, "fitness_split": f, "items": objs.task_size(n)}
                          for n, f in fitness_splits.items()},
                "objectives": [o for o in meta["objectives"] if o["name"] in done],
                "candidates": rows}
        json_path, csv_path = rescore_paths(run_dir, split)
        write_json(json_path, data)
        write_text(csv_path, rescore_table(data))
    return json_path, csv_path
