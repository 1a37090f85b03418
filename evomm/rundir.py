"""The run directory: its files, and reading and writing the run's own records.

Run directory layout::

    RUN_DIR/
      recipe.yaml        the resolved evolve recipe (absolute paths); --resume reads it
      run.json           evomm version, seed, objectives, stages, status
      archive.jsonl      every evaluated candidate (and the scored parents), one JSON per line
      archive.jsonl.torn the bytes of torn last lines set aside on resume (only after a crash)
      items.jsonl        per-item results of every candidate and racing decisions (evomm.item_store)
      .lock              held (flock) by the one process writing the run: pid and host inside
      .evomm-output      the marker of a directory evomm wrote (see evomm.outputs)
      stages/<name>/checkpoint.pkl   algorithm state after the last complete generation
      stages/<name>/child/           the picked child handed to the next stage (multi-stage runs)
      front.csv, front.json, front.png, progress.png, report.html
      rescore-<split>.json / .csv   held-out re-scores of the front and parents (evomm rescore)

:mod:`evomm.runner` writes a run, :mod:`evomm.report` and :mod:`evomm.export` read it; all
three go through this module (none of them imports another for a file name).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import yaml

from evomm.archive import ARCHIVE_NAME
from evomm.errors import ConfigError, SearchError
from evomm.evolve_recipe import EvolveRecipe, parse_recipe
from evomm.front import ObjectiveInfo

__all__ = ["ARCHIVE_NAME", "RECIPE_NAME", "RUN_NAME", "not_a_run", "objective_infos", "read_rescores",
           "read_run", "rescore_paths", "write_json", "write_recipe", "write_text"]

#: The resolved evolve recipe (absolute paths); ``--resume`` reads it.
RECIPE_NAME = "recipe.yaml"
#: evomm version, seed, objectives, stages, status.
RUN_NAME = "run.json"
#: ``rescore-<split>.json`` / ``.csv``: held-out re-scores (``evomm rescore``).
RESCORE_PREFIX = "rescore-"


def rescore_paths(run_dir: Path, split: str) -> tuple[Path, Path]:
    """``RUN_DIR/rescore-<split>.json`` and ``.csv``: what ``evomm rescore --split SPLIT`` writes."""
    return run_dir / f"{RESCORE_PREFIX}{split}.json", run_dir / f"{RESCORE_PREFIX}{split}.csv"


def read_rescores(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{split: data}`` of every ``rescore-<split>.json`` in a run (``evomm rescore``'s results,
    see :mod:`evomm.rescore`); a damaged file is left out with a warning."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(run_dir).glob(f"{RESCORE_PREFIX}*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            out[str(data["split"])] = data
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            warnings.warn(f"{path} is damaged ({type(exc).__name__}: {exc}); left out of the report: "
                          "run `evomm rescore` again to rewrite it", stacklevel=2)
    return out


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary sibling, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary sibling, then a rename)."""
    write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def write_recipe(run_dir: Path, recipe: EvolveRecipe) -> None:
    """Write the resolved recipe to ``RUN_DIR/recipe.yaml`` atomically (what ``--resume`` reads)."""
    text = yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=True, exclude={"merge", "algorithm", "budget"}),
                          sort_keys=False, allow_unicode=True)
    tmp = run_dir / (RECIPE_NAME + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, run_dir / RECIPE_NAME)


def not_a_run(run_dir: Path) -> SearchError:
    """The error for a directory that holds no run (no ``recipe.yaml``)."""
    return SearchError(f"{run_dir} is not an evomm run directory (no {RECIPE_NAME}); "
                       "start one with `evomm evolve RECIPE --out DIR`")


def read_run(run_dir: Path, *, need_meta: bool = True) -> tuple[EvolveRecipe, dict[str, Any]]:
    """The recipe and ``run.json`` of a run directory.

    Args:
        run_dir: the run directory.
        need_meta: a missing ``run.json`` is an error (``False``: ``{}``, as on resume, which
            writes it again).

    Raises:
        SearchError: ``run_dir`` is not a run directory, or ``recipe.yaml`` / ``run.json`` is
            damaged (the message names the file and the fix).
    """
    run_dir = Path(run_dir)
    rpath, mpath = run_dir / RECIPE_NAME, run_dir / RUN_NAME
    if not rpath.is_file():
        raise not_a_run(run_dir)
    fix = ("restore it (the recipe the run was started with, paths made absolute), or start a new run "
           "with `evomm evolve RECIPE --out NEW_DIR`")
    try:
        data = yaml.safe_load(rpath.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SearchError(f"{rpath} is damaged (not valid YAML: {str(exc).splitlines()[0]}); {fix}") from None
    try:
        recipe = parse_recipe(data, str(rpath))
    except ConfigError as exc:
        raise SearchError(f"{rpath} is damaged: {exc}\n{fix}") from None
    if not mpath.is_file():
        if need_meta:
            raise SearchError(f"{run_dir} has no {RUN_NAME} (the run never got going, or the file was lost); "
                              f"`evomm evolve --resume {run_dir}` writes it again")
        return recipe, {}
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("objectives"), list):
            raise ValueError("no 'objectives' list")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SearchError(f"{mpath} is damaged ({exc}); delete it and run `evomm evolve --resume {run_dir}`, "
                          f"which writes it again from {RECIPE_NAME}") from None
    return recipe, meta


def objective_infos(meta: dict[str, Any]) -> list[ObjectiveInfo]:
    """The objectives recorded in ``run.json``."""
    try:
        return [ObjectiveInfo(o["name"], o["direction"], o.get("constraint")) for o in meta["objectives"]]
    except (KeyError, TypeError) as exc:
        raise SearchError(f"{RUN_NAME} has no valid objectives ({type(exc).__name__}: {exc}); delete it and "
                          "run `evomm evolve --resume RUN_DIR`, which writes it again") from None
