"""``evomm merge RECIPE --out DIR``: run a merge recipe (evomm or mergekit YAML) to a checkpoint."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from evomm.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"512MiB"`` -> 536870912 (a bare number is bytes)."""
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"--max-shard-size: cannot read {text!r}; write e.g. 5GB, 500MB or 2GiB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge models as a recipe (evomm or mergekit YAML) says, into a new checkpoint",
        description="Merge the models of RECIPE with its operator and write a Hugging Face checkpoint "
        "(sharded safetensors, config, tokenizer and generation config of the donor model) to --out. "
        "The merge streams tensor by tensor; the output appears only when complete.",
    )
    p.add_argument("recipe", metavar="RECIPE.yaml", help="the merge recipe (see docs/merging.md)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out once the merge succeeded")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept pickle weights (pytorch_model.bin) for every model; unsafe: pickle can run code",
    )
    p.add_argument(
        "--dtype",
        default=None,
        metavar="DTYPE",
        help="compute dtype, overriding the recipe's `dtype` (float32, bfloat16, float16, float64)",
    )
    p.add_argument(
        "--max-shard-size",
        default="5GB",
        metavar="SIZE",
        help="largest output shard, e.g. 5GB (default), 500MB, 2GiB",
    )
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="print the memory and time plan (from headers; nothing is loaded), then stop")
    p.set_defaults(func=run)


def _whole_model_builder(path: str, plugins: Any) -> tuple[Any, dict] | None:
    """(search-space kind, parsed YAML) when the recipe's ``merge_method`` names a kind with a
    whole-model builder (``merge_method: dfs``: a layer path, not a tensor merge), else None."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # load_recipe reports these with its own messages
    if not isinstance(data, dict):
        return None
    method = data.get("merge_method") or data.get("operator")
    if not isinstance(method, str) or method in plugins.operators or method not in plugins.spaces:
        return None
    kind = plugins.spaces.get(method)
    return (kind, data) if kind.build is not None else None


def run(args: argparse.Namespace) -> int:
    from evomm.execute import merge_to_dir, open_models
    from evomm.plan import build_plan
    from evomm.plugins import get_plugins
    from evomm.recipe import load_recipe

    plugins = get_plugins(args.plugins_dir)
    whole = _whole_model_builder(args.recipe, plugins)
    if whole is not None:  # e.g. merge_method: dfs (a layer path, not a tensor merge)
        kind, data = whole
        out = kind.build(data, Path(args.out), plugins, recipe_dir=Path(args.recipe).resolve().parent,
                         overwrite=args.overwrite)
        print(f"built {kind.name!r} child into {out}")
        return 0
    shard = parse_size(args.max_shard_size)
    recipe = load_recipe(args.recipe, plugins)
    if args.dtype or args.allow_pickle:
        recipe = recipe.with_overrides(dtype=args.dtype, allow_pickle=args.allow_pickle)
    if args.dry_run:
        from evomm.planner import merge_plan_lines

        print("\n".join(merge_plan_lines(recipe)))
        return 0
    checkpoints = open_models(recipe, plugins)
    try:
        plan = build_plan(recipe, checkpoints, plugins)
        out = merge_to_dir(
            plan, checkpoints, args.out, plugins, progress=not args.no_progress,
            overwrite=args.overwrite, max_shard_bytes=shard,
        )
    finally:
        for ck in checkpoints.values():
            ck.close()
    print(f"merged {len(plan.steps)} tensors with {plan.operator!r} into {out}")
    return 0
