"""Wiring of an evolution run: recipe -> stages -> spaces -> loop -> front, report, hand-over.

The run directory's files and how they are read: :mod:`evomm.rundir`.

Example:
    >>> from evomm.runner import evolve
    >>> result = evolve("configs/demo.yaml", "runs/demo")          # doctest: +SKIP
    >>> result = evolve(None, "runs/demo", resume=True)             # doctest: +SKIP

A start is checked whole before anything is written: the recipe, the output target
(:func:`evomm.outputs.check_output_target`), the tasks and their data (loaded), the parents and
the first stage's genome (its search space is built). A run that still fails before its first
record is archived removes what it made, so the same command can be run again once fixed.
"""

from __future__ import annotations

import difflib
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evomm import __version__
from evomm.archive import Archive
from evomm.errors import ConfigError, OutputError
from evomm.evolve_recipe import EvolveRecipe, load_evolve_recipe
from evomm.executors import Executor, ExecutorContext, Worker, WorkerSpec, stage_space
from evomm.front import ObjectiveInfo, pick
from evomm.interrupt import GracefulStop
from evomm.item_store import ITEMS_NAME, ItemStore
from evomm.objectives import ObjectiveSet
from evomm.outputs import check_output_target, write_marker
from evomm.plugins import Plugins, get_plugins
from evomm.recipe_update import recipe_changes
from evomm.records import CandidateRecord, RunInfo
from evomm.run_lock import LOCK_NAME, RunLock
from evomm.rundir import (
    ARCHIVE_NAME,
    RECIPE_NAME,
    RUN_NAME,
    not_a_run,
    objective_infos,
    read_run,
    write_json,
    write_recipe,
)
from evomm.search import EvolutionLoop, StageResult
from evomm.space import SearchSpace


@dataclass
class RunResult:
    """What :func:`evolve` returns: one :class:`StageResult` per stage run, and the status.

    ``kept`` is ``False`` when the run stopped before its first record was archived and its
    directory was removed again (nothing to resume).
    """

    run_dir: Path
    stages: list[StageResult]
    reason: str
    kept: bool = True

    @property
    def final(self) -> StageResult:
        return self.stages[-1]

    @property
    def note(self) -> str:
        """Why a stage stopped early (the wall-time budget), or ``""``."""
        return "; ".join(s.note for s in self.stages if s.note)


#: The search space of a stage (:func:`evomm.executors.stage_space`; workers build theirs with it).
build_space = stage_space


def make_executor(recipe: EvolveRecipe, stage_index: int, run_dir: Path, plugins: Plugins,
                  previous: list[dict[str, Any]], space: SearchSpace, objs: ObjectiveSet) -> Executor:
    """The executor the recipe's ``executor:`` names, for stage ``stage_index``.

    Raises:
        RegistryError: no executor of that name is registered (did-you-mean in the message).
    """
    kind = plugins.executors.get(recipe.executor.name)
    spec = WorkerSpec(recipe, stage_index, run_dir, list(previous), plugins.source)
    return kind.factory(ExecutorContext(recipe.executor, spec, lambda: Worker(space, objs)))


def _inputs(recipe: EvolveRecipe) -> list[Path]:
    """Local paths a run reads (parents, base model, task data): ``--out`` may not hold them."""
    paths = [m.path for m in [*recipe.parents, *([recipe.base_model] if recipe.base_model else [])]]
    paths += [t.data for t in recipe.tasks.values() if t.data]
    return [Path(p) for p in paths if Path(p).exists()]


def _check_task_names(recipe: EvolveRecipe, plugins: Plugins) -> None:
    """A ``tasks:`` entry must name a known task: a misspelt one would be ignored and the task
    it meant would run on its default data."""
    used = recipe.objective_tasks()
    for name in recipe.tasks:
        if name in used or name in plugins.tasks:
            continue
        close = difflib.get_close_matches(name, [*used, *plugins.tasks.names()], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"tasks.{name}: there is no task {name!r}; {hint}the objectives use "
                          f"{', '.join(map(repr, used))}: correct the name or remove the entry")


def _make_run_dir(run_dir: Path) -> Path | None:
    """Create ``run_dir`` (parents too); the topmost directory created, ``None`` if it existed."""
    missing = [p for p in (run_dir, *run_dir.parents) if not os.path.lexists(p)]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out {run_dir}: {exc}") from exc
    return missing[-1] if missing else None


def _unmake(run_dir: Path, top: Path | None) -> None:
    """Remove what a failed start made: ``top`` (the directories it created), else the contents
    of ``run_dir`` (it was empty, and locked by this process, when the start began)."""
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
        return
    for p in run_dir.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def evolve(
    recipe: str | Path | EvolveRecipe | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    recipe_update: bool = False,
    plugins: Plugins | None = None,
    plugins_dirs: Sequence[str] = (),
    progress: bool = True,
    report: bool = True,
    on_evaluated: Callable[[CandidateRecord], None] | None = None,
    executor: str | None = None,
    workers: int | None = None,
) -> RunResult:
    """Run (or resume) an evolution and write its artefacts.

    Args:
        recipe: path of an evolve recipe, or a parsed one. On resume: ``None`` (the run's own
            ``recipe.yaml``), or with ``recipe_update`` a recipe of the same search whose
            budget may differ (see :mod:`evomm.recipe_update`).
        run_dir: the run directory (must be new or empty unless ``resume``).
        resume: continue the run in ``run_dir`` (its ``recipe.yaml`` and archive).
        recipe_update: on resume, continue with ``recipe``'s budget.
        plugins: registries (default: :func:`evomm.plugins.get_plugins` of ``plugins_dirs``,
            loaded after the run's lock is taken).
        plugins_dirs: one-file plugin directories for the default plugins.
        progress: show progress bars.
        report: write front.csv/json, plots and report.html at the end.
        on_evaluated: called after each evaluation (tests use it to count or to crash).
        executor, workers: override the recipe's ``executor.name`` / ``executor.workers`` for
            this session (``--executor``/``--workers``; not written to ``recipe.yaml``: the
            archive does not depend on them).

    Returns:
        A :class:`RunResult`.

    Raises:
        ConfigError: bad recipe; a recipe on resume without ``recipe_update``, or one that
            describes another search.
        OutputError: ``run_dir`` cannot be a new run directory (a file, under a file, not
            empty, holding an input).
        SearchError: ``resume`` on a directory that is not a run, or whose files are damaged.
        RunLockedError: another process is writing the run.
    """
    run_dir = Path(run_dir)
    where = {k: v for k, v in (("name", executor), ("workers", workers)) if v is not None}
    if resume:
        return _resume(recipe, run_dir, recipe_update, plugins, plugins_dirs, progress, report, on_evaluated, where)
    if recipe is None:
        raise ConfigError("evolve: give a recipe (or resume=True with an existing run directory)")
    if recipe_update:
        raise ConfigError("--recipe-update changes the recipe of a run being resumed: use it with --resume RUN_DIR")
    rec = recipe if isinstance(recipe, EvolveRecipe) else load_evolve_recipe(recipe)
    check_output_target(run_dir, reads=_inputs(rec))
    plugins = plugins or get_plugins(plugins_dirs)
    _check_task_names(rec, plugins)
    objs = ObjectiveSet(rec.objectives, rec.tasks, plugins)  # unknown tasks, metrics, options
    for name in objs.tasks:
        objs.task_size(name)  # loads the data now: a missing file or split fails before the run dir
    space = build_space(rec, 0, run_dir, plugins, [])  # parents, operator, genome
    try:
        top = _make_run_dir(run_dir)
        lock = RunLock(run_dir)
        lock.acquire()
    except BaseException:
        space.close()
        raise
    try:
        if any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            space.close()
            raise OutputError(f"--out {run_dir} was written by another process meanwhile; choose another directory")
        archive = Archive(run_dir / ARCHIVE_NAME, repair=True)
        try:
            write_marker(run_dir, "evolve")
            write_recipe(run_dir, rec)
            result = _run(rec, objs, {}, run_dir, plugins, archive, space, progress, report, on_evaluated, where)
        except BaseException:
            if not len(archive):
                _unmake(run_dir, top)
            raise
        if not len(archive):
            _unmake(run_dir, top)
            result.kept = False
        return result
    finally:
        lock.release()


def _resume(recipe: str | Path | EvolveRecipe | None, run_dir: Path, recipe_update: bool,
            plugins: Plugins | None, plugins_dirs: Sequence[str], progress: bool, report: bool,
            on_evaluated: Callable[[CandidateRecord], None] | None, where: dict[str, Any]) -> RunResult:
    if not (run_dir / RECIPE_NAME).is_file():
        raise not_a_run(run_dir)  # before the lock, which would write into any directory
    if recipe is not None and not recipe_update:
        raise ConfigError(
            f"--resume {run_dir} continues the run's own recipe ({run_dir / RECIPE_NAME}) and a RECIPE was "
            "given too: drop RECIPE to resume as the run was started, or add --recipe-update to continue "
            "with RECIPE's budget (it must describe the same search)"
        )
    if recipe is None and recipe_update:
        raise ConfigError("--recipe-update needs the updated RECIPE: `evomm evolve RECIPE --resume RUN_DIR --recipe-update`")
    with RunLock(run_dir):
        rec, meta = read_run(run_dir, need_meta=False)
        if recipe is not None:
            new = recipe if isinstance(recipe, EvolveRecipe) else load_evolve_recipe(recipe)
            changes = recipe_changes(rec, new, run=str(run_dir))
            print(f"recipe update for {run_dir}: " + ("; ".join(changes) if changes else "no change"),
                  file=sys.stderr)
            if changes:
                write_recipe(run_dir, new)
                rec = new
        plugins = plugins or get_plugins(plugins_dirs)
        objs = ObjectiveSet(rec.objectives, rec.tasks, plugins)
        archive = Archive(run_dir / ARCHIVE_NAME, repair=True)
        return _run(rec, objs, meta, run_dir, plugins, archive, None, progress, report, on_evaluated, where)


def _run(rec: EvolveRecipe, objs: ObjectiveSet, meta: dict[str, Any], run_dir: Path, plugins: Plugins,
         archive: Archive, first_space: SearchSpace | None, progress: bool, report: bool,
         on_evaluated: Callable[[CandidateRecord], None] | None, where: dict[str, Any]) -> RunResult:
    """The stages of a locked run directory, from wherever its archive and checkpoints are;
    ``where`` overrides the recipe's executor settings."""
    if where:
        rec = rec.model_copy(update={"executor": rec.executor.model_copy(update=where)})
    meta = meta or {"evomm_version": __version__, "seed": rec.seed, "name": rec.name,
                    "objectives": objs.info(), "stages": [s.name for s in rec.stages], "finished": []}
    meta["status"] = "running"
    run = RunInfo(run_dir=run_dir, objectives=objs.names, directions=objs.directions, seed=rec.seed)
    results: list[StageResult] = []
    previous: list[dict[str, Any]] = list(meta.get("previous", []))
    reason = "budget"
    items = ItemStore(run_dir / ITEMS_NAME, repair=True)
    try:
        write_json(run_dir / RUN_NAME, meta)
        with GracefulStop() as stop:
            for i, stage in enumerate(rec.stages):
                space = first_space if i == 0 and first_space is not None else \
                    build_space(rec, i, run_dir, plugins, previous[:i])
                first_space = None
                executor = None
                try:
                    executor = make_executor(rec, i, run_dir, plugins, previous[:i], space, objs)
                    loop = EvolutionLoop(space, objs, stage.algorithm, stage.budget, run, archive, stage=stage.name,
                                         hook=plugins.hook, fitness=rec.fitness_spec(), executor=executor,
                                         items=items, score_parents=rec.score_parents, progress=progress,
                                         on_evaluated=on_evaluated, stop=stop)
                    res = loop.run_stage()
                    results.append(res)
                    reason = res.reason
                    if reason != "budget":
                        break
                    if i + 1 < len(rec.stages) and len(previous) <= i:
                        stop.check()
                        previous.append(_hand_over(space, stage.name, stage.pick, res, objective_infos(meta), run_dir))
                        meta["previous"] = previous
                        write_json(run_dir / RUN_NAME, meta)
                finally:
                    if executor is not None:
                        executor.close()
                    space.close()
    except KeyboardInterrupt:
        reason = "interrupted"
    except BaseException:
        if first_space is not None:
            first_space.close()
        meta["status"] = "error"
        if run_dir.is_dir():
            write_json(run_dir / RUN_NAME, meta)
        plugins.hook.evomm_run_end(run=run, front=results[-1].front if results else [], reason="error")
        raise
    meta["status"] = "finished" if reason == "budget" else reason
    write_json(run_dir / RUN_NAME, meta)
    final_front = results[-1].front if results else []
    plugins.hook.evomm_run_end(run=run, front=final_front, reason=reason)
    if report and results and len(archive):
        from evomm.report import write_artifacts

        write_artifacts(run_dir)
    return RunResult(run_dir, results, reason)


def _hand_over(space: SearchSpace, stage: str, how: str, res: StageResult,
               infos: list[ObjectiveInfo], run_dir: Path) -> dict[str, Any]:
    """Export the picked child of a finished stage so the next stage can use it as a parent."""
    chosen = pick(res.front, infos, how)
    cand = space.decode(np.asarray(chosen.genome))
    out = run_dir / "stages" / stage / "child"
    space.export(cand, out)
    return {"name": stage, "kind": space.kind, "candidate": chosen.id, "model_dir": str(out),
            "recipe": cand.to_recipe(), "objectives": chosen.objectives}
