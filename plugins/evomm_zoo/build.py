"""Build, cache and describe a toy zoo.

A zoo is a directory::

    <zoo>/zoo.json                     recipe, seeds, curves, wall times, scores
    <zoo>/tokenizer/                   AutoTokenizer.from_pretrained-loadable
    <zoo>/models/{base,ja,math}/       LlamaForCausalLM checkpoints (safetensors + tokenizer)
    <zoo>/models/{vlm,clip_*}/         the vision half (:mod:`evomm_zoo.vlm`, :mod:`evomm_zoo.clip`)
    <zoo>/data/<task>/{train,dev,test}.jsonl

It is built into a temporary sibling directory and renamed into place at the end
(:func:`evomm.outputs.staged_output`), so a crash never leaves a half-built zoo where
:func:`build_zoo` would reuse it. A directory that is not empty and was not written by evomm is
never replaced.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evomm.errors import ConfigError, OutputError
from evomm.outputs import staged_output
from evomm_zoo.recipe import RECIPE_VERSION, SCALES, TextRecipe, text_recipe
from evomm_zoo.textdata import TEXT_TASKS, task_rows

TEXT_MODELS: tuple[str, ...] = ("base", "ja", "math")

#: ``module:function`` building the vision half; it is called as
#: ``fn(zoo_dir: Path, scale: str, seed: int, progress: bool) -> dict`` after the text half is
#: in ``zoo_dir``, and returns a fragment merged into ``zoo.json`` (keys ``recipe``, ``models``,
#: ``scores``, ``wall_s``, ``curves``, each a dict keyed by the vision part's names).
VISION_BUILDER = "evomm_zoo.vision:build_vision"

#: ``module:function`` running the vision half's evolution on a built zoo, called as
#: ``fn(zoo_dir: Path, scale: str, seed: int, progress: bool) -> dict`` once the zoo is in place
#: (its run directory, ``<zoo>/runs/vision``, names the zoo's final paths); it returns a fragment
#: merged into ``zoo.json`` (``vision_table``, ``wall_s``).
VISION_SEARCH = "evomm_zoo.vision_search:search_vision"


def default_zoo_dir(scale: str = "demo", seed: int = 0) -> Path:
    """The cache directory of a zoo: ``$EVOMM_CACHE/zoo/<scale>-v<version>-s<seed>``.

    ``$EVOMM_CACHE`` defaults to ``~/.cache/evomm``.

    Example:
        >>> default_zoo_dir("demo").name
        'demo-v3-s0'
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown zoo scale {scale!r}; use one of {', '.join(SCALES)}")
    root = Path(os.environ.get("EVOMM_CACHE") or Path.home() / ".cache" / "evomm")
    return root / "zoo" / f"{scale}-v{RECIPE_VERSION}-s{seed}"


def read_zoo_json(zoo: Path) -> dict[str, Any] | None:
    """``zoo.json`` of a zoo directory, or ``None`` when absent or unreadable."""
    try:
        return json.loads((Path(zoo) / "zoo.json").read_text())
    except (OSError, ValueError):
        return None


def is_complete(zoo: Path, scale: str, seed: int, parts: Sequence[str], *, searched: bool = True) -> bool:
    """Whether ``zoo`` holds a complete build of this recipe version, scale, seed and parts
    (with the vision part, also its search's ``vision_table`` unless ``searched`` is false)."""
    info = read_zoo_json(zoo)
    return bool(
        info
        and info.get("complete")
        and info.get("recipe_version") == RECIPE_VERSION
        and info.get("scale") == scale
        and info.get("seed") == seed
        and set(parts) <= set(info.get("parts", []))
        and (not searched or "vision" not in parts or "vision_table" in info)
    )


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_text_data(zoo: Path, recipe: TextRecipe, seed: int) -> None:
    """Write ``<zoo>/data/<task>/<split>.jsonl`` for the three text tasks."""
    for task in TEXT_TASKS:
        for split, n in recipe.split_sizes.items():
            write_jsonl(zoo / "data" / task / f"{split}.jsonl", task_rows(task, split, n, seed))


def _finetune_job(base_dir: str, out_dir: str, cfg: Any, desc: str, progress: bool) -> dict:
    import torch

    from evomm_zoo.text import finetune

    torch.set_num_threads(1)
    _, log = finetune(Path(base_dir), Path(out_dir), cfg, desc=desc, progress=progress)
    return log


def _train_parents(zoo: Path, recipe: TextRecipe, progress: bool) -> dict[str, dict]:
    base = str(zoo / "models" / "base")
    jobs = {"ja": recipe.ja, "math": recipe.math}
    if recipe.workers <= 1:
        return {k: _finetune_job(base, str(zoo / "models" / k), cfg, k, progress) for k, cfg in jobs.items()}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(2, recipe.workers), mp_context=mp.get_context("spawn")) as ex:
        futs = {
            k: ex.submit(_finetune_job, base, str(zoo / "models" / k), cfg, k, progress)
            for k, cfg in jobs.items()
        }
        return {k: f.result() for k, f in futs.items()}


def score_text_models(zoo: Path, models: Sequence[str] = TEXT_MODELS, split: str = "test") -> dict:
    """Strict/loose scores of ``<zoo>/models/<m>`` on every text task's ``split``.

    Returns:
        ``{model: {task: score_outputs(...)}}``.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    from evomm_zoo.generate import greedy_generate
    from evomm_zoo.scoring import MAX_NEW_TOKENS, score_outputs

    data = {t: read_jsonl(zoo / "data" / t / f"{split}.jsonl") for t in TEXT_TASKS}
    scores: dict[str, dict] = {}
    for m in models:
        model = LlamaForCausalLM.from_pretrained(str(zoo / "models" / m))
        tok = AutoTokenizer.from_pretrained(str(zoo / "models" / m))
        scores[m] = {}
        for t, rows in data.items():
            outs = greedy_generate(model, tok, [r["prompt"] for r in rows], max_new_tokens=MAX_NEW_TOKENS)
            scores[m][t] = score_outputs(t, outs, rows)
    return scores


def build_text(
    zoo: Path, scale: str, seed: int, progress: bool = True, recipe: TextRecipe | None = None
) -> dict[str, Any]:
    """Build the text half (tokenizer, data, base, ja, math, scores) into ``zoo``.

    ``recipe`` overrides :func:`~evomm_zoo.recipe.text_recipe` (experiments only: a zoo built
    from another recipe is not what ``zoo.json``'s recipe version promises).

    Returns:
        The text part of ``zoo.json``.
    """
    import torch

    from evomm_zoo.text import train_base
    from evomm_zoo.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    recipe = recipe or text_recipe(scale, seed)
    wall: dict[str, float] = {}
    t0 = time.perf_counter()
    tok = build_tokenizer()
    tok.save_pretrained(str(zoo / "tokenizer"))
    write_text_data(zoo, recipe, seed)
    wall["data"] = round(time.perf_counter() - t0, 2)
    _, base_log = train_base(tok, zoo / "models" / "base", recipe.base, recipe.arch, progress=progress)
    wall["base"] = base_log["wall_s"]
    t0 = time.perf_counter()
    logs = _train_parents(zoo, recipe, progress)
    wall["parents"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    scores = score_text_models(zoo)
    wall["scores"] = round(time.perf_counter() - t0, 2)
    return {
        "recipe": {"text": recipe.to_dict()},
        "models": {m: {"path": f"models/{m}", "kind": "llama"} for m in TEXT_MODELS},
        "curves": {"base": base_log["curve"], **{k: v["curve"] for k, v in logs.items()}},
        "wall_s": {"text_" + k: v for k, v in wall.items()}
        | {"text_ja": logs["ja"]["wall_s"], "text_math": logs["math"]["wall_s"]},
        "cpu_s": {
            "text_base": base_log["cpu_s"],
            "text_ja": logs["ja"]["cpu_s"],
            "text_math": logs["math"]["cpu_s"],
        },
        "scores": scores,
        "tasks": {t: f"data/{t}" for t in TEXT_TASKS},
    }


def _vision_builder(spec: str = VISION_BUILDER):
    mod_name, fn_name = spec.split(":")
    try:
        return getattr(importlib.import_module(mod_name), fn_name)
    except (ModuleNotFoundError, AttributeError):
        return None


def _merge(info: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(info.get(key), dict):
            info[key].update(value)
        else:
            info[key] = value


def build_zoo(
    scale: str = "demo",
    out: Path | str | None = None,
    seed: int = 0,
    force: bool = False,
    parts: Sequence[str] = ("text", "vision"),
    progress: bool = True,
) -> Path:
    """Build the toy zoo (or reuse a complete one with the same recipe version and seed).

    Args:
        scale: ``"micro"`` (tests, < 60 s) or ``"demo"`` (the demo, < 5 min on 2 cores).
        out: target directory (default :func:`default_zoo_dir`).
        seed: the seed of everything (data, initialisation, training order).
        force: rebuild even when a complete zoo is there (a directory evomm did not write is
            refused all the same).
        parts: ``"text"`` and/or ``"vision"`` (the vision half needs the text half).
        progress: show progress bars.

    Returns:
        The zoo directory.

    Raises:
        OutputError: ``out`` is a file, a non-empty directory evomm did not write, or holds
            another zoo and ``force`` is off (see :mod:`evomm.outputs`).

    Example::

        zoo = build_zoo("micro", out="/tmp/zoo")  # about half a minute
    """
    parts = tuple(parts)
    unknown = set(parts) - {"text", "vision"}
    if unknown or "text" not in parts:
        raise ConfigError(f"zoo parts {parts!r}: use ('text',) or ('text', 'vision')")
    out = Path(out) if out is not None else default_zoo_dir(scale, seed)
    # A part whose builder is not installed cannot be built: do not rebuild forever for it.
    wanted = [p for p in parts if p != "vision" or _vision_builder() is not None]
    if not force and is_complete(out, scale, seed, wanted):
        return out
    if not force and "vision" in wanted and is_complete(out, scale, seed, wanted, searched=False):
        _search_vision(out, scale, seed, progress)  # an interrupted search resumes
        return out
    # the cache is rebuilt when parts are missing, an explicit --out only with --force; a
    # complete text-only zoo of this recipe is extended in place (its text half is kept)
    extend = "vision" in wanted and is_complete(out, scale, seed, ("text",))
    overwrite = force or extend or out == default_zoo_dir(scale, seed)
    if not overwrite and read_zoo_json(out) is not None:
        raise OutputError(
            f"--out {out} holds a toy zoo of another scale, seed or parts than asked ({scale}, seed {seed}, "
            f"{'+'.join(wanted)}); pass --force to rebuild it there, or choose a new directory"
        )
    with staged_output(out, overwrite=overwrite, command="zoo build") as tmp:
        t0 = time.perf_counter()
        info: dict[str, Any] = {"scale": scale, "seed": seed, "recipe_version": RECIPE_VERSION}
        if extend and not force:
            _merge(info, _copy_text_half(out, tmp))  # only the vision half is missing
        else:
            _merge(info, build_text(tmp, scale, seed, progress))
        built = ["text"]
        if "vision" in parts:
            builder = _vision_builder()
            if builder is None:
                info["vision"] = f"not available ({VISION_BUILDER} is not installed)"
            else:
                _merge(info, builder(tmp, scale, seed, progress))
                built.append("vision")
        info["parts"] = built
        info["wall_s"]["total"] = round(time.perf_counter() - t0, 2)
        info["complete"] = True
        (tmp / "zoo.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))
    if "vision" in built:
        _search_vision(out, scale, seed, progress)
    return out


def _copy_text_half(zoo: Path, tmp: Path) -> dict[str, Any]:
    """Copy a complete zoo's text half (tokenizer, text models, text data) into ``tmp``; its
    ``zoo.json`` entries for them."""
    import shutil

    info = read_zoo_json(zoo) or {}
    shutil.copytree(zoo / "tokenizer", tmp / "tokenizer")
    for m in TEXT_MODELS:
        shutil.copytree(zoo / "models" / m, tmp / "models" / m)
    for t in TEXT_TASKS:
        shutil.copytree(zoo / "data" / t, tmp / "data" / t)
    keep = ("recipe", "models", "scores", "curves", "wall_s", "cpu_s", "tasks")
    return {k: json.loads(json.dumps(info[k])) for k in keep if k in info}


def _search_vision(zoo: Path, scale: str, seed: int, progress: bool) -> None:
    """Run the vision search on the zoo in place (:data:`VISION_SEARCH`) and add its table to
    ``zoo.json`` (written whole, by rename)."""
    search = _vision_builder(VISION_SEARCH)
    if search is None:
        return
    part = search(zoo, scale, seed, progress)
    info = read_zoo_json(zoo) or {}
    _merge(info, part)
    tmp = zoo / "zoo.json.tmp"
    tmp.write_text(json.dumps(info, indent=1, ensure_ascii=False))
    os.replace(tmp, zoo / "zoo.json")


def ensure_zoo(scale: str = "demo", seed: int = 0) -> Path:
    """The cached zoo of ``scale``/``seed``, built first when missing (text and vision parts)."""
    return build_zoo(scale, seed=seed)
