"""Export a candidate of a run: checkpoint, model card, ``merge.yaml`` and a mergekit YAML.

The candidate's genome is decoded again by a freshly built search space; its digest must equal
the archived plan hash (otherwise the parents changed on disk since the run and the export
refuses). ``merge.yaml`` is the decoded merge recipe with absolute model paths:
``evomm merge merge.yaml --out X``, from any directory, reproduces the exported weights bit for
bit.

Everything (checkpoint, ``merge.yaml``, ``mergekit.yaml``, ``README.md``,
``evomm_candidate.json``) is written into one temporary directory that replaces ``--out`` only
when complete (:func:`evomm.outputs.staged_output`): ``--out`` must be new or empty, or with
``overwrite`` an earlier evomm output, and may never hold the run or a parent model.

Example:
    >>> export_run_candidate("runs/demo", "out/knee", pick_how="knee")   # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evomm import __version__
from evomm.archive import Archive
from evomm.errors import ConfigError, SearchError
from evomm.front import pareto_front, pick
from evomm.layout import ModuleKind
from evomm.outputs import staged_output
from evomm.plugins import Plugins, get_plugins
from evomm.records import CandidateRecord
from evomm.rundir import ARCHIVE_NAME, objective_infos, read_rescores, read_run


def choose(run_dir: Path, candidate: str | None, pick_how: str | None) -> CandidateRecord:
    """The record to export: by id, or picked on the last stage's front."""
    if (candidate is None) == (pick_how is None):
        raise ConfigError("export: give exactly one of --candidate ID or --pick HOW")
    archive = Archive(Path(run_dir) / ARCHIVE_NAME)
    if candidate is not None:
        rec = archive.by_id(candidate)
        if rec.is_parent:
            raise ConfigError(f"--candidate {candidate}: parents are not exported; they are already checkpoints")
        if rec.evaluation == "failed":
            raise ConfigError(
                f"--candidate {candidate} failed in the run and has no scores ({rec.extra.get('failed')}); "
                "export another candidate, e.g. --pick knee"
            )
        return rec
    _, meta = read_run(run_dir)
    infos = objective_infos(meta)
    stage = archive.records[-1].stage if archive.records else ""
    return pick(pareto_front(archive.stage_records(stage), infos), infos, pick_how or "knee")


def absolute_model_paths(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a merge recipe whose local model paths (``models[].model``, ``base_model``,
    ``tokenizer_source``) are absolute, so the file works from any directory; hub ids, aliases
    and paths that do not exist from the current directory are kept as they are.

    Example:
        >>> absolute_model_paths({"models": [{"model": "org/not-here"}]})
        {'models': [{'model': 'org/not-here'}]}
    """

    def fix(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute() and Path(value).exists():
            return str(Path(value).resolve())
        return value

    out = dict(recipe)
    if isinstance(out.get("models"), list):
        out["models"] = [{**m, "model": fix(m.get("model"))} if isinstance(m, Mapping) and "model" in m else m
                         for m in out["models"]]
    for key in ("base_model", "tokenizer_source"):
        if key in out:
            out[key] = fix(out[key])
    return out


def input_paths(run_dir: Path, recipe: Any, meta: Mapping[str, Any]) -> list[Path]:
    """The local paths an export reads: the run directory, the parents and earlier stages'
    children (an output that holds one of them is refused)."""
    models = [*recipe.parents, *([recipe.base_model] if recipe.base_model else [])]
    paths = [Path(run_dir)] + [Path(m.path) for m in models]
    paths += [Path(p["model_dir"]) for p in meta.get("previous", []) if p.get("model_dir")]
    return [p for p in paths if p.exists()]


def to_mergekit(recipe: dict[str, Any], plugins: Plugins) -> dict[str, Any] | None:
    """The mergekit form of a merge recipe, or ``None`` when mergekit lacks the operator.

    The operator says whether mergekit has it (:attr:`MergeOperator.mergekit_name`); a
    parameter's ``filter: KIND`` becomes the substring the donor model's names use for that kind
    (:meth:`Checkpoint.kind_substring`; the donor is opened only when a filter is there).
    """
    name = recipe.get("merge_method")
    if name not in plugins.operators or plugins.operators.get(name).mergekit_name is None:
        return None
    aliases = {m["name"]: m["model"] for m in recipe["models"] if "name" in m}
    substrings: dict[str, str] = {}
    if _filters(recipe):
        substrings = _kind_substrings(recipe, plugins)

    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            out = {k: fix(v) for k, v in value.items()}
            if isinstance(out.get("filter"), str):
                out["filter"] = substrings.get(out["filter"], out["filter"])
            return out
        return value

    mk: dict[str, Any] = {"merge_method": plugins.operators.get(name).mergekit_name}
    if recipe.get("base_model"):
        mk["base_model"] = recipe["base_model"]
    mk["models"] = [{"model": m["model"], **({"parameters": fix(m["parameters"])} if m.get("parameters") else {})}
                    for m in recipe["models"]]
    if recipe.get("parameters"):
        mk["parameters"] = fix(recipe["parameters"])
    mk["dtype"] = recipe.get("dtype", "float32")
    src = recipe.get("tokenizer_source")
    if src:
        mk["tokenizer_source"] = "base" if src == "base" else aliases.get(src, src)
    return mk


def _filters(value: Any) -> bool:
    """Whether a recipe (or part of it) has a ``filter`` key anywhere."""
    if isinstance(value, dict):
        return "filter" in value or any(_filters(v) for v in value.values())
    return isinstance(value, list) and any(_filters(v) for v in value)


def _kind_substrings(recipe: dict[str, Any], plugins: Plugins) -> dict[str, str]:
    """Module kind name -> the substring of the donor model's tensor names for it."""
    from evomm.execute import open_models
    from evomm.recipe import MergeRecipe

    parsed = MergeRecipe.from_dict(recipe, "merge.yaml")
    donor = next(r for r in parsed.all_refs() if r.name == parsed.donor())
    checkpoint = open_models([donor], plugins, check=False)[donor.name]
    try:
        found = {kind.value: checkpoint.kind_substring(kind) for kind in ModuleKind}
    finally:
        checkpoint.close()
    return {kind: sub for kind, sub in found.items() if sub is not None}


def held_out_section(rec: CandidateRecord, rescores: Mapping[str, Mapping[str, Any]]) -> str:
    """The model card's "Held-out scores" section: per ``evomm rescore`` split, this model and the
    parents on the fitness split beside the held-out split (``""`` when the run has none).

    Example:
        >>> row = {"id": "c1", "role": "front", "fitness": {"acc": 0.5}, "rescored": {"acc": 0.4}}
        >>> data = {"split": "test", "objectives": [{"name": "acc"}], "candidates": [row]}
        >>> print(held_out_section(CandidateRecord("c1", 0, [], "", {}, {}), {"test": data}).strip())
        ## Held-out scores (`evomm rescore`)
        Objective values on the fitness split (`fit`) beside the held-out split, for this model and the parents.
        <BLANKLINE>
        | model | acc fit | acc test |
        |---|---|---|
        | c1 (this model) | 0.5000 | 0.4000 |
    """
    if not rescores:
        return ""
    parts = ["## Held-out scores (`evomm rescore`)",
             "Objective values on the fitness split (`fit`) beside the held-out split, for this model and the parents.",
             ""]
    for split, data in rescores.items():
        names = [o["name"] for o in data["objectives"]]
        rows = [r for r in data["candidates"] if r["role"] == "parent" or r["id"] == rec.id]
        if not any(r["id"] == rec.id for r in rows):
            parts.append(f"Split `{split}`: this model was not re-scored (`evomm rescore RUN_DIR --split {split} "
                         f"--candidates {rec.id}`).\n")
            continue
        parts.append(f"| model | {' | '.join(f'{n} fit | {n} {split}' for n in names)} |")
        parts.append("|---|" + "---|---|" * len(names))
        for r in sorted(rows, key=lambda r: r["id"] != rec.id):
            label = f"{r['id']} (this model)" if r["id"] == rec.id else r["id"].split(":", 1)[-1]
            parts.append(f"| {label} | " + " | ".join(f"{r['fitness'][n]:.4f} | {r['rescored'][n]:.4f}"
                                                      for n in names) + " |")
        parts.append("")
    return "\n".join(parts) + "\n"


def model_card(rec: CandidateRecord, recipe: dict[str, Any], meta: dict[str, Any], parents: list[CandidateRecord],
               lineage: list[dict[str, Any]], has_mergekit: bool) -> str:
    """README.md of an exported child."""
    names = [o["name"] for o in meta["objectives"]]
    rows = "\n".join(
        f"| {r.id.split(':', 1)[-1] if r.is_parent else r.id + ' (this model)'} | "
        + " | ".join(f"{r.objectives[n]:.4f}" for n in names) + " |"
        for r in [rec, *parents])
    models = "\n".join(f"- `{m.get('name', '')}`: {m['model']}" for m in recipe.get("models", []))
    base = f"- base model: {recipe['base_model']}\n" if recipe.get("base_model") else ""
    chain = "\n".join(f"{i + 1}. stage `{s['name']}` ({s['kind']}): candidate {s['candidate']}"
                      for i, s in enumerate(lineage))
    chain += f"\n{len(lineage) + 1}. stage `{rec.stage}`: candidate {rec.id} (this model)"
    genes = "\n".join(f"| {k} | {v:.6g} |" for k, v in rec.genes.items())
    return f"""---
tags: [evomm, merge, evolutionary-model-merge]
---
# {meta.get('name', 'evomm')} / {rec.id}

Bred by evomm {__version__}: evolutionary multi-objective search over merge
recipes (Sakana AI's evolutionary model merge). Operator: `{recipe.get('merge_method', 'n/a')}`.

## Parents
{models}
{base}
## Objective scores (archived, higher is better for maximised objectives)
| model | {' | '.join(f"{o['name']} ({o['direction']})" for o in meta['objectives'])} |
|---|{'---|' * len(names)}
{rows}

## Lineage
{chain}

## Genome ({len(rec.genes)} genes)
| gene | value |
|---|---|
{genes}

## Reproduce
`merge.yaml` is the exact merge recipe: `evomm merge merge.yaml --out DIR` rebuilds these
weights bit for bit (plan digest `{rec.plan_hash}`).{" `mergekit.yaml` is the same recipe for mergekit." if has_mergekit else ""}

Run seed {meta.get('seed')}, generation {rec.generation}, evaluation: {rec.evaluation}.
"""


def export_run_candidate(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    candidate: str | None = None,
    pick_how: str | None = None,
    plugins: Plugins | None = None,
    overwrite: bool = False,
) -> tuple[Path, CandidateRecord]:
    """Export one candidate of a run to ``out_dir``, whole or not at all.

    Args:
        run_dir: the run directory.
        out_dir: where the checkpoint goes: a new or empty directory, or (``overwrite``) an
            earlier evomm output; never one that holds the run or a parent model.
        candidate: a candidate id (``c00042``) ...
        pick_how: ... or a pick (``knee``, ``weights=a,b``, ``NAME>=v``; see :mod:`evomm.front`).
        plugins: registries (default: the loaded plugins).
        overwrite: replace an earlier evomm output at ``out_dir`` (once the export succeeded).

    Returns:
        ``(out_dir, record)``.

    Raises:
        OutputError: ``out_dir`` may not be written (see :mod:`evomm.outputs`), or the disk
            filled; nothing is left at ``out_dir``.
        SearchError: the decoded plan no longer matches the archive (parents changed).
    """
    from evomm.runner import build_space

    run_dir, out = Path(run_dir), Path(out_dir)
    plugins = plugins or get_plugins()
    rec = choose(run_dir, candidate, pick_how)
    recipe, meta = read_run(run_dir)
    stage_names = [s.name for s in recipe.stages]
    idx = stage_names.index(rec.stage)
    previous = meta.get("previous", [])[:idx]
    with staged_output(out, overwrite=overwrite, reads=input_paths(run_dir, recipe, meta), command="export") as tmp:
        space = build_space(recipe, idx, run_dir, plugins, previous)
        try:
            cand = space.decode(np.asarray(rec.genome, dtype=float))
            if cand.digest() != rec.plan_hash:
                raise SearchError(
                    f"candidate {rec.id}: its plan decodes to digest {cand.digest()[:12]} but the archive has "
                    f"{rec.plan_hash[:12]}; the parents or plugins changed since the run"
                )
            space.export(cand, tmp)
            merge = absolute_model_paths(cand.to_recipe())
            (tmp / "merge.yaml").write_text(yaml.safe_dump(merge, sort_keys=False, allow_unicode=True))
            mk = to_mergekit(merge, plugins)
            if mk is not None:
                (tmp / "mergekit.yaml").write_text(yaml.safe_dump(mk, sort_keys=False, allow_unicode=True))
            archive = Archive(run_dir / ARCHIVE_NAME)
            parents = [r for r in archive.stage_records(rec.stage, parents=True) if r.is_parent]
            card = model_card(rec, merge, meta, parents, space.lineage(), mk is not None)
            held_out = held_out_section(rec, read_rescores(run_dir))
            notes = space.card_notes(cand)
            (tmp / "README.md").write_text(card + ("\n" + held_out if held_out else "") + ("\n" + notes if notes else ""))
            (tmp / "evomm_candidate.json").write_text(json.dumps(rec.to_json(), indent=1, default=float) + "\n")
        finally:
            space.close()
    return out, rec
