"""Wiring of an evolution run: recipe -> stages -> spaces -> loop -> front, report, hand-over.

Run directory layout::

    RUN_DIR/
      recipe.yaml        the resolved evolve recipe (absolute paths); --resume reads it
      run.json           evomm version, seed, objectives, stages, status
      archive.jsonl      every evaluated candidate (and the scored parents), one JSON per line
      stages/<name>/checkpoint.pkl   algorithm state after the last complete generation
      stages/<name>/child/           the picked child handed to the next stage (multi-stage runs)
      front.csv, front.json, front.png, progress.png, report.html

Example:
    >>> from evomm.runner import evolve
    >>> result = evolve("configs/demo.yaml", "runs/demo")          # doctest: +SKIP
    >>> result = evolve(None, "runs/demo", resume=True)             # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evomm import __version__
from evomm.archive import ARCHIVE_NAME, Archive
from evomm.errors import ConfigError, SearchError
from evomm.evolve_recipe import EvolveRecipe, load_evolve_recipe, parse_recipe
from evomm.front import ObjectiveInfo, pick
from evomm.objectives import ObjectiveSet
from evomm.plugins import Plugins, get_plugins
from evomm.records import CandidateRecord, RunInfo
from evomm.search import EvolutionLoop, StageResult
from evomm.space import SearchSpace, StageContext, space_factory

RECIPE_NAME = "recipe.yaml"
RUN_NAME = "run.json"


@dataclass
class RunResult:
    """What :func:`evolve` returns: one :class:`StageResult` per stage run, and the status."""

    run_dir: Path
    stages: list[StageResult]
    reason: str

    @property
    def final(self) -> StageResult:
        return self.stages[-1]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_run(run_dir: Path) -> tuple[EvolveRecipe, dict[str, Any]]:
    """The recipe and ``run.json`` of a run directory.

    Raises:
        SearchError: ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE_NAME).is_file():
        raise SearchError(f"{run_dir} is not an evomm run directory (no {RECIPE_NAME}); "
                          "start one with `evomm evolve RECIPE --out DIR`")
    recipe = parse_recipe(yaml.safe_load((run_dir / RECIPE_NAME).read_text()), str(run_dir / RECIPE_NAME))
    meta = json.loads((run_dir / RUN_NAME).read_text()) if (run_dir / RUN_NAME).is_file() else {}
    return recipe, meta


def objective_infos(meta: dict[str, Any]) -> list[ObjectiveInfo]:
    """The objectives recorded in ``run.json``."""
    return [ObjectiveInfo(o["name"], o["direction"], o.get("constraint")) for o in meta["objectives"]]


def build_space(recipe: EvolveRecipe, stage_index: int, run_dir: Path, plugins: Plugins,
                previous: list[dict[str, Any]]) -> SearchSpace:
    """The search space of stage ``stage_index`` (its factory is looked up by the stage kind)."""
    stage = recipe.stages[stage_index]
    ctx = StageContext(plugins=plugins, run_dir=run_dir, previous=list(previous), dtype=recipe.dtype,
                       recipe=recipe)
    return space_factory(stage.kind)(stage, ctx)


def _start(recipe_path: str | Path | EvolveRecipe, run_dir: Path) -> EvolveRecipe:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"--out {run_dir} exists and is not empty; continue it with `evomm evolve --resume {run_dir}` "
            "or choose another directory"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_path if isinstance(recipe_path, EvolveRecipe) else load_evolve_recipe(recipe_path)
    (run_dir / RECIPE_NAME).write_text(yaml.safe_dump(recipe.model_dump(
        mode="json", exclude_none=True, exclude={"merge", "algorithm", "budget"}),
                                                      sort_keys=False, allow_unicode=True))
    return recipe


def evolve(
    recipe: str | Path | EvolveRecipe | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    plugins: Plugins | None = None,
    progress: bool = True,
    report: bool = True,
    on_evaluated: Callable[[CandidateRecord], None] | None = None,
) -> RunResult:
    """Run (or resume) an evolution and write its artefacts.

    Args:
        recipe: path of an evolve recipe, or a parsed one; ignored (may be ``None``) on resume.
        run_dir: the run directory (must be new or empty unless ``resume``).
        resume: continue the run in ``run_dir`` (its ``recipe.yaml`` and archive).
        plugins: registries (default: :func:`evomm.plugins.get_plugins`).
        progress: show progress bars.
        report: write front.csv/json, plots and report.html at the end.
        on_evaluated: called after each evaluation (tests use it to count or to crash).

    Returns:
        A :class:`RunResult`.

    Raises:
        ConfigError: bad recipe, non-empty ``run_dir`` without ``resume``.
        SearchError: ``resume`` on a directory that is not a run.
    """
    run_dir = Path(run_dir)
    plugins = plugins or get_plugins()
    if resume:
        rec, meta = read_run(run_dir)
    else:
        if recipe is None:
            raise ConfigError("evolve: give a recipe (or resume=True with an existing run directory)")
        rec = recipe if isinstance(recipe, EvolveRecipe) else load_evolve_recipe(recipe)
        meta = {}
    objs = ObjectiveSet(rec.objectives, rec.tasks, plugins)  # validates tasks before any work
    if not resume:
        rec = _start(rec, run_dir)
    meta = meta or {"evomm_version": __version__, "seed": rec.seed, "name": rec.name,
                    "objectives": objs.info(), "stages": [s.name for s in rec.stages], "finished": []}
    meta["status"] = "running"
    _write_json(run_dir / RUN_NAME, meta)
    run = RunInfo(run_dir=run_dir, objectives=objs.names, directions=objs.directions, seed=rec.seed)
    archive = Archive(run_dir / ARCHIVE_NAME)
    results: list[StageResult] = []
    previous: list[dict[str, Any]] = list(meta.get("previous", []))
    reason = "budget"
    try:
        for i, stage in enumerate(rec.stages):
            space = build_space(rec, i, run_dir, plugins, previous[:i])
            try:
                loop = EvolutionLoop(space, objs, stage.algorithm, stage.budget, run, archive, stage=stage.name,
                                     hook=plugins.hook, cheap_first=rec.cheap_first,
                                     score_parents=rec.score_parents, progress=progress,
                                     on_evaluated=on_evaluated)
                res = loop.run_stage()
                results.append(res)
                reason = res.reason
                if reason != "budget":
                    break
                if i + 1 < len(rec.stages) and len(previous) <= i:
                    previous.append(_hand_over(space, stage.name, stage.pick, res, objective_infos(meta), run_dir))
                    meta["previous"] = previous
                    _write_json(run_dir / RUN_NAME, meta)
            finally:
                space.close()
    except KeyboardInterrupt:
        reason = "interrupted"
    except BaseException:
        meta["status"] = "error"
        _write_json(run_dir / RUN_NAME, meta)
        plugins.hook.evomm_run_end(run=run, front=results[-1].front if results else [], reason="error")
        raise
    meta["status"] = "finished" if reason == "budget" else reason
    _write_json(run_dir / RUN_NAME, meta)
    final_front = results[-1].front if results else []
    plugins.hook.evomm_run_end(run=run, front=final_front, reason=reason)
    if report and results:
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
